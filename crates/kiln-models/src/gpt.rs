//! GPT-2 ([`Gpt`]) with Hugging Face's `GPT2Model` parameter names, its [`Conv1D`] layer, the
//! fused causal self-attention it uses, and a key/value cache ([`KvCache`]) for generation
//! (see [`crate::generate`]).
//!
//! The same type serves pretrained GPT-2 checkpoints ([`Gpt::from_pretrained`],
//! [`Gpt::from_state_dict`]) and small models trained from scratch ([`Gpt::new`]), e.g. a
//! character-level model:
//!
//! ```
//! use kiln_models::gpt::{Gpt, GptActivation, GptConfig};
//! use kiln_nn::{Forward, Module};
//! use kiln_autograd::Tensor;
//! let config = GptConfig {
//!     vocab_size: 65,
//!     n_positions: 128,
//!     n_embd: 128,
//!     n_layer: 4,
//!     n_head: 4,
//!     activation_function: GptActivation::Gelu,
//!     resid_pdrop: 0.0,
//!     embd_pdrop: 0.0,
//!     attn_pdrop: 0.0,
//!     tie_word_embeddings: false,
//!     ..GptConfig::default()
//! };
//! let model = Gpt::new(config, 0)?;
//! assert_eq!(model.num_parameters().total, 826_368);
//! let ids = Tensor::from_vec_i64(vec![1, 2, 3, 4, 5, 6], &[2, 3])?;
//! assert_eq!(model.forward(&ids)?.shape(), &[2, 3, 65]);
//! # Ok::<(), kiln_autograd::Error>(())
//! ```

use kiln_autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
use kiln_autograd::ops::unary::GeluApproximate;
use kiln_autograd::{no_grad, Array, DType, Error, Result, Tensor};
use kiln_nn::{init, Dropout, Embedding, Forward, LayerNorm, Linear, Module};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::checkpointing::checkpoint_block;

const OP: &str = "gpt";

// ---------------------------------------------------------------------------- config

/// The feed-forward activation, named as in a Hugging Face config's `activation_function`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum GptActivation {
    /// GELU, tanh approximation (`"gelu_new"`, GPT-2's default; also read from
    /// `"gelu_pytorch_tanh"` and `"gelu_fast"`, the same function).
    #[default]
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// GELU, exact erf form (`"gelu"`).
    #[serde(rename = "gelu")]
    Gelu,
    /// `max(x, 0)` (`"relu"`).
    #[serde(rename = "relu")]
    Relu,
    /// `x·sigmoid(x)` (`"silu"`, also read from `"swish"`).
    #[serde(rename = "silu", alias = "swish")]
    Silu,
}

impl GptActivation {
    /// Applies the activation.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            GptActivation::GeluNew => x.try_gelu(GeluApproximate::Tanh),
            GptActivation::Gelu => x.try_gelu(GeluApproximate::None),
            GptActivation::Relu => x.try_relu(),
            GptActivation::Silu => x.try_silu(),
        }
    }
}

/// The hyper-parameters of a [`Gpt`], with the field names and defaults of Hugging Face's
/// `GPT2Config` (the defaults are GPT-2 small's): a GPT-2 `config.json` deserializes into it
/// directly ([`GptConfig::from_json`]), and fields it does not know are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GptConfig {
    /// Number of tokens (rows of `wte`).
    pub vocab_size: usize,
    /// Longest sequence (rows of `wpe`).
    pub n_positions: usize,
    /// Model width `E`.
    pub n_embd: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Number of attention heads (divides `n_embd`).
    pub n_head: usize,
    /// Feed-forward width; `None` is `4·n_embd`.
    pub n_inner: Option<usize>,
    /// The feed-forward activation.
    pub activation_function: GptActivation,
    /// Dropout after the attention and feed-forward outputs (training mode only).
    pub resid_pdrop: f32,
    /// Dropout on the summed embeddings (training mode only).
    pub embd_pdrop: f32,
    /// Dropout on the attention probabilities (training mode only).
    pub attn_pdrop: f32,
    /// LayerNorm's `eps`.
    pub layer_norm_epsilon: f64,
    /// Standard deviation of the normal initialisation of [`Gpt::new`].
    pub initializer_range: f32,
    /// Scale the attention scores by `1/√head_dim` (else no scaling).
    pub scale_attn_weights: bool,
    /// Also divide the scores of block `i` by `i + 1`.
    pub scale_attn_by_inverse_layer_idx: bool,
    /// The LM head is `wte` (true, GPT-2) or its own `lm_head` Linear without bias (false).
    pub tie_word_embeddings: bool,
}

impl Default for GptConfig {
    /// GPT-2 small, as `GPT2Config()`.
    fn default() -> Self {
        GptConfig {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: GptActivation::GeluNew,
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            layer_norm_epsilon: 1e-5,
            initializer_range: 0.02,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: true,
        }
    }
}

