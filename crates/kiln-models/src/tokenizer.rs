//! [`Tokenizer`]: a thin wrapper of the Hugging Face `tokenizers` crate that turns a batch of
//! sentences into the i64 tensors a BERT-style model takes (`input_ids`, `attention_mask`,
//! `token_type_ids`), truncated and padded.

use kiln_autograd::{Error, Result, Tensor};
use std::path::Path;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, PostProcessor, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

/// How a batch is padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// To the longest sequence of the batch.
    Longest,
    /// To exactly this length (sequences are also truncated to it).
    Fixed(usize),
}

/// A tokenized batch: `[batch, len]` i64 tensors, padded on the right.
#[derive(Debug, Clone)]
pub struct BatchEncoding {
    /// Token ids (padding: the tokenizer's pad id).
    pub input_ids: Tensor,
    /// 1 at tokens, 0 at padding.
    pub attention_mask: Tensor,
    /// Segment ids (0 for single sentences).
    pub token_type_ids: Tensor,
    /// The number of real tokens (special tokens included) of each sentence.
    pub lengths: Vec<usize>,
}

/// A tokenizer read from a `tokenizer.json`, with its truncation length and padding.
///
/// By default sequences are truncated to the `max_length` of the file's truncation setting
/// (none if it has none) and padded to the longest of the batch; [`Tokenizer::with_max_len`]
/// and [`Tokenizer::with_padding`] change that. The pad token and id are the file's (its
/// padding setting, else `[PAD]`, else id 0).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    max_len: Option<usize>,
    padding: Padding,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("max_len", &self.max_len).field("padding", &self.padding).finish()
    }
}

fn tk_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Format { what: what.to_string(), msg: e.to_string() }
}

impl Tokenizer {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::Io {
                path: path.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer file not found"),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| tk_error(&path.display().to_string(), e))?;
        let max_len = inner.get_truncation().map(|t| t.max_length);
        Tokenizer::configure(Tokenizer { inner, max_len, padding: Padding::Longest })
    }

    /// Reads `dir/tokenizer.json`.
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        Tokenizer::from_file(dir.as_ref().join("tokenizer.json"))
    }

    /// Truncates every sequence to at most `max_len` tokens (special tokens included). An
    /// error when `max_len` leaves no room beside the special tokens.
    pub fn with_max_len(mut self, max_len: usize) -> Result<Tokenizer> {
        self.max_len = Some(max_len);
        Tokenizer::configure(self)
    }

    /// Pads to the longest sequence of each batch or to a fixed length (which also truncates
    /// to that length; an error when it leaves no room beside the special tokens).
    pub fn with_padding(mut self, padding: Padding) -> Result<Tokenizer> {
        self.padding = padding;
        Tokenizer::configure(self)
    }

    /// The truncation length (`None`: no truncation).
    pub fn max_len(&self) -> Option<usize> {
        self.max_len
    }

    /// The padding.
    pub fn padding(&self) -> Padding {
        self.padding
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The id of `token`, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The truncation length in effect: `max_len`, capped by a fixed padding length.
    fn effective_max_len(&self) -> Option<usize> {
        match (self.max_len, self.padding) {
            (Some(m), Padding::Fixed(n)) => Some(m.min(n)),
            (None, Padding::Fixed(n)) => Some(n),
            (m, Padding::Longest) => m,
        }
    }

    /// Sets the inner tokenizer's truncation and padding from `max_len` and `padding`.
    fn configure(mut self) -> Result<Tokenizer> {
        let special = self.inner.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if let Some(m) = self.effective_max_len() {
            if m <= special {
                return Err(Error::op(
                    "tokenizer",
                    format!("a maximum length of {m} leaves no room for tokens beside the {special} special tokens"),
                ));
            }
        }
        let trunc = self.effective_max_len().map(|max_length| TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        });
        self.inner.with_truncation(trunc).map_err(|e| Error::op("tokenizer", e.to_string()))?;
        let (pad_id, pad_type_id, pad_token) = match self.inner.get_padding() {
            Some(p) => (p.pad_id, p.pad_type_id, p.pad_token.clone()),
            None => (self.inner.token_to_id("[PAD]").unwrap_or(0), 0, "[PAD]".to_string()),
        };
        let strategy = match self.padding {
            Padding::Longest => PaddingStrategy::BatchLongest,
            Padding::Fixed(n) => PaddingStrategy::Fixed(n),
        };
        self.inner.with_padding(Some(PaddingParams {
            strategy,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id,
            pad_token,
        }));
        Ok(self)
    }

    /// Tokenizes each sentence (with the special tokens, e.g. `[CLS] … [SEP]`), truncates and
    /// pads: `[sentences.len(), len]` tensors.
    pub fn encode_batch<S: AsRef<str>>(&self, sentences: &[S]) -> Result<BatchEncoding> {
        let inputs: Vec<&str> = sentences.iter().map(|s| s.as_ref()).collect();
        let encodings = self.inner.encode_batch(inputs, true).map_err(|e| Error::op("tokenizer", e.to_string()))?;
        let b = encodings.len();
        let len = encodings.first().map_or(0, |e| e.len());
        let (mut ids, mut mask, mut types) =
            (Vec::with_capacity(b * len), Vec::with_capacity(b * len), Vec::with_capacity(b * len));
        let mut lengths = Vec::with_capacity(b);
        for e in &encodings {
            if e.len() != len {
                return Err(Error::op("tokenizer", format!("padded encodings differ in length: {} vs {len}", e.len())));
            }
            ids.extend(e.get_ids().iter().map(|&v| v as i64));
            mask.extend(e.get_attention_mask().iter().map(|&v| v as i64));
            types.extend(e.get_type_ids().iter().map(|&v| v as i64));
            lengths.push(e.get_attention_mask().iter().filter(|&&v| v != 0).count());
        }
        Ok(BatchEncoding {
            input_ids: Tensor::from_vec_i64(ids, &[b, len])?,
            attention_mask: Tensor::from_vec_i64(mask, &[b, len])?,
            token_type_ids: Tensor::from_vec_i64(types, &[b, len])?,
            lengths,
        })
    }
}
