//! # kiln-optim
//!
//! Optimizers that update parameters in place from their accumulated gradients.

mod sgd;

pub use sgd::Sgd;
