//! Loss kernels and their backward: cross-entropy and NLL over class indices, and the pointwise
//! losses (mse, l1, smooth_l1, binary cross-entropy with logits, KL divergence).
//!
//! Semantics are PyTorch's (`torch.nn.functional`). Every loss takes a [`Reduction`]:
//! `None` keeps the per-element losses, `Sum` and `Mean` give a 0-d array.
//!
//! Cross-entropy is fused: one pass over the class dim computes the maximum, `log Σ exp` and
//! the loss of each position, and its backward writes `softmax − one-hot` (with label smoothing
//! and class weights) directly from the saved per-position statistics. The `[N, C, d1, ...]`
//! layout is read in place: each sample is a `[C, D]` slab whose rows are contiguous, so the
//! class dim is reduced by whole rows of `D` positions without a transposing copy.

use super::reduce::{dispatched, dot_slice, max_slice, sum_slice};
use super::vmath::exp_inplace;
use crate::layout::broadcast_shapes;
use crate::parallel::{par_chunks_mut_zip, PAR_ELEMS};
use crate::{bail, Array, DType, Error, Result};
use rayon::prelude::*;
use std::borrow::Cow;

/// How a loss reduces its per-element values (PyTorch's `reduction` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Keep every element's loss (the output has the elements' shape).
    None,
    /// The mean of the losses (for weighted class losses: divided by the total weight).
    #[default]
    Mean,
    /// The sum of the losses.
    Sum,
    /// `kl_div` only: the sum divided by the size of the input's first dim.
    BatchMean,
}

impl Reduction {
    /// Parses PyTorch's names: `"none"`, `"mean"`, `"sum"`, `"batchmean"`.
    pub fn parse(s: &str) -> Result<Reduction> {
        match s {
            "none" => Ok(Reduction::None),
            "mean" => Ok(Reduction::Mean),
            "sum" => Ok(Reduction::Sum),
            "batchmean" => Ok(Reduction::BatchMean),
            _ => Err(Error::op("reduction", format!("{s:?} is not a valid value (none, mean, sum, batchmean)"))),
        }
    }

    /// PyTorch's name of this reduction.
    pub fn as_str(self) -> &'static str {
        match self {
            Reduction::None => "none",
            Reduction::Mean => "mean",
            Reduction::Sum => "sum",
            Reduction::BatchMean => "batchmean",
        }
    }

    /// Errors for `BatchMean`, which only `kl_div` accepts.
    fn reject_batchmean(self, op: &'static str) -> Result<()> {
        if self == Reduction::BatchMean {
            bail!(op, "reduction \"batchmean\" is only supported by kl_div (use none, mean or sum)");
        }
        Ok(())
    }
}

impl std::str::FromStr for Reduction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Reduction> {
        Reduction::parse(s)
    }
}

impl std::fmt::Display for Reduction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ------------------------------------------------------------------------------- helpers

/// Runs `f(first_block, chunk)` over chunks of whole blocks (`block` elements each) of `out`,
/// splitting the blocks over rayon's pool when their total work (`work` per block) is large.
fn par_blocks<T: Send>(out: &mut [T], block: usize, work: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if block == 0 || out.is_empty() {
        return;
    }
    let blocks = out.len() / block;
    let threads = rayon::current_num_threads();
    if blocks.saturating_mul(work) < PAR_ELEMS || blocks < 2 || threads == 1 {
        f(0, out);
        return;
    }
    let per = blocks.div_ceil(threads * 4).max((PAR_ELEMS / 8).div_ceil(work.max(1)));
    out.par_chunks_mut(per * block).enumerate().for_each(|(i, c)| f(i * per, c));
}

/// Reduces per-element losses of `shape`; `batch` is the divisor of `BatchMean`.
fn reduce_losses(losses: Vec<f32>, shape: &[usize], reduction: Reduction, batch: usize) -> Array {
    match reduction {
        Reduction::None => Array::from_f32_unchecked(losses, shape),
        Reduction::Sum => Array::scalar(sum_slice(&losses)),
        Reduction::Mean => Array::scalar((sum_slice(&losses) as f64 / losses.len() as f64) as f32),
        Reduction::BatchMean => Array::scalar((sum_slice(&losses) as f64 / batch as f64) as f32),
    }
}

/// The output gradient of a loss as seen by each element.
enum Scale<'a> {
    /// Reduction `none`: one gradient per element (contiguous, in the elements' order).
    Each(Cow<'a, [f32]>),
    /// A reduced loss: every element gets the same factor.
    All(f32),
}

/// The per-element view of `g`, the gradient of a loss over `numel` elements of `shape`.
fn grad_scale<'a>(
    op: &'static str,
    g: &'a Array,
    shape: &[usize],
    reduction: Reduction,
    batch: usize,
) -> Result<Scale<'a>> {
    g.expect_dtype(op, DType::F32)?;
    if reduction == Reduction::None {
        if g.shape() != shape {
            bail!(op, "the output gradient has shape {:?}, the loss has shape {shape:?}", g.shape());
        }
        return Ok(Scale::Each(g.f32_cow()?));
    }
    if g.numel() != 1 {
        bail!(op, "the output gradient of a reduced loss must have one element, got shape {:?}", g.shape());
    }
    let v = g.item()?;
    let n: usize = shape.iter().product();
    Ok(Scale::All(match reduction {
        Reduction::Mean => (v as f64 / n as f64) as f32,
        Reduction::BatchMean => (v as f64 / batch as f64) as f32,
        _ => v,
    }))
}

