//! Model architectures that load pretrained weights by their original (Hugging Face or
//! PyTorch) parameter names, with no renaming adapter.

pub mod bert;
mod checkpointing;
pub mod efficientnet;
pub mod generate;
pub mod gpt;
pub mod pooling;
pub mod tokenizer;

pub use bert::{BertConfig, BertModel, BertModelOutput};
pub use efficientnet::EfficientNet;
pub use generate::Sampling;
pub use gpt::{Conv1D, Gpt, GptActivation, GptConfig, KvCache};
pub use pooling::{l2_normalize, mean_pooling, Pooling, SentenceEmbedder};
pub use tokenizer::{BatchEncoding, Padding, Tokenizer};
