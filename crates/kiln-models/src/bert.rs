//! BERT ([`BertModel`]): the Hugging Face `transformers` `BertModel` encoder, with its exact
//! parameter names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, `pooler.dense.weight`, ...), so a
//! `model.safetensors` of a BERT checkpoint loads with no renaming.
//!
//! ```no_run
//! use kiln_models::bert::BertModel;
//! use kiln_models::tokenizer::{Padding, Tokenizer};
//! let model = BertModel::from_pretrained("all-MiniLM-L6-v2")?;
//! let tok = Tokenizer::from_pretrained("all-MiniLM-L6-v2")?.with_max_len(128)?.with_padding(Padding::Longest)?;
//! let batch = tok.encode_batch(&["Hello world", "Hi"])?;
//! let out = model.forward(&batch.input_ids, Some(&batch.attention_mask), Some(&batch.token_type_ids))?;
//! assert_eq!(out.last_hidden_state.shape()[2], model.config().hidden_size);
//! # Ok::<(), kiln_autograd::Error>(())
//! ```

use kiln_autograd::ops::attention::scaled_dot_product_attention;
use kiln_autograd::ops::unary::GeluApproximate;
use kiln_autograd::{Array, DType, Error, Result, Tensor};
use kiln_nn::{Dropout, Embedding, Forward, LayerNorm, Linear, LoadReport, Module};
use rand::Rng;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpointing::checkpoint_block;

const OP: &str = "bert";

/// A BERT configuration, as in a Hugging Face `config.json` (`BertConfig`). Missing fields
/// take `BertConfig`'s defaults (BERT-base); unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`hidden_size` must be a multiple).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// The feed-forward activation: `gelu` (erf form), `gelu_new` / `gelu_pytorch_tanh` /
    /// `gelu_fast` (tanh form), `relu`, `silu` / `swish`, `tanh`.
    pub hidden_act: String,
    /// Dropout after the embeddings and on each residual branch (training mode only).
    pub hidden_dropout_prob: f32,
    /// Dropout on the attention probabilities (training mode only).
    pub attention_probs_dropout_prob: f32,
    /// Rows of the position-embedding table: the longest sequence the model takes.
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) embedding table.
    pub type_vocab_size: usize,
    /// Standard deviation of the normal initialisation of [`BertModel::new`].
    pub initializer_range: f32,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// The padding token: its word-embedding row gets no gradient (`padding_idx`).
    pub pad_token_id: Option<i64>,
    /// Only `absolute` is supported.
    pub position_embedding_type: String,
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: Some(0),
            position_embedding_type: "absolute".into(),
        }
    }
}

impl BertConfig {
    /// Parses a `config.json` text and checks it ([`BertConfig::validate`]).
    pub fn from_json_str(json: &str) -> Result<BertConfig> {
        let c: BertConfig =
            serde_json::from_str(json).map_err(|e| Error::Format { what: "BERT config".into(), msg: e.to_string() })?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and checks a `config.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<BertConfig> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        BertConfig::from_json_str(&text).map_err(|e| match e {
            Error::Format { msg, .. } => Error::Format { what: path.display().to_string(), msg },
            e => e,
        })
    }

    /// Checks that the sizes are consistent and the options supported.
    pub fn validate(&self) -> Result<()> {
        let h = self.num_attention_heads;
        if h == 0 || !self.hidden_size.is_multiple_of(h) {
            return Err(Error::op(
                OP,
                format!("hidden_size {} is not a multiple of num_attention_heads {h}", self.hidden_size),
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(Error::op(
                OP,
                format!(
                    "position_embedding_type {:?} is not supported (only \"absolute\")",
                    self.position_embedding_type
                ),
            ));
        }
        Activation::parse(&self.hidden_act)?;
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::op(OP, format!("{name} has to be between 0 and 1, got {p}")));
            }
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }
}

/// The feed-forward activation named by `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Gelu(GeluApproximate),
    Relu,
    Silu,
    Tanh,
}

impl Activation {
    fn parse(name: &str) -> Result<Activation> {
        Ok(match name {
            "gelu" => Activation::Gelu(GeluApproximate::None),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::Gelu(GeluApproximate::Tanh),
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "tanh" => Activation::Tanh,
            other => return Err(Error::op(OP, format!("hidden_act {other:?} is not supported"))),
        })
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu(a) => x.try_gelu(a),
            Activation::Relu => x.try_relu(),
            Activation::Silu => x.try_silu(),
            Activation::Tanh => x.try_tanh(),
        }
    }