/// The divisor of `batchmean`: the size of the input's first dim (1 for a 0-d input).
fn batch_of(x: &Array) -> usize {
    x.shape().first().copied().unwrap_or(1)
}

// ------------------------------------------------------------------------------- pointwise

/// Forward of a loss that is a function `f(x, y)` of two broadcast operands.
fn pointwise_forward(
    op: &'static str,
    x: &Array,
    y: &Array,
    reduction: Reduction,
    f: impl Fn(f32, f32) -> f32 + Sync + Send + Copy,
) -> Result<Array> {
    x.expect_dtype(op, DType::F32)?;
    y.expect_dtype(op, DType::F32)?;
    let shape = broadcast_shapes(op, x.shape(), y.shape())?;
    let (xb, yb) = (x.broadcast_to(&shape)?, y.broadcast_to(&shape)?);
    let (xs, ys) = (xb.f32_cow()?, yb.f32_cow()?);
    let mut out = vec![0f32; xs.len()];
    par_chunks_mut_zip(&mut out, |start, chunk| {
        let n = chunk.len();
        for ((o, &a), &b) in chunk.iter_mut().zip(&xs[start..start + n]).zip(&ys[start..start + n]) {
            *o = f(a, b);
        }
    });
    Ok(reduce_losses(out, &shape, reduction, batch_of(x)))
}

/// Backward of [`pointwise_forward`]: `df(x, y) = (∂f/∂x, ∂f/∂y)`. Returns the gradients of
/// the operands `needs` asks for, each summed back to its operand's shape.
fn pointwise_backward(
    op: &'static str,
    x: &Array,
    y: &Array,
    g: &Array,
    reduction: Reduction,
    needs: [bool; 2],
    df: impl Fn(f32, f32) -> (f32, f32) + Sync + Send + Copy,
) -> Result<[Option<Array>; 2]> {
    x.expect_dtype(op, DType::F32)?;
    y.expect_dtype(op, DType::F32)?;
    let shape = broadcast_shapes(op, x.shape(), y.shape())?;
    let (xb, yb) = (x.broadcast_to(&shape)?, y.broadcast_to(&shape)?);
    let (xs, ys) = (xb.f32_cow()?, yb.f32_cow()?);
    let scale = grad_scale(op, g, &shape, reduction, batch_of(x))?;
    let grad = |second: bool, to: &[usize]| -> Result<Array> {
        let pick = move |a: f32, b: f32| if second { df(a, b).1 } else { df(a, b).0 };
        let mut out = vec![0f32; xs.len()];
        par_chunks_mut_zip(&mut out, |start, chunk| {
            let n = chunk.len();
            let (xs, ys) = (&xs[start..start + n], &ys[start..start + n]);
            match &scale {
                Scale::All(s) => {
                    for ((o, &a), &b) in chunk.iter_mut().zip(xs).zip(ys) {
                        *o = pick(a, b) * s;
                    }
                }
                Scale::Each(gs) => {
                    for (((o, &a), &b), &s) in chunk.iter_mut().zip(xs).zip(ys).zip(&gs[start..start + n]) {
                        *o = pick(a, b) * s;
                    }
                }
            }
        });
        Array::from_f32_unchecked(out, &shape).sum_to(to)
    };
    Ok([needs[0].then(|| grad(false, x.shape())).transpose()?, needs[1].then(|| grad(true, y.shape())).transpose()?])
}

