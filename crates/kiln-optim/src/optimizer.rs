//! The [`Optimizer`] trait, parameter groups ([`Params`], [`ParamGroup`]) and the state dict
//! format shared by every optimizer.

use kiln_autograd::{Array, DType, Error, Result, Tensor};
use kiln_tensor::parallel::PAR_ELEMS;
use std::collections::{BTreeMap, BTreeSet};

/// An optimizer's state, keyed by name (see [`Optimizer::state_dict`] for the keys).
pub type StateDict = BTreeMap<String, Array>;

/// An optimizer: updates its parameters in place from their accumulated gradients.
///
/// Parameters are organised in [`ParamGroup`]s, each with its own learning rate and weight
/// decay (PyTorch's `param_groups`); learning-rate schedulers ([`crate::LrScheduler`]) drive
/// the groups' `lr`.
pub trait Optimizer {
    /// One update of every parameter that has a gradient (parameters without one are skipped).
    fn step(&mut self) -> Result<()>;

    /// The parameter groups.
    fn param_groups(&self) -> &[ParamGroup];

    /// The parameter groups, to change their `lr`, `initial_lr` or `weight_decay`.
    fn param_groups_mut(&mut self) -> &mut [ParamGroup];

    /// The optimizer's state: moments and step counts keyed by parameter name, plus each
    /// group's learning rate. Keys:
    ///
    /// * `<param>.<buffer>`: an f32 array of the parameter's shape (`momentum_buffer`,
    ///   `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, `square_avg`, `grad_avg`, `sum`);
    /// * `<param>.step`: the parameter's step count, a 0-d i64 array (Adam, AdamW, RMSprop,
    ///   Adagrad);
    /// * `param_groups.<i>.lr` and `param_groups.<i>.initial_lr` (when set): 0-d f32 arrays.
    ///
    /// A parameter that has not been stepped yet has no entries. The arrays share the
    /// optimizer's buffers (no copy); the next step copies a buffer before changing it, so the
    /// dict is a snapshot.
    fn state_dict(&self) -> Result<StateDict>;

    /// Restores a state saved by [`Optimizer::state_dict`] from an optimizer of the same kind
    /// over parameters of the same names and shapes. Parameters without entries start fresh;
    /// a key that names no parameter, buffer or group of this optimizer is an error.
    fn load_state_dict(&mut self, state: &StateDict) -> Result<()>;

    /// Clears every parameter's gradient (PyTorch's `zero_grad(set_to_none=True)`).
    fn zero_grad(&self) {
        for g in self.param_groups() {
            for (_, p) in &g.params {
                p.zero_grad();
            }
        }
    }

    /// The learning rate of the first group (0 when there is none).
    fn lr(&self) -> f32 {
        self.param_groups().first().map_or(0.0, |g| g.lr)
    }

    /// Sets the learning rate of every group.
    fn set_lr(&mut self, lr: f32) {
        for g in self.param_groups_mut() {
            g.lr = lr;
        }
    }
}

/// A group of named parameters sharing a learning rate and weight decay.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    params: Vec<(String, Tensor)>,
    /// The learning rate in effect.
    pub lr: f32,
    /// The learning rate a scheduler starts from: set by the first scheduler attached to the
    /// optimizer (to `lr` at that time), like PyTorch's `initial_lr`.
    pub initial_lr: Option<f32>,
    /// This group's weight decay; `None` uses the optimizer's.
    pub weight_decay: Option<f32>,
}

impl ParamGroup {
    /// The group's parameters with their names.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The weight decay in effect: the group's own, else `default` (the optimizer's).
    pub fn weight_decay_or(&self, default: f32) -> f32 {
        self.weight_decay.unwrap_or(default)
    }
}

#[derive(Clone, Debug)]
struct GroupSpec {
    params: Vec<(String, Tensor)>,
    lr: Option<f32>,
    weight_decay: Option<f32>,
}

/// The parameters handed to an optimizer's constructor, organised in groups. Built from a
/// `Vec<Tensor>` (named `"0"`, `"1"`, ...), from named parameters such as a module's
/// `named_parameters()`, or group by group.
///
/// ```
/// use kiln_autograd::Tensor;
/// use kiln_optim::{AdamW, Optimizer, Params};
/// let w = Tensor::zeros(&[3, 2]).requires_grad_(true);
/// let b = Tensor::zeros(&[3]).requires_grad_(true);
/// let named = vec![("fc.weight".to_string(), w), ("fc.bias".to_string(), b)];
/// // Weights decay, biases and other 1-d parameters do not.
/// let opt = AdamW::new(Params::split_no_decay(named), 1e-3).weight_decay(0.01);
/// assert_eq!(opt.param_groups()[0].params()[0].0, "fc.weight");
/// assert_eq!(opt.param_groups()[1].params()[0].0, "fc.bias");
/// assert_eq!(opt.param_groups()[1].weight_decay, Some(0.0));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Params {
    groups: Vec<GroupSpec>,
}

