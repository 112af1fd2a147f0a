//! Loss functions (PyTorch's `torch.nn.functional` losses): [`cross_entropy`], [`nll_loss`],
//! [`mse_loss`], [`l1_loss`], [`smooth_l1_loss`], [`binary_cross_entropy_with_logits`] and
//! [`kl_div`].
//!
//! Each is one recorded op whose backward is a dedicated kernel (cross-entropy's is the fused
//! `softmax − one-hot`). Every floating-point operand gets a gradient when it requires one,
//! class weights and `pos_weight` included.
//!
//! ```
//! use kiln_autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
//! use kiln_autograd::Tensor;
//! // Uniform logits over 4 classes: the loss is ln 4 whatever the target.
//! let logits = Tensor::zeros(&[2, 4]).requires_grad_(true);
//! let target = Tensor::from_vec_i64(vec![1, 3], &[2])?;
//! let loss = cross_entropy(&logits, &target, &CrossEntropyOptions::default())?;
//! assert!((loss.item()? - 4f32.ln()).abs() < 1e-6);
//! loss.backward()?;
//! # Ok::<(), kiln_autograd::Error>(())
//! ```

use crate::Tensor;
use kiln_tensor::ops::loss::{ClassLossContext, ClassLossOptions};
use kiln_tensor::{Array, Result};

pub use kiln_tensor::ops::loss::Reduction;

/// Options of [`cross_entropy`]; `Default` gives PyTorch's defaults (no weight,
/// `ignore_index` -100, mean, no label smoothing).
#[derive(Debug, Clone)]
pub struct CrossEntropyOptions {
    /// Per-class weights, shape `[C]`.
    pub weight: Option<Tensor>,
    /// Targets equal to this contribute nothing (it may be a valid class).
    pub ignore_index: i64,
    /// `None`, `Mean` (divided by the summed weight of the non-ignored targets) or `Sum`.
    pub reduction: Reduction,
    /// Label smoothing ε in [0, 1].
    pub label_smoothing: f32,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions { weight: None, ignore_index: -100, reduction: Reduction::Mean, label_smoothing: 0.0 }
    }
}

/// Options of [`nll_loss`]; `Default` gives PyTorch's defaults (no weight, `ignore_index`
/// -100, mean).
#[derive(Debug, Clone)]
pub struct NllLossOptions {
    /// Per-class weights, shape `[C]`.
    pub weight: Option<Tensor>,
    /// Targets equal to this contribute nothing (it may be a valid class).
    pub ignore_index: i64,
    /// `None`, `Mean` (divided by the summed weight of the non-ignored targets) or `Sum`.
    pub reduction: Reduction,
}

impl Default for NllLossOptions {
    fn default() -> Self {
        NllLossOptions { weight: None, ignore_index: -100, reduction: Reduction::Mean }
    }
}

/// Options of [`binary_cross_entropy_with_logits`]; `Default`: no weights, mean.
#[derive(Debug, Clone, Default)]
pub struct BceWithLogitsOptions {
    /// Per-element weights, broadcast to the input's shape.
    pub weight: Option<Tensor>,
    /// Weight of the positive term, broadcast to the input's shape (normally `[C]`, one per
    /// class of the last dim).
    pub pos_weight: Option<Tensor>,
    /// `None`, `Mean` or `Sum`.
    pub reduction: Reduction,
}

/// Records a class loss (cross-entropy or NLL) whose backward is `ctx`'s.
fn class_loss(
    out: Array,
    name: &'static str,
    input: &Tensor,
    weight: Option<&Tensor>,
    ctx: ClassLossContext,
) -> Tensor {
    match weight {
        Some(w) => Tensor::from_op(out, name, &[input, w], move |g, needs| {
            let (gi, gw) = ctx.backward(g, needs[0], needs[1])?;
            Ok(vec![gi, gw])
        }),
        None => Tensor::from_op(out, name, &[input], move |g, needs| Ok(vec![ctx.backward(g, needs[0], false)?.0])),
    }
}

/// Cross-entropy of logits `input` (`[C]`, `[N, C]` or `[N, C, d1, ...]`, classes on dim 1)
/// against class indices `target` (i64, `[]`, `[N]` or `[N, d1, ...]`), PyTorch's
/// `F.cross_entropy`: `log_softmax` and NLL fused in one stable kernel, with class weights,
/// `ignore_index` and label smoothing. Errors on a target of the wrong dtype or shape and on a
/// class index out of range (other than `ignore_index`).
pub fn cross_entropy(input: &Tensor, target: &Tensor, opts: &CrossEntropyOptions) -> Result<Tensor> {
    let kopts = ClassLossOptions {
        weight: opts.weight.as_ref().map(Tensor::data),
        ignore_index: opts.ignore_index,
        reduction: opts.reduction,
        label_smoothing: opts.label_smoothing,
    };
    let (out, ctx) = input.data().cross_entropy(&target.data(), &kopts)?;
    Ok(class_loss(out, "cross_entropy", input, opts.weight.as_ref(), ctx))
}