    /// The activation of an array (nothing recorded); GELU runs in place.
    fn apply_array(self, x: &mut Array) -> Result<()> {
        match self {
            Activation::Gelu(a) => return x.gelu_(a),
            Activation::Relu => *x = x.relu()?,
            Activation::Silu => *x = x.silu()?,
            Activation::Tanh => *x = x.tanh()?,
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------ modules

/// `embeddings`: word + position + token-type embeddings, then LayerNorm and dropout.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `[vocab_size, hidden]`, padding row `pad_token_id`.
    pub word_embeddings: Embedding,
    /// `[max_position_embeddings, hidden]`.
    pub position_embeddings: Embedding,
    /// `[type_vocab_size, hidden]`.
    pub token_type_embeddings: Embedding,
    /// `embeddings.LayerNorm`.
    #[module(rename = "LayerNorm")]
    pub layer_norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
}

impl BertEmbeddings {
    /// `LN(word[ids] + position[0..T] + token_type[tt])` for `input_ids` `[B, T]`; the
    /// token types default to 0.
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>) -> Result<Tensor> {
        if input_ids.rank() != 2 {
            return Err(Error::op(OP, format!("input_ids must be [batch, seq], got shape {:?}", input_ids.shape())));
        }
        let t = input_ids.shape()[1];
        let max_pos = self.position_embeddings.num_embeddings();
        if t > max_pos {
            return Err(Error::op(
                OP,
                format!(
                    "sequence length {t} exceeds max_position_embeddings {max_pos} (input_ids {:?})",
                    input_ids.shape()
                ),
            ));
        }
        let words = self.word_embeddings.forward(input_ids)?;
        // Positions 0..T are the first T rows: a view that broadcasts over the batch.
        let positions = self.position_embeddings.weight.try_narrow(0, 0, t)?;
        let types = match token_type_ids {
            Some(tt) => self.token_type_embeddings.forward(tt)?,
            None => self.token_type_embeddings.weight.try_narrow(0, 0, 1)?,
        };
        let x = words.try_add(&positions)?.try_add(&types)?;
        self.dropout.forward(&self.layer_norm.forward(&x)?)
    }
}

/// `attention.self`: the query, key and value projections.
#[derive(Module, Debug, Clone)]
pub struct BertSelfAttention {
    /// `[hidden, hidden]` + bias.
    pub query: Linear,
    /// `[hidden, hidden]` + bias.
    pub key: Linear,
    /// `[hidden, hidden]` + bias.
    pub value: Linear,
    /// Dropout on the attention probabilities.
    pub dropout: Dropout,
    #[module(skip)]
    num_heads: usize,
}

impl BertSelfAttention {
    /// Multi-head attention of `x` `[B, T, H]` with an additive mask broadcasting to
    /// `[B, heads, T, T]`; returns the merged heads `[B, T, H]`.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        if x.rank() != 3 {
            return Err(Error::op(
                OP,
                format!("attention input must be [batch, seq, hidden], got shape {:?}", x.shape()),
            ));
        }
        let (b, t, hidden) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let nh = self.num_heads;
        let d = hidden / nh;
        // [B, T, H] -> [B, heads, T, d]: a view (contiguous head chunks of each row).
        let heads = |lin: &Linear| -> Result<Tensor> {
            lin.forward(x)?.try_reshape(&[b as isize, t as isize, nh as isize, d as isize])?.try_transpose(1, 2)
        };
        let (q, k, v) = (heads(&self.query)?, heads(&self.key)?, heads(&self.value)?);
        let ctx = if self.dropout.is_training() && self.dropout.p() > 0.0 {
            // Dropout on the probabilities: the unfused path.
            let mut scores = q.try_matmul(&k.try_transpose(-2, -1)?)?.mul_scalar(1.0 / (d as f32).sqrt());
            if let Some(m) = mask {
                scores = scores.try_add(m)?;
            }
            self.dropout.forward(&scores.try_softmax(-1)?)?.try_matmul(&v)?
        } else {
            scaled_dot_product_attention(&q, &k, &v, mask, false, None)?
        };
        // [B, heads, T, d] -> [B, T, H].
        ctx.try_transpose(1, 2)?.try_reshape(&[b as isize, t as isize, hidden as isize])
    }
}

/// `attention.output` (and, as [`BertOutput`], the feed-forward `output`): dense, dropout,
/// residual, LayerNorm.
#[derive(Module, Debug, Clone)]
pub struct BertSelfOutput {
    /// The projection.
    pub dense: Linear,
    /// `...output.LayerNorm`.
    #[module(rename = "LayerNorm")]
    pub layer_norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
}

impl BertSelfOutput {
    /// `LN(dropout(dense(x)) + residual)`.
    pub fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let y = self.dropout.forward(&self.dense.forward(x)?)?;
        self.layer_norm.forward(&y.try_add(residual)?)
    }
}

/// The feed-forward `output` block: the same computation as [`BertSelfOutput`].
pub type BertOutput = BertSelfOutput;

/// `attention`: self-attention and its output block.
#[derive(Module, Debug, Clone)]
pub struct BertAttention {
    /// `attention.self`.
    #[module(rename = "self")]
    pub self_attention: BertSelfAttention,
    /// `attention.output`.
    pub output: BertSelfOutput,
}

/// `intermediate`: the first feed-forward projection and the activation.
#[derive(Module, Debug, Clone)]
pub struct BertIntermediate {
    /// `[intermediate, hidden]` + bias.
    pub dense: Linear,
    #[module(skip)]
    act: Activation,
}