/// `sign(v)`, 0 at 0 (PyTorch's `sgn`).
fn sgn(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `y·ln y`, 0 at `y = 0` (PyTorch's `xlogy(y, y)`).
fn y_ln_y(y: f32) -> f32 {
    if y == 0.0 {
        0.0
    } else {
        y * y.ln()
    }
}

/// `ln(1 + e^z)`, stable for any `z`.
fn softplus(z: f32) -> f32 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// `1 / (1 + e^(-z))`, without overflow.
fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn check_beta(beta: f32) -> Result<()> {
    if beta < 0.0 || beta.is_nan() {
        bail!("smooth_l1_loss", "beta must be >= 0, got {beta}");
    }
    Ok(())
}

impl Array {
    /// Mean squared error `(x − y)²` (PyTorch's `mse_loss`), `x` and `y` broadcast together.
    pub fn mse_loss(&self, target: &Array, reduction: Reduction) -> Result<Array> {
        reduction.reject_batchmean("mse_loss")?;
        pointwise_forward("mse_loss", self, target, reduction, |x, y| (x - y) * (x - y))
    }

    /// Gradients of [`Array::mse_loss`] for `[input, target]` (those `needs` asks for), given the
    /// output gradient `grad`.
    pub fn mse_loss_backward(
        &self,
        target: &Array,
        grad: &Array,
        reduction: Reduction,
        needs: [bool; 2],
    ) -> Result<[Option<Array>; 2]> {
        pointwise_backward("mse_loss", self, target, grad, reduction, needs, |x, y| {
            let d = 2.0 * (x - y);
            (d, -d)
        })
    }

    /// Mean absolute error `|x − y|` (PyTorch's `l1_loss`), `x` and `y` broadcast together.
    pub fn l1_loss(&self, target: &Array, reduction: Reduction) -> Result<Array> {
        reduction.reject_batchmean("l1_loss")?;
        pointwise_forward("l1_loss", self, target, reduction, |x, y| (x - y).abs())
    }

    /// Gradients of [`Array::l1_loss`] for `[input, target]`: `±sign(x − y)` (0 where equal).
    pub fn l1_loss_backward(
        &self,
        target: &Array,
        grad: &Array,
        reduction: Reduction,
        needs: [bool; 2],
    ) -> Result<[Option<Array>; 2]> {
        pointwise_backward("l1_loss", self, target, grad, reduction, needs, |x, y| {
            let s = sgn(x - y);
            (s, -s)
        })
    }

    /// Huber-like loss (PyTorch's `smooth_l1_loss`): `0.5·d²/beta` where `|d| < beta`, else
    /// `|d| − 0.5·beta`, with `d = x − y`. `beta = 0` is the l1 loss; a negative beta is an error.
    pub fn smooth_l1_loss(&self, target: &Array, reduction: Reduction, beta: f32) -> Result<Array> {
        reduction.reject_batchmean("smooth_l1_loss")?;
        check_beta(beta)?;
        pointwise_forward("smooth_l1_loss", self, target, reduction, move |x, y| {
            let d = (x - y).abs();
            if d < beta {
                0.5 * d * d / beta
            } else {
                d - 0.5 * beta
            }
        })
    }

    /// Gradients of [`Array::smooth_l1_loss`] for `[input, target]`.
    pub fn smooth_l1_loss_backward(
        &self,
        target: &Array,
        grad: &Array,
        reduction: Reduction,
        beta: f32,
        needs: [bool; 2],
    ) -> Result<[Option<Array>; 2]> {
        check_beta(beta)?;
        pointwise_backward("smooth_l1_loss", self, target, grad, reduction, needs, move |x, y| {
            let d = x - y;
            let s = if d.abs() < beta { d / beta } else { sgn(d) };
            (s, -s)
        })
    }

    /// Kullback–Leibler divergence (PyTorch's `kl_div`) of `self`, log-probabilities, from
    /// `target`: `y·(ln y − x)` (0 where `y = 0`), or `eʸ·(y − x)` when `log_target`.
    /// `BatchMean` divides the sum by the size of the input's first dim.
    pub fn kl_div(&self, target: &Array, reduction: Reduction, log_target: bool) -> Result<Array> {
        if log_target {
            pointwise_forward("kl_div", self, target, reduction, |x, y| y.exp() * (y - x))
        } else {
            pointwise_forward("kl_div", self, target, reduction, |x, y| y_ln_y(y) - y * x)
        }
    }

    /// Gradients of [`Array::kl_div`] for `[input, target]`.
    pub fn kl_div_backward(
        &self,
        target: &Array,
        grad: &Array,
        reduction: Reduction,
        log_target: bool,
        needs: [bool; 2],
    ) -> Result<[Option<Array>; 2]> {
        if log_target {
            pointwise_backward("kl_div", self, target, grad, reduction, needs, |x, y| {
                let e = y.exp();
                (-e, e * (y - x + 1.0))
            })
        } else {
            pointwise_backward("kl_div", self, target, grad, reduction, needs, |x, y| (-y, y.ln() + 1.0 - x))
        }
    }
}

// ------------------------------------------------------------------------------- BCE with logits

/// The operands of a binary cross-entropy with logits, broadcast to the input's shape.
struct BceOperands {
    x: Array,
    y: Array,
    w: Option<Array>,
    pw: Option<Array>,
}

impl BceOperands {
    const OP: &'static str = "binary_cross_entropy_with_logits";

    fn new(x: &Array, y: &Array, w: Option<&Array>, pw: Option<&Array>) -> Result<BceOperands> {
        let op = Self::OP;
        x.expect_dtype(op, DType::F32)?;
        let shape = x.shape();
        let fit = |a: &Array, what: &str| -> Result<Array> {
            a.expect_dtype(op, DType::F32)?;
            a.broadcast_to(shape).map_err(|_| {
                Error::op(
                    op,
                    format!("{what} of shape {:?} does not broadcast to the input's shape {shape:?}", a.shape()),
                )
            })
        };
        Ok(BceOperands {
            x: x.clone(),
            y: fit(y, "target")?,
            w: w.map(|w| fit(w, "weight")).transpose()?,
            pw: pw.map(|p| fit(p, "pos_weight")).transpose()?,
        })
    }

    /// Fills a buffer of the input's size with `f(x, y, w, pw)` per element.
    fn fill(&self, f: impl Fn(f32, f32, f32, f32) -> f32 + Sync + Send + Copy) -> Result<Vec<f32>> {
        let (x, y) = (self.x.f32_cow()?, self.y.f32_cow()?);
        let w = self.w.as_ref().map(|a| a.f32_cow()).transpose()?;
        let pw = self.pw.as_ref().map(|a| a.f32_cow()).transpose()?;
        let mut out = vec![0f32; x.len()];
        par_chunks_mut_zip(&mut out, |start, chunk| {
            let n = chunk.len();
            let (x, y) = (&x[start..start + n], &y[start..start + n]);
            let w = w.as_ref().map(|w| &w[start..start + n]);
            let pw = pw.as_ref().map(|p| &p[start..start + n]);
            for (k, o) in chunk.iter_mut().enumerate() {
                *o = f(x[k], y[k], w.map_or(1.0, |w| w[k]), pw.map_or(1.0, |p| p[k]));
            }
        });
        Ok(out)
    }
}

/// The unweighted loss `(1 − y)·x + (1 + (pw − 1)·y)·softplus(−x)`, which equals
/// `−[pw·y·ln σ(x) + (1 − y)·ln(1 − σ(x))]`.
fn bce_logits(x: f32, y: f32, pw: f32) -> f32 {
    (1.0 - y) * x + (1.0 + (pw - 1.0) * y) * softplus(-x)
}

impl Array {
    /// Binary cross-entropy of logits `self` against `target` in [0, 1] (PyTorch's
    /// `binary_cross_entropy_with_logits`), computed stably:
    /// `ℓ = −weight·[pos_weight·y·ln σ(x) + (1 − y)·ln(1 − σ(x))]`. `target` and `weight`
    /// broadcast to the input's shape; `pos_weight` too (normally one per class of the last dim).
    pub fn binary_cross_entropy_with_logits(
        &self,
        target: &Array,
        weight: Option<&Array>,
        pos_weight: Option<&Array>,
        reduction: Reduction,
    ) -> Result<Array> {
        reduction.reject_batchmean(BceOperands::OP)?;
        let ops = BceOperands::new(self, target, weight, pos_weight)?;
        let out = ops.fill(|x, y, w, pw| w * bce_logits(x, y, pw))?;
        Ok(reduce_losses(out, self.shape(), reduction, batch_of(self)))
    }

    /// Gradients of [`Array::binary_cross_entropy_with_logits`] for
    /// `[input, target, weight, pos_weight]` (those `needs` asks for; absent optional operands
    /// get `None`), each summed back to its operand's shape.
    pub fn binary_cross_entropy_with_logits_backward(
        &self,
        target: &Array,
        weight: Option<&Array>,
        pos_weight: Option<&Array>,
        grad: &Array,
        reduction: Reduction,
        needs: [bool; 4],
    ) -> Result<[Option<Array>; 4]> {
        let op = BceOperands::OP;
        let ops = BceOperands::new(self, target, weight, pos_weight)?;
        let scale = grad_scale(op, grad, self.shape(), reduction, batch_of(self))?;
        let shape = self.shape();
        let grad_of = |df: fn(f32, f32, f32, f32) -> f32, to: &[usize]| -> Result<Array> {
            let mut v = ops.fill(df)?;
            match &scale {
                Scale::All(s) => v.iter_mut().for_each(|v| *v *= s),
                Scale::Each(g) => v.iter_mut().zip(g.iter()).for_each(|(v, g)| *v *= g),
            }
            Array::from_f32_unchecked(v, shape).sum_to(to)
        };
        // ∂ℓ/∂x = w·[(1 − y) − (1 + (pw − 1)·y)·σ(−x)]
        let gx = needs[0]
            .then(|| grad_of(|x, y, w, pw| w * ((1.0 - y) - (1.0 + (pw - 1.0) * y) * sigmoid(-x)), shape))
            .transpose()?;
        // ∂ℓ/∂y = w·[−x + (pw − 1)·softplus(−x)]
        let gy = needs[1]
            .then(|| grad_of(|x, _, w, pw| w * (-x + (pw - 1.0) * softplus(-x)), target.shape()))
            .transpose()?;
        let gw = match weight {
            Some(wa) if needs[2] => Some(grad_of(|x, y, _, pw| bce_logits(x, y, pw), wa.shape())?),
            _ => None,
        };
        let gpw = match pos_weight {
            Some(pa) if needs[3] => Some(grad_of(|x, y, w, _| w * y * softplus(-x), pa.shape())?),
            _ => None,
        };
        Ok([gx, gy, gw, gpw])
    }
}

// ------------------------------------------------------------------------------- class losses

/// Options of [`Array::cross_entropy`] and [`Array::nll_loss`] (PyTorch's defaults).
#[derive(Debug, Clone)]
pub struct ClassLossOptions {
    /// Per-class weights, shape `[C]`; `None` weighs every class 1.
    pub weight: Option<Array>,
    /// Positions whose target equals this value contribute nothing (loss and gradient 0, and
    /// no weight to the mean). May be a valid class.
    pub ignore_index: i64,
    /// `None`, `Sum`, or `Mean` (divided by the summed weight of the non-ignored targets).
    pub reduction: Reduction,
    /// Label smoothing ε in [0, 1] (cross-entropy only).
    pub label_smoothing: f32,
}

impl Default for ClassLossOptions {
    fn default() -> Self {
        ClassLossOptions { weight: None, ignore_index: -100, reduction: Reduction::Mean, label_smoothing: 0.0 }
    }
}

/// Marks an ignored position in the decoded targets.
const IGNORED: usize = usize::MAX;

/// What [`Array::cross_entropy`] and [`Array::nll_loss`] keep for their backward
/// ([`ClassLossContext::backward`]).
pub struct ClassLossContext {
    op: &'static str,
    /// The input, contiguous, seen as `[n, c, d]`.
    input: Array,
    n: usize,
    c: usize,
    d: usize,
    /// The loss's shape with reduction `none` (the target's shape).
    loss_shape: Vec<usize>,
    /// The class of each of the `n·d` positions, [`IGNORED`] for ignored ones.
    classes: Vec<usize>,
    weight: Option<Vec<f32>>,
    reduction: Reduction,
    smoothing: f32,
    /// `Σ_{non-ignored} w_t`, the divisor of the mean.
    denom: f64,
    /// The reduced output value (for the weight gradient of the mean).
    value: f32,
    /// Cross-entropy only: per position, the maximum logit and `ln Σ exp(x − max)`.
    stats: Vec<[f32; 2]>,
}

impl std::fmt::Debug for ClassLossContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClassLossContext({}, input {:?})", self.op, self.input.shape())
    }
}

