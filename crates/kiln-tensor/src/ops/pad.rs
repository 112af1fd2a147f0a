//! `pad`: constant padding, PyTorch's `F.pad(x, pad, mode="constant", value)`. Negative pads
//! remove elements instead, so the gradient of a pad is the pad by the negated amounts.

use super::shape::{copy_strided, with_dtype};
use crate::layout::{Dims, Layout};
use crate::storage::Element;
use crate::{bail, Array, Result};

/// The padding value in each element type (`as` conversions: i64 truncates, u8 saturates).
trait FromF32: Element {
    fn from_f32(v: f32) -> Self;
}
impl FromF32 for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl FromF32 for i64 {
    fn from_f32(v: f32) -> Self {
        v as i64
    }
}
impl FromF32 for u8 {
    fn from_f32(v: f32) -> Self {
        v as u8
    }
}

/// Per dim of `shape`, `(before, after)` from PyTorch's pad list (pairs from the last dim
/// backwards; dims not covered get `(0, 0)`).
fn pairs(shape: &[usize], pads: &[isize]) -> Result<Vec<(isize, isize)>> {
    let rank = shape.len();
    if !pads.len().is_multiple_of(2) {
        bail!("pad", "padding length must be divisible by 2, got {} values {pads:?}", pads.len());
    }
    if pads.len() / 2 > rank {
        bail!(
            "pad",
            "padding length {} is too large for a {rank}-d input of shape {shape:?} (at most {})",
            pads.len(),
            2 * rank
        );
    }
    let mut out = vec![(0, 0); rank];
    for (i, p) in pads.chunks_exact(2).enumerate() {
        out[rank - 1 - i] = (p[0], p[1]);
    }
    Ok(out)
}

impl Array {
    /// Pads with `value` (PyTorch's `F.pad` in constant mode). `pads` holds `(before, after)`
    /// pairs starting from the LAST dim: `[left, right]` pads the last dim, `[left, right, top,
    /// bottom]` the last two, and so on up to every dim. A negative entry removes that many
    /// elements from that end instead. Works for every dtype (the value is converted with
    /// `as`); the result is a new contiguous array.
    ///
    /// ```
    /// use kiln_tensor::Array;
    /// let x = Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let y = x.pad(&[1, 0, 0, 1], 9.0)?; // one column on the left, one row at the bottom
    /// assert_eq!(y.shape(), &[3, 3]);
    /// assert_eq!(y.to_vec_f32()?, vec![9.0, 1.0, 2.0, 9.0, 3.0, 4.0, 9.0, 9.0, 9.0]);
    /// assert_eq!(y.pad(&[-1, 0, 0, -1], 0.0)?.to_vec_f32()?, x.to_vec_f32()?);
    /// # Ok::<(), kiln_tensor::Error>(())
    /// ```
    pub fn pad(&self, pads: &[isize], value: f32) -> Result<Array> {
        let shape = self.shape();
        let pairs = pairs(shape, pads)?;
        let mut out_shape = Dims::with_capacity(shape.len());
        let (mut src, mut dst_spans) = (self.layout().clone(), Vec::with_capacity(shape.len()));
        for (d, (&size, &(before, after))) in shape.iter().zip(&pairs).enumerate() {
            let new = size as isize + before + after;
            // The part of the input kept: from `-before` (if cropped) to `size + after`.
            let (keep0, keep1) = ((-before).max(0), size as isize + after.min(0));
            if new < 0 || keep0 > keep1 {
                bail!(
                    "pad",
                    "input size {size} of dim {d} with padding ({before}, {after}) gives a negative size (input {shape:?}, pad {pads:?})"
                );
            }
            let kept = (keep1 - keep0) as usize;
            src = src.narrow(d, keep0 as usize, kept)?;
            dst_spans.push((before.max(0) as usize, kept));
            out_shape.push(new as usize);
        }
        let mut dst = Layout::contiguous(&out_shape);
        for (d, &(start, len)) in dst_spans.iter().enumerate() {
            dst = dst.narrow(d, start, len)?;
        }
        with_dtype!(self.dtype(), T => {
            let mut out = vec![<T as FromF32>::from_f32(value); out_shape.iter().product()];
            copy_strided(&mut out, &dst, self.buffer::<T>()?, &src);
            Ok(Array::from_storage(T::wrap(out), &out_shape))
        })
    }
}
