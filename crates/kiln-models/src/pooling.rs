//! Sentence embeddings the sentence-transformers way: pooling of a transformer's
//! `last_hidden_state` over the real tokens ([`mean_pooling`], [`Pooling`]), L2
//! normalisation ([`l2_normalize`]), and [`SentenceEmbedder`], which chains tokenizer, BERT,
//! pooling and normalisation as a sentence-transformers directory (`modules.json`,
//! `1_Pooling/config.json`, `sentence_bert_config.json`) describes them (e.g.
//! all-MiniLM-L6-v2).

use crate::bert::BertModel;
use crate::tokenizer::{BatchEncoding, Padding, Tokenizer};
use kiln_autograd::{DType, Error, NoGradGuard, Result, Tensor};
use serde::Deserialize;
use std::path::{Path, PathBuf};

const OP: &str = "pooling";

/// The mask `[B, T]` as f32 (nonzero = token) and checked against `h` `[B, T, H]`.
fn float_mask(h: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    if h.rank() != 3 || attention_mask.shape() != &h.shape()[..2] {
        return Err(Error::op(
            OP,
            format!(
                "attention_mask {:?} must be [batch, seq] of token embeddings [batch, seq, hidden] {:?}",
                attention_mask.shape(),
                h.shape()
            ),
        ));
    }
    let m = attention_mask.data();
    let m = match m.dtype() {
        DType::F32 => m,
        _ => m.to_dtype(DType::F32)?,
    };
    Ok(Tensor::from_array(m))
}

/// `Σ_t mask·h` `[B, H]` and the token counts `[B, 1]` (clamped to at least 1e-9, as in
/// sentence-transformers).
fn masked_sum(h: &Tensor, attention_mask: &Tensor) -> Result<(Tensor, Tensor)> {
    let m = float_mask(h, attention_mask)?;
    // [B, 1, T] @ [B, T, H]: one small GEMM per sentence.
    let sum = m.try_unsqueeze(1)?.try_matmul(h)?.try_squeeze(1)?;
    let count = m.try_sum(Some(&[1]), true)?.try_clamp(Some(1e-9), None)?;
    Ok((sum, count))
}

/// Masked mean pooling: the mean of `last_hidden_state` `[B, T, H]` over the positions where
/// `attention_mask` `[B, T]` is nonzero, `[B, H]` (sentence-transformers' `mean` mode).
pub fn mean_pooling(last_hidden_state: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let (sum, count) = masked_sum(last_hidden_state, attention_mask)?;
    sum.try_div(&count)
}

/// `x / max(‖x‖₂, 1e-12)` along the last dim (PyTorch's `F.normalize(x, p=2, dim=-1)`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.try_mul(x)?.try_sum(Some(&[-1]), true)?.try_sqrt()?.try_clamp(Some(1e-12), None)?;
    x.try_div(&norm)
}

/// The pooling modes of a sentence-transformers `Pooling` module: the enabled ones are
/// concatenated in the order cls, max, mean, mean_sqrt_len (as sentence-transformers does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Pooling {
    /// The first token's vector.
    #[serde(default, rename = "pooling_mode_cls_token")]
    pub cls: bool,
    /// The elementwise maximum over the real tokens.
    #[serde(default, rename = "pooling_mode_max_tokens")]
    pub max: bool,
    /// The mean over the real tokens.
    #[serde(default, rename = "pooling_mode_mean_tokens")]
    pub mean: bool,
    /// The sum over the real tokens divided by √(token count).
    #[serde(default, rename = "pooling_mode_mean_sqrt_len_tokens")]
    pub mean_sqrt_len: bool,
}

