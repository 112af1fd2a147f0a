//! Elementwise binary ops with broadcasting: add, sub, mul, div, maximum, minimum, and the
//! same with a scalar operand.
//!
//! Every kernel goes through [`zip_map_k`] (or [`map_k`] for one operand): contiguous
//! operands of one shape and scalar operands run a dispatched slice kernel (AVX-512 / AVX2
//! / baseline, see [`vmath`](super::vmath)) over the whole buffer; other broadcasts and
//! strided views run it row by row over the output's last dim. Large outputs are split
//! across rayon's pool, small ones stay on the calling thread.

use crate::layout::{broadcast_shapes, Dims, Layout};
use crate::ops::vmath::{self, filled_vec, Fn1, Fn2, Map1, Map2};
use crate::parallel::{par_chunks_mut_zip, PAR_ELEMS};
use crate::{Array, DType, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Fills `out` (row-major over `shape`, which must have rank ≥ 1) by calling
/// `f(out_row, offsets)` for each row of the last dim, where `offsets` are the buffer offsets
/// of the row start in each of `layouts` (already broadcast to `shape`). Splits the rows
/// across threads when the output is large.
fn for_rows<const N: usize>(
    shape: &[usize],
    layouts: [&Layout; N],
    out: &mut [MaybeUninit<f32>],
    f: impl Fn(&mut [MaybeUninit<f32>], [usize; N]) + Sync + Send,
) {
    let rank = shape.len();
    let len = shape[rank - 1];
    if len == 0 || out.is_empty() {
        return;
    }
    let rows = out.len() / len;
    let outer = &shape[..rank - 1];
    // Walks rows r0..r0 + chunk.len()/len, starting from the multi-index of row r0.
    let walk = |r0: usize, chunk: &mut [MaybeUninit<f32>]| {
        let mut idx: Dims = Dims::from_elem(0, outer.len());
        let mut rem = r0;
        for d in (0..outer.len()).rev() {
            idx[d] = rem % outer[d];
            rem /= outer[d];
        }
        let mut offs: [usize; N] = std::array::from_fn(|k| {
            let l = layouts[k];
            l.offset() + idx.iter().zip(l.strides()).map(|(&i, &s)| i * s).sum::<usize>()
        });
        for row in chunk.chunks_exact_mut(len) {
            f(row, offs);
            // Advance the odometer over the outer dims.
            let mut d = outer.len();
            while d > 0 {
                d -= 1;
                idx[d] += 1;
                for k in 0..N {
                    offs[k] += layouts[k].strides()[d];
                }
                if idx[d] < outer[d] {
                    break;
                }
                for k in 0..N {
                    offs[k] -= layouts[k].strides()[d] * outer[d];
                }
                idx[d] = 0;
            }
        }
    };
    let threads = rayon::current_num_threads();
    if out.len() < PAR_ELEMS || threads == 1 || rows == 1 {
        walk(0, out);
        return;
    }
    let rows_per_chunk = rows.div_ceil(threads * 4).max((PAR_ELEMS / 4).div_ceil(len));
    out.par_chunks_mut(rows_per_chunk * len).enumerate().for_each(|(i, c)| walk(i * rows_per_chunk, c));
}

/// Applies the kernel `k` elementwise over `a` and `b` broadcast together, into a new
/// contiguous f32 array.
pub fn zip_map_k<K: Map2>(op: &'static str, a: &Array, b: &Array, k: K) -> Result<Array> {
    a.expect_dtype(op, DType::F32)?;
    b.expect_dtype(op, DType::F32)?;
    // Fast path: the same shape, both contiguous.
    if a.shape() == b.shape() {
        if let (Some(x), Some(y)) = (a.as_slice::<f32>(), b.as_slice::<f32>()) {
            // SAFETY: the chunks cover the whole buffer and map2_slices writes every element.
            let out = unsafe {
                filled_vec(x.len(), |out| {
                    par_chunks_mut_zip(out, |start, chunk| {
                        let n = chunk.len();
                        vmath::map2_slices(k, &x[start..start + n], &y[start..start + n], chunk);
                    })
                })
            };
            return Ok(Array::from_f32_unchecked(out, a.shape()));
        }
    }
    let shape = broadcast_shapes(op, a.shape(), b.shape())?;
    // Fast path: one operand is a single element, the other contiguous and of the output's shape.
    if b.numel() == 1 && shape.as_slice() == a.shape() {
        if let Some(x) = a.as_slice::<f32>() {
            let s = b.item()?;
            // SAFETY: the chunks cover the whole buffer and the kernel writes every element.
            let out = unsafe {
                filled_vec(x.len(), |out| {
                    par_chunks_mut_zip(out, |start, chunk| {
                        vmath::map2_slice_scalar(k, &x[start..start + chunk.len()], s, chunk);
                    })
                })
            };
            return Ok(Array::from_f32_unchecked(out, &shape));
        }
    }
    if a.numel() == 1 && shape.as_slice() == b.shape() {
        if let Some(y) = b.as_slice::<f32>() {
            let s = a.item()?;
            // SAFETY: the chunks cover the whole buffer and the kernel writes every element.
            let out = unsafe {
                filled_vec(y.len(), |out| {
                    par_chunks_mut_zip(out, |start, chunk| {
                        vmath::map2_scalar_slice(k, s, &y[start..start + chunk.len()], chunk);
                    })
                })
            };
            return Ok(Array::from_f32_unchecked(out, &shape));
        }
    }
    // General path: walk rows of the broadcast output.
    let (a, b) = (a.broadcast_to(&shape)?, b.broadcast_to(&shape)?);
    let (xa, xb) = (a.buffer::<f32>()?, b.buffer::<f32>()?);
    if shape.is_empty() {
        let v = k.apply::<false>(xa[a.layout().offset()], xb[b.layout().offset()]);
        return Ok(Array::from_f32_unchecked(vec![v], &shape));
    }
    let r = shape.len() - 1;
    let (sa, sb) = (a.layout().strides()[r], b.layout().strides()[r]);
    // SAFETY: for_rows hands out every row of the output once, and each branch writes the
    // whole row.
    let out = unsafe {
        filled_vec(shape.iter().product(), |out| {
            for_rows(&shape, [a.layout(), b.layout()], out, |row, [oa, ob]| {
                let len = row.len();
                match (sa, sb) {
                    (1, 1) => vmath::map2_slices(k, &xa[oa..oa + len], &xb[ob..ob + len], row),
                    (1, 0) => vmath::map2_slice_scalar(k, &xa[oa..oa + len], xb[ob], row),
                    (0, 1) => vmath::map2_scalar_slice(k, xa[oa], &xb[ob..ob + len], row),
                    _ => {
                        for (i, o) in row.iter_mut().enumerate() {
                            o.write(k.apply::<false>(xa[oa + i * sa], xb[ob + i * sb]));
                        }
                    }
                }
            })
        })
    };
    Ok(Array::from_f32_unchecked(out, &shape))
}

/// Applies `f` elementwise over `a` and `b` broadcast together, into a new contiguous f32
/// array. `f` is inlined into the dispatched kernels, so simple closures vectorize.
pub fn zip_map(
    op: &'static str,
    a: &Array,
    b: &Array,
    f: impl Fn(f32, f32) -> f32 + Sync + Send + Copy,
) -> Result<Array> {
    zip_map_k(op, a, b, Fn2(f))
}

/// Applies the kernel `k` to every element of `x` (any layout), into a new contiguous f32 array.
pub fn map_k<K: Map1>(op: &'static str, x: &Array, k: K) -> Result<Array> {
    x.expect_dtype(op, DType::F32)?;
    if let Some(src) = x.as_slice::<f32>() {
        return Ok(Array::from_f32_unchecked(map_slice_k(src, k), x.shape()));
    }
    // A strided view: apply the kernel row by row, without gathering a copy first.
    let buf = x.buffer::<f32>()?;
    let r = x.rank() - 1; // rank ≥ 1: a 0-d array is always contiguous
    let s = x.layout().strides()[r];
    // SAFETY: for_rows hands out every row of the output once, and each branch writes the
    // whole row.
    let out = unsafe {
        filled_vec(x.numel(), |out| {
            for_rows(x.shape(), [x.layout()], out, |row, [o]| {
                if s == 1 {
                    vmath::map1_slice(k, &buf[o..o + row.len()], row);
                } else {
                    for (i, v) in row.iter_mut().enumerate() {
                        v.write(k.apply::<false>(buf[o + i * s]));
                    }
                }
            })
        })
    };
    Ok(Array::from_f32_unchecked(out, x.shape()))
}

/// Applies the kernel `k` to each element of a contiguous slice, in parallel for large inputs.
pub fn map_slice_k<K: Map1>(x: &[f32], k: K) -> Vec<f32> {
    // SAFETY: the chunks cover the whole buffer and map1_slice writes every element.
    unsafe {
        filled_vec(x.len(), |out| {
            par_chunks_mut_zip(out, |start, chunk| vmath::map1_slice(k, &x[start..start + chunk.len()], chunk))
        })
    }
}

/// Applies `f` to each element of a contiguous slice, in parallel for large inputs.
pub fn map_slice(x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send + Copy) -> Vec<f32> {
    map_slice_k(x, Fn1(f))
}

/// Maximum that propagates NaN from either side (PyTorch's `maximum`).
#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || a > b {
        a
    } else {
        b
    }
}

