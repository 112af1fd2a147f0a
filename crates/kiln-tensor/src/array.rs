//! [`Array`]: an n-d array of f32, i64 or u8 over a shared buffer.

use crate::layout::{broadcast_shapes, infer_shape, normalize_dim, Dims, Layout};
use crate::storage::{Element, ExternalF32, Storage};
use crate::{bail, strided, DType, Error, Result};
use smallvec::SmallVec;
use std::sync::Arc;

/// An n-d array with a runtime shape. The buffer is shared by reference count, so `clone`
/// is cheap and views (transpose, permute, narrow, expand, squeeze, unsqueeze and reshape of
/// contiguous data) never copy. It records no gradient: that is `kiln-autograd`'s `Tensor`.
///
/// ```
/// use kiln_tensor::Array;
/// let a = Array::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// let t = a.transpose(0, 1)?; // a view: no copy
/// assert_eq!(t.shape(), &[3, 2]);
/// assert_eq!(t.to_vec_f32()?, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// # Ok::<(), kiln_tensor::Error>(())
/// ```
#[derive(Clone)]
pub struct Array {
    storage: Arc<Storage>,
    layout: Layout,
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Array({}, {:?}", self.dtype(), self.shape())?;
        if self.numel() <= 16 {
            match self.dtype() {
                DType::F32 => write!(f, ", {:?}", self.to_vec::<f32>().unwrap_or_default())?,
                DType::I64 => write!(f, ", {:?}", self.to_vec::<i64>().unwrap_or_default())?,
                DType::U8 => write!(f, ", {:?}", self.to_vec::<u8>().unwrap_or_default())?,
            }
        }
        write!(f, ")")
    }
}

impl Array {
    // ---------------------------------------------------------------- construction

