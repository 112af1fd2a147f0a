//! Matrix products: `matmul` and `linear`.
//!
//! Backward computes only the gradients asked for: a frozen weight costs no weight-gradient
//! GEMM, and an input that needs no gradient costs no input-gradient GEMM. Each closure keeps
//! only the operands its gradients read.

use super::plain_forms;
use crate::{is_grad_enabled, Tensor};
use kiln_tensor::layout::Dims;
use kiln_tensor::{Array, Result};

impl Tensor {
    /// Matrix product with PyTorch's `matmul` semantics: `[..., n, k] @ [..., k, m]` with
    /// broadcasting batch dims; 1-d operands are a row (lhs) or column (rhs) vector whose
    /// added dim is dropped from the result.
    pub fn try_matmul(&self, other: &Tensor) -> Result<Tensor> {
        let (a, b) = (self.data(), other.data());
        let out = a.matmul(&b)?;
        // dA reads b and a's shape, dB reads a and b's shape; nothing is kept when no
        // gradient will be recorded (keeps the no-grad path of a tiny product short).
        let rec = is_grad_enabled();
        let (need_a, need_b) = (rec && self.requires_grad(), rec && other.requires_grad());
        let for_a: Option<(Array, Dims)> = need_a.then(|| (b, a.shape().into()));
        let for_b: Option<(Array, Dims)> = need_b.then(|| (a, other.shape().into()));
        Ok(Tensor::from_op(out, "matmul", &[self, other], move |g, needs| {
            let ga = match (&for_a, needs[0]) {
                (Some((b, sa)), true) => Some(Array::matmul_grad_lhs(g, b, sa)?),
                _ => None,
            };
            let gb = match (&for_b, needs[1]) {
                (Some((a, sb)), true) => Some(Array::matmul_grad_rhs(g, a, sb)?),
                _ => None,
            };
            Ok(vec![ga, gb])
        }))
    }

    /// `self @ weightᵀ + bias` (PyTorch's `linear`): `self` is `[*, in]` (may be 1-d), `weight`
    /// `[out, in]`, `bias` `[out]`.
    pub fn try_linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (x, w) = (self.data(), weight.data());
        let out = x.linear(&w, bias.map(|b| b.data()).as_ref())?;
        let x_shape: Dims = x.shape().into();
        let (out_f, in_f) = (w.shape()[0], w.shape()[1]);
        let rows: usize = x_shape[..x_shape.len() - 1].iter().product();
        // d_input reads the weight, d_weight reads the input.
        let rec = is_grad_enabled();
        let saved_x = (rec && weight.requires_grad()).then_some(x);
        let saved_w = (rec && self.requires_grad()).then_some(w);
        let all = [self, weight, bias.unwrap_or(self)];
        let inputs = &all[..if bias.is_some() { 3 } else { 2 }];
        Ok(Tensor::from_op(out, "linear", inputs, move |g, needs| {
            let g2 = g.reshape_to(&[rows, out_f])?;
            let gx = match (&saved_w, needs[0]) {
                (Some(w), true) => Some(g2.matmul(w)?.reshape_to(&x_shape)?),
                _ => None,
            };
            let gw = match (&saved_x, needs[1]) {
                (Some(x), true) => Some(g2.t()?.matmul(&x.reshape_to(&[rows, in_f])?)?),
                _ => None,
            };
            let mut grads = vec![gx, gw];
            if needs.len() > 2 {
                grads.push(if needs[2] { Some(g2.sum_leading()?) } else { None });
            }
            Ok(grads)
        }))
    }
}

plain_forms! {
    /// Matrix product (`matmul` semantics). Panics on shapes that do not chain.
    fn matmul(other: &Tensor) => try_matmul;
    /// `self @ weightᵀ + bias`. Panics on mismatched shapes.
    fn linear(weight: &Tensor, bias: Option<&Tensor>) => try_linear;
}