/// Checks the layouts of a class loss; returns `(n, c, d, loss_shape)` for an input seen as
/// `[n, c, d]`.
fn class_geometry(
    op: &'static str,
    input: &Array,
    target: &Array,
    weight: Option<&Array>,
) -> Result<(usize, usize, usize, Vec<usize>)> {
    input.expect_dtype(op, DType::F32)?;
    let s = input.shape();
    if target.dtype() != DType::I64 {
        bail!(
            op,
            "expected a target of class indices (i64), got {} of shape {:?} (input {s:?})",
            target.dtype(),
            target.shape()
        );
    }
    let (n, c, d, tshape) = match s.len() {
        0 => bail!(op, "expected an input of shape [C], [N, C] or [N, C, d1, ...], got a 0-d tensor"),
        1 => (1, s[0], 1, vec![]),
        _ => {
            let mut t = vec![s[0]];
            t.extend_from_slice(&s[2..]);
            (s[0], s[1], s[2..].iter().product(), t)
        }
    };
    if target.shape() != tshape.as_slice() {
        bail!(op, "expected a target of shape {tshape:?} for an input of shape {s:?}, got {:?}", target.shape());
    }
    if let Some(w) = weight {
        w.expect_dtype(op, DType::F32)?;
        if w.shape() != [c] {
            bail!(op, "expected a weight of shape [{c}] (one per class of the input {s:?}), got {:?}", w.shape());
        }
    }
    Ok((n, c, d, tshape))
}