/// `encoder.layer.{i}`: attention, then the feed-forward block.
#[derive(Module, Debug, Clone)]
pub struct BertLayer {
    /// `attention`.
    pub attention: BertAttention,
    /// `intermediate`.
    pub intermediate: BertIntermediate,
    /// `output`.
    pub output: BertOutput,
}

/// Whether `d` changes its input (training mode with `p > 0`).
fn dropout_active(d: &Dropout) -> bool {
    d.is_training() && d.p() > 0.0
}

/// The weight and bias of a plain `Linear` (with a bias and no LoRA adapter), else `None`.
fn plain_linear(l: &Linear) -> Option<(Array, Array)> {
    match (&l.bias, l.lora()) {
        (Some(b), None) => Some((l.weight.data(), b.data())),
        _ => None,
    }
}

/// `LN(y + residual)` with `y` updated in place (inference: `y` is owned by the caller).
fn add_norm(ln: &LayerNorm, mut y: Array, residual: &Array) -> Result<Array> {
    y.add_assign(residual)?;
    Ok(ln.forward(&Tensor::from_array(y))?.data())
}

impl BertLayer {
    /// One layer on `h` `[B, T, H]` with the additive attention mask (see [`BertModel`]).
    pub fn forward(&self, h: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        if let Some(out) = self.forward_inference(h, mask)? {
            return Ok(out);
        }
        let ctx = self.attention.self_attention.forward(h, mask)?;
        let h = self.attention.output.forward(&ctx, h)?;
        let m = self.intermediate.act.apply(&self.intermediate.dense.forward(&h)?)?;
        self.output.forward(&m, &h)
    }

    /// The layer on arrays when nothing is recorded (`no_grad`) and no dropout is active:
    /// q, k and v come from ONE GEMM on the weights concatenated at call time (`[3H, H]`,
    /// a 3·H² copy, small beside the `[B·T, 3H]` product), the attention reads the heads as
    /// strided views of that product, and the residual adds and the activation run in place
    /// on buffers this function owns. `None` when a condition does not hold (the caller
    /// takes the general path): gradients enabled, dropout active, a layer without bias or
    /// with a LoRA adapter, or an input that is not `[B, T, H]`.
    fn forward_inference(&self, h: &Tensor, mask: Option<&Tensor>) -> Result<Option<Tensor>> {
        let (sa, ao, out) = (&self.attention.self_attention, &self.attention.output, &self.output);
        if kiln_autograd::is_grad_enabled()
            || h.rank() != 3
            || h.dtype() != DType::F32
            || [&sa.dropout, &ao.dropout, &out.dropout].into_iter().any(dropout_active)
        {
            return Ok(None);
        }
        let lins = [&sa.query, &sa.key, &sa.value, &ao.dense, &self.intermediate.dense, &out.dense];
        let Some(p) = lins.into_iter().map(plain_linear).collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let x = h.data();
        let (b, t, hidden) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let nh = sa.num_heads;
        let d = hidden / nh;
        let w = Array::cat(&[&p[0].0, &p[1].0, &p[2].0], 0)?;
        let bias = Array::cat(&[&p[0].1, &p[1].1, &p[2].1], 0)?;
        let qkv = x.linear(&w, Some(&bias))?;
        drop((w, bias));
        // [B, T, 3H] -> three [B, heads, T, d] views (no copies).
        let head = |i: usize| qkv.narrow(2, i * hidden, hidden)?.reshape_to(&[b, t, nh, d])?.transpose(1, 2);
        let (q, k, v) = (head(0)?, head(1)?, head(2)?);
        let m = mask.map(Tensor::data);
        let ctx = q.scaled_dot_product_attention(&k, &v, m.as_ref(), false, None)?;
        drop((q, k, v, qkv));
        let ctx = ctx.transpose(1, 2)?.reshape_to(&[b, t, hidden])?;
        let h1 = add_norm(&ao.layer_norm, ctx.linear(&p[3].0, Some(&p[3].1))?, &x)?;
        drop(ctx);
        let mut mid = h1.linear(&p[4].0, Some(&p[4].1))?;
        self.intermediate.act.apply_array(&mut mid)?;
        let h2 = add_norm(&out.layer_norm, mid.linear(&p[5].0, Some(&p[5].1))?, &h1)?;
        Ok(Some(Tensor::from_array(h2)))
    }
}

/// `encoder`: the stack of layers.
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// `encoder.layer.{i}`.
    pub layer: Vec<BertLayer>,
}

/// `pooler`: `tanh(dense(h[:, 0]))`.
#[derive(Module, Debug)]
pub struct BertPooler {
    /// `[hidden, hidden]` + bias.
    pub dense: Linear,
}

impl BertPooler {
    /// Pools `h` `[B, T, H]` to `[B, H]` from the first token.
    pub fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let first = h.try_narrow(1, 0, 1)?.try_squeeze(1)?;
        self.dense.forward(&first)?.try_tanh()
    }
}

