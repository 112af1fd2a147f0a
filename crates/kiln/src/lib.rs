#![doc = include_str!("../../../README.md")]
//!
//! ## This crate
//!
//! The facade: it re-exports the layered
//! crates (`kiln-tensor`, `kiln-autograd`, `kiln-nn`, `kiln-optim`, `kiln-data`, `kiln-io`, `kiln-train`);
//! `use kiln::prelude::*` brings the everyday names into scope.
//!
//! With the default `mimalloc` feature, kiln installs mimalloc as the global allocator, so
//! tensor buffers are recycled instead of faulting in fresh pages on every op; freed memory
//! is kept for reuse rather than returned to the OS (set `MIMALLOC_PURGE_DELAY` to override).

pub use kiln_autograd as autograd;
pub use kiln_data as data;
pub use kiln_io as io;
pub use kiln_models as models;
pub use kiln_nn as nn;
pub use kiln_optim as optim;
pub use kiln_tensor as tensor;
pub use kiln_train as train;

pub use kiln_autograd::{no_grad, Array, DType, Error, NoGradGuard, Result, Tensor};
pub use kiln_tensor::parallel::{num_threads, set_num_threads};

#[cfg(feature = "mimalloc")]
mod allocator;

/// The everyday names: `use kiln::prelude::*`.
pub mod prelude {
    pub use kiln_autograd::{no_grad, Array, DType, Error, NoGradGuard, Result, Tensor};
    pub use kiln_nn::{Forward, Module};
    pub use kiln_optim::{Adam, AdamW, LrScheduler, Optimizer, Sgd};
}
