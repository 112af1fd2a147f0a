//! The [`Module`] trait: named parameters and buffers, train / eval, freezing, state dicts.
//!
//! Models implement [`Module`] with `#[derive(Module)]`; every method then works on the whole
//! tree of submodules, with PyTorch's dotted names (`encoder.layer.0.attention.query.weight`).

use kiln_autograd::{Array, Error, Result, Tensor};
use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;

/// Items the derive macro names; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use kiln_autograd::Tensor;
}

/// Whether a named tensor is trained (a parameter) or only saved and loaded (a buffer, such as
/// BatchNorm's running statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// Trained: listed by [`Module::parameters`], frozen and unfrozen by name.
    Parameter,
    /// Saved in the state dict but never trained.
    Buffer,
}

/// Parameter counts (elements, not tensors), as returned by [`Module::num_parameters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamCount {
    /// Elements of every parameter.
    pub total: usize,
    /// Elements of the parameters that require grad (not frozen).
    pub trainable: usize,
}

/// A name whose tensor has another shape in the state dict than in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The tensor's dotted name.
    pub name: String,
    /// The shape in the model.
    pub expected: Vec<usize>,
    /// The shape in the state dict.
    pub found: Vec<usize>,
}

/// What [`Module::load_state_dict`] found: names it could not load or did not use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Names of the model's tensors absent from the state dict (left unchanged).
    pub missing: Vec<String>,
    /// Names in the state dict that the model does not have (ignored).
    pub unexpected: Vec<String>,
    /// Names present in both with different shapes (left unchanged).
    pub mismatched: Vec<ShapeMismatch>,
}

impl LoadReport {
    /// True when every tensor was loaded and every entry used.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing keys: {}", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected keys: {}", self.unexpected.join(", ")));
        }
        if !self.mismatched.is_empty() {
            let m: Vec<String> = self
                .mismatched
                .iter()
                .map(|m| format!("{} (model {:?}, state dict {:?})", m.name, m.expected, m.found))
                .collect();
            parts.push(format!("shape mismatches: {}", m.join(", ")));
        }
        if parts.is_empty() {
            write!(f, "all keys matched")
        } else {
            write!(f, "{}", parts.join("; "))
        }
    }
}

/// `prefix.name`, or `name` alone when the prefix is empty.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        let mut s = String::with_capacity(prefix.len() + 1 + name.len());
        s.push_str(prefix);
        s.push('.');
        s.push_str(name);
        s
    }
}

/// Glob match of a whole dotted name: `*` matches any run of characters (dots included), `?`
/// exactly one character, anything else itself.
///
/// ```
/// use kiln_nn::module::glob_match;
/// assert!(glob_match("encoder.*", "encoder.layer.0.weight"));
/// assert!(glob_match("*.bias", "decoder.bias"));
/// assert!(glob_match("layer.?.weight", "layer.3.weight"));
/// assert!(!glob_match("layer.?.weight", "layer.12.weight"));
/// ```
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    let (mut i, mut j) = (0, 0);
    // The last `*` seen and the position in `s` it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        if i < p.len() && (p[i] == '?' || (p[i] != '*' && p[i] == s[j])) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            // Let the last `*` swallow one more character and retry after it.
            star = Some((si, sj + 1));
            i = si + 1;
            j = sj + 1;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// A neural-network module: a tree of named parameters, buffers and submodules.