/// The outputs of [`BertModel::forward`].
#[derive(Debug, Clone)]
pub struct BertModelOutput {
    /// `[B, T, hidden]`, every position (padded ones included).
    pub last_hidden_state: Tensor,
    /// `[B, hidden]` when the model has a pooler.
    pub pooler_output: Option<Tensor>,
}

/// The BERT encoder (Hugging Face `BertModel`): embeddings, `num_hidden_layers` post-LN
/// transformer layers, and an optional pooler.
///
/// Parameter names are Hugging Face's: `embeddings.{word,position,token_type}_embeddings.weight`,
/// `embeddings.LayerNorm.{weight,bias}`, `encoder.layer.{i}.attention.self.{query,key,value}.*`,
/// `encoder.layer.{i}.attention.output.{dense,LayerNorm}.*`, `encoder.layer.{i}.intermediate.dense.*`,
/// `encoder.layer.{i}.output.{dense,LayerNorm}.*` and `pooler.dense.*`.
///
/// Attention uses the fused [`scaled_dot_product_attention`] on head views of the projections,
/// with one additive padding mask `[B, 1, 1, T]` per forward (the dtype's minimum at padded
/// keys, as in Hugging Face). Dropout is active only in training mode.
#[derive(Module, Debug)]
pub struct BertModel {
    /// `embeddings`.
    pub embeddings: BertEmbeddings,
    /// `encoder`.
    pub encoder: BertEncoder,
    /// `pooler`, absent in checkpoints saved without it.
    pub pooler: Option<BertPooler>,
    #[module(skip)]
    config: BertConfig,
    #[module(skip)]
    gradient_checkpointing: bool,
}

/// How a parameter is initialised by [`BertModel::new`].
#[derive(Clone, Copy)]
enum Init {
    /// `N(0, initializer_range)`, with an optional zeroed padding row.
    Normal(Option<usize>),
    Zeros,
    Ones,
}

/// Makes the parameter of a name and shape.
type ParamFn<'a> = dyn FnMut(&str, &[usize], Init) -> Result<Tensor> + 'a;

fn build_linear(p: &mut ParamFn, name: &str, in_f: usize, out_f: usize) -> Result<Linear> {
    let w = p(&format!("{name}.weight"), &[out_f, in_f], Init::Normal(None))?;
    let b = p(&format!("{name}.bias"), &[out_f], Init::Zeros)?;
    Linear::from_weights(w, Some(b))
}

fn build_layer_norm(p: &mut ParamFn, name: &str, h: usize, eps: f64) -> Result<LayerNorm> {
    let mut ln = LayerNorm::with_options(&[h], eps, false, false);
    ln.weight = Some(p(&format!("{name}.weight"), &[h], Init::Ones)?);
    ln.bias = Some(p(&format!("{name}.bias"), &[h], Init::Zeros)?);
    Ok(ln)
}

fn build_embedding(p: &mut ParamFn, name: &str, n: usize, h: usize, pad: Option<i64>) -> Result<Embedding> {
    let pad_row = pad.filter(|&i| (0..n as i64).contains(&i)).map(|i| i as usize);
    Embedding::from_weight(p(&format!("{name}.weight"), &[n, h], Init::Normal(pad_row))?, pad)
}

