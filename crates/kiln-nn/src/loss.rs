//! Loss modules, PyTorch's `nn.CrossEntropyLoss` and friends: thin structs that hold a loss's
//! options and call [`kiln_autograd::ops::loss`] in [`forward`](CrossEntropyLoss::forward).
//!
//! They have no trainable parameters (class weights and `pos_weight` are constants given at
//! construction), so they do not implement [`Module`](crate::Module). Options are set with
//! builder methods; `new()` gives PyTorch's defaults.
//!
//! ```
//! use kiln_nn::loss::{CrossEntropyLoss, Reduction};
//! use kiln_autograd::Tensor;
//! let loss_fn = CrossEntropyLoss::new().label_smoothing(0.1).reduction(Reduction::Sum);
//! let logits = Tensor::zeros(&[2, 3]).requires_grad_(true);
//! let target = Tensor::from_vec_i64(vec![0, 2], &[2])?;
//! let loss = loss_fn.forward(&logits, &target)?;
//! loss.backward()?;
//! # Ok::<(), kiln_autograd::Error>(())
//! ```

use kiln_autograd::ops::loss::{self, BceWithLogitsOptions, CrossEntropyOptions, NllLossOptions};
use kiln_autograd::{Result, Tensor};

pub use kiln_autograd::ops::loss::Reduction;

/// Cross-entropy of logits against class indices (`nn.CrossEntropyLoss`): see
/// [`loss::cross_entropy`]. Defaults: no weight, `ignore_index` -100, mean, no smoothing.
#[derive(Debug, Clone, Default)]
pub struct CrossEntropyLoss {
    options: CrossEntropyOptions,
}

impl CrossEntropyLoss {
    /// The loss with PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Per-class weights, shape `[C]`.
    pub fn weight(mut self, weight: Tensor) -> Self {
        self.options.weight = Some(weight);
        self
    }
    /// Targets equal to `ignore_index` contribute nothing.
    pub fn ignore_index(mut self, ignore_index: i64) -> Self {
        self.options.ignore_index = ignore_index;
        self
    }
    /// How the per-element losses are reduced.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.options.reduction = reduction;
        self
    }
    /// Label smoothing ε in [0, 1].
    pub fn label_smoothing(mut self, eps: f32) -> Self {
        self.options.label_smoothing = eps;
        self
    }
    /// The options in use.
    pub fn options(&self) -> &CrossEntropyOptions {
        &self.options
    }
    /// The loss of logits `input` (`[N, C]`, `[N, C, d...]` or `[C]`) for class indices `target`.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        loss::cross_entropy(input, target, &self.options)
    }
}

/// Negative log-likelihood of log-probabilities against class indices (`nn.NLLLoss`): see
/// [`loss::nll_loss`]. Defaults: no weight, `ignore_index` -100, mean.
#[derive(Debug, Clone, Default)]
pub struct NLLLoss {
    options: NllLossOptions,
}

impl NLLLoss {
    /// The loss with PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Per-class weights, shape `[C]`.
    pub fn weight(mut self, weight: Tensor) -> Self {
        self.options.weight = Some(weight);
        self
    }
    /// Targets equal to `ignore_index` contribute nothing.
    pub fn ignore_index(mut self, ignore_index: i64) -> Self {
        self.options.ignore_index = ignore_index;
        self
    }
    /// How the per-element losses are reduced.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.options.reduction = reduction;
        self
    }
    /// The options in use.
    pub fn options(&self) -> &NllLossOptions {
        &self.options
    }
    /// The loss of log-probabilities `input` for class indices `target`.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        loss::nll_loss(input, target, &self.options)
    }
}

/// Mean squared error (`nn.MSELoss`): see [`loss::mse_loss`]. Default reduction: mean.
#[derive(Debug, Clone, Copy, Default)]
pub struct MSELoss {
    /// How the per-element losses are reduced.
    pub reduction: Reduction,
}

impl MSELoss {
    /// The loss with the mean reduction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> Self {
        MSELoss { reduction }
    }
    /// `(input − target)²`, reduced.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        loss::mse_loss(input, target, self.reduction)
    }
}

/// Mean absolute error (`nn.L1Loss`): see [`loss::l1_loss`]. Default reduction: mean.
#[derive(Debug, Clone, Copy, Default)]
pub struct L1Loss {
    /// How the per-element losses are reduced.
    pub reduction: Reduction,
}

impl L1Loss {
    /// The loss with the mean reduction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the reduction.
    pub fn reduction(self, reduction: Reduction) -> Self {
        L1Loss { reduction }
    }
    /// `|input − target|`, reduced.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        loss::l1_loss(input, target, self.reduction)
    }
}