impl GptConfig {
    /// Parses a Hugging Face GPT-2 `config.json` text.
    pub fn from_json(text: &str) -> Result<GptConfig> {
        serde_json::from_str(text).map_err(|e| Error::Format { what: "GPT-2 config".into(), msg: e.to_string() })
    }

    /// Reads a Hugging Face GPT-2 `config.json` file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<GptConfig> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        serde_json::from_str(&text).map_err(|e| Error::Format { what: path.display().to_string(), msg: e.to_string() })
    }

    /// The feed-forward width (`n_inner`, or `4·n_embd`).
    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// The width of one head, `n_embd / n_head`.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head.max(1)
    }

    /// Errors on values no model can be built from.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::op(OP, msg));
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!("n_embd ({}) must be divisible by n_head ({})", self.n_embd, self.n_head));
        }
        if self.vocab_size == 0 || self.n_positions == 0 || self.n_embd == 0 {
            return bad(format!(
                "vocab_size ({}), n_positions ({}) and n_embd ({}) must be positive",
                self.vocab_size, self.n_positions, self.n_embd
            ));
        }
        for (name, p) in
            [("resid_pdrop", self.resid_pdrop), ("embd_pdrop", self.embd_pdrop), ("attn_pdrop", self.attn_pdrop)]
        {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} must be between 0 and 1, got {p}"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------- Conv1D

/// `x·weight + bias` with `weight` `[in, out]` (GPT-2's `Conv1D` layout, the transpose of
/// `linear`'s): `x` is `[*, in]` and the result `[*, out]`. One GEMM over the flattened
/// leading dims; backward computes only the gradients asked for (`dx = g·Wᵀ`, `dW = xᵀ·g`,
/// `db = Σ g`), each in its input's layout, with no transposed copy.
pub fn conv1d_gpt2(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    const NAME: &str = "conv1d_gpt2";
    if weight.rank() != 2 {
        return Err(Error::op(NAME, format!("weight must be 2-d [in, out], got shape {:?}", weight.shape())));
    }
    let (in_f, out_f) = (weight.shape()[0], weight.shape()[1]);
    if x.rank() == 0 || x.shape()[x.rank() - 1] != in_f {
        return Err(Error::op(
            NAME,
            format!(
                "input of shape {:?} does not match weight of shape {:?}: dim -1 of input must be {in_f} (dim 0 of weight)",
                x.shape(),
                weight.shape()
            ),
        ));
    }
    if let Some(b) = bias {
        if b.shape() != [out_f] {
            return Err(Error::op(
                NAME,
                format!("bias must have shape [{out_f}] (dim 1 of weight {:?}), got {:?}", weight.shape(), b.shape()),
            ));
        }
    }
    let (xd, wd) = (x.data(), weight.data());
    // `linear` reads its [out, in] weight through strides: the transposed view costs nothing.
    let out = xd.linear(&wd.t()?, bias.map(Tensor::data).as_ref())?;
    let x_shape = x.shape().to_vec();
    let rows: usize = x_shape[..x_shape.len() - 1].iter().product();
    let rec = kiln_autograd::is_grad_enabled();
    let saved_x = (rec && weight.requires_grad()).then_some(xd);
    let saved_w = (rec && x.requires_grad()).then_some(wd);
    let all = [x, weight, bias.unwrap_or(x)];
    let inputs = &all[..if bias.is_some() { 3 } else { 2 }];
    Ok(Tensor::from_op(out, NAME, inputs, move |g, needs| {
        let g2 = g.reshape_to(&[rows, out_f])?;
        let gx = match (&saved_w, needs[0]) {
            (Some(w), true) => Some(g2.matmul(&w.t()?)?.reshape_to(&x_shape)?),
            _ => None,
        };
        let gw = match (&saved_x, needs[1]) {
            (Some(x), true) => Some(x.reshape_to(&[rows, in_f])?.t()?.matmul(&g2)?),
            _ => None,
        };
        let mut grads = vec![gx, gw];
        if needs.len() > 2 {
            grads.push(if needs[2] { Some(g2.sum_leading()?) } else { None });
        }
        Ok(grads)
    }))
}

/// GPT-2's `Conv1D` (Hugging Face's name; really a linear layer): `y = x·weight + bias` with
/// `weight` `[in, out]` (the transpose of [`Linear`]'s layout) and `bias` `[out]`.
#[derive(Module, Debug, Clone)]
pub struct Conv1D {
    /// `[in_features, out_features]`.
    pub weight: Tensor,
    /// `[out_features]`.
    pub bias: Tensor,
}

impl Conv1D {
    /// A layer with GPT-2's initialisation: weight `N(0, std²)`, bias zeros.
    pub fn new(in_features: usize, out_features: usize, std: f32, rng: &mut StdRng) -> Conv1D {
        Conv1D {
            weight: Tensor::from_array(init::normal(&[in_features, out_features], 0.0, std, rng)).requires_grad_(true),
            bias: Tensor::zeros(&[out_features]).requires_grad_(true),
        }
    }

