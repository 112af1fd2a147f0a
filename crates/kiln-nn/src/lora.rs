//! LoRA (low-rank adaptation, Hu et al. 2021) for fine-tuning any model built from
//! [`Linear`] layers, without touching the model's code.
//!
//! [`inject_lora`] gives every `Linear` whose module name matches a glob a [`LoraAdapter`] and
//! freezes everything else, so only the adapters train; [`merge_lora`] folds the adapters into
//! the base weights and removes them, after which [`Module::state_dict`] has exactly the
//! model's original names and shapes again (ready to save for Hugging Face `transformers`).
//!
//! An adapted `Linear` computes `y = x·Wᵀ + b + (alpha/rank)·dropout(x)·Aᵀ·Bᵀ` with `A`
//! `[rank, in_features]` (PyTorch's default `Linear` initialisation, kaiming-uniform with
//! `a = √5`) and `B` `[out_features, rank]` (zeros), so the adapted model starts equal to the
//! base model. While present, the adapter's parameters are named as in PEFT:
//! `<linear>.lora_A.weight` and `<linear>.lora_B.weight`.
//!
//! ```
//! use kiln_autograd::Tensor;
//! use kiln_nn::lora::{inject_lora, lora_parameters, merge_lora, LoraConfig};
//! use kiln_nn::{Forward, Linear, Module};
//!
//! #[derive(Module)]
//! struct Attention {
//!     query: Linear,
//!     key: Linear,
//!     value: Linear,
//! }
//!
//! let mut r = kiln_nn::init::rng(0);
//! let mut m = Attention {
//!     query: Linear::new(8, 8, true, &mut r),
//!     key: Linear::new(8, 8, true, &mut r),
//!     value: Linear::new(8, 8, true, &mut r),
//! };
//! let original: Vec<String> = m.state_dict().into_keys().collect();
//!
//! assert_eq!(inject_lora(&mut m, "query", &LoraConfig::new(2, 4.0))?, 1);
//! assert_eq!(inject_lora(&mut m, "value", &LoraConfig::new(2, 4.0))?, 1);
//! // Only the adapters train: 2 · 2·(8 + 8) elements.
//! assert_eq!(m.num_parameters().trainable, 64);
//! assert_eq!(lora_parameters(&m)[0].0, "query.lora_A.weight");
//!
//! // ... train with an optimizer over `m.parameters()` ...
//!
//! assert_eq!(merge_lora(&mut m)?, 2);
//! assert_eq!(m.state_dict().into_keys().collect::<Vec<_>>(), original);
//! # Ok::<(), kiln_autograd::Error>(())
//! ```

use crate::module::{glob_match, join};
use crate::{init, Dropout, Forward, Linear, Module, TensorKind};
use kiln_autograd::{DType, Error, Result, Tensor};
use rand::Rng;

/// How [`inject_lora`] builds adapters: rank `r`, scale `alpha` (the update is scaled by
/// `alpha / r`), dropout probability on the adapter's input and the seed of its random draws.
///
/// ```
/// use kiln_nn::lora::LoraConfig;
/// let c = LoraConfig::new(16, 32.0).dropout(0.05).seed(7);
/// assert_eq!(c.scaling(), 2.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of the update `B·A` (at least 1).
    pub rank: usize,
    /// Scale: the update is multiplied by `alpha / rank`.
    pub alpha: f32,
    /// Dropout probability applied to the adapter's input in training mode, in `[0, 1)`.
    pub dropout: f32,
    /// Seed of the `A` initialisation and of the dropout masks.
    pub seed: u64,
}

impl LoraConfig {
    /// Rank `rank` and scale `alpha`, no dropout, seed 0.
    pub fn new(rank: usize, alpha: f32) -> LoraConfig {
        LoraConfig { rank, alpha, dropout: 0.0, seed: 0 }
    }

    /// Sets the dropout probability (builder style).
    pub fn dropout(mut self, p: f32) -> LoraConfig {
        self.dropout = p;
        self
    }

    /// Sets the seed (builder style).
    pub fn seed(mut self, seed: u64) -> LoraConfig {
        self.seed = seed;
        self
    }