/// Modes of sentence-transformers' pooling config that kiln does not implement.
#[derive(Debug, Default, Deserialize)]
struct UnsupportedModes {
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl Default for Pooling {
    /// Mean pooling.
    fn default() -> Self {
        Pooling { cls: false, max: false, mean: true, mean_sqrt_len: false }
    }
}

impl Pooling {
    /// Reads a sentence-transformers `1_Pooling/config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Pooling> {
        let path = path.as_ref();
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: what.clone(), source })?;
        let bad = |msg: String| Error::Format { what: what.clone(), msg };
        let p: Pooling = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let u: UnsupportedModes = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if u.pooling_mode_weightedmean_tokens || u.pooling_mode_lasttoken {
            return Err(bad("weighted-mean and last-token pooling are not supported".into()));
        }
        if !(p.cls || p.max || p.mean || p.mean_sqrt_len) {
            return Err(bad("no pooling mode is enabled".into()));
        }
        Ok(p)
    }

    /// Pools `last_hidden_state` `[B, T, H]` over the tokens of `attention_mask` `[B, T]`:
    /// `[B, k·H]` for `k` enabled modes.
    pub fn pool(&self, last_hidden_state: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let h = last_hidden_state;
        let mut parts = Vec::new();
        if self.cls {
            float_mask(h, attention_mask)?;
            parts.push(h.try_narrow(1, 0, 1)?.try_squeeze(1)?);
        }
        if self.max {
            // Padding is set to -1e9 before the maximum, as in sentence-transformers.
            let m = float_mask(h, attention_mask)?.data();
            let pad: Vec<u8> = m.to_vec_f32()?.into_iter().map(|v| (v == 0.0) as u8).collect();
            let pad = Tensor::from_array(kiln_autograd::Array::from_vec(pad, m.shape())?).try_unsqueeze(-1)?;
            parts.push(h.try_masked_fill(&pad, -1e9)?.try_amax(Some(&[1]), false)?);
        }
        if self.mean || self.mean_sqrt_len {
            let (sum, count) = masked_sum(h, attention_mask)?;
            if self.mean {
                parts.push(sum.try_div(&count)?);
            }
            if self.mean_sqrt_len {
                parts.push(sum.try_div(&count.try_sqrt()?)?);
            }
        }
        match parts.len() {
            0 => Err(Error::op(OP, "no pooling mode is enabled")),
            1 => Ok(parts.pop().expect("one part")),
            _ => Tensor::try_cat(&parts.iter().collect::<Vec<_>>(), -1),
        }
    }
}

/// The output of [`SentenceEmbedder::encode`].
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// The tokenized batch.
    pub encoding: BatchEncoding,
    /// The transformer's output `[B, T, H]`.
    pub last_hidden_state: Tensor,
    /// The pooled (and, if the model says so, L2-normalised) embeddings `[B, D]`.
    pub sentence_embedding: Tensor,
}

/// sentence-transformers' `modules.json` entry.
#[derive(Debug, Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// Tokenizer → [`BertModel`] → [`Pooling`] → optional L2 normalisation: a
/// sentence-transformers model such as all-MiniLM-L6-v2.
#[derive(Debug)]
pub struct SentenceEmbedder {
    /// The transformer, in evaluation mode.
    pub model: BertModel,
    /// The tokenizer (truncation length `max_seq_length`, padding to the longest).
    pub tokenizer: Tokenizer,
    /// The pooling.
    pub pooling: Pooling,
    /// Whether the pooled vectors are L2-normalised.
    pub normalize: bool,
}

impl SentenceEmbedder {
    /// Reads a sentence-transformers directory: `modules.json` names the Transformer's
    /// folder (config.json, model.safetensors, tokenizer.json, sentence_bert_config.json),
    /// the Pooling folder's `config.json` and whether a Normalize module follows. Without a
    /// `modules.json`, `dir` is a plain BERT directory: mean pooling, no normalisation.
    /// Sequences are truncated to `max_seq_length` of `sentence_bert_config.json` (else the
    /// model's `max_position_embeddings`).
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<SentenceEmbedder> {
        let dir = dir.as_ref();
        let modules_path = dir.join("modules.json");
        let (transformer_dir, pooling, normalize) = if modules_path.is_file() {
            let what = modules_path.display().to_string();
            let text =
                std::fs::read_to_string(&modules_path).map_err(|source| Error::Io { path: what.clone(), source })?;
            let modules: Vec<ModuleEntry> =
                serde_json::from_str(&text).map_err(|e| Error::Format { what: what.clone(), msg: e.to_string() })?;
            let find = |suffix: &str| modules.iter().find(|m| m.kind.ends_with(suffix));
            let transformer = find(".Transformer")
                .ok_or_else(|| Error::Format { what: what.clone(), msg: "no Transformer module".into() })?;
            let pooling = match find(".Pooling") {
                Some(p) => Pooling::from_file(dir.join(&p.path).join("config.json"))?,
                None => Pooling::default(),
            };
            (dir.join(&transformer.path), pooling, find(".Normalize").is_some())
        } else {
            (PathBuf::from(dir), Pooling::default(), false)
        };
        let model = BertModel::from_pretrained(&transformer_dir)?;
        let st_config = transformer_dir.join("sentence_bert_config.json");
        let max_seq = if st_config.is_file() {
            let what = st_config.display().to_string();
            let text =
                std::fs::read_to_string(&st_config).map_err(|source| Error::Io { path: what.clone(), source })?;
            let c: SentenceBertConfig =
                serde_json::from_str(&text).map_err(|e| Error::Format { what, msg: e.to_string() })?;
            c.max_seq_length
        } else {
            None
        };
        let max_seq = max_seq.unwrap_or(usize::MAX).min(model.config().max_position_embeddings);
        let tokenizer =
            Tokenizer::from_pretrained(&transformer_dir)?.with_max_len(max_seq)?.with_padding(Padding::Longest)?;
        Ok(SentenceEmbedder { model, tokenizer, pooling, normalize })
    }