/// Negative log-likelihood of log-probabilities `input` (same layouts as [`cross_entropy`])
/// against class indices `target`, PyTorch's `F.nll_loss`: `ℓ = −w_t·input[t]`.
pub fn nll_loss(input: &Tensor, target: &Tensor, opts: &NllLossOptions) -> Result<Tensor> {
    let kopts = ClassLossOptions {
        weight: opts.weight.as_ref().map(Tensor::data),
        ignore_index: opts.ignore_index,
        reduction: opts.reduction,
        label_smoothing: 0.0,
    };
    let (out, ctx) = input.data().nll_loss(&target.data(), &kopts)?;
    Ok(class_loss(out, "nll_loss", input, opts.weight.as_ref(), ctx))
}

/// Mean squared error `(x − y)²` (PyTorch's `F.mse_loss`); `input` and `target` broadcast
/// together and both get gradients.
pub fn mse_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let (x, y) = (input.data(), target.data());
    let out = x.mse_loss(&y, reduction)?;
    Ok(Tensor::from_op(out, "mse_loss", &[input, target], move |g, needs| {
        Ok(x.mse_loss_backward(&y, g, reduction, [needs[0], needs[1]])?.into())
    }))
}

/// Mean absolute error `|x − y|` (PyTorch's `F.l1_loss`); both operands get gradients.
pub fn l1_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let (x, y) = (input.data(), target.data());
    let out = x.l1_loss(&y, reduction)?;
    Ok(Tensor::from_op(out, "l1_loss", &[input, target], move |g, needs| {
        Ok(x.l1_loss_backward(&y, g, reduction, [needs[0], needs[1]])?.into())
    }))
}

/// Smooth L1 loss (PyTorch's `F.smooth_l1_loss`): `0.5·d²/beta` where `|d| < beta`, else
/// `|d| − 0.5·beta`, `d = x − y`. PyTorch's default `beta` is 1. Both operands get gradients.
pub fn smooth_l1_loss(input: &Tensor, target: &Tensor, reduction: Reduction, beta: f32) -> Result<Tensor> {
    let (x, y) = (input.data(), target.data());
    let out = x.smooth_l1_loss(&y, reduction, beta)?;
    Ok(Tensor::from_op(out, "smooth_l1_loss", &[input, target], move |g, needs| {
        Ok(x.smooth_l1_loss_backward(&y, g, reduction, beta, [needs[0], needs[1]])?.into())
    }))
}

/// Binary cross-entropy of logits (PyTorch's `F.binary_cross_entropy_with_logits`), computed
/// stably: `ℓ = −weight·[pos_weight·y·ln σ(x) + (1 − y)·ln(1 − σ(x))]`. `target`, `weight` and
/// `pos_weight` broadcast to the input's shape. Every operand that requires grad gets one.
pub fn binary_cross_entropy_with_logits(
    input: &Tensor,
    target: &Tensor,
    opts: &BceWithLogitsOptions,
) -> Result<Tensor> {
    let (x, y) = (input.data(), target.data());
    let (w, pw) = (opts.weight.as_ref().map(Tensor::data), opts.pos_weight.as_ref().map(Tensor::data));
    let reduction = opts.reduction;
    let out = x.binary_cross_entropy_with_logits(&y, w.as_ref(), pw.as_ref(), reduction)?;
    let mut inputs = vec![input, target];
    inputs.extend(opts.weight.iter());
    inputs.extend(opts.pos_weight.iter());
    let (has_w, has_pw) = (w.is_some(), pw.is_some());
    Ok(Tensor::from_op(out, "binary_cross_entropy_with_logits", &inputs, move |g, needs| {
        let iw = 2;
        let ipw = 2 + has_w as usize;
        let want = [needs[0], needs[1], has_w && needs[iw], has_pw && needs[ipw]];
        let [gx, gy, gw, gpw] =
            x.binary_cross_entropy_with_logits_backward(&y, w.as_ref(), pw.as_ref(), g, reduction, want)?;
        let mut grads = vec![gx, gy];
        if has_w {
            grads.push(gw);
        }
        if has_pw {
            grads.push(gpw);
        }
        Ok(grads)
    }))
}

/// Kullback–Leibler divergence (PyTorch's `F.kl_div`) of `input`, log-probabilities, from
/// `target`: `ℓ = y·(ln y − x)` (0 where `y = 0`), or `eʸ·(y − x)` when `log_target`.
/// `BatchMean` divides the sum by `input.shape[0]`, `Mean` by the number of elements. Both
/// operands get gradients.
pub fn kl_div(input: &Tensor, target: &Tensor, reduction: Reduction, log_target: bool) -> Result<Tensor> {
    let (x, y) = (input.data(), target.data());
    let out = x.kl_div(&y, reduction, log_target)?;
    Ok(Tensor::from_op(out, "kl_div", &[input, target], move |g, needs| {
        Ok(x.kl_div_backward(&y, g, reduction, log_target, [needs[0], needs[1]])?.into())
    }))
}