impl Params {
    /// No parameters yet; add groups with [`Params::group`] / [`Params::group_with`].
    pub fn new() -> Params {
        Params::default()
    }

    /// One group of named parameters using the optimizer's defaults.
    pub fn named(params: Vec<(String, Tensor)>) -> Params {
        Params::new().group(params)
    }

    /// Adds a group that uses the optimizer's learning rate and weight decay.
    pub fn group(self, params: Vec<(String, Tensor)>) -> Params {
        self.group_with(params, None, None)
    }

    /// Adds a group with its own learning rate and/or weight decay (`None` = the optimizer's).
    pub fn group_with(mut self, params: Vec<(String, Tensor)>, lr: Option<f32>, weight_decay: Option<f32>) -> Params {
        self.groups.push(GroupSpec { params, lr, weight_decay });
        self
    }

    /// Two groups: group 0 holds the parameters that decay (with the optimizer's weight
    /// decay), group 1 those that do not (weight decay 0): biases (names ending in `bias`) and
    /// every parameter of rank ≤ 1 (norm weights and biases).
    pub fn split_no_decay(params: Vec<(String, Tensor)>) -> Params {
        Params::split_no_decay_by(params, |name, p| name.ends_with("bias") || p.rank() <= 1)
    }

    /// Like [`Params::split_no_decay`], with `no_decay(name, param)` choosing the parameters
    /// that go to the no-decay group (group 1).
    pub fn split_no_decay_by(params: Vec<(String, Tensor)>, no_decay: impl Fn(&str, &Tensor) -> bool) -> Params {
        let (off, on): (Vec<_>, Vec<_>) = params.into_iter().partition(|(n, p)| no_decay(n, p));
        Params::new().group(on).group_with(off, None, Some(0.0))
    }
}

impl From<Vec<Tensor>> for Params {
    /// One group; the parameters are named by their position, `"0"`, `"1"`, ...
    fn from(params: Vec<Tensor>) -> Params {
        Params::named(params.into_iter().enumerate().map(|(i, p)| (i.to_string(), p)).collect())
    }
}

impl From<Vec<(String, Tensor)>> for Params {
    fn from(params: Vec<(String, Tensor)>) -> Params {
        Params::named(params)
    }
}

impl From<Vec<(&str, Tensor)>> for Params {
    fn from(params: Vec<(&str, Tensor)>) -> Params {
        Params::named(params.into_iter().map(|(n, p)| (n.to_string(), p)).collect())
    }
}

impl From<ParamGroup> for Params {
    /// One group with the given group's parameters, learning rate and weight decay.
    fn from(g: ParamGroup) -> Params {
        Params::new().group_with(g.params, Some(g.lr), g.weight_decay)
    }
}

// ---------------------------------------------------------------- shared machinery

/// Groups plus per-parameter state, shared by the optimizers. `state[g][i]` belongs to
/// `groups[g].params[i]` and is `None` until that parameter's first step.
pub(crate) struct Core<S> {
    pub groups: Vec<ParamGroup>,
    pub state: Vec<Vec<Option<S>>>,
}

/// How an optimizer's per-parameter state goes to and from a [`StateDict`].
pub(crate) trait ParamState: Sized {
    /// The key suffixes this state may write (after `<param>.`).
    const KEYS: &'static [&'static str];
    /// Writes this parameter's entries under `<name>.<key>`.
    fn save(&self, name: &str, out: &mut StateDict);
    /// Rebuilds the state from a parameter's entries; `None` when it has none (not stepped yet).
    fn load(entries: &Entries) -> Result<Option<Self>>;
}

/// The [`Optimizer`] methods that only hand over to the optimizer's `core: Core<State>` field.
macro_rules! delegate_to_core {
    () => {
        fn param_groups(&self) -> &[$crate::ParamGroup] {
            &self.core.groups
        }
        fn param_groups_mut(&mut self) -> &mut [$crate::ParamGroup] {
            &mut self.core.groups
        }
        fn state_dict(&self) -> kiln_autograd::Result<$crate::StateDict> {
            self.core.state_dict()
        }
        fn load_state_dict(&mut self, state: &$crate::StateDict) -> kiln_autograd::Result<()> {
            self.core.load_state_dict(state)
        }
    };
}
pub(crate) use delegate_to_core;

