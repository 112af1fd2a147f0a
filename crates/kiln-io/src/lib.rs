//! # kiln-io
//!
//! Reading and writing tensors in the safetensors format ([`load_safetensors`],
//! [`save_safetensors`]), saving and loading modules with key mapping for foreign layouts
//! ([`save_module`], [`load_module`], [`KeyMap`], [`LoadOptions`]) and training checkpoints
//! ([`Checkpoint`], [`save_checkpoint`], [`load_checkpoint`]). Every file is written
//! atomically ([`write_atomically`]) and every file read is validated first: a malformed file
//! is an error naming the file and the problem, never a panic. See docs/io.md.

mod atomic;
mod checkpoint;
mod keymap;
mod module_io;
mod safetensors_io;

pub use atomic::{temp_path, write_atomically};
pub use checkpoint::{
    load_checkpoint, save_checkpoint, write_checkpoint, Checkpoint, CHECKPOINT_KIND, CHECKPOINT_VERSION,
};
pub use keymap::{KeyMap, LoadOptions};
pub use module_io::{load_module, save_module};
pub use safetensors_io::{
    load_safetensors, load_safetensors_bytes, load_safetensors_copied, parse_dtype, parse_header, read_header,
    read_safetensors, read_safetensors_bytes, read_safetensors_copied, save_safetensors, write_safetensors, Dtype,
    Header, Loaded, TensorInfo, MAX_HEADER_LEN,
};
