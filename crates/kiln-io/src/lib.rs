//! # kiln-io
//!
//! Reading and writing tensors in the safetensors format.

mod safetensors_io;

pub use safetensors_io::{load_safetensors, load_safetensors_bytes};
