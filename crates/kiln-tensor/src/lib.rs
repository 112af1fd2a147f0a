//! # kiln-tensor
//!
//! n-d arrays ([`Array`]) of f32 (plus i64 for indices and u8 for masks) with runtime
//! shapes, NumPy/PyTorch broadcasting, zero-copy views, and every CPU kernel of kiln
//! (rayon for parallelism). No autograd here: `kiln-autograd` builds its `Tensor` on top.

mod array;
mod dtype;
mod error;
pub mod layout;
pub mod ops;
pub mod parallel;
mod storage;
pub mod strided;

pub use array::Array;
pub use dtype::DType;
pub use error::{Error, Result};
pub use layout::{broadcast_shapes, normalize_dim, Layout};
pub use storage::{ByteOwner, Element, ExternalF32, Storage};