/// Smooth L1 loss (`nn.SmoothL1Loss`): see [`loss::smooth_l1_loss`]. Defaults: mean, beta 1.
#[derive(Debug, Clone, Copy)]
pub struct SmoothL1Loss {
    /// How the per-element losses are reduced.
    pub reduction: Reduction,
    /// Where the loss turns from quadratic to linear (>= 0).
    pub beta: f32,
}

impl Default for SmoothL1Loss {
    fn default() -> Self {
        SmoothL1Loss { reduction: Reduction::Mean, beta: 1.0 }
    }
}

impl SmoothL1Loss {
    /// The loss with PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the reduction.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
    /// Sets beta.
    pub fn beta(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }
    /// The smooth L1 loss of `input − target`, reduced.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        loss::smooth_l1_loss(input, target, self.reduction, self.beta)
    }
}

/// Binary cross-entropy of logits (`nn.BCEWithLogitsLoss`): see
/// [`loss::binary_cross_entropy_with_logits`]. Defaults: no weights, mean.
#[derive(Debug, Clone, Default)]
pub struct BCEWithLogitsLoss {
    options: BceWithLogitsOptions,
}

impl BCEWithLogitsLoss {
    /// The loss with PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Per-element weights, broadcast to the input's shape.
    pub fn weight(mut self, weight: Tensor) -> Self {
        self.options.weight = Some(weight);
        self
    }
    /// Weight of the positive term, broadcast along the input's last dim.
    pub fn pos_weight(mut self, pos_weight: Tensor) -> Self {
        self.options.pos_weight = Some(pos_weight);
        self
    }
    /// How the per-element losses are reduced.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.options.reduction = reduction;
        self
    }
    /// The options in use.
    pub fn options(&self) -> &BceWithLogitsOptions {
        &self.options
    }
    /// The loss of logits `input` for targets in [0, 1].
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        loss::binary_cross_entropy_with_logits(input, target, &self.options)
    }
}

/// Kullback–Leibler divergence (`nn.KLDivLoss`): see [`loss::kl_div`]. Defaults: mean (PyTorch
/// recommends `BatchMean`), `log_target` false.
#[derive(Debug, Clone, Copy, Default)]
pub struct KLDivLoss {
    /// How the per-element losses are reduced (`BatchMean` allowed).
    pub reduction: Reduction,
    /// Whether the target is given as log-probabilities.
    pub log_target: bool,
}

impl KLDivLoss {
    /// The loss with PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the reduction.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
    /// Sets whether the target is given as log-probabilities.
    pub fn log_target(mut self, log_target: bool) -> Self {
        self.log_target = log_target;
        self
    }
    /// The divergence of log-probabilities `input` from `target`.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        loss::kl_div(input, target, self.reduction, self.log_target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_forward_their_options() {
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 0.5, -1.0, 0.0], &[2, 3]).unwrap();
        let tg = Tensor::from_vec_i64(vec![2, 1], &[2]).unwrap();
        // Sample 1 ignored: the mean is sample 0's loss, ln(e + e² + e³) − 3.
        let ce = CrossEntropyLoss::new().ignore_index(1).forward(&x, &tg).unwrap().item().unwrap();
        let e = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln() - 3.0;
        assert!((ce - e).abs() < 1e-6);
        let w = Tensor::from_vec(vec![1.0, 1.0, 2.0], &[3]).unwrap();
        let nll = NLLLoss::new().weight(w).reduction(Reduction::None).forward(&x, &tg).unwrap();
        assert_eq!(nll.to_vec_f32().unwrap(), vec![-6.0, 1.0]);
        let y = Tensor::zeros(&[2, 3]);
        assert_eq!(MSELoss::new().reduction(Reduction::Sum).forward(&x, &y).unwrap().item().unwrap(), 15.25);
        assert_eq!(L1Loss::new().reduction(Reduction::Sum).forward(&x, &y).unwrap().item().unwrap(), 7.5);
        let s = SmoothL1Loss::new().beta(2.0).reduction(Reduction::None).forward(&x, &y).unwrap();
        assert_eq!(s.to_vec_f32().unwrap(), vec![0.25, 1.0, 2.0, 0.0625, 0.25, 0.0]);
        let b = BCEWithLogitsLoss::new().forward(&Tensor::zeros(&[4]), &Tensor::ones(&[4])).unwrap();
        assert!((b.item().unwrap() - 2f32.ln()).abs() < 1e-6);
        let k = KLDivLoss::new().log_target(true).reduction(Reduction::BatchMean);
        assert_eq!(k.forward(&y, &y).unwrap().item().unwrap(), 0.0);
        assert!(CrossEntropyLoss::new().forward(&x, &Tensor::zeros(&[2])).is_err());
    }
}
