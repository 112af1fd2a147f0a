//! Model architectures that load pretrained weights by their original (Hugging Face or
//! PyTorch) parameter names, with no renaming adapter.

pub mod generate;
pub mod gpt;

pub use generate::Sampling;
pub use gpt::{Conv1D, Gpt, GptActivation, GptConfig, KvCache};