/// The multi-index of flat position `pos` in `shape` (for error messages).
fn unravel(mut pos: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &s) in shape.iter().enumerate().rev() {
        if s > 0 {
            idx[i] = pos % s;
            pos /= s;
        }
    }
    idx
}

/// Decodes the targets into classes ([`IGNORED`] for `ignore_index`) and sums the weights of
/// the non-ignored ones. A class out of `[0, c)` is an error.
fn decode_targets(
    op: &'static str,
    target: &Array,
    c: usize,
    opts: &ClassLossOptions,
    weight: Option<&[f32]>,
    in_shape: &[usize],
) -> Result<(Vec<usize>, f64)> {
    let t = target.contiguous();
    let t = t.as_slice::<i64>().expect("contiguous i64");
    let mut denom = 0f64;
    let mut classes = Vec::with_capacity(t.len());
    for (pos, &k) in t.iter().enumerate() {
        if k == opts.ignore_index {
            classes.push(IGNORED);
        } else if k < 0 || k as u64 >= c as u64 {
            bail!(
                op,
                "target {k} at position {:?} is out of bounds for {c} classes (input {in_shape:?}, ignore_index {})",
                unravel(pos, target.shape()),
                opts.ignore_index
            );
        } else {
            denom += weight.map_or(1.0, |w| w[k as usize]) as f64;
            classes.push(k as usize);
        }
    }
    Ok((classes, denom))
}

/// Reduces class losses: `Mean` divides by the summed weight of the non-ignored targets.
fn reduce_class(losses: Vec<f32>, shape: &[usize], reduction: Reduction, denom: f64) -> Array {
    match reduction {
        Reduction::Mean => Array::scalar((sum_slice(&losses) as f64 / denom) as f32),
        r => reduce_losses(losses, shape, r, 1),
    }
}

/// The class weights and label smoothing of a cross-entropy kernel.
#[derive(Clone, Copy)]
struct CeParams<'a> {
    /// Per-class weights (`None`: all 1).
    w: Option<&'a [f32]>,
    /// `Σ_c w_c` (`C` without weights).
    wsum: f32,
    /// Label smoothing ε.
    eps: f32,
}

impl CeParams<'_> {
    /// The weight of class `t`.
    fn wt(&self, t: usize) -> f32 {
        self.w.map_or(1.0, |w| w[t])
    }
}

