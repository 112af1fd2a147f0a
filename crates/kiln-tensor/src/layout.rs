//! Shapes, strides and the view arithmetic behind them.
//!
//! A [`Layout`] says where each element of an n-d array lives in a flat buffer:
//! `offset + Σ index[d] · strides[d]`. Views (transpose, permute, narrow, expand,
//! squeeze, unsqueeze) only change the layout, never the buffer.

use crate::{bail, Result};
use smallvec::SmallVec;

/// A list of dimension sizes (inline up to 6 dims, so small shapes never allocate).
pub type Dims = SmallVec<[usize; 6]>;
/// A list of strides, in elements (0 for broadcast dims).
pub type Strides = SmallVec<[usize; 6]>;

/// Shape, strides (in elements) and offset of an n-d view into a flat buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Dims,
    strides: Strides,
    offset: usize,
}

/// Row-major (C-order) strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Strides {
    let mut strides: Strides = SmallVec::from_elem(0, shape.len());
    let mut acc = 1;
    for d in (0..shape.len()).rev() {
        strides[d] = acc;
        acc *= shape[d];
    }
    strides
}

/// Resolves a possibly negative dim (Python style) against `rank`.
pub fn normalize_dim(op: &'static str, dim: isize, rank: usize) -> Result<usize> {
    // A 0-d tensor takes dims 0 and -1, as in PyTorch (it wraps by max(rank, 1)).
    let r = (rank as isize).max(1);
    let d = if dim < 0 { dim + r } else { dim };
    if d < 0 || d >= r {
        bail!(op, "dim {dim} is out of range for a tensor of rank {rank} (expected in [{}, {}])", -r, r - 1);
    }
    Ok(d as usize)
}

/// The shape two operands broadcast to, NumPy/PyTorch style.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Dims> {
    let rank = a.len().max(b.len());
    let mut out: Dims = SmallVec::from_elem(1, rank);
    for i in 0..rank {
        let da = if i < rank - a.len() { 1 } else { a[i - (rank - a.len())] };
        let db = if i < rank - b.len() { 1 } else { b[i - (rank - b.len())] };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            bail!(op, "shapes {a:?} and {b:?} do not broadcast: dim {i} of the result would need {da} == {db}");
        };
    }
    Ok(out)
}

impl Clone for Layout {
    // SmallVec's derived clone copies item by item; a slice copy is measurably cheaper on
    // the per-op path (every Array clone copies its layout).
    fn clone(&self) -> Self {
        Layout {
            shape: SmallVec::from_slice(&self.shape),
            strides: SmallVec::from_slice(&self.strides),
            offset: self.offset,
        }
    }
}