    /// The factor `alpha / rank` applied to the update.
    pub fn scaling(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    /// Checks the rank, alpha and dropout probability.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::op("lora", "rank must be at least 1, got 0"));
        }
        if !self.alpha.is_finite() {
            return Err(Error::op("lora", format!("alpha must be finite, got {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::op("lora", format!("dropout must be in [0, 1), got {}", self.dropout)));
        }
        Ok(())
    }
}

impl Default for LoraConfig {
    /// PEFT's defaults: rank 8, alpha 8, no dropout.
    fn default() -> LoraConfig {
        LoraConfig::new(8, 8.0)
    }
}

/// The low-rank update of one [`Linear`]: `delta(x) = scaling · dropout(x)·Aᵀ·Bᵀ`.
///
/// Its parameters are named `lora_A.weight` and `lora_B.weight` under the `Linear`'s name. It
/// is part of its `Linear`, not a submodule of its own: [`Module::visit_modules`] does not list
/// it. See [`Linear::add_lora`].
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    /// `A`, `[rank, in_features]`.
    pub lora_a: Tensor,
    /// `B`, `[out_features, rank]`.
    pub lora_b: Tensor,
    dropout: Option<Dropout>,
    scaling: f32,
}

impl LoraAdapter {
    /// An adapter for a `[out_features, in_features]` weight: `A` drawn from `rng` like a
    /// `Linear` weight, `B` zeros, both requiring grad; its dropout (if any) starts in
    /// training mode with a seed drawn from `rng`.
    pub fn new(
        in_features: usize,
        out_features: usize,
        config: &LoraConfig,
        rng: &mut impl Rng,
    ) -> Result<LoraAdapter> {
        config.validate()?;
        let lora_a = init::default_weight(&[config.rank, in_features], rng);
        let lora_b = Tensor::zeros(&[out_features, config.rank]).requires_grad_(true);
        let dropout = if config.dropout > 0.0 { Some(Dropout::with_seed(config.dropout, rng.gen())?) } else { None };
        Ok(LoraAdapter { lora_a, lora_b, dropout, scaling: config.scaling() })
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.lora_a.shape()[0]
    }

    /// The factor `alpha / rank` applied to the update.
    pub fn scaling(&self) -> f32 {
        self.scaling
    }

    /// The dropout on the adapter's input, if any (it has its own generator).
    pub fn dropout(&self) -> Option<&Dropout> {
        self.dropout.as_ref()
    }

    /// The dropout probability on the adapter's input (0 without dropout).
    pub fn dropout_p(&self) -> f32 {
        self.dropout.as_ref().map_or(0.0, Dropout::p)
    }

    /// The update `scaling · dropout(x)·Aᵀ·Bᵀ` for `x` `[*, in_features]`.
    pub fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let h = match &self.dropout {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        // Scale the narrow `[*, rank]` intermediate rather than the `[*, out]` result.
        let h = h.try_linear(&self.lora_a, None)?;
        let h = if self.scaling == 1.0 { h } else { h.mul_scalar(self.scaling) };
        h.try_linear(&self.lora_b, None)
    }

    /// `scaling · B·A`, `[out_features, in_features]`: what merging adds to the base weight.
    pub fn weight_delta(&self) -> Result<kiln_autograd::Array> {
        self.lora_b.data().matmul(&self.lora_a.data())?.mul_scalar(self.scaling)
    }
}

/// The adapter's tensors are `lora_A.weight` and `lora_B.weight` under the given prefix.
impl Module for LoraAdapter {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, TensorKind)) {
        f(&join(prefix, "lora_A.weight"), &self.lora_a, TensorKind::Parameter);
        f(&join(prefix, "lora_B.weight"), &self.lora_b, TensorKind::Parameter);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Tensor, TensorKind)) {
        f(&join(prefix, "lora_A.weight"), &mut self.lora_a, TensorKind::Parameter);
        f(&join(prefix, "lora_B.weight"), &mut self.lora_b, TensorKind::Parameter);
    }
    fn visit_modules<'a>(&'a self, _: &str, _: &mut dyn FnMut(&str, &'a dyn Module)) {}
    fn visit_modules_mut(&mut self, _: &str, _: &mut dyn FnMut(&str, &mut dyn Module)) {}
    fn set_training(&mut self, training: bool) {
        self.dropout.set_training(training);
    }
    fn training_mode(&self) -> Option<bool> {
        self.dropout.training_mode()
    }
}

fn as_linear(m: &dyn Module) -> Option<&Linear> {
    m.as_any().and_then(|a| a.downcast_ref::<Linear>())
}

fn as_linear_mut(m: &mut dyn Module) -> Option<&mut Linear> {
    m.as_any_mut().and_then(|a| a.downcast_mut::<Linear>())
}

