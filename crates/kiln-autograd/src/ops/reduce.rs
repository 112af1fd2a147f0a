//! Reductions: sum, mean, amax, var, logsumexp (differentiable) and argmax (not).
//!
//! `dims: None` (or an empty list) reduces every dim; negative dims count from the end. With
//! `keepdim` the reduced dims stay as size 1, otherwise they are removed (a full reduction
//! gives shape `[]`).

use super::plain_forms;
use crate::Tensor;
use kiln_tensor::ops::reduce::{self as kr, expand_reduced, reduce_mask};
use kiln_tensor::Result;

/// Owned copy of an optional dim list, for backward closures.
fn own(dims: Option<&[isize]>) -> Option<Vec<isize>> {
    dims.map(<[isize]>::to_vec)
}

impl Tensor {
    /// Sum over `dims`; the gradient is the output gradient broadcast back.
    pub fn try_sum(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Tensor> {
        let x = self.data();
        let out = x.sum(dims, keepdim)?;
        let in_shape = x.shape().to_vec();
        let mask = reduce_mask("sum", in_shape.len(), dims)?;
        Ok(Tensor::from_op(out, "sum", &[self], move |g, _| {
            Ok(vec![Some(expand_reduced(g, &in_shape, &mask)?.contiguous())])
        }))
    }

    /// Mean over `dims`; the gradient is the output gradient over N, broadcast back.
    pub fn try_mean(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Tensor> {
        let x = self.data();
        let out = x.mean(dims, keepdim)?;
        let in_shape = x.shape().to_vec();
        let dims = own(dims);
        Ok(Tensor::from_op(out, "mean", &[self], move |g, _| {
            Ok(vec![Some(kr::mean_backward(g, &in_shape, dims.as_deref())?)])
        }))
    }

    /// Maximum over `dims`. The gradient of each reduced slice is split equally among the
    /// elements equal to its maximum (as in PyTorch).
    pub fn try_amax(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Tensor> {
        let x = self.data();
        let out = x.amax(dims, keepdim)?;
        let (saved, dims) = (out.clone(), own(dims));
        Ok(Tensor::from_op(out, "amax", &[self], move |g, _| {
            Ok(vec![Some(kr::amax_backward(&x, &saved, g, dims.as_deref())?)])
        }))
    }

    /// Variance over `dims`: `Σ(x − mean)² / max(0, N − correction)` (`correction` 1 is
    /// PyTorch's `unbiased=True`, 0 the biased estimate).
    pub fn try_var(&self, dims: Option<&[isize]>, keepdim: bool, correction: i64) -> Result<Tensor> {
        let x = self.data();
        let out = x.var(dims, keepdim, correction)?;
        let dims = own(dims);
        Ok(Tensor::from_op(out, "var", &[self], move |g, _| {
            Ok(vec![Some(kr::var_backward(&x, g, dims.as_deref(), correction)?)])
        }))
    }

    /// `log Σ exp(x)` over `dims`, computed stably. The gradient is `g · softmax(x)` over the
    /// reduced dims (0 at `-inf` inputs).
    pub fn try_logsumexp(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Tensor> {
        let x = self.data();
        let out = x.logsumexp(dims, keepdim)?;
        let (saved, dims) = (out.clone(), own(dims));
        Ok(Tensor::from_op(out, "logsumexp", &[self], move |g, _| {
            Ok(vec![Some(kr::logsumexp_backward(&x, &saved, g, dims.as_deref())?)])
        }))
    }

    /// Index (i64) of the first maximum along `dim`, or into the flattened tensor when `dim` is
    /// `None`. Not differentiable.
    pub fn try_argmax(&self, dim: Option<isize>, keepdim: bool) -> Result<Tensor> {
        Ok(Tensor::non_differentiable(self.data().argmax(dim, keepdim)?))
    }

    /// Sum of all elements, as a 0-d tensor. Panics on a non-f32 tensor.
    #[track_caller]
    pub fn sum_all(&self) -> Tensor {
        self.sum(None, false)
    }

    /// Mean of all elements, as a 0-d tensor (NaN for an empty tensor). Panics on a non-f32 tensor.
    #[track_caller]
    pub fn mean_all(&self) -> Tensor {
        self.mean(None, false)
    }
}

plain_forms! {
    /// Sum over `dims` (`None` = all). Panics on an invalid dim.
    fn sum(dims: Option<&[isize]>, keepdim: bool) => try_sum;
    /// Mean over `dims` (`None` = all). Panics on an invalid dim.
    fn mean(dims: Option<&[isize]>, keepdim: bool) => try_mean;
    /// Maximum over `dims` (`None` = all). Panics on an invalid dim or an empty reduction.
    fn amax(dims: Option<&[isize]>, keepdim: bool) => try_amax;
    /// Variance over `dims` with `correction`. Panics on an invalid dim.
    fn var(dims: Option<&[isize]>, keepdim: bool, correction: i64) => try_var;
    /// `log Σ exp` over `dims`. Panics on an invalid dim.
    fn logsumexp(dims: Option<&[isize]>, keepdim: bool) => try_logsumexp;
    /// Index of the first maximum along `dim` (`None` = flattened). Panics on an invalid dim.
    fn argmax(dim: Option<isize>, keepdim: bool) => try_argmax;
}
