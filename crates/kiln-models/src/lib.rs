//! Model architectures that load pretrained weights by their original (Hugging Face or
//! PyTorch) parameter names, with no renaming adapter.

pub mod efficientnet;
pub use efficientnet::EfficientNet;
