//! Shape ops: reshape, view, transpose, `t`, permute, narrow, squeeze, unsqueeze, expand,
//! broadcast_to, flatten, contiguous, cat, stack, split and chunk.
//!
//! The forward of a view op is a view of the input (no copy); its backward is the inverse view
//! of the gradient, except `narrow`, whose gradient is the slice written into zeros, and
//! `expand`, whose gradient is summed over the expanded dims.

use super::plain_forms;
use crate::Tensor;
use kiln_tensor::layout::{infer_shape, Dims};
use kiln_tensor::ops::shape::{split_ranges, SplitBy};
use kiln_tensor::{bail, normalize_dim, Array, Result};

impl Tensor {
    /// Row-major reshape; one entry of `shape` may be -1. A view when the strides allow it
    /// (always for contiguous data), otherwise a copy.
    pub fn try_reshape(&self, shape: &[isize]) -> Result<Tensor> {
        let x = self.data();
        let out = x.reshape(shape)?;
        self.reshaped(out, "reshape")
    }

    /// Like [`Tensor::try_reshape`] but never copies: errors when the layout cannot be viewed
    /// with the new shape (e.g. after a transpose); call [`Tensor::contiguous`] first there.
    pub fn try_view(&self, shape: &[isize]) -> Result<Tensor> {
        let x = self.data();
        let target = infer_shape("view", x.shape(), shape)?;
        let Some(layout) = x.layout().reshape_view(&target) else {
            bail!(
                "view",
                "a tensor of shape {:?} and strides {:?} cannot be viewed as {target:?}; use reshape or contiguous()",
                x.shape(),
                x.layout().strides()
            );
        };
        self.reshaped(x.with_layout(layout), "view")
    }

    /// Records `out` (a reshape of `self`) with the backward that reshapes the gradient back.
    fn reshaped(&self, out: Array, name: &'static str) -> Result<Tensor> {
        let in_shape = self.shape().to_vec();
        Ok(Tensor::from_op(out, name, &[self], move |g, _| Ok(vec![Some(g.reshape_to(&in_shape)?)])))
    }

    /// Swaps dims `dim0` and `dim1` (they may be equal). A view.
    pub fn try_transpose(&self, dim0: isize, dim1: isize) -> Result<Tensor> {
        let out = self.data().transpose(dim0, dim1)?;
        Ok(Tensor::from_op(out, "transpose", &[self], move |g, _| Ok(vec![Some(g.transpose(dim0, dim1)?)])))
    }