    /// A layer over the given tensors (`weight` `[in, out]`, `bias` `[out]`), used as they are.
    pub fn from_weights(weight: Tensor, bias: Tensor) -> Result<Conv1D> {
        if weight.rank() != 2 || bias.shape() != [weight.shape()[1]] {
            return Err(Error::op(
                "conv1d_gpt2",
                format!("weight must be [in, out] and bias [out], got {:?} and {:?}", weight.shape(), bias.shape()),
            ));
        }
        Ok(Conv1D { weight, bias })
    }

    /// Size of each input vector.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Size of each output vector.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[1]
    }
}

impl Forward for Conv1D {
    /// Maps `x` `[*, in_features]` to `[*, out_features]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv1d_gpt2(x, &self.weight, Some(&self.bias))
    }
}

// ---------------------------------------------------------------------------- attention

/// The `n_head` heads of q, k and v inside packed projections `qkv` `[B, T, 3E]` (q | k | v
/// along the last dim, each split into contiguous head chunks), as `[B, H, T, D]` views.
fn split_heads(qkv: &Array, n_head: usize) -> Result<[Array; 3]> {
    let (b, t, e3) = (qkv.shape()[0], qkv.shape()[1], qkv.shape()[2]);
    let e = e3 / 3;
    let d = e / n_head;
    let part = |i: usize| qkv.narrow(2, i * e, e)?.reshape_to(&[b, t, n_head, d])?.transpose(1, 2);
    Ok([part(0)?, part(1)?, part(2)?])
}

/// Checks that `qkv` is `[B, T, 3E]` with `E` divisible by `n_head`.
fn check_qkv(op: &'static str, shape: &[usize], n_head: usize) -> Result<()> {
    if shape.len() != 3 || n_head == 0 || !shape[2].is_multiple_of(3 * n_head) {
        return Err(Error::op(
            op,
            format!("qkv must be [B, T, 3·E] with E divisible by n_head ({n_head}), got shape {:?}", shape),
        ));
    }
    Ok(())
}

/// Causal multi-head self-attention over packed projections, fused into one op: `qkv`
/// `[B, T, 3E]` holds q | k | v along the last dim, each split into `n_head` contiguous head
/// chunks of `D = E/n_head`; returns the heads' contexts merged back, `[B, T, E]`. Query `i`
/// attends keys `j ≤ i`; `mask` (f32, added to the scores, broadcast to `[B, H, T, T]`) may
/// exclude more (padding). `scale` `None` is `1/√D`.
///
/// The heads are strided views of `qkv` fed to the fused attention kernel (no copies); its
/// backward writes dq, dk and dv straight into one `[B, T, 3E]` gradient.
pub fn causal_self_attention(qkv: &Tensor, n_head: usize, mask: Option<&Array>, scale: Option<f32>) -> Result<Tensor> {
    const NAME: &str = "causal_self_attention";
    check_qkv(NAME, qkv.shape(), n_head)?;
    let (b, t, e3) = (qkv.shape()[0], qkv.shape()[1], qkv.shape()[2]);
    let e = e3 / 3;
    let d = e / n_head;
    let [q, k, v] = split_heads(&qkv.data(), n_head)?;
    let (ctx, probs) = q.scaled_dot_product_attention_probs(&k, &v, mask, true, scale)?;
    // [B, H, T, D] -> [B, T, E]: the one copy, as c_proj needs rows of E.
    let out = ctx.transpose(1, 2)?.reshape_to(&[b, t, e])?;
    drop(ctx);
    Ok(Tensor::from_op(out, NAME, &[qkv], move |g, _| {
        let g4 = g.reshape_to(&[b, t, n_head, d])?.transpose(1, 2)?;
        let grads = Array::scaled_dot_product_attention_backward_causal(&q, &k, &v, &probs, &g4, scale, [true; 3])?;
        let parts: Vec<Array> = grads
            .into_iter()
            .map(|gi| Ok(gi.ok_or_else(|| Error::op(NAME, "backward: missing a q/k/v gradient"))?.contiguous()))
            .collect::<Result<_>>()?;
        let src: Vec<&[f32]> = parts.iter().map(|p| p.as_slice::<f32>().expect("contiguous f32")).collect();
        // Each part is [B, H, T, D]; the gradient of qkv is written in its own row order
        // [B, T, (q|k|v), H, D], every element once (no zero fill).
        let mut packed = Vec::with_capacity(b * t * e3);
        for bi in 0..b {
            for ti in 0..t {
                for part in &src {
                    for hi in 0..n_head {
                        let from = ((bi * n_head + hi) * t + ti) * d;
                        packed.extend_from_slice(&part[from..from + d]);
                    }
                }
            }
        }
        Ok(vec![Some(Array::from_vec(packed, &[b, t, e3])?)])
    }))
}

