//! # kiln-nn
//!
//! Building blocks for neural networks: the [`Module`] trait and its derive (named parameters,
//! train / eval, freezing, state dicts), and parameter initialisation with PyTorch's defaults.

// The derive names this crate `::kiln_nn`, inside it as well as outside.
extern crate self as kiln_nn;

pub mod init;
pub mod module;

pub use kiln_derive::Module;
pub use module::{LoadReport, Module, ParamCount, ShapeMismatch, TensorKind};