impl BertModel {
    /// Builds the tree of modules, asking `p` for each parameter by name.
    fn build(config: &BertConfig, pooler: bool, p: &mut ParamFn) -> Result<BertModel> {
        config.validate()?;
        let c = config;
        let (h, eps) = (c.hidden_size, c.layer_norm_eps);
        let hidden_dropout = || Dropout::new(c.hidden_dropout_prob);
        let embeddings = BertEmbeddings {
            word_embeddings: build_embedding(p, "embeddings.word_embeddings", c.vocab_size, h, c.pad_token_id)?,
            position_embeddings: build_embedding(
                p,
                "embeddings.position_embeddings",
                c.max_position_embeddings,
                h,
                None,
            )?,
            token_type_embeddings: build_embedding(p, "embeddings.token_type_embeddings", c.type_vocab_size, h, None)?,
            layer_norm: build_layer_norm(p, "embeddings.LayerNorm", h, eps)?,
            dropout: hidden_dropout()?,
        };
        let act = Activation::parse(&c.hidden_act)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let n = format!("encoder.layer.{i}");
            layers.push(BertLayer {
                attention: BertAttention {
                    self_attention: BertSelfAttention {
                        query: build_linear(p, &format!("{n}.attention.self.query"), h, h)?,
                        key: build_linear(p, &format!("{n}.attention.self.key"), h, h)?,
                        value: build_linear(p, &format!("{n}.attention.self.value"), h, h)?,
                        dropout: Dropout::new(c.attention_probs_dropout_prob)?,
                        num_heads: c.num_attention_heads,
                    },
                    output: BertSelfOutput {
                        dense: build_linear(p, &format!("{n}.attention.output.dense"), h, h)?,
                        layer_norm: build_layer_norm(p, &format!("{n}.attention.output.LayerNorm"), h, eps)?,
                        dropout: hidden_dropout()?,
                    },
                },
                intermediate: BertIntermediate {
                    dense: build_linear(p, &format!("{n}.intermediate.dense"), h, c.intermediate_size)?,
                    act,
                },
                output: BertSelfOutput {
                    dense: build_linear(p, &format!("{n}.output.dense"), c.intermediate_size, h)?,
                    layer_norm: build_layer_norm(p, &format!("{n}.output.LayerNorm"), h, eps)?,
                    dropout: hidden_dropout()?,
                },
            });
        }
        let pooler = if pooler { Some(BertPooler { dense: build_linear(p, "pooler.dense", h, h)? }) } else { None };
        Ok(BertModel {
            embeddings,
            encoder: BertEncoder { layer: layers },
            pooler,
            config: config.clone(),
            gradient_checkpointing: false,
        })
    }

    /// A freshly initialised model, as Hugging Face initialises one: linear and embedding
    /// weights `N(0, initializer_range)` (the padding row zero), biases zero, LayerNorm
    /// weights one. In training mode.
    pub fn new(config: &BertConfig, with_pooler: bool, rng: &mut impl Rng) -> Result<BertModel> {
        let std = config.initializer_range;
        BertModel::build(config, with_pooler, &mut |_, shape, init| {
            let a = match init {
                Init::Normal(pad) => {
                    let mut a = kiln_nn::init::normal(shape, 0.0, std, rng);
                    if let Some(row) = pad {
                        let w = shape[1];
                        a.make_mut_f32()?[row * w..(row + 1) * w].fill(0.0);
                    }
                    a
                }
                Init::Zeros => Array::zeros(shape),
                Init::Ones => Array::ones(shape),
            };
            Ok(Tensor::from_array(a).requires_grad_(true))
        })
    }

    /// A model over the given tensors, named as in the model (see [`BertModel`]): the model
    /// holds these very tensors (clones sharing data and gradient), so gradients of a
    /// forward pass accumulate into them. The pooler is built when `pooler.dense.weight` is
    /// given. Names the model does not use are ignored; a missing name or a wrong shape is an
    /// error listing them all. In training mode.
    pub fn from_tensors(config: &BertConfig, tensors: &BTreeMap<String, Tensor>) -> Result<BertModel> {
        let pooler = tensors.contains_key("pooler.dense.weight");
        let mut problems = Vec::new();
        let model = BertModel::build(config, pooler, &mut |name, shape, _| match tensors.get(name) {
            Some(t) if t.shape() == shape => Ok(t.clone()),
            found => {
                problems.push(match found {
                    Some(t) => format!("{name} (expected shape {shape:?}, got {:?})", t.shape()),
                    None => format!("{name} (missing)"),
                });
                Ok(placeholder(shape))
            }
        })?;
        if !problems.is_empty() {
            return Err(Error::op(OP, format!("cannot build the model from the tensors: {}", problems.join(", "))));
        }
        Ok(model)
    }

    /// A model loaded from a state dict (e.g. a `model.safetensors`) with
    /// [`Module::load_state_dict`], in evaluation mode, and the load report.
    ///
    /// Keys may carry a prefix (`bert.` of `BertForMaskedLM` and similar checkpoints): the
    /// prefix is that of the key ending in `embeddings.word_embeddings.weight`, and it is
    /// stripped from the keys that have it. The pooler is built when `pooler.dense.weight`
    /// is present. Missing or mis-shaped tensors are an error naming them; entries the model
    /// does not use (an `embeddings.position_ids` buffer, task heads) are listed in the
    /// report's `unexpected`.
    pub fn from_state_dict(config: &BertConfig, state: &BTreeMap<String, Array>) -> Result<(BertModel, LoadReport)> {
        let state = strip_prefix(state);
        let pooler = state.contains_key("pooler.dense.weight");
        let mut model = BertModel::build(config, pooler, &mut |_, shape, _| {
            Ok(Tensor::from_array(placeholder(shape).data()).requires_grad_(true))
        })?;
        let report = model.load_state_dict(&state, false)?;
        if !report.missing.is_empty() || !report.mismatched.is_empty() {
            let clean = LoadReport { unexpected: Vec::new(), ..report };
            return Err(Error::op(OP, format!("cannot load the state dict: {clean}")));
        }
        model.eval();
        Ok((model, report))
    }

    /// [`BertModel::from_pretrained`] that also returns the load report (unexpected keys).
    pub fn from_pretrained_with_report(dir: impl AsRef<Path>) -> Result<(BertModel, LoadReport)> {
        let dir = dir.as_ref();
        let config = BertConfig::from_file(dir.join("config.json"))?;
        let state = kiln_io::load_safetensors(dir.join("model.safetensors"))?;
        BertModel::from_state_dict(&config, &state)
    }

    /// Loads a Hugging Face BERT directory (`config.json` and `model.safetensors`), in
    /// evaluation mode. See [`BertModel::from_state_dict`] for the key handling.
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<BertModel> {
        Ok(BertModel::from_pretrained_with_report(dir)?.0)
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Turns gradient checkpointing of the encoder layers on or off (Hugging Face's
    /// `gradient_checkpointing_enable()`; off by default). When on, each layer runs through
    /// [`kiln_autograd::checkpoint`] during training: its activations are not kept for
    /// backward but recomputed there (dropout masks included), so a forward pass retains one
    /// `[B, T, hidden]` input per layer instead of every attention and feed-forward
    /// intermediate, for about one more forward pass of compute per step. Gradients are the
    /// same. No effect under `no_grad` or when nothing requires grad.
    pub fn set_gradient_checkpointing(&mut self, enabled: bool) {
        self.gradient_checkpointing = enabled;
    }

    /// True when gradient checkpointing is on (see [`BertModel::set_gradient_checkpointing`]).
    pub fn is_gradient_checkpointing(&self) -> bool {
        self.gradient_checkpointing
    }

    /// Runs the encoder on `input_ids` `[B, T]` (i64).
    ///
    /// `attention_mask` `[B, T]` (i64, f32 or u8; nonzero = a token, 0 = padding) keeps
    /// padded keys out of the attention (`None`: every position is a token);
    /// `token_type_ids` `[B, T]` (i64) default to 0. Positions are `0..T`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        token_type_ids: Option<&Tensor>,
    ) -> Result<BertModelOutput> {
        if input_ids.rank() != 2 || input_ids.dtype() != DType::I64 {
            return Err(Error::op(
                OP,
                format!("input_ids must be i64 [batch, seq], got {} {:?}", input_ids.dtype(), input_ids.shape()),
            ));
        }
        for (name, t) in [("attention_mask", attention_mask), ("token_type_ids", token_type_ids)] {
            if let Some(t) = t {
                if t.shape() != input_ids.shape() {
                    return Err(Error::op(
                        OP,
                        format!("{name} of shape {:?} does not match input_ids {:?}", t.shape(), input_ids.shape()),
                    ));
                }
            }
        }
        let mask = attention_mask.map(|m| additive_mask(&m.data())).transpose()?.flatten();
        let mut h = self.embeddings.forward(input_ids, token_type_ids)?;
        for layer in &self.encoder.layer {
            h = if self.gradient_checkpointing {
                let mask = mask.clone();
                checkpoint_block(layer, &[h], move |l, xs| l.forward(&xs[0], mask.as_ref()))?
            } else {
                layer.forward(&h, mask.as_ref())?
            };
        }
        let pooler_output = self.pooler.as_ref().map(|p| p.forward(&h)).transpose()?;
        Ok(BertModelOutput { last_hidden_state: h, pooler_output })
    }
}