dispatched! {
    /// Cross-entropy of one row of `c` logits with class `t`: returns `[ℓ, max, ln Σ exp(x − max)]`.
    /// `scratch` (at least `c` long) stages `x − max` and its exponentials, so the scalar `exp`
    /// calls are independent and the sums run in the vectorized slice kernels.
    fn ce_row(x: &[f32], t: usize, p: CeParams, scratch: &mut [f32]) -> [f32; 3] {
        let m = max_slice(x);
        let e = &mut scratch[..x.len()];
        e.iter_mut().zip(x).for_each(|(e, &v)| *e = v - m);
        let sm = match (p.eps > 0.0, p.w) {
            (false, _) => 0.0,
            (true, None) => sum_slice(e),
            (true, Some(w)) => dot_slice(e, w),
        };
        exp_inplace(e);
        let ls = sum_slice(e).ln();
        let mut l = -(1.0 - p.eps) * p.wt(t) * ((x[t] - m) - ls);
        if p.eps > 0.0 {
            // Σ_c w_c·lp_c = Σ_c w_c·(x_c − m) − (Σ_c w_c)·ls
            l -= p.eps / x.len() as f32 * (sm - p.wsum * ls);
        }
        [l, m, ls]
    }
}

dispatched! {
    /// Gradient of [`ce_row`] scaled by `s`:
    /// `s·[((1−ε)·w_t + ε/C·Σw)·softmax − ε/C·w − (1−ε)·w_t·onehot(t)]`.
    fn ce_row_backward(x: &[f32], t: usize, stats: [f32; 2], s: f32, p: CeParams, out: &mut [f32]) {
        let [m, ls] = stats;
        let (wt, eps, c) = (p.wt(t), p.eps, x.len() as f32);
        let a = s * ((1.0 - eps) * wt + eps / c * p.wsum);
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = (v - m) - ls);
        exp_inplace(out);
        out.iter_mut().for_each(|o| *o *= a);
        if eps > 0.0 {
            let b = s * eps / c;
            match p.w {
                Some(w) => out.iter_mut().zip(w).for_each(|(o, &w)| *o -= w * b),
                None => out.iter_mut().for_each(|o| *o -= b),
            }
        }
        out[t] -= s * (1.0 - eps) * wt;
    }
}

/// Cross-entropy of one `[c, d]` slab (one sample of the `[N, C, d...]` layout): writes
/// `[ℓ, max, ln Σ exp(x − max)]` for each of its `d` positions. Ignored positions get
/// `[0, 0, +inf]`, which makes their softmax 0 in the backward.
fn ce_slab(x: &[f32], classes: &[usize], p: CeParams<'_>, rec: &mut [[f32; 3]]) {
    let d = classes.len();
    let c = x.len() / d;
    let eps = p.eps;
    let mut m = x[..d].to_vec();
    for r in x.chunks_exact(d).skip(1) {
        m.iter_mut().zip(r).for_each(|(m, &v)| *m = if v > *m || v.is_nan() { v } else { *m });
    }
    // Sums over the class dim in f64: C may be large.
    let mut s = vec![0f64; d];
    let mut sm = vec![0f64; if eps > 0.0 { d } else { 0 }];
    let mut e = vec![0f32; d];
    for (k, r) in x.chunks_exact(d).enumerate() {
        e.iter_mut().zip(r).zip(&m).for_each(|((e, &v), &m)| *e = v - m);
        if eps > 0.0 {
            let wc = p.wt(k);
            sm.iter_mut().zip(&e).for_each(|(a, &e)| *a += (wc * e) as f64);
        }
        exp_inplace(&mut e);
        s.iter_mut().zip(&e).for_each(|(a, &e)| *a += e as f64);
    }
    for (j, r) in rec.iter_mut().enumerate() {
        let t = classes[j];
        if t == IGNORED {
            *r = [0.0, 0.0, f32::INFINITY];
            continue;
        }
        let ls = s[j].ln() as f32;
        let mut l = -(1.0 - eps) * p.wt(t) * ((x[t * d + j] - m[j]) - ls);
        if eps > 0.0 {
            l -= eps / c as f32 * (sm[j] as f32 - p.wsum * ls);
        }
        *r = [l, m[j], ls];
    }
}

/// Gradient of [`ce_slab`] with per-position scales `s` (0 at ignored positions).
fn ce_slab_backward(x: &[f32], classes: &[usize], stats: &[[f32; 2]], s: &[f32], p: CeParams<'_>, out: &mut [f32]) {
    let d = classes.len();
    let (eps, c) = (p.eps, (x.len() / d) as f32);
    let m: Vec<f32> = stats.iter().map(|s| s[0]).collect();
    let ls: Vec<f32> = stats.iter().map(|s| s[1]).collect();
    let a: Vec<f32> = classes
        .iter()
        .zip(s)
        .map(|(&t, &s)| if t == IGNORED { 0.0 } else { s * ((1.0 - eps) * p.wt(t) + eps / c * p.wsum) })
        .collect();
    let b: Vec<f32> = s.iter().map(|&s| s * eps / c).collect();
    for (k, (o, r)) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)).enumerate() {
        o.iter_mut().zip(r).zip(&m).zip(&ls).for_each(|(((o, &v), &m), &l)| *o = (v - m) - l);
        exp_inplace(o);
        o.iter_mut().zip(&a).for_each(|(o, &a)| *o *= a);
        if eps > 0.0 {
            let wc = p.wt(k);
            o.iter_mut().zip(&b).for_each(|(o, &b)| *o -= wc * b);
        }
    }
    for (j, (&t, &s)) in classes.iter().zip(s).enumerate() {
        if t != IGNORED {
            out[t * d + j] -= s * (1.0 - eps) * p.wt(t);
        }
    }
}

