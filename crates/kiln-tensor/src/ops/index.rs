//! Indexing kernels: `index_select`, `gather`, `embedding` and their scatter-add inverses
//! (`index_add_`, `scatter_add_`, `embedding_backward`), and the masked selections
//! `masked_fill` and `where_cond`.
//!
//! Every index is checked before any element moves: an out-of-range index is an error that
//! names the op, the index value and the size of the dim, never a panic.

use super::shape::{contiguous_elems, copy_strided, fill_rows, for_rows, with_dtype, Zero};
use crate::layout::{normalize_dim, Dims, Layout, Strides};
use crate::parallel::PAR_ELEMS;
use crate::storage::Element;
use crate::{bail, broadcast_shapes, Array, DType, Result};
use rayon::prelude::*;

/// Checks that `index` is an i64 array and that every value lies in `[0, size)`; returns the
/// values, row-major, as `usize`. `what` describes the indexed dim for the error message.
fn checked_indices(op: &'static str, index: &Array, size: usize, what: impl Fn() -> String) -> Result<Vec<usize>> {
    if index.dtype() != DType::I64 {
        bail!(op, "index must be an i64 tensor, got {} of shape {:?}", index.dtype(), index.shape());
    }
    let vals = contiguous_elems::<i64>(index)?;
    let mut out = Vec::with_capacity(vals.len());
    for &v in vals.iter() {
        if v < 0 || v as u64 >= size as u64 {
            bail!(op, "index {v} is out of range: {} has size {size}", what());
        }
        out.push(v as usize);
    }
    Ok(out)
}

/// Adds rows of `src` (contiguous `[outer, idx.len(), inner]`) into the rows `idx` of `dst`
/// (contiguous `[outer, size, inner]`), skipping destination row `skip`. Large inputs run in
/// parallel over disjoint blocks of destination rows, so repeated indices never race.
fn index_add_rows(dst: &mut [f32], size: usize, inner: usize, idx: &[usize], src: &[f32], skip: Option<usize>) {
    let n = idx.len();
    if dst.is_empty() || inner == 0 || n == 0 {
        return;
    }
    let add = |d: &mut [f32], s: &[f32]| {
        for (a, &b) in d.iter_mut().zip(s) {
            *a += b;
        }
    };
    let outer = dst.len() / (size * inner);
    let threads = rayon::current_num_threads();
    if outer * n * inner < PAR_ELEMS || threads == 1 {
        for o in 0..outer {
            for (j, &k) in idx.iter().enumerate() {
                if Some(k) == skip {
                    continue;
                }
                let s = &src[(o * n + j) * inner..][..inner];
                add(&mut dst[(o * size + k) * inner..][..inner], s);
            }
        }
        return;
    }
    // Each block owns destination rows [r0, r1) of the flattened [outer * size] rows and scans
    // the indices for the rows it owns.
    let rows = outer * size;
    let rows_per = rows.div_ceil(threads * 4).max(1);
    dst.par_chunks_mut(rows_per * inner).enumerate().for_each(|(b, chunk)| {
        let r0 = b * rows_per;
        let r1 = r0 + chunk.len() / inner;
        for o in r0 / size..r1.div_ceil(size) {
            for (j, &k) in idx.iter().enumerate() {
                let row = o * size + k;
                if row < r0 || row >= r1 || Some(k) == skip {
                    continue;
                }
                let s = &src[(o * n + j) * inner..][..inner];
                add(&mut chunk[(row - r0) * inner..][..inner], s);
            }
        }
    });
}

impl Array {
    /// The slices of `self` along `dim` picked by `index` (i64, 1-d; a 0-d index picks one),
    /// in index order: the output has `index.numel()` entries along `dim`. Indices may repeat.
    ///
    /// ```
    /// use kiln_tensor::Array;
    /// let x = Array::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2])?;
    /// let i = Array::from_vec(vec![2i64, 0, 2], &[3])?;
    /// assert_eq!(x.index_select(0, &i)?.to_vec_f32()?, vec![5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
    /// # Ok::<(), kiln_tensor::Error>(())
    /// ```
    pub fn index_select(&self, dim: isize, index: &Array) -> Result<Array> {
        self.index_select_op("index_select", dim, index)
    }