/// Gives every [`Linear`] whose module name matches the glob `pattern` (same globs as
/// [`Module::freeze`], over the names of [`Module::named_modules`], e.g. `"*.query"`) a fresh
/// [`LoraAdapter`] built from `config`, then freezes every parameter of `model` except the
/// adapters' (those of earlier calls included), so only the adapters train. Adapter dropout
/// starts in the model's current mode. Returns the number of `Linear` layers adapted.
///
/// Errors, leaving the model unchanged, when no `Linear` matches (the message names the
/// pattern and some `Linear` names), when a matching `Linear` already has an adapter, when its
/// weight is not f32, or when `config` is invalid.
pub fn inject_lora<M: Module + ?Sized>(model: &mut M, pattern: &str, config: &LoraConfig) -> Result<usize> {
    config.validate()?;
    let mut targets = 0;
    let mut other_matches = 0;
    let mut linears = Vec::new();
    let mut problem = None;
    model.visit_modules("", &mut |name, m| {
        let matched = glob_match(pattern, name);
        match as_linear(m) {
            Some(l) => {
                linears.push(name.to_string());
                if !matched || problem.is_some() {
                    return;
                }
                targets += 1;
                if l.lora().is_some() {
                    problem =
                        Some(format!("Linear {name:?} already has a LoRA adapter (merge_lora or take_lora it first)"));
                } else if l.weight.dtype() != DType::F32 {
                    problem = Some(format!("Linear {name:?} has a {} weight; LoRA needs f32", l.weight.dtype()));
                }
            }
            None => other_matches += usize::from(matched),
        }
    });
    // Freezing the rest cannot fail halfway either: every trainable parameter is a leaf.
    model.visit("", &mut |name, t, kind| {
        if problem.is_none() && kind == TensorKind::Parameter && t.requires_grad() && !t.is_leaf() {
            problem = Some(format!("parameter {name} is not a leaf tensor and cannot be frozen"));
        }
    });
    if let Some(p) = problem {
        return Err(Error::op("inject_lora", p));
    }
    if targets == 0 {
        let shown: Vec<&str> = linears.iter().take(8).map(String::as_str).collect();
        let more =
            if linears.len() > shown.len() { format!(", ... ({} in all)", linears.len()) } else { String::new() };
        let others = if other_matches > 0 {
            format!(" (it matches {other_matches} module(s) that are not Linear)")
        } else {
            String::new()
        };
        return Err(Error::op(
            "inject_lora",
            format!(
                "pattern {pattern:?} matches no Linear module{others}; the Linear modules are: [{}{more}]",
                shown.join(", ")
            ),
        ));
    }

    let training = model.training_mode().unwrap_or(true);
    let mut rng = init::rng(config.seed);
    let mut failure = None;
    model.visit_modules_mut("", &mut |name, m| {
        if failure.is_some() || !glob_match(pattern, name) {
            return;
        }
        if let Some(l) = as_linear_mut(m) {
            match l.add_lora(config, &mut rng) {
                Ok(()) => l.set_training(training),
                Err(e) => failure = Some(e),
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    freeze_all_but_adapters(model)?;
    Ok(targets)
}

/// Stops every parameter that is not a LoRA adapter's from requiring grad.
fn freeze_all_but_adapters<M: Module + ?Sized>(model: &M) -> Result<()> {
    let adapters: Vec<Tensor> = lora_parameters(model).into_iter().map(|(_, t)| t).collect();
    let mut to_freeze = Vec::new();
    model.visit("", &mut |_, t, k| {
        if k == TensorKind::Parameter && t.requires_grad() && !adapters.iter().any(|a| a.same(t)) {
            to_freeze.push(t.clone());
        }
    });
    to_freeze.iter().try_for_each(|t| t.try_requires_grad_(false))
}

/// The parameters of every LoRA adapter in `model`, with their names
/// (`<linear>.lora_A.weight`, `<linear>.lora_B.weight`), in visiting order: what an optimizer
/// needs, or what a PEFT-style adapter file holds.
pub fn lora_parameters<M: Module + ?Sized>(model: &M) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    model.visit_modules("", &mut |name, m| {
        if let Some(a) = as_linear(m).and_then(Linear::lora) {
            a.visit(name, &mut |n, t, _| out.push((n.to_string(), t.clone())));
        }
    });
    out
}

/// Folds every LoRA adapter of `model` into its base weight (`W += (alpha/rank)·B·A`) and
/// removes it, so the model computes what it computed with the adapter (in evaluation mode)
/// and its [`Module::state_dict`] has the original names and shapes. Returns how many adapters
/// were merged (0 when there are none). Parameters keep their `requires_grad`: the base
/// weights stay frozen (see [`Module::unfreeze`]).
///
/// A base weight shared with another module (tied embeddings) changes there too.
pub fn merge_lora<M: Module + ?Sized>(model: &mut M) -> Result<usize> {
    // Check every adapter first so an error leaves the model unchanged.
    let mut problem = None;
    model.visit_modules("", &mut |name, m| {
        if let Some(l) = as_linear(m) {
            if problem.is_none() {
                problem = l.check_lora().err().map(|e| format!("Linear {name:?}: {e}"));
            }
        }
    });
    if let Some(p) = problem {
        return Err(Error::op("merge_lora", p));
    }
    let mut merged = 0;
    let mut failure = None;
    model.visit_modules_mut("", &mut |_, m| {
        if failure.is_some() {
            return;
        }
        if let Some(l) = as_linear_mut(m) {
            match l.merge_lora() {
                Ok(done) => merged += usize::from(done),
                Err(e) => failure = Some(e),
            }
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(merged),
    }
}
