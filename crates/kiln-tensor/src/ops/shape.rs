//! Shape kernels that copy: `cat`, `stack`, the zero-padded inverse of `narrow` (the
//! gradient of a narrow view), `chunk`/`split` (views), and the strided copy and row-walking
//! helpers shared with the indexing kernels. The pure views (reshape, permute, transpose,
//! narrow, expand, squeeze, unsqueeze, flatten) are methods in `array.rs`.

use crate::layout::{contiguous_strides, normalize_dim, Dims, Layout, Strides};
use crate::parallel::PAR_ELEMS;
use crate::storage::Element;
use crate::strided::for_each_row_n;
use crate::{bail, Array, Result};
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::Range;

/// Element types with a zero, so kernels can allocate initialized outputs generically.
pub(crate) trait Zero: Element {
    /// The zero value (0.0, 0, 0).
    const ZERO: Self;
}
impl Zero for f32 {
    const ZERO: Self = 0.0;
}
impl Zero for i64 {
    const ZERO: Self = 0;
}
impl Zero for u8 {
    const ZERO: Self = 0;
}

/// Runs `$body` with `$t` bound to the element type of `$dtype` (f32, i64 or u8).
macro_rules! with_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::DType::I64 => {
                type $t = i64;
                $body
            }
            $crate::DType::U8 => {
                type $t = u8;
                $body
            }
        }
    };
}
pub(crate) use with_dtype;

/// The elements of `a` as a contiguous row-major slice of `T`: borrowed when possible.
pub(crate) fn contiguous_elems<T: Element>(a: &Array) -> Result<Cow<'_, [T]>> {
    Ok(match a.as_slice::<T>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.to_vec::<T>()?),
    })
}

/// Drops size-1 dims and merges neighbouring dims that are contiguous with each other in every
/// one of the `N` stride lists, so strided loops run over as few, as long rows as possible.
pub(crate) fn coalesce<const N: usize>(shape: &[usize], strides: [&[usize]; N]) -> (Dims, [Strides; N]) {
    let mut out_shape = Dims::new();
    let mut out_strides: [Strides; N] = std::array::from_fn(|_| Strides::new());
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        if let Some(last) = out_shape.last_mut() {
            if (0..N).all(|k| *out_strides[k].last().expect("same length") == strides[k][d] * shape[d]) {
                *last *= shape[d];
                for k in 0..N {
                    *out_strides[k].last_mut().expect("same length") = strides[k][d];
                }
                continue;
            }
        }
        out_shape.push(shape[d]);
        for k in 0..N {
            out_strides[k].push(strides[k][d]);
        }
    }
    (out_shape, out_strides)
}

/// Copies the elements of `src` seen through `src_l` into `dst` seen through `dst_l` (both
/// layouts of the same shape). Rows that are contiguous on both sides are block copies.
pub(crate) fn copy_strided<T: Copy>(dst: &mut [T], dst_l: &Layout, src: &[T], src_l: &Layout) {
    debug_assert_eq!(dst_l.shape(), src_l.shape());
    if dst_l.numel() == 0 {
        return;
    }
    let (shape, [ds, ss]) = coalesce(dst_l.shape(), [dst_l.strides(), src_l.strides()]);
    let r = shape.len();
    if r == 0 {
        dst[dst_l.offset()] = src[src_l.offset()];
        return;
    }
    let (len, dst_step, src_step) = (shape[r - 1], ds[r - 1], ss[r - 1]);
    let d = Layout::from_parts(shape.clone(), ds, dst_l.offset());
    let s = Layout::from_parts(shape.clone(), ss, src_l.offset());
    for_each_row_n(&shape, [&d, &s], |[od, os]| {
        if dst_step == 1 && src_step == 1 {
            dst[od..od + len].copy_from_slice(&src[os..os + len]);
        } else {
            for i in 0..len {
                dst[od + i * dst_step] = src[os + i * src_step];
            }
        }
    });
}

