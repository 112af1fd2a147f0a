//! Reductions.

use crate::layout::normalize_dim;
use crate::{bail, Array, DType, Result};

/// Normalizes a list of reduction dims (`None` = all dims) into a sorted, deduplicated mask.
pub fn reduce_mask(op: &'static str, rank: usize, dims: Option<&[isize]>) -> Result<Vec<bool>> {
    let mut mask = vec![dims.is_none(); rank];
    if let Some(dims) = dims {
        for &d in dims {
            if rank == 0 && (d == 0 || d == -1) {
                continue;
            }
            let d = normalize_dim(op, d, rank)?;
            if std::mem::replace(&mut mask[d], true) {
                bail!(op, "dim {d} appears more than once in {dims:?}");
            }
        }
    }
    Ok(mask)
}

impl Array {
    /// Sum over `dims` (`None` = all), keeping reduced dims as size 1 when `keepdim`.
    pub fn sum(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Array> {
        self.expect_dtype("sum", DType::F32)?;
        let mask = reduce_mask("sum", self.rank(), dims)?;
        let kept = self.sum_mask(&mask);
        if keepdim {
            Ok(kept)
        } else {
            let shape: Vec<usize> = self.shape().iter().zip(&mask).filter(|(_, &m)| !m).map(|(&s, _)| s).collect();
            kept.reshape_to(&shape)
        }
    }

    /// Sums over the dims where `mask` is true, keeping them as size 1. Accumulates in f64 per
    /// output element order-independently of the layout.
    fn sum_mask(&self, mask: &[bool]) -> Array {
        let shape = self.shape();
        let out_shape: Vec<usize> = shape.iter().zip(mask).map(|(&s, &m)| if m { 1 } else { s }).collect();
        let out_n: usize = out_shape.iter().product();
        // Move the reduced dims last so each output element is a contiguous run after a copy.
        let keep: Vec<usize> = (0..shape.len()).filter(|&d| !mask[d]).collect();
        let red: Vec<usize> = (0..shape.len()).filter(|&d| mask[d]).collect();
        let perm: Vec<usize> = keep.iter().chain(&red).copied().collect();
        let inner: usize = red.iter().map(|&d| shape[d]).product();
        let permuted = self.with_layout(self.layout().permute(&perm).expect("valid permutation")).contiguous();
        let x = permuted.as_slice::<f32>().expect("contiguous f32");
        let mut out = vec![0f32; out_n];
        if inner > 0 {
            for (o, row) in out.iter_mut().zip(x.chunks_exact(inner)) {
                *o = sum_slice(row);
            }
        }
        Array::from_f32_unchecked(out, &out_shape)
    }

    /// Sums a broadcast gradient back to `shape` (the shape of an operand before broadcasting).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Array> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let r = self.rank();
        if shape.len() > r {
            bail!("sum_to", "cannot reduce shape {:?} to the larger rank shape {shape:?}", self.shape());
        }
        let lead = r - shape.len();
        let mut mask = vec![false; r];
        for d in 0..r {
            if d < lead {
                mask[d] = true;
            } else if shape[d - lead] == 1 && self.shape()[d] != 1 {
                mask[d] = true;
            } else if shape[d - lead] != self.shape()[d] {
                bail!("sum_to", "cannot reduce shape {:?} to {shape:?}: dim {d} differs", self.shape());
            }
        }
        self.sum_mask(&mask).reshape_to(shape)
    }
}

/// Sum of a slice with 8 independent accumulators (vectorizes, and is more accurate than a
/// single running sum).
pub fn sum_slice(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    let mut s: f32 = rest.iter().sum();
    for (i, a) in acc.iter().enumerate() {
        let _ = i;
        s += a;
    }
    s
}