///
/// Implement it with `#[derive(Module)]` (re-exported here, so `use kiln_nn::Module` brings
/// both the trait and the derive). Each field is named after itself, joined to its parent's
/// name with `.`; elements of a `Vec` are named by their index, like PyTorch's
/// `ModuleList`. Field attributes, `#[module(...)]`:
///
/// - `rename = "LayerNorm"`: use another name segment (to match checkpoint names);
/// - `buffer`: the field's tensors are buffers, saved and loaded but never trained;
/// - `skip`: ignore a field (config values whose type does not implement `Module`; numbers,
///   `bool` and `String` implement it as no-ops and need no attribute);
/// - `flatten`: the field's tensors take no name segment of their own;
/// - `training`: a `bool` field that [`Module::train`] and [`Module::eval`] set.
///
/// Tuple structs name their fields `0`, `1`, ... Generic structs are supported.
///
/// ```
/// use kiln_nn::Module;
/// use kiln_autograd::Tensor;
///
/// #[derive(Module)]
/// struct Block {
///     weight: Tensor,
///     bias: Option<Tensor>,
///     #[module(rename = "LayerNorm")]
///     norm: Norm,
/// }
///
/// #[derive(Module)]
/// struct Norm {
///     gamma: Tensor,
///     #[module(buffer)]
///     running_mean: Tensor,
/// }
///
/// #[derive(Module)]
/// struct Model {
///     blocks: Vec<Block>,
///     hidden: usize,
///     #[module(training)]
///     training: bool,
/// }
///
/// let p = |n: usize| Tensor::zeros(&[n]).requires_grad_(true);
/// let block = || Block {
///     weight: p(4),
///     bias: None,
///     norm: Norm { gamma: p(4), running_mean: Tensor::zeros(&[4]) },
/// };
/// let mut model = Model { blocks: vec![block(), block()], hidden: 4, training: true };
/// let names: Vec<String> = model.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["blocks.0.weight", "blocks.0.LayerNorm.gamma", "blocks.1.weight", "blocks.1.LayerNorm.gamma"]);
/// assert_eq!(model.named_buffers()[1].0, "blocks.1.LayerNorm.running_mean");
///
/// assert_eq!(model.freeze("blocks.0.*")?, 2);
/// assert_eq!(model.num_parameters().trainable, 8);
/// model.eval();
/// assert!(!model.training);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
///
/// The trait is object safe: `Box<dyn Module>` and `&dyn Module` work.
pub trait Module {
    /// Calls `f(name, tensor, kind)` for every parameter and buffer, depth first in field
    /// order. `prefix` is this module's own name (`""` at the root).
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind));

    /// [`Module::visit`] with mutable access, to replace a tensor (e.g. with a new shape).
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind));

    /// Calls `f(name, module)` for this module (named `prefix`) and then every submodule, depth
    /// first in field order. Containers (`Vec`, `Option`, `Box`) are not modules of their own:
    /// only their elements are visited.
    fn visit_modules<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a dyn Module));

    /// [`Module::visit_modules`] with mutable access, to change modules in place (e.g. give
    /// some [`Linear`](crate::Linear) layers a LoRA adapter, see [`crate::lora`]). `f` sees a
    /// module before its submodules, so what it changes there is then visited.
    fn visit_modules_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Module));

    /// This module as [`Any`], to reach its concrete type (`m.as_any()?.downcast_ref::<Linear>()`).
    /// The derive implements it for structs without generic parameters; `None` otherwise.
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }

    /// [`Module::as_any`], mutably.
    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        None
    }

    /// Sets training mode on this module and every submodule.
    fn set_training(&mut self, training: bool);

    /// This module's own mode flag (its `#[module(training)]` field) or, without one, that of
    /// its first submodule that has one; `None` when no module inside has a flag.
    fn training_mode(&self) -> Option<bool> {
        None
    }

    // ------------------------------------------------------------------ provided

    /// True in training mode (see [`Module::training_mode`]). A module with no mode flag
    /// anywhere inside behaves the same in both modes and reports `true`.
    fn is_training(&self) -> bool {
        self.training_mode().unwrap_or(true)
    }

    /// Training mode (dropout active, batch statistics used and updated).
    fn train(&mut self) {
        self.set_training(true);
    }

    /// Evaluation mode (dropout off, running statistics used).
    fn eval(&mut self) {
        self.set_training(false);
    }

    /// Every parameter with its dotted name, in visiting order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit("", &mut |n, t, k| {
            if k == TensorKind::Parameter {
                out.push((n.to_string(), t.clone()));
            }
        });
        out
    }

    /// Every parameter, in visiting order (handles sharing the model's tensors).
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// Every buffer with its dotted name, in visiting order.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit("", &mut |n, t, k| {
            if k == TensorKind::Buffer {
                out.push((n.to_string(), t.clone()));
            }
        });
        out
    }

    /// Every buffer, in visiting order.
    fn buffers(&self) -> Vec<Tensor> {
        self.named_buffers().into_iter().map(|(_, t)| t).collect()
    }

    /// Every module (this one named `""`, then its submodules), depth first.
    fn named_modules(&self) -> Vec<(String, &dyn Module)> {
        let mut out = Vec::new();
        self.visit_modules("", &mut |n, m| out.push((n.to_string(), m)));
        out
    }

    /// Freezes the parameters whose names match the glob `pattern` (see [`glob_match`]): they
    /// stop requiring grad, so backward computes no gradient for them. Returns how many
    /// parameters matched. Buffers are never trained and not matched.
    fn freeze(&self, pattern: &str) -> Result<usize> {
        set_requires_grad(self, pattern, false)
    }

    /// Unfreezes the parameters whose names match the glob `pattern`. Returns how many matched.
    fn unfreeze(&self, pattern: &str) -> Result<usize> {
        set_requires_grad(self, pattern, true)
    }

    /// Total and trainable parameter elements (buffers are not counted).
    fn num_parameters(&self) -> ParamCount {
        let mut c = ParamCount::default();
        self.visit("", &mut |_, t, k| {
            if k == TensorKind::Parameter {
                c.total += t.numel();
                if t.requires_grad() {
                    c.trainable += t.numel();
                }
            }
        });
        c
    }

    /// Clears the gradient of every parameter.
    fn zero_grad(&self) {
        self.visit("", &mut |_, t, k| {
            if k == TensorKind::Parameter {
                t.zero_grad();
            }
        });
    }

    /// The values of every parameter and buffer by name: a snapshot that shares memory with
    /// the model until either side changes (later updates copy on write).
    fn state_dict(&self) -> BTreeMap<String, Array> {
        let mut out = BTreeMap::new();
        self.visit("", &mut |n, t, _| {
            out.insert(n.to_string(), t.data());
        });
        out
    }

    /// Loads the values of `state` into the tensors of the same names (converting the dtype if
    /// it differs). Returns what did not match: model tensors absent from `state` (missing),
    /// entries the model does not have (unexpected) and entries of another shape (mismatched).
    /// With `strict`, any of these is an error naming them all, and nothing is loaded; without
    /// it, every tensor that matches is loaded and the report lists the rest.
    fn load_state_dict(&self, state: &BTreeMap<String, Array>, strict: bool) -> Result<LoadReport> {
        let mut report = LoadReport::default();
        let mut to_load: Vec<(Tensor, &Array)> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        self.visit("", &mut |n, t, _| {
            if !seen.insert(n.to_string()) {
                return;
            }
            match state.get(n) {
                None => report.missing.push(n.to_string()),
                Some(a) if a.shape() != t.shape() => report.mismatched.push(ShapeMismatch {
                    name: n.to_string(),
                    expected: t.shape().to_vec(),
                    found: a.shape().to_vec(),
                }),
                Some(a) => to_load.push((t.clone(), a)),
            }
        });
        report.unexpected = state.keys().filter(|k| !seen.contains(k.as_str())).cloned().collect();
        if strict && !report.is_clean() {
            return Err(Error::op("load_state_dict", format!("nothing loaded: {report}")));
        }
        for (t, a) in to_load {
            let dtype = t.dtype();
            t.set_data(if a.dtype() == dtype { a.clone() } else { a.to_dtype(dtype)? })?;
        }
        Ok(report)
    }
}