    /// Sets the truncation length (sentence-transformers' `max_seq_length`).
    pub fn with_max_seq_length(mut self, max_len: usize) -> Result<SentenceEmbedder> {
        self.tokenizer = self.tokenizer.with_max_len(max_len)?;
        Ok(self)
    }

    /// Sets the padding (the longest of the batch by default; a fixed length gives the same
    /// embeddings, only more work).
    pub fn with_padding(mut self, padding: Padding) -> Result<SentenceEmbedder> {
        self.tokenizer = self.tokenizer.with_padding(padding)?;
        Ok(self)
    }

    /// Pools (and normalises) a transformer output: `[B, T, H]` → `[B, D]`.
    pub fn pool(&self, last_hidden_state: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let pooled = self.pooling.pool(last_hidden_state, attention_mask)?;
        if self.normalize {
            l2_normalize(&pooled)
        } else {
            Ok(pooled)
        }
    }

    /// Runs an already tokenized batch (without recording gradients).
    pub fn encode_tokens(&self, encoding: BatchEncoding) -> Result<Embeddings> {
        let _guard = NoGradGuard::new();
        let out =
            self.model.forward(&encoding.input_ids, Some(&encoding.attention_mask), Some(&encoding.token_type_ids))?;
        let sentence_embedding = self.pool(&out.last_hidden_state, &encoding.attention_mask)?;
        Ok(Embeddings { encoding, last_hidden_state: out.last_hidden_state, sentence_embedding })
    }

    /// Tokenizes and embeds `sentences`, keeping the intermediate tensors.
    pub fn encode<S: AsRef<str>>(&self, sentences: &[S]) -> Result<Embeddings> {
        self.encode_tokens(self.tokenizer.encode_batch(sentences)?)
    }

    /// The sentence embeddings `[sentences.len(), D]`.
    pub fn embed<S: AsRef<str>>(&self, sentences: &[S]) -> Result<Tensor> {
        Ok(self.encode(sentences)?.sentence_embedding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape).unwrap()
    }

    #[test]
    fn mean_pooling_ignores_padding() {
        // Two sentences of 3 positions, hidden 2; the second has one padded position.
        let h = t(vec![1., 2., 3., 4., 5., 6., 10., 20., 30., 40., 99., 99.], &[2, 3, 2]);
        let m = Tensor::from_vec_i64(vec![1, 1, 1, 1, 1, 0], &[2, 3]).unwrap();
        assert_eq!(mean_pooling(&h, &m).unwrap().to_vec_f32().unwrap(), [3., 4., 20., 30.]);
        // All padding: the count is clamped, giving zeros rather than NaN.
        let none = Tensor::from_vec_i64(vec![0; 6], &[2, 3]).unwrap();
        assert_eq!(mean_pooling(&h, &none).unwrap().to_vec_f32().unwrap(), [0.; 4]);
        assert!(mean_pooling(&h, &Tensor::from_vec_i64(vec![1; 3], &[1, 3]).unwrap()).is_err());
    }

    #[test]
    fn l2_normalize_gives_unit_rows() {
        let x = t(vec![3., 4., 0., 0.], &[2, 2]);
        assert_eq!(l2_normalize(&x).unwrap().to_vec_f32().unwrap(), [0.6, 0.8, 0., 0.]);
    }

    #[test]
    fn pooling_modes_concatenate_in_sentence_transformers_order() {
        let h = t(vec![1., -2., 3., 4., 50., 60.], &[1, 3, 2]);
        let m = Tensor::from_vec_i64(vec![1, 1, 0], &[1, 3]).unwrap();
        let all = Pooling { cls: true, max: true, mean: true, mean_sqrt_len: true };
        let got = all.pool(&h, &m).unwrap().to_vec_f32().unwrap();
        let s = 2f32.sqrt();
        let want = [1., -2., 3., 4., 2., 1., 4. / s, 2. / s];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
}