/// An additive f32 attention mask `[B, 1, 1, T]` from a `[B, T]` padding mask (nonzero = a
/// token, 0 = padding): 0 for tokens, the most negative f32 for padding (as Hugging Face).
fn padding_mask(mask: &Tensor, b: usize, t: usize) -> Result<Array> {
    if mask.shape() != [b, t] {
        return Err(Error::op(OP, format!("attention_mask must have shape [{b}, {t}], got {:?}", mask.shape())));
    }
    let keep: Vec<bool> = match mask.dtype() {
        DType::I64 => mask.data().to_vec::<i64>()?.into_iter().map(|v| v != 0).collect(),
        DType::U8 => mask.data().to_vec::<u8>()?.into_iter().map(|v| v != 0).collect(),
        DType::F32 => mask.data().to_vec::<f32>()?.into_iter().map(|v| v != 0.0).collect(),
    };
    let v = keep.into_iter().map(|k| if k { 0.0 } else { f32::MIN }).collect();
    Array::from_vec(v, &[b, 1, 1, t])
}

/// GPT-2's attention block (`attn`): `c_attn` (q | k | v projections, `[E, 3E]`), causal
/// multi-head attention, `c_proj` (`[E, E]`), and dropout on the probabilities and the output.
#[derive(Module, Debug, Clone)]
pub struct GptAttention {
    /// The packed q | k | v projection, `[E, 3E]`.
    pub c_attn: Conv1D,
    /// The output projection, `[E, E]`.
    pub c_proj: Conv1D,
    /// Dropout on the attention probabilities.
    pub attn_dropout: Dropout,
    /// Dropout on the output.
    pub resid_dropout: Dropout,
    #[module(skip)]
    n_head: usize,
    /// The score scale (`None`: `1/√D`).
    #[module(skip)]
    scale: Option<f32>,
}

impl GptAttention {
    /// Causal self-attention of `x` `[B, T, E]`; `mask` (f32, broadcast to `[B, H, T, T]`) is
    /// added to the scores (padding). Fused unless attention dropout is active.
    pub fn forward(&self, x: &Tensor, mask: Option<&Array>) -> Result<Tensor> {
        let qkv = self.c_attn.forward(x)?;
        let ctx = if self.attn_dropout.is_training() && self.attn_dropout.p() > 0.0 {
            self.unfused(&qkv, mask)?
        } else {
            causal_self_attention(&qkv, self.n_head, mask, self.scale)?
        };
        self.resid_dropout.forward(&self.c_proj.forward(&ctx)?)
    }

    /// Attention with dropout on the probabilities (training mode): explicit ops.
    fn unfused(&self, qkv: &Tensor, mask: Option<&Array>) -> Result<Tensor> {
        let (b, t, e3) = (qkv.shape()[0], qkv.shape()[1], qkv.shape()[2]);
        let (e, h) = (e3 / 3, self.n_head);
        let d = e / h;
        let head = |i: usize| -> Result<Tensor> {
            qkv.try_narrow(-1, (i * e) as isize, e)?
                .try_reshape(&[b as isize, t as isize, h as isize, d as isize])?
                .try_transpose(1, 2)
        };
        let (q, k, v) = (head(0)?, head(1)?, head(2)?);
        let scale = self.scale.unwrap_or(1.0 / (d as f32).sqrt());
        let mut scores = q.try_matmul(&k.try_transpose(-2, -1)?)?.mul_scalar(scale);
        let causal: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 }).collect();
        scores = scores.try_add(&Tensor::from_vec(causal, &[t, t])?)?;
        if let Some(m) = mask {
            scores = scores.try_add(&Tensor::from_array(m.clone()))?;
        }
        let p = scores.try_softmax(-1)?;
        let p = self.attn_dropout.forward(&p)?;
        p.try_matmul(&v)?.try_transpose(1, 2)?.try_reshape(&[b as isize, t as isize, e as isize])
    }

    /// Attention of the new positions `x` `[B, L, E]` over the cached keys and values plus
    /// their own, which are appended to `cache` (inference only: runs without recording).
    fn forward_cached(&self, x: &Tensor, cache: &mut LayerKv, past: usize) -> Result<Tensor> {
        let qkv = self.c_attn.forward(x)?.data();
        let (b, l) = (qkv.shape()[0], qkv.shape()[1]);
        let [q, k, v] = split_heads(&qkv, self.n_head)?;
        cache.append(&k, &v, past)?;
        let s = past + l;
        let (kc, vc) = (cache.k.narrow(2, 0, s)?, cache.v.narrow(2, 0, s)?);
        // Query i sits at position past + i and attends keys j ≤ past + i: no mask for one new
        // position, the top-left causal flag with nothing cached, else an explicit mask.
        let (mask, causal) = match (l, past) {
            (1, _) => (None, false),
            (_, 0) => (None, true),
            _ => {
                let m: Vec<u8> = (0..l * s).map(|i| u8::from(i % s <= past + i / s)).collect();
                (Some(Array::from_vec(m, &[l, s])?), false)
            }
        };
        let ctx = q.scaled_dot_product_attention(&kc, &vc, mask.as_ref(), causal, self.scale)?;
        drop((kc, vc));
        let e = qkv.shape()[2] / 3;
        let ctx = ctx.transpose(1, 2)?.reshape_to(&[b, l, e])?;
        self.resid_dropout.forward(&self.c_proj.forward(&Tensor::from_array(ctx))?)
    }
}

