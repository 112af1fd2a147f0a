//! Renaming and transforming the tensors of a foreign state dict before loading it:
//! [`KeyMap`] and [`LoadOptions`].

use kiln_tensor::{Array, Error, Result};
use regex::Regex;
use std::collections::BTreeMap;

type MapFn = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;
type TransformFn = Box<dyn Fn(&str, Array) -> Result<Array> + Send + Sync>;

enum Rule {
    StripPrefix(String),
    AddPrefix(String),
    Regex(Regex, String),
    Map(MapFn),
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::StripPrefix(p) => write!(f, "strip_prefix({p:?})"),
            Rule::AddPrefix(p) => write!(f, "add_prefix({p:?})"),
            Rule::Regex(r, s) => write!(f, "regex({:?} -> {s:?})", r.as_str()),
            Rule::Map(_) => write!(f, "map(<closure>)"),
        }
    }
}

/// A sequence of renaming rules applied to every name of a state dict, in the order they
/// were added: strip a prefix, add a prefix, regex replace, or any closure (which may also
/// drop a name).
///
/// ```
/// use kiln_io::KeyMap;
/// let km = KeyMap::new()
///     .strip_prefix("transformer.")
///     .regex(r"^h\.(\d+)\.", "layers.$1.")?
///     .map(|n| if n.starts_with("lm_head.") { None } else { Some(n.replace("ln_", "norm")) });
/// assert_eq!(km.apply("transformer.h.11.attn.c_attn.weight").as_deref(), Some("layers.11.attn.c_attn.weight"));
/// assert_eq!(km.apply("transformer.ln_f.bias").as_deref(), Some("normf.bias"));
/// assert_eq!(km.apply("lm_head.weight"), None);
/// # Ok::<(), kiln_tensor::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct KeyMap {
    rules: Vec<Rule>,
}

impl KeyMap {
    /// No rules: every name is kept as it is.
    pub fn new() -> KeyMap {
        KeyMap::default()
    }

    /// Removes `prefix` from the names that start with it; other names are kept.
    pub fn strip_prefix(mut self, prefix: impl Into<String>) -> KeyMap {
        self.rules.push(Rule::StripPrefix(prefix.into()));
        self
    }

    /// Puts `prefix` in front of every name.
    pub fn add_prefix(mut self, prefix: impl Into<String>) -> KeyMap {
        self.rules.push(Rule::AddPrefix(prefix.into()));
        self
    }

    /// Replaces every match of the regular expression `pattern` (the `regex` crate's syntax)
    /// with `replacement`, in which `$1`, `${name}` refer to capture groups. Errors on an
    /// invalid pattern.
    pub fn regex(mut self, pattern: &str, replacement: impl Into<String>) -> Result<KeyMap> {
        let re = Regex::new(pattern).map_err(|e| Error::op("key_map", format!("invalid regex {pattern:?}: {e}")))?;
        self.rules.push(Rule::Regex(re, replacement.into()));
        Ok(self)
    }