    /// A contiguous array of `shape` over `data` (row-major). Errors when the lengths differ.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Array> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!("from_vec", "shape {shape:?} needs {n} elements, got {}", data.len());
        }
        Ok(Array { storage: Arc::new(T::wrap(data)), layout: Layout::contiguous(shape) })
    }

    /// A contiguous f32 array of `shape` read in place from bytes another object owns (e.g. a
    /// memory-mapped file), without a copy. Reads see a plain `&[f32]`; the first in-place
    /// write ([`Array::make_mut_f32`]) copies the elements into an owned buffer, so the owner's
    /// bytes are never written. The array (and its views) keep the owner alive. Errors when the
    /// lengths differ.
    pub fn from_external_f32(data: ExternalF32, shape: &[usize]) -> Result<Array> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!("from_external_f32", "shape {shape:?} needs {n} elements, got {}", data.len());
        }
        Ok(Array { storage: Arc::new(Storage::F32External(data)), layout: Layout::contiguous(shape) })
    }

    /// Wraps an owned buffer with a contiguous layout; the caller guarantees the length.
    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Array {
        debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
        Array { storage: Arc::new(storage), layout: Layout::contiguous(shape) }
    }

    /// A contiguous f32 array from a buffer whose length the caller guarantees equals the
    /// shape's element count (kernels use this for their outputs).
    pub fn from_f32_unchecked(data: Vec<f32>, shape: &[usize]) -> Array {
        assert_eq!(data.len(), shape.iter().product::<usize>(), "from_f32_unchecked: length/shape mismatch");
        Array::from_storage(Storage::F32(data), shape)
    }

    /// A 0-d f32 array.
    pub fn scalar(v: f32) -> Array {
        Array::from_storage(Storage::F32(vec![v]), &[])
    }

    /// An f32 array of `shape` filled with `v`.
    pub fn full(shape: &[usize], v: f32) -> Array {
        Array::from_storage(Storage::F32(vec![v; shape.iter().product()]), shape)
    }

    /// An f32 array of zeros.
    pub fn zeros(shape: &[usize]) -> Array {
        Array::full(shape, 0.0)
    }

    /// An f32 array of ones.
    pub fn ones(shape: &[usize]) -> Array {
        Array::full(shape, 1.0)
    }

    /// Zeros with this array's shape (f32).
    pub fn zeros_like(&self) -> Array {
        Array::zeros(self.shape())
    }

    /// `[0, 1, ..., n-1]` as i64.
    pub fn arange_i64(n: usize) -> Array {
        Array::from_storage(Storage::I64((0..n as i64).collect()), &[n])
    }

    /// The same buffer under another layout; the caller guarantees the layout stays in bounds.
    pub fn with_layout(&self, layout: Layout) -> Array {
        debug_assert!(layout.required_len() <= self.storage.len());
        Array { storage: self.storage.clone(), layout }
    }

    // ---------------------------------------------------------------- inspection

    /// Dimension sizes.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }
    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.layout.rank()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }
    /// Shape, strides and offset.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// The whole shared buffer (a view may use only part of it).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// True when the elements are row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }
    /// True when `self` and `other` share one buffer.
    pub fn shares_storage(&self, other: &Array) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
    /// Size of dim `dim` (negative counts from the end).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.shape()[normalize_dim("size", dim, self.rank())?])
    }

    /// Errors unless the element type is `want`.
    pub fn expect_dtype(&self, op: &'static str, want: DType) -> Result<()> {
        if self.dtype() != want {
            bail!(op, "expected a {want} tensor, got {} of shape {:?}", self.dtype(), self.shape());
        }
        Ok(())
    }

    /// The whole buffer as `T` (errors on another dtype).
    pub fn buffer<T: Element>(&self) -> Result<&[T]> {
        T::slice(&self.storage)
            .ok_or_else(|| Error::op("buffer", format!("expected a {} tensor, got {}", T::DTYPE, self.dtype())))
    }

    /// The elements as a row-major slice when the array is contiguous and of type `T`.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        let r = self.layout.contiguous_range()?;
        T::slice(&self.storage).map(|s| &s[r])
    }

    /// The elements, row-major, as a new `Vec` (errors on another dtype).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        Ok(strided::gather(self.buffer::<T>()?, &self.layout))
    }

    /// The elements as f32, row-major.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.to_vec::<f32>()
    }

    /// The value of a one-element f32 array.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            bail!(
                "item",
                "a tensor with {} elements (shape {:?}) cannot be converted to a scalar",
                self.numel(),
                self.shape()
            );
        }
        Ok(self.buffer::<f32>()?[self.layout.offset()])
    }

    /// A contiguous array with the same values: `self` (no copy) when already contiguous.
    pub fn contiguous(&self) -> Array {
        if self.is_contiguous() {
            return self.clone();
        }
        let storage = match &*self.storage {
            Storage::F32(v) => Storage::F32(strided::gather(v, &self.layout)),
            Storage::F32External(e) => Storage::F32(strided::gather(e.as_slice(), &self.layout)),
            Storage::I64(v) => Storage::I64(strided::gather(v, &self.layout)),
            Storage::U8(v) => Storage::U8(strided::gather(v, &self.layout)),
        };
        Array::from_storage(storage, self.shape())
    }

    /// Contiguous f32 elements: borrowed when possible. For kernels.
    pub fn f32_cow(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        self.expect_dtype("f32", DType::F32)?;
        Ok(match self.as_slice::<f32>() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(self.to_vec::<f32>()?),
        })
    }

    /// The elements as a mutable contiguous f32 slice, copying first only if the buffer is
    /// shared, borrowed from another object (a memory-mapped file: copy-on-write, the file is
    /// never written) or the layout is not contiguous over the whole buffer. Used for in-place
    /// updates; other arrays sharing the old buffer keep seeing the old values.
    pub fn make_mut_f32(&mut self) -> Result<&mut [f32]> {
        self.expect_dtype("make_mut", DType::F32)?;
        let whole = self.layout.offset() == 0 && self.is_contiguous() && self.storage.len() == self.numel();
        if !whole || self.storage.is_external() {
            *self = Array::from_storage(Storage::F32(self.to_vec::<f32>()?), self.shape());
        }
        let v = f32::slice_mut(Arc::make_mut(&mut self.storage)).expect("dtype checked");
        Ok(&mut v[..])
    }

    /// Converts to another dtype (f32 <-> i64 truncates like `as`, u8 is 0/1).
    pub fn to_dtype(&self, dtype: DType) -> Result<Array> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let s = match (self.dtype(), dtype) {
            (DType::F32, DType::I64) => Storage::I64(self.to_vec::<f32>()?.into_iter().map(|x| x as i64).collect()),
            (DType::F32, DType::U8) => {
                Storage::U8(self.to_vec::<f32>()?.into_iter().map(|x| (x != 0.0) as u8).collect())
            }
            (DType::I64, DType::F32) => Storage::F32(self.to_vec::<i64>()?.into_iter().map(|x| x as f32).collect()),
            (DType::I64, DType::U8) => Storage::U8(self.to_vec::<i64>()?.into_iter().map(|x| (x != 0) as u8).collect()),
            (DType::U8, DType::F32) => {
                Storage::F32(self.to_vec::<u8>()?.into_iter().map(|x| (x != 0) as u8 as f32).collect())
            }
            (DType::U8, DType::I64) => {
                Storage::I64(self.to_vec::<u8>()?.into_iter().map(|x| (x != 0) as i64).collect())
            }
            _ => unreachable!("same dtype handled above"),
        };
        Ok(Array::from_storage(s, self.shape()))
    }

    // ---------------------------------------------------------------- views

    /// Row-major reshape; one entry may be -1. A view when the strides allow, else a copy.
    pub fn reshape(&self, shape: &[isize]) -> Result<Array> {
        let shape = infer_shape("reshape", self.shape(), shape)?;
        self.reshape_to(&shape)
    }

    /// Reshape to a fully known shape (no -1).
    pub fn reshape_to(&self, shape: &[usize]) -> Result<Array> {
        if shape.iter().product::<usize>() != self.numel() {
            bail!(
                "reshape",
                "shape {shape:?} is invalid for input of shape {:?} ({} elements)",
                self.shape(),
                self.numel()
            );
        }
        match self.layout.reshape_view(shape) {
            Some(l) => Ok(self.with_layout(l)),
            None => Ok(self.contiguous().with_layout(Layout::contiguous(shape))),
        }
    }

    /// Output dim `i` is input dim `dims[i]` (negative dims allowed). A view.
    pub fn permute(&self, dims: &[isize]) -> Result<Array> {
        let r = self.rank();
        let dims: Vec<usize> = dims.iter().map(|&d| normalize_dim("permute", d, r)).collect::<Result<_>>()?;
        Ok(self.with_layout(self.layout.permute(&dims)?))
    }

    /// Swaps two dims. A view.
    pub fn transpose(&self, dim0: isize, dim1: isize) -> Result<Array> {
        let r = self.rank();
        if r == 0 {
            return Ok(self.clone());
        }
        let (a, b) = (normalize_dim("transpose", dim0, r)?, normalize_dim("transpose", dim1, r)?);
        Ok(self.with_layout(self.layout.transpose(a, b)))
    }

    /// The transpose of the last two dims (`mT`). A view.
    pub fn t(&self) -> Result<Array> {
        if self.rank() < 2 {
            bail!("t", "expected at least 2 dims, got shape {:?}", self.shape());
        }
        self.transpose(-2, -1)
    }

    /// `self[..., start:start+length, ...]` along `dim`. A view.
    pub fn narrow(&self, dim: isize, start: usize, length: usize) -> Result<Array> {
        let d = normalize_dim("narrow", dim, self.rank())?;
        Ok(self.with_layout(self.layout.narrow(d, start, length)?))
    }

    /// Broadcasts to `shape` (PyTorch `expand` with explicit sizes). A view.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Array> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        Ok(self.with_layout(self.layout.broadcast_to(shape)?))
    }

    /// PyTorch `expand`: `-1` keeps a size; new leading dims may be added. A view.
    pub fn expand(&self, sizes: &[isize]) -> Result<Array> {
        if sizes.len() < self.rank() {
            bail!(
                "expand",
                "the number of sizes ({}) must be >= the number of dims of shape {:?}",
                sizes.len(),
                self.shape()
            );
        }
        let lead = sizes.len() - self.rank();
        let mut shape: Dims = SmallVec::with_capacity(sizes.len());
        for (i, &s) in sizes.iter().enumerate() {
            if s == -1 {
                if i < lead {
                    bail!("expand", "-1 is not allowed for the new leading dim {i} (sizes {sizes:?})");
                }
                shape.push(self.shape()[i - lead]);
            } else if s < 0 {
                bail!("expand", "invalid size {s} at dim {i}");
            } else {
                shape.push(s as usize);
            }
        }
        self.broadcast_to(&shape)
    }

    /// Inserts a size-1 dim at `dim` (counted in the output's rank). A view.
    pub fn unsqueeze(&self, dim: isize) -> Result<Array> {
        let d = normalize_dim("unsqueeze", dim, self.rank() + 1)?;
        Ok(self.with_layout(self.layout.unsqueeze(d)))
    }

    /// Removes `dim` if it has size 1; otherwise returns the array unchanged. A view.
    pub fn squeeze(&self, dim: isize) -> Result<Array> {
        if self.rank() == 0 {
            return Ok(self.clone());
        }
        let d = normalize_dim("squeeze", dim, self.rank())?;
        Ok(self.with_layout(self.layout.squeeze(d)))
    }

    /// Merges dims `start_dim..=end_dim` into one.
    pub fn flatten(&self, start_dim: isize, end_dim: isize) -> Result<Array> {
        if self.rank() == 0 {
            return self.reshape_to(&[1]);
        }
        let (s, e) =
            (normalize_dim("flatten", start_dim, self.rank())?, normalize_dim("flatten", end_dim, self.rank())?);
        if s > e {
            bail!("flatten", "start_dim {start_dim} comes after end_dim {end_dim} for shape {:?}", self.shape());
        }
        let sh = self.shape();
        let mut shape: Dims = SmallVec::from_slice(&sh[..s]);
        shape.push(sh[s..=e].iter().product());
        shape.extend_from_slice(&sh[e + 1..]);
        self.reshape_to(&shape)
    }

    /// Both operands broadcast to their common shape (views).
    pub fn broadcast_pair(op: &'static str, a: &Array, b: &Array) -> Result<(Array, Array)> {
        let shape = broadcast_shapes(op, a.shape(), b.shape())?;
        Ok((a.broadcast_to(&shape)?, b.broadcast_to(&shape)?))
    }
}

