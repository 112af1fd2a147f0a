//! # kiln-autograd
//!
//! The define-by-run graph: a [`Tensor`] records each op applied to it (when grad mode is
//! on and an input requires grad), [`Tensor::backward`] walks the record back and
//! accumulates gradients into the leaves, and [`no_grad`] turns recording off.
//! [`checkpoint`] trades compute for memory: a function's intermediate values are recomputed
//! in backward instead of being kept.

mod checkpoint;
mod grad_mode;
pub mod gradcheck;
mod graph;
pub mod ops;
pub mod random;
mod tensor;

pub use checkpoint::checkpoint;
pub use grad_mode::{enable_grad, is_grad_enabled, no_grad, on_pool, EnableGradGuard, NoGradGuard};
pub use graph::{live_nodes, BackwardFn, Node};
pub use kiln_tensor::{Array, DType, Error, Result};
pub use tensor::Tensor;
