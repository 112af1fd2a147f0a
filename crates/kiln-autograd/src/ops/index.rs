//! Indexing ops: index_select, gather, embedding, masked_fill and where.
//!
//! Index and mask tensors are constants (i64 / u8): only the f32 operands get gradients.
//! The gradients of the selecting ops are scatter-adds (repeated indices accumulate); those of
//! the masked ops are the upstream gradient with the unselected entries zeroed, summed back to
//! each operand's shape.

use super::plain_forms;
use crate::Tensor;
use kiln_tensor::{Array, Result};

impl Tensor {
    /// The slices of `self` along `dim` picked by `index` (i64, 1-d), in index order.
    /// Repeated indices accumulate their gradients.
    pub fn try_index_select(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        let x = self.data();
        let idx = index.data();
        let out = x.index_select(dim, &idx)?;
        let in_shape = x.shape().to_vec();
        drop(x);
        Ok(Tensor::from_op(out, "index_select", &[self], move |g, _| {
            let mut gx = Array::zeros(&in_shape);
            gx.index_add_(dim, &idx, g)?;
            Ok(vec![Some(gx)])
        }))
    }

    /// `out[i][j][k] = self[index[i][j][k]][j][k]` for `dim = 0` (likewise for other dims);
    /// `index` (i64) has `self`'s rank and is no larger outside `dim`. The gradient is a
    /// scatter-add into zeros of `self`'s shape.
    pub fn try_gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        let x = self.data();
        let idx = index.data();
        let out = x.gather(dim, &idx)?;
        let in_shape = x.shape().to_vec();
        drop(x);
        Ok(Tensor::from_op(out, "gather", &[self], move |g, _| {
            let mut gx = Array::zeros(&in_shape);
            gx.scatter_add_(dim, &idx, g)?;
            Ok(vec![Some(gx)])
        }))
    }

    /// Embedding lookup (PyTorch's `F.embedding(self, weight, padding_idx)`): `self` holds i64
    /// ids of any shape, `weight` is `[num, dim]`, and the result `weight[ids]` has shape
    /// `ids.shape + [dim]`. The row `padding_idx` (negative counts from the end) is looked up
    /// normally but gets zero gradient.
    pub fn try_embedding(&self, weight: &Tensor, padding_idx: Option<i64>) -> Result<Tensor> {
        let w = weight.data();
        let ids = self.data();
        let out = w.embedding(&ids)?;
        let num = w.shape()[0];
        if let Some(p) = padding_idx {
            if p >= num as i64 || p < -(num as i64) {
                kiln_tensor::bail!("embedding", "padding_idx {p} is out of range for an embedding table of {num} rows");
            }
        }
        drop(w);
        Ok(Tensor::from_op(out, "embedding", &[weight], move |g, _| {
            Ok(vec![Some(g.embedding_backward(&ids, num, padding_idx)?)])
        }))
    }

    /// `value` where `mask` (u8, broadcastable with `self`) is true, else `self`. `value` may be
    /// infinite. The gradient is 0 at the filled entries.
    pub fn try_masked_fill(&self, mask: &Tensor, value: f32) -> Result<Tensor> {
        let x = self.data();
        let m = mask.data();
        let out = x.masked_fill(&m, value)?;
        let in_shape = x.shape().to_vec();
        drop(x);
        Ok(Tensor::from_op(out, "masked_fill", &[self], move |g, _| {
            Ok(vec![Some(Array::where_cond(&m, &Array::scalar(0.0), g)?.sum_to(&in_shape)?)])
        }))
    }

    /// `input` where `condition` (u8) is true, else `other` (PyTorch's
    /// `torch.where(condition, input, other)`); all three broadcast together. Each gradient is
    /// the upstream gradient where that operand was chosen (0 elsewhere), summed to its shape.
    pub fn try_where_cond(condition: &Tensor, input: &Tensor, other: &Tensor) -> Result<Tensor> {
        let (c, a, b) = (condition.data(), input.data(), other.data());
        let out = Array::where_cond(&c, &a, &b)?;
        let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
        drop((a, b));
        Ok(Tensor::from_op(out, "where", &[input, other], move |g, needs| {
            let zero = Array::scalar(0.0);
            let ga = needs[0].then(|| Array::where_cond(&c, g, &zero)?.sum_to(&sa)).transpose()?;
            let gb = needs[1].then(|| Array::where_cond(&c, &zero, g)?.sum_to(&sb)).transpose()?;
            Ok(vec![ga, gb])
        }))
    }

    /// [`Tensor::try_where_cond`], panicking on bad input.
    #[track_caller]
    pub fn where_cond(condition: &Tensor, input: &Tensor, other: &Tensor) -> Tensor {
        Tensor::try_where_cond(condition, input, other).unwrap_or_else(|e| panic!("{e}"))
    }
}

plain_forms! {
    /// Slices along `dim` picked by `index`. Panics on a bad dim or an out-of-range index.
    fn index_select(dim: isize, index: &Tensor) => try_index_select;
    /// Gathers along `dim` by `index`. Panics on bad shapes or an out-of-range index.
    fn gather(dim: isize, index: &Tensor) => try_gather;
    /// Embedding lookup of these ids in `weight`. Panics on an out-of-range id.
    fn embedding(weight: &Tensor, padding_idx: Option<i64>) => try_embedding;
    /// `value` where `mask`, else `self`. Panics when the shapes do not broadcast.
    fn masked_fill(mask: &Tensor, value: f32) => try_masked_fill;
}
