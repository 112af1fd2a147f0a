//! Flat, reference-counted element buffers.

use crate::DType;
use std::sync::Arc;

/// Bytes owned by another object (a memory-mapped file, a loaded buffer) that f32 arrays can
/// borrow without a copy; see [`ExternalF32`].
pub type ByteOwner = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// f32 elements read in place from bytes another object owns, e.g. a tensor of a
/// memory-mapped safetensors file. Holding one keeps the owner (the mapping) alive. Arrays
/// over it read it as a plain `&[f32]`; writing through [`Array::make_mut_f32`](crate::Array::make_mut_f32)
/// first copies the elements into an owned buffer (copy-on-write), so the owner's bytes are
/// never written.
///
/// The owner must return the same bytes from every `as_ref` call and they must not change
/// while borrowed (for a file mapping: the file must not be written or truncated in place).
#[derive(Clone)]
pub struct ExternalF32 {
    owner: ByteOwner,
    byte_offset: usize,
    len: usize,
}

impl ExternalF32 {
    /// `len` f32 values stored little-endian at `byte_offset` of `owner`'s bytes, borrowed in
    /// place. `None` (the caller then copies) when the range is out of bounds, its address is
    /// not 4-byte aligned, or the host is not little-endian.
    pub fn new(owner: ByteOwner, byte_offset: usize, len: usize) -> Option<ExternalF32> {
        if cfg!(not(target_endian = "little")) {
            return None;
        }
        let bytes = (*owner).as_ref();
        let end = len.checked_mul(4).and_then(|n| n.checked_add(byte_offset))?;
        let window = bytes.get(byte_offset..end)?;
        if len > 0 && !(window.as_ptr() as usize).is_multiple_of(std::mem::align_of::<f32>()) {
            return None;
        }
        Some(ExternalF32 { owner, byte_offset, len })
    }

    /// The elements, borrowed from the owner.
    pub fn as_slice(&self) -> &[f32] {
        if self.len == 0 {
            return &[];
        }
        let bytes = (*self.owner).as_ref();
        let window = &bytes[self.byte_offset..self.byte_offset + self.len * 4];
        assert!(
            (window.as_ptr() as usize).is_multiple_of(std::mem::align_of::<f32>()),
            "ExternalF32: the owner's bytes moved (an owner must return the same bytes every time)"
        );
        // SAFETY: `window` is `len * 4` initialized bytes, aligned for f32 (checked above),
        // borrowed from `self.owner` for the lifetime of `&self`; every bit pattern is a valid
        // f32, and `ExternalF32::new` refused big-endian hosts, so the values read as stored.
        unsafe { std::slice::from_raw_parts(window.as_ptr().cast::<f32>(), self.len) }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The object that owns the bytes.
    pub fn owner(&self) -> &ByteOwner {
        &self.owner
    }

    /// Where the elements start in the owner's bytes.
    pub fn byte_offset(&self) -> usize {
        self.byte_offset
    }
}

impl std::fmt::Debug for ExternalF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExternalF32 {{ byte_offset: {}, len: {} }}", self.byte_offset, self.len)
    }
}

/// A flat buffer of one element type. Arrays share it through an `Arc`; views never copy it.
#[derive(Debug, Clone)]
pub enum Storage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f32 elements borrowed in place from bytes another object owns (a memory-mapped file):
    /// read-only, copied into [`Storage::F32`] before any write.
    F32External(ExternalF32),
    /// i64 elements.
    I64(Vec<i64>),
    /// u8 elements (boolean masks).
    U8(Vec<u8>),
}

impl Storage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) | Storage::F32External(_) => DType::F32,
            Storage::I64(_) => DType::I64,
            Storage::U8(_) => DType::U8,
        }
    }
    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F32External(e) => e.len(),
            Storage::I64(v) => v.len(),
            Storage::U8(v) => v.len(),
        }
    }
    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True when the elements are borrowed from another object ([`Storage::F32External`])
    /// rather than owned.
    pub fn is_external(&self) -> bool {
        matches!(self, Storage::F32External(_))
    }
}

/// Element types an [`Array`](crate::Array) can hold.
pub trait Element: Copy + Send + Sync + std::fmt::Debug + PartialEq + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// The buffer, if `s` holds this type.
    fn slice(s: &Storage) -> Option<&[Self]>;
    /// The buffer, mutably, if `s` holds this type in an owned `Vec` (`None` for borrowed
    /// external bytes: [`Array::make_mut_f32`](crate::Array::make_mut_f32) copies those first).
    fn slice_mut(s: &mut Storage) -> Option<&mut Vec<Self>>;
    /// Wraps a buffer.
    fn wrap(v: Vec<Self>) -> Storage;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn slice(s: &Storage) -> Option<&[Self]> {
        match s {
            Storage::F32(v) => Some(v),
            Storage::F32External(e) => Some(e.as_slice()),
            _ => None,
        }
    }
    fn slice_mut(s: &mut Storage) -> Option<&mut Vec<Self>> {
        match s {
            Storage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<Self>) -> Storage {
        Storage::F32(v)
    }
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn slice(s: &Storage) -> Option<&[Self]> {
                match s {
                    Storage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut Storage) -> Option<&mut Vec<Self>> {
                match s {
                    Storage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>) -> Storage {
                Storage::$variant(v)
            }
        }
    };
}
element!(i64, I64);
element!(u8, U8);