/// GPT-2's feed-forward block (`mlp`): `c_fc` `[E, inner]`, the activation, `c_proj`
/// `[inner, E]`, dropout.
#[derive(Module, Debug, Clone)]
pub struct GptMlp {
    /// The expansion, `[E, inner]`.
    pub c_fc: Conv1D,
    /// The projection back, `[inner, E]`.
    pub c_proj: Conv1D,
    /// Dropout on the output.
    pub dropout: Dropout,
    #[module(skip)]
    act: GptActivation,
}

impl Forward for GptMlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.act.apply(&self.c_fc.forward(x)?)?;
        self.dropout.forward(&self.c_proj.forward(&h)?)
    }
}

/// One pre-LN transformer block (`h.{i}`): `h = h + attn(ln_1(h))`, `h = h + mlp(ln_2(h))`.
#[derive(Module, Debug, Clone)]
pub struct GptBlock {
    /// The norm before the attention.
    pub ln_1: LayerNorm,
    /// The attention.
    pub attn: GptAttention,
    /// The norm before the feed-forward block.
    pub ln_2: LayerNorm,
    /// The feed-forward block.
    pub mlp: GptMlp,
}

impl GptBlock {
    fn forward(&self, x: &Tensor, mask: Option<&Array>, cache: Option<(&mut LayerKv, usize)>) -> Result<Tensor> {
        let a = self.ln_1.forward(x)?;
        let a = match cache {
            None => self.attn.forward(&a, mask)?,
            Some((kv, past)) => self.attn.forward_cached(&a, kv, past)?,
        };
        let h = x.try_add(&a)?;
        h.try_add(&self.mlp.forward(&self.ln_2.forward(&h)?)?)
    }
}

// ---------------------------------------------------------------------------- KV cache

/// The cached keys and values of one block, `[B, H, capacity, D]` each.
#[derive(Debug, Clone)]
struct LayerKv {
    k: Array,
    v: Array,
}

impl LayerKv {
    /// Writes `k`, `v` (`[B, H, L, D]` views) at positions `past..past + L`, growing the buffers
    /// (doubling) when they are full.
    fn append(&mut self, k: &Array, v: &Array, past: usize) -> Result<()> {
        let (b, h, l, d) = (k.shape()[0], k.shape()[1], k.shape()[2], k.shape()[3]);
        let cap = self.k.shape()[2];
        if past + l > cap {
            let new_cap = (2 * cap).max(past + l);
            for buf in [&mut self.k, &mut self.v] {
                let mut grown = vec![0f32; b * h * new_cap * d];
                let old = buf.f32_cow()?;
                for r in 0..b * h {
                    grown[r * new_cap * d..(r * new_cap + past) * d]
                        .copy_from_slice(&old[r * cap * d..(r * cap + past) * d]);
                }
                drop(old);
                *buf = Array::from_vec(grown, &[b, h, new_cap, d])?;
            }
        }
        let cap = self.k.shape()[2];
        for (buf, src) in [(&mut self.k, k), (&mut self.v, v)] {
            let src = src.contiguous();
            let src = src.as_slice::<f32>().expect("contiguous f32");
            // Unique after the attention of the previous step dropped its views: no copy.
            let dst = buf.make_mut_f32()?;
            for r in 0..b * h {
                let at = (r * cap + past) * d;
                dst[at..at + l * d].copy_from_slice(&src[r * l * d..(r + 1) * l * d]);
            }
        }
        Ok(())
    }
}

/// The keys and values of the positions a [`Gpt`] has already seen, per block, so that each
/// generation step runs only the new positions ([`Gpt::forward_cached`]). Buffers are
/// preallocated for `capacity` positions and double when full.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    batch: usize,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The batch size the cache was made for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forgets every position (the buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

// ---------------------------------------------------------------------------- model

/// How a parameter starts in [`Gpt::new`].
#[derive(Clone, Copy)]
enum Init {
    Normal(f32),
    Zeros,
    Ones,
}

/// Where [`Gpt::build`] takes each parameter: `(name, shape, init) -> tensor`.
type ParamSource<'a> = dyn FnMut(&str, &[usize], Init) -> Result<Tensor> + 'a;

