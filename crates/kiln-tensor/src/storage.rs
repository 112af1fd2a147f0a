//! Flat, reference-counted element buffers.

use crate::DType;

/// A flat buffer of one element type. Arrays share it through an `Arc`; views never copy it.
#[derive(Debug, Clone)]
pub enum Storage {
    /// f32 elements.
    F32(Vec<f32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// u8 elements (boolean masks).
    U8(Vec<u8>),
}

impl Storage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::I64(_) => DType::I64,
            Storage::U8(_) => DType::U8,
        }
    }
    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::I64(v) => v.len(),
            Storage::U8(v) => v.len(),
        }
    }
    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Element types an [`Array`](crate::Array) can hold.
pub trait Element: Copy + Send + Sync + std::fmt::Debug + PartialEq + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// The buffer, if `s` holds this type.
    fn slice(s: &Storage) -> Option<&[Self]>;
    /// The buffer, mutably, if `s` holds this type.
    fn slice_mut(s: &mut Storage) -> Option<&mut Vec<Self>>;
    /// Wraps a buffer.
    fn wrap(v: Vec<Self>) -> Storage;
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
element!(f32, F32);
element!(i64, I64);
element!(u8, U8);