    /// The transpose of the last two dims (PyTorch's `mT`; for a 2-d tensor, `t()`). A view.
    pub fn try_t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            bail!("t", "expected at least 2 dims, got shape {:?}", self.shape());
        }
        self.try_transpose(-2, -1)
    }

    /// Output dim `i` is input dim `dims[i]` (negative dims allowed). A view.
    pub fn try_permute(&self, dims: &[isize]) -> Result<Tensor> {
        let out = self.data().permute(dims)?;
        let r = self.rank();
        // The inverse permutation: input dim dims[i] is output dim i.
        let mut inv = vec![0isize; r];
        for (i, &d) in dims.iter().enumerate() {
            inv[normalize_dim("permute", d, r)?] = i as isize;
        }
        Ok(Tensor::from_op(out, "permute", &[self], move |g, _| Ok(vec![Some(g.permute(&inv)?)])))
    }

    /// `self[..., start:start+length, ...]` along `dim`; a negative `start` counts from the end
    /// of the dim. A view; the gradient is written into zeros of the input's shape.
    pub fn try_narrow(&self, dim: isize, start: isize, length: usize) -> Result<Tensor> {
        let d = normalize_dim("narrow", dim, self.rank())?;
        let size = self.shape()[d];
        let s = if start < 0 { start + size as isize } else { start };
        if s < 0 || s as usize > size {
            bail!("narrow", "start {start} is out of range for dim {d} of size {size} (shape {:?})", self.shape());
        }
        let s = s as usize;
        let out = self.data().narrow(d as isize, s, length)?;
        let in_shape = self.shape().to_vec();
        Ok(Tensor::from_op(out, "narrow", &[self], move |g, _| {
            Ok(vec![Some(g.narrow_backward(&in_shape, d as isize, s)?)])
        }))
    }

    /// Removes `dim` if its size is 1; otherwise returns the tensor unchanged. A view.
    pub fn try_squeeze(&self, dim: isize) -> Result<Tensor> {
        let x = self.data();
        if x.rank() == 0 {
            normalize_dim("squeeze", dim, 0)?;
            return Ok(self.clone());
        }
        let d = normalize_dim("squeeze", dim, x.rank())?;
        if x.shape()[d] != 1 {
            return Ok(self.clone());
        }
        let out = x.squeeze(d as isize)?;
        Ok(Tensor::from_op(out, "squeeze", &[self], move |g, _| Ok(vec![Some(g.unsqueeze(d as isize)?)])))
    }

    /// Removes every size-1 dim. A view.
    pub fn squeeze_all(&self) -> Tensor {
        let shape: Vec<isize> = self.shape().iter().filter(|&&s| s != 1).map(|&s| s as isize).collect();
        self.try_reshape(&shape).expect("dropping size-1 dims keeps the element count")
    }

    /// Inserts a size-1 dim at `dim` (counted in the output's rank). A view.
    pub fn try_unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let d = normalize_dim("unsqueeze", dim, self.rank() + 1)?;
        let out = self.data().unsqueeze(d as isize)?;
        Ok(Tensor::from_op(out, "unsqueeze", &[self], move |g, _| Ok(vec![Some(g.squeeze(d as isize)?)])))
    }

    /// PyTorch `expand`: broadcasts size-1 dims to `sizes` (-1 keeps a size) and may add
    /// leading dims. A view; the gradient is summed over the expanded dims.
    pub fn try_expand(&self, sizes: &[isize]) -> Result<Tensor> {
        let out = self.data().expand(sizes)?;
        self.expanded(out)
    }

    /// Broadcasts to `shape` (size-1 dims stretch, leading dims may be added). A view.
    pub fn try_broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let out = self.data().broadcast_to(shape)?;
        self.expanded(out)
    }

    fn expanded(&self, out: Array) -> Result<Tensor> {
        if out.shape() == self.shape() {
            return Ok(self.clone());
        }
        let in_shape = self.shape().to_vec();
        Ok(Tensor::from_op(out, "expand", &[self], move |g, _| Ok(vec![Some(g.sum_to(&in_shape)?)])))
    }

    /// Merges dims `start_dim..=end_dim` into one (a 0-d tensor becomes shape `[1]`). A view
    /// when the strides allow it, otherwise a copy.
    pub fn try_flatten(&self, start_dim: isize, end_dim: isize) -> Result<Tensor> {
        let out = self.data().flatten(start_dim, end_dim)?;
        self.reshaped(out, "flatten")
    }

    /// The same values in a contiguous row-major buffer: `self` itself when already contiguous.
    pub fn contiguous(&self) -> Tensor {
        let x = self.data();
        if x.is_contiguous() {
            return self.clone();
        }
        Tensor::from_op(x.contiguous(), "contiguous", &[self], |g, _| Ok(vec![Some(g.clone())]))
    }

    /// True when the values are stored row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.data().is_contiguous()
    }

    /// Concatenates `tensors` along `dim`; the sizes along `dim` may differ, every other dim
    /// must match. Each input's gradient is a view (narrow) of the output's gradient.
    pub fn try_cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let arrays: Vec<Array> = tensors.iter().map(|t| t.data()).collect();
        let refs: Vec<&Array> = arrays.iter().collect();
        let out = Array::cat(&refs, dim)?;
        // `cat` skips 1-d empty inputs; they get an empty gradient.
        let rank = out.rank();
        let d = normalize_dim("cat", dim, rank)?;
        let spans: Vec<Option<(usize, usize)>> = {
            let mut at = 0;
            arrays
                .iter()
                .map(|a| {
                    if a.rank() != rank {
                        return None;
                    }
                    let n = a.shape()[d];
                    at += n;
                    Some((at - n, n))
                })
                .collect()
        };
        drop(arrays);
        Ok(Tensor::from_op(out, "cat", tensors, move |g, needs| {
            spans
                .iter()
                .zip(needs)
                .map(|(span, &need)| {
                    Ok(match (need, span) {
                        (false, _) => None,
                        (true, Some((start, len))) => Some(g.narrow(d as isize, *start, *len)?),
                        (true, None) => Some(Array::zeros(&[0])),
                    })
                })
                .collect()
        }))
    }

    /// [`Tensor::try_cat`], panicking on bad input.
    #[track_caller]
    pub fn cat(tensors: &[&Tensor], dim: isize) -> Tensor {
        Tensor::try_cat(tensors, dim).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stacks tensors of one shape along a new dim `dim` (counted in the output's rank).
    /// Each input's gradient is a view of the output's gradient.
    pub fn try_stack(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let arrays: Vec<Array> = tensors.iter().map(|t| t.data()).collect();
        let refs: Vec<&Array> = arrays.iter().collect();
        let out = Array::stack(&refs, dim)?;
        let d = normalize_dim("stack", dim, out.rank())? as isize;
        Ok(Tensor::from_op(out, "stack", tensors, move |g, needs| {
            needs.iter().enumerate().map(|(i, &need)| need.then(|| g.narrow(d, i, 1)?.squeeze(d)).transpose()).collect()
        }))
    }

    /// [`Tensor::try_stack`], panicking on bad input.
    #[track_caller]
    pub fn stack(tensors: &[&Tensor], dim: isize) -> Tensor {
        Tensor::try_stack(tensors, dim).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Splits into views of `size` entries along `dim` (the last may be smaller).
    pub fn try_split(&self, size: usize, dim: isize) -> Result<Vec<Tensor>> {
        self.split_by(SplitBy::Size(size), dim)
    }

    /// Splits into views whose sizes along `dim` are `sizes` (they must sum to the dim's size).
    pub fn try_split_sizes(&self, sizes: &[usize], dim: isize) -> Result<Vec<Tensor>> {
        self.split_by(SplitBy::Sizes(sizes), dim)
    }

    /// Splits into at most `chunks` views along `dim` of `ceil(size / chunks)` entries each (the
    /// last may be smaller; fewer come back when the size does not fill them all).
    pub fn try_chunk(&self, chunks: usize, dim: isize) -> Result<Vec<Tensor>> {
        self.split_by(SplitBy::Chunks(chunks), dim)
    }

    fn split_by(&self, by: SplitBy, dim: isize) -> Result<Vec<Tensor>> {
        match split_ranges(self.shape(), dim, by)? {
            None => Ok(vec![self.clone()]),
            Some((d, ranges)) => {
                ranges.into_iter().map(|(start, len)| self.try_narrow(d as isize, start as isize, len)).collect()
            }
        }
    }
}

/// The shape after removing `dims` (each only if its size is 1), for [`Tensor::try_squeeze_dims`].
fn squeezed_shape(shape: &[usize], dims: &[isize]) -> Result<Dims> {
    let mut drop = vec![false; shape.len()];
    for &d in dims {
        if shape.is_empty() {
            normalize_dim("squeeze", d, 0)?;
            continue;
        }
        let k = normalize_dim("squeeze", d, shape.len())?;
        drop[k] = shape[k] == 1;
    }
    Ok(shape.iter().zip(&drop).filter(|(_, &x)| !x).map(|(&s, _)| s).collect())
}

impl Tensor {
    /// Removes each of `dims` whose size is 1 (others are kept). A view.
    pub fn try_squeeze_dims(&self, dims: &[isize]) -> Result<Tensor> {
        let shape = squeezed_shape(self.shape(), dims)?;
        if shape.as_slice() == self.shape() {
            return Ok(self.clone());
        }
        let shape: Vec<isize> = shape.iter().map(|&s| s as isize).collect();
        self.try_reshape(&shape)
    }
}

plain_forms! {
    /// Row-major reshape (one entry may be -1). Panics when the sizes do not match.
    fn reshape(shape: &[isize]) => try_reshape;
    /// Reshape that never copies. Panics when the layout cannot be viewed with the shape.
    fn view(shape: &[isize]) => try_view;
    /// Swaps two dims (a view).
    fn transpose(dim0: isize, dim1: isize) => try_transpose;
    /// The transpose of the last two dims (a view).
    fn t() => try_t;
    /// Permutes the dims (a view).
    fn permute(dims: &[isize]) => try_permute;
    /// `self[..., start:start+length, ...]` along `dim` (a view).
    fn narrow(dim: isize, start: isize, length: usize) => try_narrow;
    /// Removes `dim` if its size is 1 (a view).
    fn squeeze(dim: isize) => try_squeeze;
    /// Removes each of `dims` whose size is 1 (a view).
    fn squeeze_dims(dims: &[isize]) => try_squeeze_dims;
    /// Inserts a size-1 dim (a view).
    fn unsqueeze(dim: isize) => try_unsqueeze;
    /// PyTorch `expand` (a view).
    fn expand(sizes: &[isize]) => try_expand;
    /// Broadcasts to `shape` (a view).
    fn broadcast_to(shape: &[usize]) => try_broadcast_to;
    /// Merges dims `start_dim..=end_dim`.
    fn flatten(start_dim: isize, end_dim: isize) => try_flatten;
}

impl Tensor {
    /// Splits into views of `size` entries along `dim`. Panics on a bad dim or size 0.
    #[track_caller]
    pub fn split(&self, size: usize, dim: isize) -> Vec<Tensor> {
        self.try_split(size, dim).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Splits into views of the given sizes along `dim`. Panics when they do not add up.
    #[track_caller]
    pub fn split_sizes(&self, sizes: &[usize], dim: isize) -> Vec<Tensor> {
        self.try_split_sizes(sizes, dim).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Splits into at most `chunks` views along `dim`. Panics on a bad dim or 0 chunks.
    #[track_caller]
    pub fn chunk(&self, chunks: usize, dim: isize) -> Vec<Tensor> {
        self.try_chunk(chunks, dim).unwrap_or_else(|e| panic!("{e}"))
    }
}