/// GPT-2 (Hugging Face's `GPT2Model`, plus the LM head of `GPT2LMHeadModel`), with its
/// parameter names: `wte.weight` `[V, E]`, `wpe.weight` `[n_positions, E]`, per block
/// `h.{i}.ln_1.{weight,bias}`, `h.{i}.attn.c_attn.{weight [E, 3E], bias}`,
/// `h.{i}.attn.c_proj.*`, `h.{i}.ln_2.*`, `h.{i}.mlp.c_fc.{weight [E, inner], bias}`,
/// `h.{i}.mlp.c_proj.*`, then `ln_f.*` and, when untied, `lm_head.weight` `[V, E]`.
///
/// `forward_hidden` gives `last_hidden_state` (after `ln_f`); [`Forward::forward`] gives the
/// logits `[B, T, V]`. Dropout (`drop`, `attn_dropout`, `resid_dropout`, `mlp.dropout`) acts
/// in training mode only; call `eval()` for inference.
#[derive(Module, Debug)]
pub struct Gpt {
    /// Token embeddings `[vocab_size, n_embd]` (also the LM head when tied).
    pub wte: Embedding,
    /// Learned position embeddings `[n_positions, n_embd]`.
    pub wpe: Embedding,
    /// Dropout on the summed embeddings.
    pub drop: Dropout,
    /// The blocks.
    pub h: Vec<GptBlock>,
    /// The final norm.
    pub ln_f: LayerNorm,
    /// The untied LM head `[vocab_size, n_embd]` (no bias), or `None` when tied to `wte`.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    config: GptConfig,
    #[module(skip)]
    gradient_checkpointing: bool,
}

impl Gpt {
    /// A model with GPT-2's initialisation from `seed`: every `Conv1D`, `Linear` and
    /// `Embedding` weight `N(0, initializer_range²)`, biases zeros, LayerNorm weights ones and
    /// biases zeros. Dropout generators are seeded from `seed` too. In training mode.
    pub fn new(config: GptConfig, seed: u64) -> Result<Gpt> {
        let mut rng = init::rng(seed);
        Gpt::build(config, seed, &mut |_, shape, how| {
            let a = match how {
                Init::Normal(std) => init::normal(shape, 0.0, std, &mut rng),
                Init::Zeros => Array::zeros(shape),
                Init::Ones => Array::ones(shape),
            };
            Ok(Tensor::from_array(a).requires_grad_(true))
        })
    }

    /// A model over the given tensors, looked up by their Hugging Face names (a name may also
    /// carry `GPT2LMHeadModel`'s `transformer.` prefix). The tensors are used as they are
    /// (shared, not copied): gradients land on them. Extra entries are ignored; a missing
    /// name or a shape that does not match `config` is an error.
    pub fn from_tensors(config: GptConfig, tensors: &BTreeMap<String, Tensor>) -> Result<Gpt> {
        Gpt::build(config, 0, &mut |name, shape, _| {
            let t = lookup(tensors, name)?;
            if t.shape() != shape {
                return Err(Error::op(
                    OP,
                    format!("parameter {name} has shape {:?}, the config needs {shape:?}", t.shape()),
                ));
            }
            Ok(t.clone())
        })
    }

    /// A model over the values of a state dict (e.g. a Hugging Face GPT-2 `model.safetensors`
    /// read with `kiln_io::load_safetensors`), as new trainable tensors; names as in
    /// [`Gpt::from_tensors`]. Buffers such as `h.{i}.attn.bias` and other extra entries are
    /// ignored. In evaluation mode.
    pub fn from_state_dict(config: GptConfig, state: &BTreeMap<String, Array>) -> Result<Gpt> {
        let mut model = Gpt::build(config, 0, &mut |name, shape, _| {
            let a = lookup(state, name)?;
            if a.shape() != shape {
                return Err(Error::op(
                    OP,
                    format!("parameter {name} has shape {:?}, the config needs {shape:?}", a.shape()),
                ));
            }
            let a = if a.dtype() == DType::F32 { a.clone() } else { a.to_dtype(DType::F32)? };
            Ok(Tensor::from_array(a).requires_grad_(true))
        })?;
        model.eval();
        Ok(model)
    }

    /// Loads a Hugging Face GPT-2 directory: `config.json` and `model.safetensors`. In
    /// evaluation mode.
    pub fn from_pretrained(dir: impl AsRef<Path>) -> Result<Gpt> {
        let dir = dir.as_ref();
        let config = GptConfig::from_json_file(dir.join("config.json"))?;
        let state = kiln_io::load_safetensors(dir.join("model.safetensors"))?;
        Gpt::from_state_dict(config, &state)
    }