impl Layout {
    /// A contiguous row-major layout of `shape` at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { strides: contiguous_strides(shape), shape: SmallVec::from_slice(shape), offset: 0 }
    }

    /// A layout from its parts. The caller guarantees every index stays inside the buffer.
    pub fn from_parts(shape: Dims, strides: Strides, offset: usize) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Layout { shape, strides, offset }
    }

    /// Dimension sizes.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Strides in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    /// Offset of element `[0, 0, ...]` in the buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements are stored row-major without gaps (size-1 dims may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for d in (0..self.shape.len()).rev() {
            if self.shape[d] != 1 && self.strides[d] != acc {
                return false;
            }
            acc *= self.shape[d];
        }
        true
    }

    /// The buffer range `offset..offset + numel` when contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous().then(|| self.offset..self.offset + self.numel())
    }

    /// Smallest buffer length this layout can address (0 for an empty array).
    pub fn required_len(&self) -> usize {
        if self.shape.contains(&0) {
            return 0;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(&n, &s)| (n - 1) * s).sum::<usize>() + 1
    }

    /// Output dim `i` is input dim `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Layout> {
        let r = self.rank();
        let mut seen = [false; 64];
        if dims.len() != r || dims.iter().any(|&d| d >= r || std::mem::replace(&mut seen[d], true)) {
            bail!("permute", "dims {dims:?} are not a permutation of 0..{r} for shape {:?}", self.shape);
        }
        Ok(Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        })
    }

    /// Swaps two (already normalized) dims.
    pub fn transpose(&self, d0: usize, d1: usize) -> Layout {
        let mut l = self.clone();
        l.shape.swap(d0, d1);
        l.strides.swap(d0, d1);
        l
    }

    /// `start..start + len` along (normalized) dim `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        let size = self.shape[dim];
        if start.checked_add(len).is_none_or(|end| end > size) {
            bail!("narrow", "start {start} + length {len} exceeds size {size} of dim {dim} of shape {:?}", self.shape);
        }
        let mut l = self.clone();
        if len > 0 {
            l.offset += start * l.strides[dim];
        }
        l.shape[dim] = len;
        Ok(l)
    }

    /// Broadcasts to `shape` (adding leading dims; size-1 dims get stride 0).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.rank() {
            bail!("expand", "cannot expand shape {:?} to {shape:?}: the target has fewer dims", self.shape);
        }
        let lead = shape.len() - self.rank();
        let mut strides: Strides = SmallVec::from_elem(0, shape.len());
        for i in 0..self.rank() {
            let (from, to) = (self.shape[i], shape[lead + i]);
            if from == to {
                strides[lead + i] = self.strides[i];
            } else if from == 1 {
                strides[lead + i] = 0;
            } else {
                bail!(
                    "expand",
                    "cannot expand shape {:?} to {shape:?}: dim {} has size {from}, not 1 or {to}",
                    self.shape,
                    lead + i
                );
            }
        }
        Ok(Layout { shape: SmallVec::from_slice(shape), strides, offset: self.offset })
    }

    /// Inserts a size-1 dim at (normalized, output-rank) position `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        let stride = if dim < l.rank() { l.strides[dim] * l.shape[dim] } else { 1 };
        l.shape.insert(dim, 1);
        l.strides.insert(dim, stride);
        l
    }

    /// Removes (normalized) dim `dim` if its size is 1.
    pub fn squeeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        if l.shape[dim] == 1 {
            l.shape.remove(dim);
            l.strides.remove(dim);
        }
        l
    }

    /// The same elements under a new shape, without copying, when the strides allow it
    /// (always for contiguous layouts). `None` when a copy is needed.
    pub fn reshape_view(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout {
                strides: contiguous_strides(shape),
                shape: SmallVec::from_slice(shape),
                offset: self.offset,
            });
        }
        if self.numel() == 0 || self.rank() == 0 {
            return Some(Layout {
                strides: contiguous_strides(shape),
                shape: SmallVec::from_slice(shape),
                offset: self.offset,
            });
        }
        // General case (PyTorch's `computeStride`): walk the old dims from the innermost,
        // grouping them into chunks that are contiguous among themselves, and split each
        // chunk into new dims.
        let (os, ot) = (&self.shape, &self.strides);
        let mut strides: Strides = SmallVec::from_elem(0, shape.len());
        let mut view_d = shape.len() as isize - 1;
        let mut chunk_base = *ot.last().unwrap();
        let (mut tensor_numel, mut view_numel) = (1usize, 1usize);
        for td in (0..os.len()).rev() {
            tensor_numel *= os[td];
            if td == 0 || (os[td - 1] != 1 && ot[td - 1] != tensor_numel * chunk_base) {
                while view_d >= 0 && (view_numel < tensor_numel || shape[view_d as usize] == 1) {
                    strides[view_d as usize] = view_numel * chunk_base;
                    view_numel *= shape[view_d as usize];
                    view_d -= 1;
                }
                if view_numel != tensor_numel {
                    return None;
                }
                if td > 0 {
                    chunk_base = ot[td - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        if view_d != -1 {
            return None;
        }
        Some(Layout { shape: SmallVec::from_slice(shape), strides, offset: self.offset })
    }

    /// Buffer offsets of the rows along the last dim, in row-major order of the other dims.
    /// Calls `f(offset_of_row_start)` for each row; rows are `shape[-1]` elements apart by `strides[-1]`.
    pub fn for_each_row(&self, mut f: impl FnMut(usize)) {
        let r = self.rank();
        if r == 0 {
            f(self.offset);
            return;
        }
        if self.shape.contains(&0) {
            return;
        }
        let outer = &self.shape[..r - 1];
        let ostr = &self.strides[..r - 1];
        let mut idx: Dims = SmallVec::from_elem(0, outer.len());
        let mut off = self.offset;
        loop {
            f(off);
            // Increment the multi-index.
            let mut d = outer.len();
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                idx[d] += 1;
                off += ostr[d];
                if idx[d] < outer[d] {
                    break;
                }
                off -= ostr[d] * outer[d];
                idx[d] = 0;
            }
        }
    }
}

/// Resolves a reshape target with at most one `-1` against `numel`.
pub fn infer_shape(op: &'static str, from: &[usize], shape: &[isize]) -> Result<Dims> {
    let numel: usize = from.iter().product();
    let mut infer = None;
    let mut known = 1usize;
    for (i, &s) in shape.iter().enumerate() {
        if s == -1 {
            if infer.replace(i).is_some() {
                bail!(op, "only one dim may be -1 in {shape:?}");
            }
        } else if s < 0 {
            bail!(op, "invalid size {s} at dim {i} in {shape:?}");
        } else {
            known *= s as usize;
        }
    }
    let mut out: Dims = shape.iter().map(|&s| s.max(0) as usize).collect();
    if let Some(i) = infer {
        if known == 0 || !numel.is_multiple_of(known) {
            bail!(op, "shape {shape:?} is invalid for input of shape {from:?} ({numel} elements)");
        }
        out[i] = numel / known;
    } else if known != numel {
        bail!(op, "shape {shape:?} is invalid for input of shape {from:?} ({numel} elements)");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_view_of_transposed_needs_copy() {
        let l = Layout::contiguous(&[2, 3]).transpose(0, 1);
        assert!(l.reshape_view(&[6]).is_none());
        assert!(l.reshape_view(&[3, 2, 1]).is_some());
    }

    #[test]
    fn reshape_view_splits_a_narrowed_dim() {
        // [4, 6] narrowed to columns 0..4 -> rows stay contiguous chunks of 4.
        let l = Layout::contiguous(&[4, 6]).narrow(1, 0, 4).unwrap();
        let v = l.reshape_view(&[4, 2, 2]).unwrap();
        assert_eq!(v.strides(), &[6, 2, 1]);
        assert!(l.reshape_view(&[16]).is_none());
    }

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shapes("add", &[3, 1, 5], &[4, 1]).unwrap().as_slice(), &[3, 4, 5]);
        assert!(broadcast_shapes("add", &[3], &[4]).is_err());
        assert_eq!(broadcast_shapes("add", &[], &[2, 2]).unwrap().as_slice(), &[2, 2]);
    }

    #[test]
    fn rows_of_a_permuted_layout() {
        let l = Layout::contiguous(&[2, 3, 4]).permute(&[1, 0, 2]).unwrap();
        let mut offs = vec![];
        l.for_each_row(|o| offs.push(o));
        assert_eq!(offs, vec![0, 12, 4, 16, 8, 20]);
    }
}