    fn index_select_op(&self, op: &'static str, dim: isize, index: &Array) -> Result<Array> {
        if self.rank() == 0 {
            bail!(op, "cannot index a 0-d tensor along a dim");
        }
        if index.rank() > 1 {
            bail!(op, "index must be 0-d or 1-d, got shape {:?}", index.shape());
        }
        let d = normalize_dim(op, dim, self.rank())?;
        let size = self.shape()[d];
        let idx = checked_indices(op, index, size, || {
            format!("dim {d} of {} {:?}", if op == "embedding" { "weight" } else { "input" }, self.shape())
        })?;
        let mut out_shape = Dims::from_slice(self.shape());
        out_shape[d] = idx.len();
        with_dtype!(self.dtype(), T => Ok(Array::from_storage(T::wrap(index_select_typed::<T>(self, d, &idx, &out_shape)?), &out_shape)))
    }

    /// `self[index]` along dim 0 of a `[num, dim]` table for ids of any shape: the rows of
    /// `self` picked by `ids` (i64), shape `ids.shape + [dim]`. (PyTorch's `F.embedding(ids, self)`.)
    pub fn embedding(&self, ids: &Array) -> Result<Array> {
        if self.rank() != 2 {
            bail!("embedding", "weight must be 2-d [num_embeddings, embedding_dim], got shape {:?}", self.shape());
        }
        let flat = ids.reshape_to(&[ids.numel()])?;
        let out = self.index_select_op("embedding", 0, &flat)?;
        let mut shape = Dims::from_slice(ids.shape());
        shape.push(self.shape()[1]);
        out.reshape_to(&shape)
    }

    /// The gradient of [`Array::embedding`] with respect to the `[num, dim]` weight: `self`
    /// (shape `ids.shape + [dim]`) scatter-added into the rows `ids`. Row `padding_idx`
    /// (negative counts from the end) gets zero gradient.
    pub fn embedding_backward(&self, ids: &Array, num: usize, padding_idx: Option<i64>) -> Result<Array> {
        self.expect_dtype("embedding_backward", DType::F32)?;
        let dim = *self.shape().last().unwrap_or(&0);
        if self.rank() != ids.rank() + 1 || &self.shape()[..ids.rank()] != ids.shape() {
            bail!(
                "embedding_backward",
                "gradient of shape {:?} does not match ids of shape {:?}",
                self.shape(),
                ids.shape()
            );
        }
        let skip = resolve_padding_idx(padding_idx, num)?;
        let idx = checked_indices("embedding", ids, num, || format!("dim 0 of weight [{num}, {dim}]"))?;
        let g = self.f32_cow()?;
        let mut out = vec![0f32; num * dim];
        index_add_rows(&mut out, num, dim, &idx, &g, skip);
        Ok(Array::from_f32_unchecked(out, &[num, dim]))
    }

    /// In place: `self[..., index[j], ...] += source[..., j, ...]` along `dim` (PyTorch's
    /// `index_add_`). `source` has `self`'s shape except `index.numel()` entries along `dim`.
    /// Repeated indices accumulate. Copies `self`'s buffer first only if it is shared.
    pub fn index_add_(&mut self, dim: isize, index: &Array, source: &Array) -> Result<()> {
        self.expect_dtype("index_add_", DType::F32)?;
        source.expect_dtype("index_add_", DType::F32)?;
        if self.rank() == 0 || index.rank() > 1 {
            bail!(
                "index_add_",
                "needs a tensor of rank >= 1 and a 0-d or 1-d index, got shapes {:?} and {:?}",
                self.shape(),
                index.shape()
            );
        }
        let d = normalize_dim("index_add_", dim, self.rank())?;
        let size = self.shape()[d];
        let idx = checked_indices("index_add_", index, size, || format!("dim {d} of self {:?}", self.shape()))?;
        let mut want = Dims::from_slice(self.shape());
        want[d] = idx.len();
        if source.shape() != want.as_slice() {
            bail!(
                "index_add_",
                "source of shape {:?} does not match {want:?} (self {:?} with {} indices along dim {d})",
                source.shape(),
                self.shape(),
                idx.len()
            );
        }
        let inner: usize = self.shape()[d + 1..].iter().product();
        let src = source.f32_cow()?;
        index_add_rows(self.make_mut_f32()?, size, inner, &idx, &src, None);
        Ok(())
    }