fn set_requires_grad<M: Module + ?Sized>(m: &M, pattern: &str, requires_grad: bool) -> Result<usize> {
    let mut matched = Vec::new();
    m.visit("", &mut |n, t, k| {
        if k == TensorKind::Parameter && glob_match(pattern, n) {
            matched.push((n.to_string(), t.clone()));
        }
    });
    // Check every match first so an error leaves the model unchanged.
    for (n, t) in &matched {
        if !t.is_leaf() {
            return Err(Error::op("freeze", format!("parameter {n} is not a leaf tensor")));
        }
        if requires_grad && t.dtype() != kiln_autograd::DType::F32 {
            return Err(Error::op(
                "unfreeze",
                format!("parameter {n} is {}, only f32 tensors can require grad", t.dtype()),
            ));
        }
    }
    for (_, t) in &matched {
        t.try_requires_grad_(requires_grad)?;
    }
    Ok(matched.len())
}

// ---------------------------------------------------------------------- impls for std types

/// A tensor is a parameter named by its field.
impl Module for Tensor {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        f(prefix, self, TensorKind::Parameter);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        f(prefix, self, TensorKind::Parameter);
    }
    fn visit_modules<'a>(&'a self, _: &str, _: &mut dyn FnMut(&str, &'a dyn Module)) {}
    fn visit_modules_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut dyn Module)) {}
    fn set_training(&mut self, _: bool) {}
}

/// `None` has no tensors.
impl<T: Module> Module for Option<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        if let Some(m) = self {
            m.visit(prefix, f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        if let Some(m) = self {
            m.visit_mut(prefix, f);
        }
    }
    fn visit_modules<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a dyn Module)) {
        if let Some(m) = self {
            m.visit_modules(prefix, f);
        }
    }
    fn visit_modules_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        if let Some(m) = self {
            m.visit_modules_mut(prefix, f);
        }
    }
    fn set_training(&mut self, training: bool) {
        if let Some(m) = self {
            m.set_training(training);
        }
    }
    fn training_mode(&self) -> Option<bool> {
        self.as_ref().and_then(|m| m.training_mode())
    }
}

macro_rules! sequence_impl {
    ($([$($g:tt)*] $ty:ty;)*) => {$(
        /// Elements are named by their index: `prefix.0`, `prefix.1`, ...
        impl<$($g)*> Module for $ty {
            fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
                for (i, m) in self.iter().enumerate() {
                    m.visit(&join(prefix, &i.to_string()), f);
                }
            }
            fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
                for (i, m) in self.iter_mut().enumerate() {
                    m.visit_mut(&join(prefix, &i.to_string()), f);
                }
            }
            fn visit_modules<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a dyn Module)) {
                for (i, m) in self.iter().enumerate() {
                    m.visit_modules(&join(prefix, &i.to_string()), f);
                }
            }
            fn visit_modules_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Module)) {
                for (i, m) in self.iter_mut().enumerate() {
                    m.visit_modules_mut(&join(prefix, &i.to_string()), f);
                }
            }
            fn set_training(&mut self, training: bool) {
                for m in self.iter_mut() {
                    m.set_training(training);
                }
            }
            fn training_mode(&self) -> Option<bool> {
                self.iter().find_map(|m| m.training_mode())
            }
        }
    )*};
}

