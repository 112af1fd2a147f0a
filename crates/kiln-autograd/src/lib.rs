//! # kiln-autograd
//!
//! The define-by-run graph: a [`Tensor`] records each op applied to it (when grad mode is
//! on and an input requires grad), [`Tensor::backward`] walks the record back and
//! accumulates gradients into the leaves, and [`no_grad`] turns recording off.

mod grad_mode;
pub mod gradcheck;
mod graph;
pub mod ops;
pub mod random;
mod tensor;

pub use grad_mode::{is_grad_enabled, no_grad, NoGradGuard};
pub use graph::{live_nodes, BackwardFn, Node};
pub use kiln_tensor::{Array, DType, Error, Result};
pub use tensor::Tensor;