/// Minimum that propagates NaN from either side (PyTorch's `minimum`).
#[inline(always)]
fn min_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || a < b {
        a
    } else {
        b
    }
}

impl Array {
    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Array) -> Result<Array> {
        zip_map("add", self, other, |a, b| a + b)
    }
    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Array) -> Result<Array> {
        zip_map("sub", self, other, |a, b| a - b)
    }
    /// `self * other`, broadcasting.
    pub fn mul(&self, other: &Array) -> Result<Array> {
        zip_map("mul", self, other, |a, b| a * b)
    }
    /// `self / other`, broadcasting.
    pub fn div(&self, other: &Array) -> Result<Array> {
        zip_map("div", self, other, |a, b| a / b)
    }
    /// Elementwise maximum (NaN propagates), broadcasting.
    pub fn maximum(&self, other: &Array) -> Result<Array> {
        zip_map("maximum", self, other, max_nan)
    }
    /// Elementwise minimum (NaN propagates), broadcasting.
    pub fn minimum(&self, other: &Array) -> Result<Array> {
        zip_map("minimum", self, other, min_nan)
    }
    /// `self + s`.
    pub fn add_scalar(&self, s: f32) -> Result<Array> {
        map_k("add", self, Fn1(move |a| a + s))
    }
    /// `self - s`.
    pub fn sub_scalar(&self, s: f32) -> Result<Array> {
        map_k("sub", self, Fn1(move |a| a - s))
    }
    /// `self * s`.
    pub fn mul_scalar(&self, s: f32) -> Result<Array> {
        map_k("mul", self, Fn1(move |a| a * s))
    }
    /// `self / s` (a true division, not a multiplication by `1/s`).
    pub fn div_scalar(&self, s: f32) -> Result<Array> {
        map_k("div", self, Fn1(move |a| a / s))
    }

    /// `self += other` in place (other broadcast to self's shape); copies first only if the
    /// buffer is shared. Used to accumulate gradients without allocating.
    pub fn add_assign(&mut self, other: &Array) -> Result<()> {
        other.expect_dtype("add_", DType::F32)?;
        let o = other.broadcast_to(self.shape()).map_err(|_| {
            crate::Error::op(
                "add_",
                format!("cannot add shape {:?} into shape {:?} in place", other.shape(), self.shape()),
            )
        })?;
        let o = o.f32_cow()?;
        let s = self.make_mut_f32()?;
        vmath::map2_inplace(Fn2(|x: f32, y: f32| x + y), s, &o);
        Ok(())
    }
}