    /// `out[i][j][k] = self[index[i][j][k]][j][k]` for `dim = 0` (likewise for other dims).
    /// `index` (i64) has `self`'s rank and `index.size(d) <= self.size(d)` for `d != dim`; the
    /// output has `index`'s shape.
    pub fn gather(&self, dim: isize, index: &Array) -> Result<Array> {
        if self.rank() == 0 && index.rank() == 0 {
            let (x, i) = (self.reshape_to(&[1])?, index.reshape_to(&[1])?);
            return x.gather(0, &i)?.reshape_to(&[]);
        }
        let d = normalize_dim("gather", dim, self.rank())?;
        check_index_shape("gather", self.shape(), index.shape(), d, "input")?;
        let idx = checked_indices("gather", index, self.shape()[d], || format!("dim {d} of input {:?}", self.shape()))?;
        let shape = index.shape();
        // The input seen with the index's shape; its `d` stride comes from the index values.
        let mut strides = Strides::from_slice(self.layout().strides());
        let step = std::mem::replace(&mut strides[d], 0);
        let src_l = Layout::from_parts(Dims::from_slice(shape), strides, self.layout().offset());
        let last = shape.len() - 1;
        let (len, ls) = (shape[last], src_l.strides()[last]);
        with_dtype!(self.dtype(), T => {
            let src = self.buffer::<T>()?;
            let mut out = vec![<T as Zero>::ZERO; idx.len()];
            fill_rows(&mut out, shape, [&src_l], |row, o, [off]| {
                let ix = &idx[row * len..(row + 1) * len];
                for (l, (v, &k)) in o.iter_mut().zip(ix).enumerate() {
                    *v = src[off + k * step + l * ls];
                }
            });
            Ok(Array::from_storage(T::wrap(out), shape))
        })
    }

    /// In place: `self[index[i][j][k]][j][k] += src[i][j][k]` for `dim = 0` (likewise for other
    /// dims; PyTorch's `scatter_add_`). `index` has `self`'s rank, `index.size(d) <= src.size(d)`
    /// for every d and `<= self.size(d)` for `d != dim`. Repeated targets accumulate.
    pub fn scatter_add_(&mut self, dim: isize, index: &Array, src: &Array) -> Result<()> {
        self.expect_dtype("scatter_add_", DType::F32)?;
        src.expect_dtype("scatter_add_", DType::F32)?;
        if self.rank() == 0 {
            let (mut x, i, s) = (self.reshape_to(&[1])?, index.reshape_to(&[1])?, src.reshape_to(&[1])?);
            x.scatter_add_(0, &i, &s)?;
            *self = x.reshape_to(&[])?;
            return Ok(());
        }
        let d = normalize_dim("scatter_add_", dim, self.rank())?;
        check_index_shape("scatter_add_", self.shape(), index.shape(), d, "self")?;
        if src.rank() != index.rank() || index.shape().iter().zip(src.shape()).any(|(&i, &s)| i > s) {
            bail!("scatter_add_", "index of shape {:?} is larger than src of shape {:?}", index.shape(), src.shape());
        }
        let idx =
            checked_indices("scatter_add_", index, self.shape()[d], || format!("dim {d} of self {:?}", self.shape()))?;
        let shape = Dims::from_slice(index.shape());
        let r = shape.len();
        let out_shape = Dims::from_slice(self.shape());
        let mut ostr = crate::layout::contiguous_strides(&out_shape);
        let step = std::mem::replace(&mut ostr[d], 0);
        let dst_l = Layout::from_parts(shape.clone(), ostr, 0);
        let src_l =
            Layout::from_parts(shape.clone(), Strides::from_slice(src.layout().strides()), src.layout().offset());
        let (len, ds, ss) = (shape[r - 1], dst_l.strides()[r - 1], src_l.strides()[r - 1]);
        let sbuf = src.buffer::<f32>()?;
        let out = self.make_mut_f32()?;
        let rows = idx.len() / len.max(1);
        let body = |out: &mut [f32], base: usize, rows: std::ops::Range<usize>| {
            for_rows(&shape, [&dst_l, &src_l], rows, |row, [od, os]| {
                let ix = &idx[row * len..(row + 1) * len];
                for (l, &k) in ix.iter().enumerate() {
                    out[od - base + k * step + l * ds] += sbuf[os + l * ss];
                }
            });
        };
        // Slices along dim 0 of the output are disjoint unless dim 0 is the scatter dim.
        if d != 0 && r >= 2 && idx.len() >= PAR_ELEMS && rayon::current_num_threads() > 1 {
            let block = out_shape[1..].iter().product::<usize>();
            let rows_per_slice = rows / shape[0];
            out.par_chunks_mut(block.max(1)).take(shape[0]).enumerate().for_each(|(i, chunk)| {
                body(chunk, i * block, i * rows_per_slice..(i + 1) * rows_per_slice);
            });
        } else {
            body(out, 0, 0..rows);
        }
        Ok(())
    }