impl Array {
    /// How many arrays share this one's buffer (views and saved copies included). Lets tests
    /// check that saved tensors are released.
    pub fn storage_refs(&self) -> usize {
        Arc::strong_count(&self.storage)
    }
}

impl Array {
    /// A contiguous array that owns exactly its elements: `self` when it already does, else a
    /// copy (so a small view does not keep a large buffer alive). A whole tensor borrowed from
    /// a memory-mapped file counts as owning its elements (it keeps the mapping, which costs
    /// no process memory of its own, alive).
    pub fn compact(&self) -> Array {
        if self.is_contiguous() && self.layout.offset() == 0 && self.storage.len() == self.numel() {
            self.clone()
        } else {
            let c = self.contiguous();
            if c.shares_storage(self) {
                // Contiguous but a window of a larger buffer: copy the window out.
                match &*self.storage {
                    Storage::F32(v) => {
                        Array::from_storage(Storage::F32(strided::gather(v, &self.layout)), self.shape())
                    }
                    Storage::F32External(e) => {
                        Array::from_storage(Storage::F32(strided::gather(e.as_slice(), &self.layout)), self.shape())
                    }
                    Storage::I64(v) => {
                        Array::from_storage(Storage::I64(strided::gather(v, &self.layout)), self.shape())
                    }
                    Storage::U8(v) => Array::from_storage(Storage::U8(strided::gather(v, &self.layout)), self.shape()),
                }
            } else {
                c
            }
        }
    }
}