/// A stand-in of `shape` that holds no memory (a broadcast scalar), replaced before use.
fn placeholder(shape: &[usize]) -> Tensor {
    let zero = Array::zeros(&[]);
    Tensor::from_array(zero.broadcast_to(shape).unwrap_or(zero))
}

/// The additive attention mask `[B, 1, 1, T]` of a `[B, T]` padding mask: 0 at tokens,
/// `f32::MIN` at padding (Hugging Face's convention: a fully padded row attends uniformly
/// instead of giving NaN). `None` when nothing is padded.
fn additive_mask(m: &Array) -> Result<Option<Tensor>> {
    let keep: Vec<bool> = match m.dtype() {
        DType::I64 => m.to_vec::<i64>()?.into_iter().map(|v| v != 0).collect(),
        DType::U8 => m.to_vec::<u8>()?.into_iter().map(|v| v != 0).collect(),
        _ => m.to_vec_f32()?.into_iter().map(|v| v != 0.0).collect(),
    };
    if keep.iter().all(|&k| k) {
        return Ok(None);
    }
    let (b, t) = (m.shape()[0], m.shape()[1]);
    let v = keep.into_iter().map(|k| if k { 0.0 } else { f32::MIN }).collect();
    Ok(Some(Tensor::from_array(Array::from_vec::<f32>(v, &[b, 1, 1, t])?)))
}