    /// `value` where `mask` (u8, non-zero = true) is set, else `self`; `mask` and `self`
    /// broadcast together. `value` may be infinite.
    pub fn masked_fill(&self, mask: &Array, value: f32) -> Result<Array> {
        self.expect_dtype("masked_fill", DType::F32)?;
        if mask.dtype() != DType::U8 {
            bail!(
                "masked_fill",
                "mask must be a u8 (boolean) tensor, got {} of shape {:?}",
                mask.dtype(),
                mask.shape()
            );
        }
        Array::where_cond_op("masked_fill", mask, &Array::scalar(value), self)
    }

    /// `input` where `condition` (u8, non-zero = true) is set, else `other`; all three broadcast
    /// together (PyTorch's `torch.where(condition, input, other)`).
    pub fn where_cond(condition: &Array, input: &Array, other: &Array) -> Result<Array> {
        Array::where_cond_op("where", condition, input, other)
    }

    fn where_cond_op(op: &'static str, cond: &Array, a: &Array, b: &Array) -> Result<Array> {
        if cond.dtype() != DType::U8 {
            bail!(op, "condition must be a u8 (boolean) tensor, got {} of shape {:?}", cond.dtype(), cond.shape());
        }
        a.expect_dtype(op, DType::F32)?;
        b.expect_dtype(op, DType::F32)?;
        let shape = broadcast_shapes(op, &broadcast_shapes(op, cond.shape(), a.shape())?, b.shape())?;
        let n: usize = shape.iter().product();
        let mut out = vec![0f32; n];
        // Fast path: everything contiguous, nothing broadcast.
        if cond.shape() == shape.as_slice() && a.shape() == shape.as_slice() && b.shape() == shape.as_slice() {
            if let (Some(c), Some(x), Some(y)) = (cond.as_slice::<u8>(), a.as_slice::<f32>(), b.as_slice::<f32>()) {
                crate::parallel::par_chunks_mut_zip(&mut out, |s, o| {
                    let m = o.len();
                    for (((v, &c), &x), &y) in o.iter_mut().zip(&c[s..s + m]).zip(&x[s..s + m]).zip(&y[s..s + m]) {
                        *v = if c != 0 { x } else { y };
                    }
                });
                return Ok(Array::from_f32_unchecked(out, &shape));
            }
        }
        // Fast path for masked_fill: a scalar fill value over a contiguous, unbroadcast input.
        if a.numel() == 1 && cond.shape() == shape.as_slice() && b.shape() == shape.as_slice() {
            if let (Some(c), Some(y)) = (cond.as_slice::<u8>(), b.as_slice::<f32>()) {
                let x = a.item()?;
                crate::parallel::par_chunks_mut_zip(&mut out, |s, o| {
                    let m = o.len();
                    for ((v, &c), &y) in o.iter_mut().zip(&c[s..s + m]).zip(&y[s..s + m]) {
                        *v = if c != 0 { x } else { y };
                    }
                });
                return Ok(Array::from_f32_unchecked(out, &shape));
            }
        }
        let (cl, al, bl) =
            (cond.layout().broadcast_to(&shape)?, a.layout().broadcast_to(&shape)?, b.layout().broadcast_to(&shape)?);
        let (cs, xs, ys) = (cond.buffer::<u8>()?, a.buffer::<f32>()?, b.buffer::<f32>()?);
        let last = |l: &Layout| l.strides().last().copied().unwrap_or(0);
        let (sc, sa, sb) = (last(&cl), last(&al), last(&bl));
        fill_rows(&mut out, &shape, [&cl, &al, &bl], |_, o, [oc, oa, ob]| {
            if sc == 0 {
                // One condition value for the whole row: a copy of one side.
                let (buf, off, st) = if cs[oc] != 0 { (xs, oa, sa) } else { (ys, ob, sb) };
                if st == 1 {
                    o.copy_from_slice(&buf[off..off + o.len()]);
                } else {
                    for (l, v) in o.iter_mut().enumerate() {
                        *v = buf[off + l * st];
                    }
                }
            } else {
                for (l, v) in o.iter_mut().enumerate() {
                    *v = if cs[oc + l * sc] != 0 { xs[oa + l * sa] } else { ys[ob + l * sb] };
                }
            }
        });
        Ok(Array::from_f32_unchecked(out, &shape))
    }
}