impl<S: ParamState> Core<S> {
    pub fn new(params: Params, lr: f32) -> Core<S> {
        let groups: Vec<ParamGroup> = params
            .groups
            .into_iter()
            .map(|g| ParamGroup {
                params: g.params,
                lr: g.lr.unwrap_or(lr),
                initial_lr: None,
                weight_decay: g.weight_decay,
            })
            .collect();
        let state = groups.iter().map(|g| (0..g.params.len()).map(|_| None).collect()).collect();
        Core { groups, state }
    }

    /// Runs `f(lr, weight_decay, shape, param, grad, state)` for every parameter that has a
    /// gradient, with the parameter's values as a mutable slice (copied first only if shared)
    /// and the gradient as a contiguous slice. Every group's learning rate and weight decay
    /// (the group's own, else `default_wd`) and every gradient are checked first, so an invalid
    /// setting fails the step before anything changes.
    pub fn for_each_grad(
        &mut self,
        op: &'static str,
        default_wd: f32,
        mut f: impl FnMut(f32, f32, &[usize], &mut [f32], &[f32], &mut Option<S>) -> Result<()>,
    ) -> Result<()> {
        for (i, group) in self.groups.iter().enumerate() {
            let wd = group.weight_decay_or(default_wd);
            if !non_negative(group.lr) || !non_negative(wd) {
                return Err(Error::op(
                    op,
                    format!("group {i}: invalid learning rate {} or weight decay {wd}", group.lr),
                ));
            }
            for (name, p) in &group.params {
                let Some(g) = p.grad() else { continue };
                if g.dtype() != DType::F32 || g.shape() != p.shape() || p.dtype() != DType::F32 {
                    return Err(Error::op(
                        op,
                        format!(
                            "parameter {name} ({}, shape {:?}) has a {} gradient of shape {:?}",
                            p.dtype(),
                            p.shape(),
                            g.dtype(),
                            g.shape()
                        ),
                    ));
                }
            }
        }
        for (group, states) in self.groups.iter().zip(self.state.iter_mut()) {
            let wd = group.weight_decay_or(default_wd);
            for ((_, p), st) in group.params.iter().zip(states.iter_mut()) {
                let Some(g) = p.grad() else { continue };
                let g = g.f32_cow()?;
                let shape = p.shape();
                p.update_data(|data| f(group.lr, wd, shape, param_slice(op, data, &g)?, &g, st))?;
            }
        }
        Ok(())
    }

    fn check_unique_names(&self, op: &'static str) -> Result<()> {
        let mut seen = BTreeSet::new();
        for (name, _) in self.groups.iter().flat_map(|g| g.params.iter()) {
            if !seen.insert(name.as_str()) {
                return Err(Error::op(
                    op,
                    format!("two parameters are named {name:?}; state dict keys need unique names"),
                ));
            }
        }
        Ok(())
    }

    pub fn state_dict(&self) -> Result<StateDict> {
        self.check_unique_names("state_dict")?;
        let mut out = StateDict::new();
        for (i, g) in self.groups.iter().enumerate() {
            out.insert(format!("param_groups.{i}.lr"), Array::scalar(g.lr));
            if let Some(l) = g.initial_lr {
                out.insert(format!("param_groups.{i}.initial_lr"), Array::scalar(l));
            }
            for ((name, _), st) in g.params.iter().zip(&self.state[i]) {
                if let Some(st) = st {
                    st.save(name, &mut out);
                }
            }
        }
        Ok(out)
    }

    /// Loads `sd`, building each parameter's state with [`ParamState::load`].
    pub fn load_state_dict(&mut self, sd: &StateDict) -> Result<()> {
        self.check_unique_names("load_state_dict")?;
        let mut known = BTreeSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            known.insert(format!("param_groups.{i}.lr"));
            known.insert(format!("param_groups.{i}.initial_lr"));
            for (name, _) in &g.params {
                known.extend(S::KEYS.iter().map(|k| format!("{name}.{k}")));
            }
        }
        if let Some(k) = sd.keys().find(|k| !known.contains(*k)) {
            return Err(Error::op(
                "load_state_dict",
                format!("unexpected key {k:?}: no such parameter, buffer or group"),
            ));
        }
        // Build everything first so that a failure leaves the optimizer unchanged.
        let mut groups = self.groups.clone();
        let mut state = Vec::with_capacity(groups.len());
        for (i, g) in groups.iter_mut().enumerate() {
            if let Some(a) = sd.get(&format!("param_groups.{i}.lr")) {
                g.lr = scalar_f32(a, "lr")?;
            }
            if let Some(a) = sd.get(&format!("param_groups.{i}.initial_lr")) {
                g.initial_lr = Some(scalar_f32(a, "initial_lr")?);
            }
            let mut s = Vec::with_capacity(g.params.len());
            for (name, p) in &g.params {
                s.push(S::load(&Entries { sd, name, shape: p.shape() })?);
            }
            state.push(s);
        }
        self.groups = groups;
        self.state = state;
        Ok(())
    }
}