sequence_impl! {
    [T: Module] Vec<T>;
    [T: Module, const N: usize] [T; N];
}

/// Entries are named by their key: `prefix.key` (like PyTorch's `ModuleDict`), in key order.
impl<T: Module> Module for BTreeMap<String, T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        for (k, m) in self {
            m.visit(&join(prefix, k), f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        for (k, m) in self.iter_mut() {
            m.visit_mut(&join(prefix, k), f);
        }
    }
    fn visit_modules<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a dyn Module)) {
        for (k, m) in self {
            m.visit_modules(&join(prefix, k), f);
        }
    }
    fn visit_modules_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        for (k, m) in self.iter_mut() {
            m.visit_modules_mut(&join(prefix, k), f);
        }
    }
    fn set_training(&mut self, training: bool) {
        for m in self.values_mut() {
            m.set_training(training);
        }
    }
    fn training_mode(&self) -> Option<bool> {
        self.values().find_map(|m| m.training_mode())
    }
}

/// A box is transparent: the boxed module's names are used as they are.
impl<T: Module + ?Sized> Module for Box<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        (**self).visit(prefix, f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        (**self).visit_mut(prefix, f);
    }
    fn visit_modules<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, &'a dyn Module)) {
        (**self).visit_modules(prefix, f);
    }
    fn visit_modules_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Module)) {
        (**self).visit_modules_mut(prefix, f);
    }
    fn as_any(&self) -> Option<&dyn Any> {
        (**self).as_any()
    }
    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        (**self).as_any_mut()
    }
    fn set_training(&mut self, training: bool) {
        (**self).set_training(training);
    }
    fn training_mode(&self) -> Option<bool> {
        (**self).training_mode()
    }
}

macro_rules! config_impl {
    ($($ty:ty),*) => {$(
        /// A config value: no tensors, no submodules.
        impl Module for $ty {
            fn visit(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor, TensorKind)) {}
            fn visit_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {}
            fn visit_modules<'a>(&'a self, _: &str, _: &mut dyn FnMut(&str, &'a dyn Module)) {}
            fn visit_modules_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut dyn Module)) {}
            fn set_training(&mut self, _: bool) {}
        }
    )*};
}

config_impl!(bool, char, u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64, String, ());

/// A marker: no tensors, no submodules.
impl<T: ?Sized> Module for PhantomData<T> {
    fn visit(&self, _: &str, _: &mut dyn FnMut(&str, &Tensor, TensorKind)) {}
    fn visit_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {}
    fn visit_modules<'a>(&'a self, _: &str, _: &mut dyn FnMut(&str, &'a dyn Module)) {}
    fn visit_modules_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut dyn Module)) {}
    fn set_training(&mut self, _: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_skips_the_empty_prefix() {
        assert_eq!(join("", "weight"), "weight");
        assert_eq!(join("encoder.layer", "0"), "encoder.layer.0");
    }

    #[test]
    fn glob_literals_stars_and_question_marks() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything.at.all", true),
            ("**", "a.b", true),
            ("a.weight", "a.weight", true),
            ("a.weight", "a.weights", false),
            ("a.weigh", "a.weight", false),
            ("encoder.*", "encoder.layer.0.attention.self.query.weight", true),
            ("encoder.*", "encoder", false),
            ("encoder.*", "decoder.x", false),
            ("*.bias", "encoder.layer.0.bias", true),
            ("*.bias", "encoder.layer.0.bias_hh", false),
            ("*bias*", "x.bias_hh.y", true),
            ("layer.?.w", "layer.7.w", true),
            ("layer.?.w", "layer.17.w", false),
            ("layer.??.w", "layer.17.w", true),
            ("?", "", false),
            ("a*b*c", "a_b_b_c", true),
            ("a*b*c", "a_b_b_cd", false),
            ("a*b*c", "abc", true),
            ("*.layer.1?.*", "enc.layer.12.attention.w", true),
            ("*.layer.1?.*", "enc.layer.1.attention.w", false),
            ("*a", "aaaa", true),
            ("*aab", "aaaaab", true),
            ("*aab", "aaaaaba", false),
            ("é?", "éü", true),
        ];
        for &(p, s, want) in cases {
            assert_eq!(glob_match(p, s), want, "glob {p:?} on {s:?}");
        }
    }
}