/// `index_select` for one element type; `idx` is checked.
fn index_select_typed<T: Zero>(x: &Array, d: usize, idx: &[usize], out_shape: &[usize]) -> Result<Vec<T>> {
    let numel: usize = out_shape.iter().product();
    let mut out = vec![T::ZERO; numel];
    if numel == 0 {
        return Ok(out);
    }
    let size = x.shape()[d];
    let inner: usize = x.shape()[d + 1..].iter().product();
    let n = idx.len();
    if let Some(src) = x.as_slice::<T>() {
        // Contiguous input: every output row (o, j) is one block copy of `inner` elements.
        let fill = |r0: usize, chunk: &mut [T]| {
            for (i, row) in chunk.chunks_exact_mut(inner).enumerate() {
                let (o, j) = ((r0 + i) / n, (r0 + i) % n);
                row.copy_from_slice(&src[(o * size + idx[j]) * inner..][..inner]);
            }
        };
        let threads = rayon::current_num_threads();
        if numel < PAR_ELEMS || threads == 1 {
            fill(0, &mut out);
        } else {
            let rows_per = (numel / inner).div_ceil(threads * 4).max((PAR_ELEMS / 4).div_ceil(inner));
            out.par_chunks_mut(rows_per * inner).enumerate().for_each(|(b, chunk)| fill(b * rows_per, chunk));
        }
    } else {
        // A strided view: copy each picked slice straight from the view (no gather of the
        // whole input first).
        let src = x.buffer::<T>()?;
        let out_l = Layout::contiguous(out_shape);
        for (j, &k) in idx.iter().enumerate() {
            copy_strided(&mut out, &out_l.narrow(d, j, 1)?, src, &x.layout().narrow(d, k, 1)?);
        }
    }
    Ok(out)
}

/// Resolves an optional padding row (negative counts from the end) against `num` rows.
fn resolve_padding_idx(padding_idx: Option<i64>, num: usize) -> Result<Option<usize>> {
    Ok(match padding_idx {
        None => None,
        Some(p) => {
            let q = if p < 0 { p + num as i64 } else { p };
            if q < 0 || q >= num as i64 {
                bail!("embedding", "padding_idx {p} is out of range for an embedding table of {num} rows");
            }
            Some(q as usize)
        }
    })
}

/// Checks the shape rule of gather/scatter: same rank, `index.size(k) <= target.size(k)` for `k != d`.
fn check_index_shape(op: &'static str, target: &[usize], index: &[usize], d: usize, name: &str) -> Result<()> {
    if index.len() != target.len() {
        bail!(op, "index of shape {index:?} must have the same number of dims as {name} of shape {target:?}");
    }
    if let Some(k) = (0..index.len()).find(|&k| k != d && index[k] > target[k]) {
        bail!(
            op,
            "index of shape {index:?} is larger than {name} of shape {target:?} in dim {k} (only dim {d} may differ)"
        );
    }
    Ok(())
}