fn scalar_f32(a: &Array, what: &str) -> Result<f32> {
    if a.numel() != 1 {
        return Err(Error::op("load_state_dict", format!("{what} must be a scalar, got shape {:?}", a.shape())));
    }
    a.to_dtype(DType::F32)?.item()
}

/// One parameter's entries in a state dict being loaded.
pub(crate) struct Entries<'a> {
    sd: &'a StateDict,
    name: &'a str,
    shape: &'a [usize],
}

impl Entries<'_> {
    /// True when the parameter has any entry.
    pub fn any(&self, keys: &[&str]) -> bool {
        keys.iter().any(|k| self.sd.contains_key(&format!("{}.{k}", self.name)))
    }

    /// The f32 buffer `<param>.<key>` of the parameter's shape, if present.
    pub fn buffer(&self, key: &str) -> Result<Option<Array>> {
        let full = format!("{}.{key}", self.name);
        let Some(a) = self.sd.get(&full) else { return Ok(None) };
        if a.dtype() != DType::F32 || a.shape() != self.shape {
            return Err(Error::op(
                "load_state_dict",
                format!(
                    "{full} is a {} array of shape {:?}, the parameter is f32 of shape {:?}",
                    a.dtype(),
                    a.shape(),
                    self.shape
                ),
            ));
        }
        Ok(Some(a.contiguous()))
    }

    /// The buffer `<param>.<key>`, which must be present.
    pub fn require(&self, key: &str) -> Result<Array> {
        self.buffer(key)?.ok_or_else(|| {
            Error::op("load_state_dict", format!("{}.{key} is missing (the parameter has other state)", self.name))
        })
    }

    /// The step count `<param>.step` (a 0-d i64 or f32 array), which must be present.
    pub fn step(&self) -> Result<u64> {
        let full = format!("{}.step", self.name);
        let a = self.sd.get(&full).ok_or_else(|| Error::op("load_state_dict", format!("{full} is missing")))?;
        let v = match a.dtype() {
            DType::I64 if a.numel() == 1 => a.to_vec::<i64>()?[0],
            DType::F32 if a.numel() == 1 => a.item()? as i64,
            _ => return Err(Error::op("load_state_dict", format!("{full} must be a scalar step count, got {a:?}"))),
        };
        u64::try_from(v).map_err(|_| Error::op("load_state_dict", format!("{full} is negative ({v})")))
    }
}

/// A step count as stored in a state dict (0-d i64).
pub(crate) fn step_array(step: u64) -> Array {
    Array::from_vec(vec![step as i64], &[]).expect("one element for a 0-d array")
}

/// The parameter's values as a mutable slice (copied first only if shared), checked against
/// the gradient's length.
pub(crate) fn param_slice<'a>(op: &'static str, data: &'a mut Array, g: &[f32]) -> Result<&'a mut [f32]> {
    let w = data.make_mut_f32()?;
    if w.len() != g.len() {
        return Err(Error::op(op, format!("gradient has {} elements, parameter {}", g.len(), w.len())));
    }
    Ok(w)
}

/// Runs `f` over `bufs` (each as long as `g`) and `g`: on the calling thread for small
/// parameters, else split in halves over rayon. Elementwise kernels give bit-identical results
/// either way, and nothing is allocated.
pub(crate) fn for_chunks<const N: usize, F>(mut bufs: [&mut [f32]; N], g: &[f32], f: &F)
where
    F: Fn([&mut [f32]; N], &[f32]) + Sync,
{
    debug_assert!(bufs.iter().all(|b| b.len() == g.len()));
    if g.len() < 2 * PAR_ELEMS || rayon::current_num_threads() == 1 {
        return f(bufs, g);
    }
    let mid = g.len() / 2;
    let right = bufs.each_mut().map(|b| {
        let (l, r) = std::mem::take(b).split_at_mut(mid);
        *b = l;
        r
    });
    let (gl, gr) = g.split_at(mid);
    rayon::join(|| for_chunks(bufs, gl, f), || for_chunks(right, gr, f));
}

/// `x ≥ 0` (false for NaN): hyperparameter validation.
pub(crate) fn non_negative(x: f32) -> bool {
    x >= 0.0
}
