//! # kiln-nn
//!
//! Building blocks for neural networks: the [`Module`] trait and its derive (named parameters,
//! train / eval, freezing, state dicts), [`Forward`] and [`Sequential`], layers, the loss modules
//! ([`loss`]), LoRA fine-tuning ([`lora`]), and parameter initialisation with PyTorch's defaults.

// The derive names this crate `::kiln_nn`, inside it as well as outside.
extern crate self as kiln_nn;

pub mod activation;
pub mod attention;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod forward;
pub mod init;
pub mod linear;
pub mod lora;
pub mod loss;
pub mod module;
pub mod norm;
pub mod pool;
pub mod sequential;
pub mod transformer;

pub use activation::{LeakyReLU, LogSoftmax, ReLU, SiLU, Sigmoid, Softmax, Softplus, Tanh, GELU};
pub use attention::{MhaOptions, MultiheadAttention};
pub use conv::{Conv1d, Conv1dBuilder, Conv2d, Conv2dBuilder, ConvTranspose2d, ConvTranspose2dBuilder};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use forward::{Forward, ForwardModule};
pub use kiln_derive::Module;
pub use linear::Linear;
pub use lora::{inject_lora, merge_lora, LoraAdapter, LoraConfig};
pub use loss::{BCEWithLogitsLoss, CrossEntropyLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss};
pub use module::{LoadReport, Module, ParamCount, ShapeMismatch, TensorKind};
pub use norm::{BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, RMSNorm};
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
pub use sequential::{Flatten, Identity, Sequential};
pub use transformer::{Activation, TransformerEncoderLayer, TransformerEncoderLayerConfig};