    /// Builds the model, taking every parameter from `param(name, shape, init)`.
    fn build(config: GptConfig, seed: u64, param: &mut ParamSource<'_>) -> Result<Gpt> {
        config.validate()?;
        let c = &config;
        let (e, inner, std) = (c.n_embd, c.inner_dim(), c.initializer_range);
        let mut seeds = StdRng::seed_from_u64(seed ^ 0x6770_7432_6472_6f70);
        let mut drop = |p: f32| Dropout::with_seed(p, rand::Rng::gen(&mut seeds));
        let mut conv = |name: String, i: usize, o: usize| -> Result<Conv1D> {
            Ok(Conv1D {
                weight: param(&format!("{name}.weight"), &[i, o], Init::Normal(std))?,
                bias: param(&format!("{name}.bias"), &[o], Init::Zeros)?,
            })
        };
        let mut convs = Vec::with_capacity(4 * c.n_layer);
        for i in 0..c.n_layer {
            convs.push(conv(format!("h.{i}.attn.c_attn"), e, 3 * e)?);
            convs.push(conv(format!("h.{i}.attn.c_proj"), e, e)?);
            convs.push(conv(format!("h.{i}.mlp.c_fc"), e, inner)?);
            convs.push(conv(format!("h.{i}.mlp.c_proj"), inner, e)?);
        }
        let mut norm = |name: String| -> Result<LayerNorm> {
            let mut ln = LayerNorm::with_options(&[e], c.layer_norm_epsilon, true, true);
            ln.weight = Some(param(&format!("{name}.weight"), &[e], Init::Ones)?);
            ln.bias = Some(param(&format!("{name}.bias"), &[e], Init::Zeros)?);
            Ok(ln)
        };
        let mut norms = Vec::with_capacity(2 * c.n_layer + 1);
        for i in 0..c.n_layer {
            norms.push(norm(format!("h.{i}.ln_1"))?);
            norms.push(norm(format!("h.{i}.ln_2"))?);
        }
        let ln_f = norm("ln_f".into())?;
        let wte = Embedding::from_weight(param("wte.weight", &[c.vocab_size, e], Init::Normal(std))?, None)?;
        let wpe = Embedding::from_weight(param("wpe.weight", &[c.n_positions, e], Init::Normal(std))?, None)?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(Linear::from_weights(param("lm_head.weight", &[c.vocab_size, e], Init::Normal(std))?, None)?)
        };
        let mut convs = convs.into_iter();
        let mut norms = norms.into_iter();
        let mut h = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let mut scale = if c.scale_attn_weights { None } else { Some(1.0) };
            if c.scale_attn_by_inverse_layer_idx {
                scale = Some(scale.unwrap_or(1.0 / (c.head_dim() as f32).sqrt()) / (i + 1) as f32);
            }
            let mut next_conv = || convs.next().expect("four convs per block");
            let mut next_norm = || norms.next().expect("two norms per block");
            let (ln_1, ln_2) = (next_norm(), next_norm());
            let attn = GptAttention {
                c_attn: next_conv(),
                c_proj: next_conv(),
                attn_dropout: drop(c.attn_pdrop)?,
                resid_dropout: drop(c.resid_pdrop)?,
                n_head: c.n_head,
                scale,
            };
            let mlp = GptMlp {
                c_fc: next_conv(),
                c_proj: next_conv(),
                dropout: drop(c.resid_pdrop)?,
                act: c.activation_function,
            };
            h.push(GptBlock { ln_1, attn, ln_2, mlp });
        }
        Ok(Gpt { wte, wpe, drop: drop(c.embd_pdrop)?, h, ln_f, lm_head, config, gradient_checkpointing: false })
    }

    /// The configuration.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Turns gradient checkpointing of the blocks on or off (Hugging Face's
    /// `gradient_checkpointing_enable()`; off by default). When on, each block runs through
    /// [`kiln_autograd::checkpoint`] during training: its activations are not kept for backward
    /// but recomputed there (dropout masks included), so a forward pass retains one `[B, T, E]`
    /// input per block instead of every attention and MLP intermediate, for about one more
    /// forward pass of compute per step. Gradients are the same. No effect under `no_grad`
    /// (generation) or when nothing requires grad.
    pub fn set_gradient_checkpointing(&mut self, enabled: bool) {
        self.gradient_checkpointing = enabled;
    }

    /// True when gradient checkpointing is on (see [`Gpt::set_gradient_checkpointing`]).
    pub fn is_gradient_checkpointing(&self) -> bool {
        self.gradient_checkpointing
    }

    /// Checks token ids `[B, T]` (i64) and that `past + T` positions fit.
    fn check_ids(&self, ids: &Tensor, past: usize) -> Result<(usize, usize)> {
        if ids.rank() != 2 || ids.dtype() != DType::I64 {
            return Err(Error::op(
                OP,
                format!("input_ids must be i64 [batch, seq], got {} of shape {:?}", ids.dtype(), ids.shape()),
            ));
        }
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        if past + t > self.config.n_positions {
            return Err(Error::op(
                OP,
                format!(
                    "{} positions ({past} cached + {t} new) exceed n_positions ({})",
                    past + t,
                    self.config.n_positions
                ),
            ));
        }
        Ok((b, t))
    }

    /// `drop(wte[ids] + wpe[past..past + T])`.
    fn embed(&self, ids: &Tensor, past: usize, t: usize) -> Result<Tensor> {
        let pos = self.wpe.weight.try_narrow(0, past as isize, t)?;
        self.drop.forward(&self.wte.forward(ids)?.try_add(&pos)?)
    }

    /// `last_hidden_state` `[B, T, E]` (after `ln_f`) of token ids `[B, T]` (i64) at positions
    /// `0..T`. `attention_mask` `[B, T]` (i64, u8 or f32; nonzero = token, 0 = padding)
    /// excludes padded keys, as Hugging Face's `GPT2Model`.
    pub fn forward_hidden(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t) = self.check_ids(input_ids, 0)?;
        let mask = attention_mask.map(|m| padding_mask(m, b, t)).transpose()?;
        let mut x = self.embed(input_ids, 0, t)?;
        for block in &self.h {
            x = if self.gradient_checkpointing {
                let mask = mask.clone();
                checkpoint_block(block, &[x], move |b, xs| b.forward(&xs[0], mask.as_ref(), None))?
            } else {
                block.forward(&x, mask.as_ref(), None)?
            };
        }
        self.ln_f.forward(&x)
    }

    /// The LM head: logits `[*, V]` of hidden states `[*, E]` (`wte` when tied, else `lm_head`).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => hidden.try_linear(&self.wte.weight, None),
        }
    }

    /// The mean next-token cross-entropy of logits of `input_ids` `[B, T]` against `targets`
    /// `[B, T]` (i64; `-100` is ignored).
    pub fn loss(&self, input_ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        if targets.shape() != input_ids.shape() {
            return Err(Error::op(
                OP,
                format!("targets {:?} must have the shape of input_ids {:?}", targets.shape(), input_ids.shape()),
            ));
        }
        let logits = self.forward(input_ids)?;
        let v = self.config.vocab_size as isize;
        cross_entropy(&logits.try_reshape(&[-1, v])?, &targets.try_reshape(&[-1])?, &CrossEntropyOptions::default())
    }

    /// An empty cache for `batch` sequences with room for `capacity` positions (it grows
    /// beyond that when needed).
    pub fn new_cache(&self, batch: usize, capacity: usize) -> KvCache {
        let c = &self.config;
        let shape = [batch, c.n_head, capacity, c.head_dim()];
        let layer = || LayerKv { k: Array::zeros(&shape), v: Array::zeros(&shape) };
        KvCache { layers: (0..c.n_layer).map(|_| layer()).collect(), len: 0, batch }
    }

    /// Logits `[B, L, V]` of the new token ids `[B, L]` at positions `cache.len()..+L`,
    /// attending to the cached positions and to each other causally; their keys and values
    /// are appended to `cache`. Equals the last `L` positions of [`Forward::forward`] on the
    /// whole sequence, without recomputing the prefix. Inference only: runs without
    /// recording a graph.
    pub fn forward_cached(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        no_grad(|| self.logits(&self.forward_cached_hidden(input_ids, cache)?))
    }

    /// [`Gpt::forward_cached`] without the LM head: the hidden states `[B, L, E]` after `ln_f`.
    pub fn forward_cached_hidden(&self, input_ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        no_grad(|| {
            let past = cache.len;
            let (b, t) = self.check_ids(input_ids, past)?;
            if b != cache.batch || cache.layers.len() != self.h.len() {
                return Err(Error::op(
                    OP,
                    format!(
                        "the cache holds {} layers of batch {}, the model has {} layers and the input batch {b}",
                        cache.layers.len(),
                        cache.batch,
                        self.h.len()
                    ),
                ));
            }
            let mut x = self.embed(input_ids, past, t)?;
            for (block, kv) in self.h.iter().zip(cache.layers.iter_mut()) {
                x = block.forward(&x, None, Some((kv, past)))?;
            }
            cache.len = past + t;
            self.ln_f.forward(&x)
        })
    }
}

/// `map[name]`, or `map["transformer." + name]` (`GPT2LMHeadModel`'s prefix).
fn lookup<'a, T>(map: &'a BTreeMap<String, T>, name: &str) -> Result<&'a T> {
    map.get(name)
        .or_else(|| map.get(&format!("transformer.{name}")))
        .ok_or_else(|| Error::op(OP, format!("parameter {name} is missing")))
}

impl Forward for Gpt {
    /// Logits `[B, T, V]` of token ids `[B, T]` (i64), no padding mask.
    fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.logits(&self.forward_hidden(input_ids, None)?)
    }
}