/// Calls `f(row, offsets)` for the rows `rows` (row-major numbering over every dim but the
/// last) of `shape`, with the buffer offset of each row's start in each of `layouts` (which
/// have `shape`'s rank; only their strides and offsets are read). A 0-d shape has one row.
pub(crate) fn for_rows<const N: usize>(
    shape: &[usize],
    layouts: [&Layout; N],
    rows: Range<usize>,
    mut f: impl FnMut(usize, [usize; N]),
) {
    if rows.is_empty() || shape.contains(&0) {
        return;
    }
    let r = shape.len();
    if r <= 1 {
        f(0, layouts.map(|l| l.offset()));
        return;
    }
    let outer = &shape[..r - 1];
    let mut idx: Dims = smallvec::SmallVec::from_elem(0, r - 1);
    let mut rem = rows.start;
    for d in (0..r - 1).rev() {
        idx[d] = rem % outer[d];
        rem /= outer[d];
    }
    let mut offs = layouts.map(|l| l.offset() + idx.iter().zip(l.strides()).map(|(&i, &s)| i * s).sum::<usize>());
    let last = rows.end - 1;
    for row in rows {
        f(row, offs);
        if row == last {
            return;
        }
        let mut d = r - 1;
        loop {
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
}

/// Fills `out` (the row-major buffer of `shape`) row by row (rows run along the last dim):
/// `f(row, out_row, offsets)` gets the row's start offset in each of `layouts` (see
/// [`for_rows`]). Runs in parallel over blocks of rows when `out` is large.
pub(crate) fn fill_rows<T: Send, const N: usize>(
    out: &mut [T],
    shape: &[usize],
    layouts: [&Layout; N],
    f: impl Fn(usize, &mut [T], [usize; N]) + Sync,
) {
    if out.is_empty() {
        return;
    }
    let len = shape.last().copied().unwrap_or(1);
    let rows = out.len() / len;
    let threads = rayon::current_num_threads();
    if out.len() < PAR_ELEMS || threads == 1 || rows == 1 {
        for_rows(shape, layouts, 0..rows, |row, offs| f(row, &mut out[row * len..(row + 1) * len], offs));
        return;
    }
    let rows_per = rows.div_ceil(threads * 4).max((PAR_ELEMS / 4).div_ceil(len));
    out.par_chunks_mut(rows_per * len).enumerate().for_each(|(i, chunk)| {
        let r0 = i * rows_per;
        let n = chunk.len() / len;
        for_rows(shape, layouts, r0..r0 + n, |row, offs| {
            let at = (row - r0) * len;
            f(row, &mut chunk[at..at + len], offs)
        });
    });
}

impl Array {
    /// Concatenates `arrays` (all of one dtype) along `dim`; the sizes along `dim` may differ,
    /// every other dim must match. As in PyTorch, 1-d empty arrays (shape `[0]`) are skipped.
    ///
    /// ```
    /// use kiln_tensor::Array;
    /// let a = Array::from_vec(vec![1.0, 2.0], &[2, 1])?;
    /// let b = Array::from_vec(vec![3.0, 4.0, 5.0, 6.0], &[2, 2])?;
    /// let c = Array::cat(&[&a, &b], 1)?;
    /// assert_eq!(c.to_vec_f32()?, vec![1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    /// # Ok::<(), kiln_tensor::Error>(())
    /// ```
    pub fn cat(arrays: &[&Array], dim: isize) -> Result<Array> {
        let Some(first) = arrays.iter().find(|a| !(a.rank() == 1 && a.numel() == 0)).or(arrays.first()) else {
            bail!("cat", "expected a non-empty list of tensors");
        };
        let (rank, dtype) = (first.rank(), first.dtype());
        if rank == 0 {
            bail!("cat", "zero-dimensional tensor (input 0) cannot be concatenated");
        }
        let d = normalize_dim("cat", dim, rank)?;
        let mut parts: Vec<&Array> = Vec::with_capacity(arrays.len());
        let mut out_shape: Dims = Dims::from_slice(first.shape());
        out_shape[d] = 0;
        for (i, a) in arrays.iter().enumerate() {
            if a.dtype() != dtype {
                bail!("cat", "expected all tensors to be {dtype}, but input {i} is {}", a.dtype());
            }
            if a.rank() == 1 && a.numel() == 0 && rank != 1 {
                continue;
            }
            if a.rank() != rank {
                bail!(
                    "cat",
                    "tensors must have the same number of dims: input 0 has shape {:?}, input {i} has shape {:?}",
                    first.shape(),
                    a.shape()
                );
            }
            if let Some(k) = (0..rank).find(|&k| k != d && a.shape()[k] != first.shape()[k]) {
                bail!(
                    "cat",
                    "sizes must match except in dim {d}: input {i} has shape {:?}, expected size {} in dim {k} (like {:?})",
                    a.shape(),
                    first.shape()[k],
                    first.shape()
                );
            }
            out_shape[d] += a.shape()[d];
            parts.push(a);
        }
        with_dtype!(dtype, T => Ok(cat_typed::<T>(&parts, d, &out_shape)?))
    }

    /// Stacks arrays of one shape along a new dim `dim` (counted in the output's rank).
    pub fn stack(arrays: &[&Array], dim: isize) -> Result<Array> {
        let Some(first) = arrays.first() else {
            bail!("stack", "expected a non-empty list of tensors");
        };
        let d = normalize_dim("stack", dim, first.rank() + 1)?;
        for (i, a) in arrays.iter().enumerate() {
            if a.shape() != first.shape() {
                bail!(
                    "stack",
                    "expects each tensor to be equal size, but input 0 has shape {:?} and input {i} has shape {:?}",
                    first.shape(),
                    a.shape()
                );
            }
        }
        let views = arrays.iter().map(|a| a.unsqueeze(d as isize)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Array> = views.iter().collect();
        Array::cat(&refs, d as isize).map_err(|e| match e {
            crate::Error::Op { msg, .. } => crate::Error::op("stack", msg),
            e => e,
        })
    }

    /// The inverse of [`Array::narrow`] for gradients: zeros of `shape` with `self` written into
    /// `[..., start:start + self.dim(dim), ...]` along `dim`.
    pub fn narrow_backward(&self, shape: &[usize], dim: isize, start: usize) -> Result<Array> {
        let d = normalize_dim("narrow_backward", dim, shape.len())?;
        let expect: Dims = shape
            .iter()
            .enumerate()
            .map(|(k, &s)| if k == d { self.shape().get(d).copied().unwrap_or(0) } else { s })
            .collect();
        if self.shape() != expect.as_slice() || start + self.shape()[d] > shape[d] {
            bail!(
                "narrow_backward",
                "a slice of shape {:?} at {start} along dim {d} does not fit shape {shape:?}",
                self.shape()
            );
        }
        with_dtype!(self.dtype(), T => {
            let mut out = vec![<T as Zero>::ZERO; shape.iter().product()];
            let dst = Layout::contiguous(shape).narrow(d, start, self.shape()[d])?;
            copy_strided(&mut out, &dst, self.buffer::<T>()?, self.layout());
            Ok(Array::from_storage(T::wrap(out), shape))
        })
    }

    /// Splits into views of `size` elements along `dim` (the last may be smaller).
    pub fn split(&self, size: usize, dim: isize) -> Result<Vec<Array>> {
        self.split_by(SplitBy::Size(size), dim)
    }

    /// Splits into views whose sizes along `dim` are `sizes` (they must sum to the dim's size).
    pub fn split_sizes(&self, sizes: &[usize], dim: isize) -> Result<Vec<Array>> {
        self.split_by(SplitBy::Sizes(sizes), dim)
    }

    /// Splits into at most `chunks` views along `dim` (PyTorch's `chunk`).
    pub fn chunk(&self, chunks: usize, dim: isize) -> Result<Vec<Array>> {
        self.split_by(SplitBy::Chunks(chunks), dim)
    }

    fn split_by(&self, by: SplitBy, dim: isize) -> Result<Vec<Array>> {
        match split_ranges(self.shape(), dim, by)? {
            None => Ok(vec![self.clone()]),
            Some((d, ranges)) => ranges.into_iter().map(|(start, len)| self.narrow(d as isize, start, len)).collect(),
        }
    }
}

/// The normalized dim and the `(start, length)` of each piece along it.
pub type SplitPieces = (usize, Vec<(usize, usize)>);

/// How [`split_ranges`] cuts a dim: pieces of one size, pieces of given sizes, or a number of
/// equal chunks.
#[derive(Debug, Clone, Copy)]
pub enum SplitBy<'a> {
    /// Pieces of this many entries (the last may be smaller), PyTorch's `split(int)`.
    Size(usize),
    /// Pieces of exactly these sizes, which must add up to the dim, PyTorch's `split(list)`.
    Sizes(&'a [usize]),
    /// At most this many pieces of `ceil(n / chunks)` entries, PyTorch's `chunk`.
    Chunks(usize),
}

/// The normalized dim and the `(start, length)` of each piece when `shape` is split along `dim`
/// (shared by `Array` and the autograd `Tensor`). `None` when a splitting by size meets an empty
/// dim: the whole input is the one piece.
pub fn split_ranges(shape: &[usize], dim: isize, by: SplitBy) -> Result<Option<SplitPieces>> {
    let op = if matches!(by, SplitBy::Chunks(_)) { "chunk" } else { "split" };
    let d = normalize_dim(op, dim, shape.len())?;
    let n = shape[d];
    let size = match by {
        SplitBy::Sizes(sizes) => {
            if sizes.iter().sum::<usize>() != n {
                bail!("split", "split sizes {sizes:?} do not sum to the size {n} of dim {d} (shape {shape:?})");
            }
            let mut start = 0;
            let ranges = sizes
                .iter()
                .map(|&len| {
                    start += len;
                    (start - len, len)
                })
                .collect();
            return Ok(Some((d, ranges)));
        }
        SplitBy::Chunks(0) => bail!("chunk", "the number of chunks must be at least 1"),
        SplitBy::Chunks(chunks) => n.div_ceil(chunks).max(1),
        SplitBy::Size(size) => size,
    };
    if size == 0 && n > 0 {
        bail!("split", "split size 0 cannot split dim {d} of size {n} (shape {shape:?})");
    }
    if n == 0 {
        return Ok(None);
    }
    Ok(Some((d, (0..n).step_by(size).map(|s| (s, size.min(n - s))).collect())))
}

/// `cat` for one element type; `parts` are checked and `out_shape` computed by the caller.
fn cat_typed<T: Zero>(parts: &[&Array], d: usize, out_shape: &[usize]) -> Result<Array> {
    let numel: usize = out_shape.iter().product();
    let outer: usize = out_shape[..d].iter().product();
    let inner: usize = out_shape[d + 1..].iter().product();
    if parts.iter().all(|a| a.is_contiguous()) {
        // Each input contributes one contiguous block per outer index.
        let srcs: Vec<(&[T], usize)> = parts
            .iter()
            .map(|a| (a.as_slice::<T>().expect("contiguous, checked above"), a.shape()[d] * inner))
            .collect();
        let mut out = Vec::with_capacity(numel);
        for o in 0..outer {
            for &(s, block) in &srcs {
                out.extend_from_slice(&s[o * block..(o + 1) * block]);
            }
        }
        return Ok(Array::from_storage(T::wrap(out), out_shape));
    }
    let mut out = vec![T::ZERO; numel];
    let strides = contiguous_strides(out_shape);
    let mut at = 0;
    for a in parts {
        let n = a.shape()[d];
        let dst = Layout::from_parts(Dims::from_slice(a.shape()), strides.clone(), at * strides[d]);
        copy_strided(&mut out, &dst, a.buffer::<T>()?, a.layout());
        at += n;
    }
    Ok(Array::from_storage(T::wrap(out), out_shape))
}