impl Array {
    /// Cross-entropy of logits `self` (`[C]`, `[N, C]` or `[N, C, d1, ...]`, classes on dim 1)
    /// against class indices `target` (i64, `[]`, `[N]` or `[N, d1, ...]`), PyTorch's
    /// `cross_entropy`: `ℓ = (1−ε)·(−w_t·lp[t]) + (ε/C)·(−Σ_c w_c·lp[c])` with
    /// `lp = log_softmax(self, 1)`, 0 at ignored positions; the mean divides by the summed
    /// weight of the non-ignored targets. Fused and numerically stable (large logits, `-inf`
    /// logits). Returns the loss and what its backward needs.
    pub fn cross_entropy(&self, target: &Array, opts: &ClassLossOptions) -> Result<(Array, ClassLossContext)> {
        const OP: &str = "cross_entropy";
        let eps = opts.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            bail!(OP, "label_smoothing must be in [0, 1], got {eps}");
        }
        let mut ctx = ClassLossContext::new(OP, self, target, opts)?;
        let (c, d) = (ctx.c, ctx.d);
        let mut rec = vec![[0f32, 0.0, 0.0]; ctx.n * d];
        if c > 0 {
            let x = ctx.input.as_slice::<f32>().expect("contiguous f32");
            let w = ctx.weight.as_deref();
            let p = CeParams { w, wsum: w.map_or(c as f32, sum_slice), eps };
            let classes = &ctx.classes;
            par_blocks(&mut rec, d, c * d, |first, chunk| {
                let mut scratch = if d == 1 { vec![0f32; c] } else { Vec::new() };
                for (k, r) in chunk.chunks_exact_mut(d).enumerate() {
                    let i = first + k;
                    let xs = &x[i * c * d..(i + 1) * c * d];
                    if d == 1 {
                        r[0] = match classes[i] {
                            IGNORED => [0.0; 3],
                            t => ce_row(xs, t, p, &mut scratch),
                        };
                    } else {
                        ce_slab(xs, &classes[i * d..(i + 1) * d], p, r);
                    }
                }
            });
        }
        let losses: Vec<f32> = rec.iter().map(|r| r[0]).collect();
        ctx.stats = rec.iter().map(|r| [r[1], r[2]]).collect();
        let out = reduce_class(losses, &ctx.loss_shape, ctx.reduction, ctx.denom);
        ctx.value = if out.numel() == 1 { out.item()? } else { 0.0 };
        Ok((out, ctx))
    }

    /// Negative log-likelihood of log-probabilities `self` (same layouts as
    /// [`Array::cross_entropy`]) against class indices: `ℓ = −w_t·input[t]`, 0 at ignored
    /// positions; the mean divides by the summed weight of the non-ignored targets.
    /// `label_smoothing` must be 0. Returns the loss and what its backward needs.
    pub fn nll_loss(&self, target: &Array, opts: &ClassLossOptions) -> Result<(Array, ClassLossContext)> {
        const OP: &str = "nll_loss";
        if opts.label_smoothing != 0.0 {
            bail!(OP, "nll_loss has no label smoothing (got {}); use cross_entropy", opts.label_smoothing);
        }
        let mut ctx = ClassLossContext::new(OP, self, target, opts)?;
        let (c, d) = (ctx.c, ctx.d);
        let x = ctx.input.as_slice::<f32>().expect("contiguous f32");
        let w = ctx.weight.as_deref();
        let losses: Vec<f32> = ctx
            .classes
            .iter()
            .enumerate()
            .map(|(p, &t)| match t {
                IGNORED => 0.0,
                t => -w.map_or(1.0, |w| w[t]) * x[(p / d) * c * d + t * d + p % d],
            })
            .collect();
        let out = reduce_class(losses, &ctx.loss_shape, ctx.reduction, ctx.denom);
        ctx.value = if out.numel() == 1 { out.item()? } else { 0.0 };
        Ok((out, ctx))
    }
}

impl ClassLossContext {
    fn new(op: &'static str, input: &Array, target: &Array, opts: &ClassLossOptions) -> Result<ClassLossContext> {
        opts.reduction.reject_batchmean(op)?;
        let (n, c, d, loss_shape) = class_geometry(op, input, target, opts.weight.as_ref())?;
        let weight = opts.weight.as_ref().map(|w| w.to_vec_f32()).transpose()?;
        let (classes, denom) = decode_targets(op, target, c, opts, weight.as_deref(), input.shape())?;
        Ok(ClassLossContext {
            op,
            input: input.contiguous(),
            n,
            c,
            d,
            loss_shape,
            classes,
            weight,
            reduction: opts.reduction,
            smoothing: opts.label_smoothing,
            denom,
            value: 0.0,
            stats: Vec::new(),
        })
    }

