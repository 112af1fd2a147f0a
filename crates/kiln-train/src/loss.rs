//! [`Loss`]: the training objective, `f(output, target) -> scalar tensor`.

use kiln_autograd::ops::loss::{cross_entropy, mse_loss, CrossEntropyOptions, Reduction};
use kiln_autograd::{Result, Tensor};
use std::sync::Arc;

type LossFn = dyn Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync;

/// A loss: maps the model's output and the batch's targets to a scalar (mean over the batch).
/// Cheap to clone. Any closure `Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync` converts
/// into one (the trainer runs it on kiln's worker threads).
#[derive(Clone)]
pub struct Loss {
    name: &'static str,
    f: Arc<LossFn>,
}

impl std::fmt::Debug for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Loss").field(&self.name).finish()
    }
}

impl Loss {
    /// A named loss from a function.
    pub fn new(name: &'static str, f: impl Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static) -> Loss {
        Loss { name, f: Arc::new(f) }
    }

    /// Cross-entropy of logits `[N, C, ...]` against class indices (PyTorch's defaults).
    pub fn cross_entropy() -> Loss {
        Loss::cross_entropy_with(CrossEntropyOptions::default())
    }

    /// Cross-entropy with options (class weights, label smoothing, `ignore_index`).
    pub fn cross_entropy_with(opts: CrossEntropyOptions) -> Loss {
        Loss::new("cross_entropy", move |y, t| cross_entropy(y, t, &opts))
    }

    /// Mean squared error.
    pub fn mse() -> Loss {
        Loss::new("mse", |y, t| mse_loss(y, t, Reduction::Mean))
    }

    /// The loss's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The loss of `output` against `target`.
    pub fn compute(&self, output: &Tensor, target: &Tensor) -> Result<Tensor> {
        (self.f)(output, target)
    }
}

impl Default for Loss {
    /// [`Loss::cross_entropy`].
    fn default() -> Loss {
        Loss::cross_entropy()
    }
}

impl<F: Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static> From<F> for Loss {
    fn from(f: F) -> Loss {
        Loss::new("custom", f)
    }
}