/// The state dict with the model prefix (whatever precedes `embeddings.word_embeddings.weight`)
/// removed from the keys that carry it.
fn strip_prefix(state: &BTreeMap<String, Array>) -> BTreeMap<String, Array> {
    const ANCHOR: &str = "embeddings.word_embeddings.weight";
    let prefix = state
        .keys()
        .filter_map(|k| k.strip_suffix(ANCHOR))
        .filter(|p| p.is_empty() || p.ends_with('.'))
        .min_by_key(|p| p.len())
        .unwrap_or("")
        .to_string();
    state.iter().map(|(k, v)| (k.strip_prefix(prefix.as_str()).unwrap_or(k).to_string(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BertConfig {
        BertConfig {
            vocab_size: 11,
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 12,
            max_position_embeddings: 10,
            ..BertConfig::default()
        }
    }

    #[test]
    fn parameter_names_are_hugging_faces() {
        let m = BertModel::new(&tiny(), true, &mut kiln_nn::init::rng(0)).unwrap();
        let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
        for want in [
            "embeddings.word_embeddings.weight",
            "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "embeddings.LayerNorm.weight",
            "embeddings.LayerNorm.bias",
            "encoder.layer.0.attention.self.query.weight",
            "encoder.layer.0.attention.self.key.bias",
            "encoder.layer.0.attention.self.value.weight",
            "encoder.layer.0.attention.output.dense.weight",
            "encoder.layer.0.attention.output.LayerNorm.weight",
            "encoder.layer.0.intermediate.dense.weight",
            "encoder.layer.0.output.dense.weight",
            "encoder.layer.1.output.LayerNorm.bias",
            "pooler.dense.weight",
            "pooler.dense.bias",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
        }
        // 5 embedding tensors, 16 per layer, 2 pooler.
        assert_eq!(names.len(), 5 + 16 * 2 + 2);
    }

    #[test]
    fn config_reads_hugging_face_json_with_defaults() {
        let c = BertConfig::from_json_str(r#"{"hidden_size": 8, "num_attention_heads": 2, "foo": 1}"#).unwrap();
        assert_eq!((c.hidden_size, c.num_attention_heads, c.vocab_size), (8, 2, 30522));
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert!(BertConfig::from_json_str(r#"{"hidden_size": 10, "num_attention_heads": 4}"#).is_err());
        assert!(BertConfig::from_json_str(r#"{"hidden_act": "mish"}"#).is_err());
    }

    /// A one-layer, one-head model with hand-set weights: every projection the identity, zero
    /// biases, so the output can be computed by hand.
    #[test]
    fn forward_matches_a_hand_computation() {
        let c = BertConfig {
            vocab_size: 3,
            hidden_size: 2,
            num_hidden_layers: 1,
            num_attention_heads: 1,
            intermediate_size: 2,
            max_position_embeddings: 4,
            type_vocab_size: 1,
            hidden_act: "relu".into(),
            layer_norm_eps: 0.0,
            ..BertConfig::default()
        };
        let mut m = BertModel::new(&c, false, &mut kiln_nn::init::rng(1)).unwrap();
        m.eval();
        let eye = Array::from_vec(vec![1f32, 0., 0., 1.], &[2, 2]).unwrap();
        for (n, t) in m.named_parameters() {
            let v = if n.ends_with("dense.weight") || n.contains("self.") && n.ends_with("weight") {
                eye.clone()
            } else if n == "embeddings.word_embeddings.weight" {
                Array::from_vec(vec![0f32, 0., 1., 3., 2., 0.], &[3, 2]).unwrap()
            } else if n.contains("LayerNorm.weight") {
                Array::ones(&[2])
            } else {
                Array::zeros(t.shape())
            };
            t.set_data(v).unwrap();
        }
        // ids [1, 2]: word rows (1, 3) and (2, 0). LN of a pair (a, b) is (±1, ∓1) by sign of a − b.
        let ids = Tensor::from_vec_i64(vec![1, 2], &[1, 2]).unwrap();
        let out = m.forward(&ids, None, None).unwrap();
        // Embeddings: (-1, 1), (1, -1). Attention scores q·k/√2: token 0: [2, -2]/√2, token 1 the
        // reverse; context_i = p_i0 e0 + p_i1 e1, then LN(ctx + e) keeps e's sign pattern:
        // (-1, 1) and (1, -1). FFN: relu((-1,1)) = (0,1), + (-1,1) = (-1,2) -> LN (-1,1).
        let got = out.last_hidden_state.to_vec_f32().unwrap();
        let want = [-1f32, 1., 1., -1.];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        assert!(out.pooler_output.is_none());
    }

    /// Padding a sentence (with the mask) leaves its real tokens' outputs unchanged.
    #[test]
    fn padding_does_not_change_real_tokens() {
        let mut m = BertModel::new(&tiny(), true, &mut kiln_nn::init::rng(2)).unwrap();
        m.eval();
        let short = Tensor::from_vec_i64(vec![1, 5, 7], &[1, 3]).unwrap();
        let padded = Tensor::from_vec_i64(vec![1, 5, 7, 0, 0, 2, 5, 4, 3, 9], &[2, 5]).unwrap();
        let mask = Tensor::from_vec_i64(vec![1, 1, 1, 0, 0, 1, 1, 1, 1, 1], &[2, 5]).unwrap();
        let a = m.forward(&short, None, None).unwrap();
        let b = m.forward(&padded, Some(&mask), None).unwrap();
        let a_h = a.last_hidden_state.to_vec_f32().unwrap();
        let b_h = b.last_hidden_state.data().narrow(0, 0, 1).unwrap().narrow(1, 0, 3).unwrap().to_vec_f32().unwrap();
        for (x, y) in a_h.iter().zip(&b_h) {
            assert!((x - y).abs() < 1e-5);
        }
        let a_p = a.pooler_output.unwrap().to_vec_f32().unwrap();
        let b_p = b.pooler_output.unwrap().data().narrow(0, 0, 1).unwrap().to_vec_f32().unwrap();
        for (x, y) in a_p.iter().zip(&b_p) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    /// Under `no_grad` in eval mode the layers take the array path (q|k|v in one GEMM,
    /// in-place residuals and activation); it matches the recorded path, which runs the
    /// three projections and every op separately, for each activation and with padding.
    #[test]
    fn inference_path_matches_the_recorded_path() {
        for act in ["gelu", "gelu_new", "relu", "silu", "tanh"] {
            let c = BertConfig { hidden_act: act.into(), num_attention_heads: 4, ..tiny() };
            let mut m = BertModel::new(&c, true, &mut kiln_nn::init::rng(7)).unwrap();
            m.eval();
            let ids = Tensor::from_vec_i64(vec![1, 5, 7, 0, 0, 2, 5, 4, 3, 9], &[2, 5]).unwrap();
            let mask = Tensor::from_vec_i64(vec![1, 1, 1, 0, 0, 1, 1, 1, 1, 1], &[2, 5]).unwrap();
            let types = Tensor::from_vec_i64(vec![0, 0, 1, 1, 1, 0, 1, 0, 1, 0], &[2, 5]).unwrap();
            let recorded = m.forward(&ids, Some(&mask), Some(&types)).unwrap();
            assert!(recorded.last_hidden_state.requires_grad(), "the reference must take the recorded path");
            let fast = kiln_autograd::no_grad(|| m.forward(&ids, Some(&mask), Some(&types))).unwrap();
            let (a, b) =
                (recorded.last_hidden_state.to_vec_f32().unwrap(), fast.last_hidden_state.to_vec_f32().unwrap());
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-5, "{act}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn state_dict_round_trip_with_a_prefix_and_extra_keys() {
        let src = BertModel::new(&tiny(), false, &mut kiln_nn::init::rng(3)).unwrap();
        let mut state: BTreeMap<String, Array> =
            src.state_dict().into_iter().map(|(k, v)| (format!("bert.{k}"), v)).collect();
        state.insert("cls.predictions.bias".into(), Array::zeros(&[11]));
        state.insert("bert.embeddings.position_ids".into(), Array::zeros(&[1, 10]));
        let (m, report) = BertModel::from_state_dict(&tiny(), &state).unwrap();
        assert!(m.pooler.is_none());
        assert!(!m.is_training());
        assert!(report.missing.is_empty());
        assert_eq!(report.unexpected, ["cls.predictions.bias", "embeddings.position_ids"]);
        for (k, v) in m.state_dict() {
            assert_eq!(v.to_vec_f32().unwrap(), src.state_dict()[&k].to_vec_f32().unwrap(), "{k}");
        }
        // A missing tensor is an error that names it.
        state.remove("bert.encoder.layer.1.output.dense.bias");
        let err = BertModel::from_state_dict(&tiny(), &state).unwrap_err().to_string();
        assert!(err.contains("encoder.layer.1.output.dense.bias"), "{err}");
    }

    #[test]
    fn from_tensors_shares_the_given_tensors() {
        let src = BertModel::new(&tiny(), true, &mut kiln_nn::init::rng(4)).unwrap();
        let tensors: BTreeMap<String, Tensor> = src.named_parameters().into_iter().collect();
        let mut m = BertModel::from_tensors(&tiny(), &tensors).unwrap();
        m.eval();
        for (n, t) in m.named_parameters() {
            assert!(t.same(&tensors[&n]), "{n}");
        }
        let ids = Tensor::from_vec_i64(vec![0, 3, 4, 0], &[2, 2]).unwrap();
        let out = m.forward(&ids, None, None).unwrap();
        out.last_hidden_state.sum_all().try_add(&out.pooler_output.unwrap().sum_all()).unwrap().backward().unwrap();
        // Token 0 is the padding row: used in the forward pass, but it gets no gradient.
        let g = tensors["embeddings.word_embeddings.weight"].grad().unwrap().to_vec_f32().unwrap();
        assert!(g[..8].iter().all(|&x| x == 0.0));
        assert!(g[3 * 8..4 * 8].iter().any(|&x| x != 0.0));
        let mut missing = tensors.clone();
        missing.remove("embeddings.LayerNorm.bias");
        let err = BertModel::from_tensors(&tiny(), &missing).unwrap_err().to_string();
        assert!(err.contains("embeddings.LayerNorm.bias (missing)"), "{err}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let m = BertModel::new(&tiny(), false, &mut kiln_nn::init::rng(5)).unwrap();
        let long = Tensor::from_vec_i64(vec![1; 11], &[1, 11]).unwrap();
        assert!(m.forward(&long, None, None).unwrap_err().to_string().contains("max_position_embeddings"));
        let ids = Tensor::from_vec_i64(vec![1; 4], &[2, 2]).unwrap();
        let mask = Tensor::from_vec_i64(vec![1; 4], &[1, 4]).unwrap();
        assert!(m.forward(&ids, Some(&mask), None).is_err());
        assert!(m.forward(&Tensor::zeros(&[2, 2]), None, None).is_err());
    }
}