    /// True for cross-entropy (logits), false for NLL (log-probabilities).
    fn is_ce(&self) -> bool {
        self.op == "cross_entropy"
    }

    /// The output gradient seen by each position: `g` (reduction `none`), `g` (`sum`) or
    /// `g / Σ w_t` (`mean`); 0 at ignored positions.
    fn scales(&self, grad: &Array) -> Result<Vec<f32>> {
        let op = self.op;
        grad.expect_dtype(op, DType::F32)?;
        let per: Vec<f32> = match self.reduction {
            Reduction::None => {
                if grad.shape() != self.loss_shape.as_slice() {
                    bail!(
                        op,
                        "the output gradient has shape {:?}, the loss has shape {:?}",
                        grad.shape(),
                        self.loss_shape
                    );
                }
                grad.to_vec_f32()?
            }
            r => {
                if grad.numel() != 1 {
                    bail!(
                        op,
                        "the output gradient of a reduced loss must have one element, got shape {:?}",
                        grad.shape()
                    );
                }
                let g = grad.item()?;
                let s = if r == Reduction::Mean { (g as f64 / self.denom) as f32 } else { g };
                vec![s; self.classes.len()]
            }
        };
        Ok(per.into_iter().zip(&self.classes).map(|(s, &t)| if t == IGNORED { 0.0 } else { s }).collect())
    }

    /// The gradients of the loss with respect to the input and to the class weights (each
    /// only when asked for; the weight's only when the loss has one), given the output
    /// gradient `grad`.
    pub fn backward(&self, grad: &Array, input: bool, weight: bool) -> Result<(Option<Array>, Option<Array>)> {
        let s = self.scales(grad)?;
        let gi = if input { Some(self.input_grad(&s)?) } else { None };
        let gw = if weight && self.weight.is_some() { Some(self.weight_grad(grad, &s)?) } else { None };
        Ok((gi, gw))
    }

    fn input_grad(&self, s: &[f32]) -> Result<Array> {
        let (n, c, d) = (self.n, self.c, self.d);
        let x = self.input.as_slice::<f32>().expect("contiguous f32");
        let w = self.weight.as_deref();
        if !self.is_ce() {
            let mut out = vec![0f32; n * c * d];
            for (p, (&t, &s)) in self.classes.iter().zip(s).enumerate() {
                if t != IGNORED {
                    out[(p / d) * c * d + t * d + p % d] = -s * w.map_or(1.0, |w| w[t]);
                }
            }
            return Ok(Array::from_f32_unchecked(out, self.input.shape()));
        }
        let p = CeParams { w, wsum: w.map_or(c as f32, sum_slice), eps: self.smoothing };
        let mut out = vec![0f32; n * c * d];
        let (classes, stats) = (&self.classes, &self.stats);
        par_blocks(&mut out, c * d, c * d, |first, chunk| {
            for (k, o) in chunk.chunks_exact_mut(c * d).enumerate() {
                let i = first + k;
                let xs = &x[i * c * d..(i + 1) * c * d];
                if d == 1 {
                    if classes[i] != IGNORED {
                        ce_row_backward(xs, classes[i], stats[i], s[i], p, o);
                    }
                } else {
                    let r = i * d..(i + 1) * d;
                    ce_slab_backward(xs, &classes[r.clone()], &stats[r.clone()], &s[r], p, o);
                }
            }
        });
        Ok(Array::from_f32_unchecked(out, self.input.shape()))
    }

    /// `∂/∂w_c` of the loss: `Σ_i s_i·[(1−ε)·(−lp_i[c])·[t_i = c] + (ε/C)·(−lp_i[c])]`, and for
    /// the mean also `−g·(loss / Σ w_t)·#{i : t_i = c}` (the divisor depends on the weights).
    fn weight_grad(&self, grad: &Array, s: &[f32]) -> Result<Array> {
        let (c, d) = (self.c, self.d);
        let x = self.input.as_slice::<f32>().expect("contiguous f32");
        let ce = self.is_ce();
        let eps = self.smoothing;
        let mut gw = vec![0f64; c];
        let mut count = vec![0f64; c];
        for (p, (&t, &s)) in self.classes.iter().zip(s).enumerate() {
            if t == IGNORED {
                continue;
            }
            count[t] += 1.0;
            let base = (p / d) * c * d + p % d;
            let lp = |k: usize| -> f64 {
                let v = x[base + k * d];
                if ce {
                    let [m, ls] = self.stats[p];
                    ((v - m) - ls) as f64
                } else {
                    v as f64
                }
            };
            gw[t] -= s as f64 * (1.0 - eps as f64) * lp(t);
            if eps > 0.0 {
                let b = s as f64 * eps as f64 / c as f64;
                for (k, g) in gw.iter_mut().enumerate() {
                    *g -= b * lp(k);
                }
            }
        }
        if self.reduction == Reduction::Mean {
            let k = grad.item()? as f64 * self.value as f64 / self.denom;
            gw.iter_mut().zip(&count).for_each(|(g, &n)| *g -= k * n);
        }
        Ok(Array::from_f32_unchecked(gw.into_iter().map(|g| g as f32).collect(), &[c]))
    }
}