    /// Applies `f` to each name: `Some(new)` renames it, `None` drops the entry.
    pub fn map(mut self, f: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> KeyMap {
        self.rules.push(Rule::Map(Box::new(f)));
        self
    }

    /// The name `name` maps to, or `None` when a rule drops it.
    pub fn apply(&self, name: &str) -> Option<String> {
        let mut n = name.to_string();
        for rule in &self.rules {
            n = match rule {
                Rule::StripPrefix(p) => match n.strip_prefix(p.as_str()) {
                    Some(rest) => rest.to_string(),
                    None => n,
                },
                Rule::AddPrefix(p) => format!("{p}{n}"),
                Rule::Regex(re, rep) => re.replace_all(&n, rep.as_str()).into_owned(),
                Rule::Map(f) => f(&n)?,
            };
        }
        Some(n)
    }

    /// Renames every entry of `map` ([`KeyMap::apply`]), dropping the entries a rule drops.
    /// Errors when two names map to the same one.
    pub fn remap<T>(&self, map: BTreeMap<String, T>) -> Result<BTreeMap<String, T>> {
        let mut out = BTreeMap::new();
        let mut from: BTreeMap<String, String> = BTreeMap::new();
        for (name, v) in map {
            let Some(new) = self.apply(&name) else { continue };
            if let Some(prev) = from.insert(new.clone(), name.clone()) {
                return Err(Error::op("key_map", format!("{prev:?} and {name:?} both map to {new:?}")));
            }
            out.insert(new, v);
        }
        Ok(out)
    }
}

/// How to load a state dict into a module (see [`crate::load_module`]): strict or not, a
/// [`KeyMap`] renaming the file's names to the module's, and per-tensor transforms applied
/// after renaming, in the order added.
///
/// ```
/// use kiln_io::{KeyMap, LoadOptions};
/// use kiln_tensor::Array;
/// use std::collections::BTreeMap;
/// // A file with GPT-2 style `[in, out]` weights under a `model.` prefix.
/// let opts = LoadOptions::new()
///     .key_map(KeyMap::new().strip_prefix("model."))
///     .transpose("*.weight");
/// let mut sd = BTreeMap::new();
/// sd.insert("model.fc.weight".to_string(), Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2])?);
/// let sd = opts.apply(sd)?;
/// assert_eq!(sd["fc.weight"].shape(), &[2, 3]);
/// assert_eq!(sd["fc.weight"].to_vec_f32()?, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
/// # Ok::<(), kiln_tensor::Error>(())
/// ```
pub struct LoadOptions {
    strict: bool,
    key_map: KeyMap,
    transforms: Vec<TransformFn>,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("strict", &self.strict)
            .field("key_map", &self.key_map)
            .field("transforms", &self.transforms.len())
            .finish()
    }
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions { strict: true, key_map: KeyMap::new(), transforms: Vec::new() }
    }
}

impl LoadOptions {
    /// Strict, no renaming, no transforms.
    pub fn new() -> LoadOptions {
        LoadOptions::default()
    }

    /// Strict (the default): any missing, unexpected or shape-mismatched name is an error and
    /// nothing is loaded. Not strict: what matches is loaded and the rest reported.
    pub fn strict(mut self, strict: bool) -> LoadOptions {
        self.strict = strict;
        self
    }

    /// Whether loading is strict.
    pub fn is_strict(&self) -> bool {
        self.strict
    }

    /// Renames the file's names with `key_map` before matching them to the module's.
    pub fn key_map(mut self, key_map: KeyMap) -> LoadOptions {
        self.key_map = key_map;
        self
    }

    /// Adds a transform: `f(name, array)` (with the renamed name) returns the array to load,
    /// e.g. a transposed or reshaped one; return the array unchanged for names it does not
    /// concern.
    pub fn transform(mut self, f: impl Fn(&str, Array) -> Result<Array> + Send + Sync + 'static) -> LoadOptions {
        self.transforms.push(Box::new(f));
        self
    }

    /// Adds a transform that transposes (and makes contiguous) every 2-d array whose renamed
    /// name matches the glob `pattern` (`*` any run of characters, `?` one), for files that
    /// store linear weights as `[in, out]` (e.g. GPT-2's `Conv1D`).
    pub fn transpose(self, pattern: impl Into<String>) -> LoadOptions {
        let pattern = pattern.into();
        self.transform(move |name, a| {
            if a.rank() == 2 && kiln_nn::module::glob_match(&pattern, name) {
                Ok(a.transpose(0, 1)?.contiguous())
            } else {
                Ok(a)
            }
        })
    }

    /// Renames `state` with the key map and runs every transform over the result.
    pub fn apply(&self, state: BTreeMap<String, Array>) -> Result<BTreeMap<String, Array>> {
        let mut out = self.key_map.remap(state)?;
        if !self.transforms.is_empty() {
            for (name, a) in out.iter_mut() {
                let mut v = a.clone();
                for t in &self.transforms {
                    v = t(name, v)?;
                }
                *a = v;
            }
        }
        Ok(out)
    }
}
