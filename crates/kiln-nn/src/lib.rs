//! # kiln-nn
//!
//! Building blocks for neural networks. For now: parameter initialisation with PyTorch's
//! defaults.

pub mod init;
