//! [`TransformerEncoderLayer`]: self-attention and a feed-forward block, pre- or post-norm.

use crate::attention::{MhaOptions, MultiheadAttention};
use crate::{Dropout, Forward, LayerNorm, Linear, Module};
use kiln_autograd::ops::unary::GeluApproximate;
use kiln_autograd::{Error, Result, Tensor};
use rand::Rng;

/// The feed-forward activation of a [`TransformerEncoderLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)` (PyTorch's default).
    Relu,
    /// Exact (erf) GELU.
    Gelu,
}

/// The settings of a [`TransformerEncoderLayer`], with PyTorch's defaults from
/// [`TransformerEncoderLayerConfig::new`]: `dim_feedforward` 2048, `dropout` 0.1, ReLU,
/// `layer_norm_eps` 1e-5, sequence-first inputs, post-norm, biases.
#[derive(Debug, Clone, Copy)]
pub struct TransformerEncoderLayerConfig {
    /// The model dim.
    pub d_model: usize,
    /// Attention heads (must divide `d_model`).
    pub nhead: usize,
    /// The hidden size of the feed-forward block.
    pub dim_feedforward: usize,
    /// Dropout after attention, inside and after the feed-forward block, and on the
    /// attention weights.
    pub dropout: f32,
    /// The feed-forward activation.
    pub activation: Activation,
    /// The layer norms' eps.
    pub layer_norm_eps: f64,
    /// Inputs `[N, L, E]` instead of `[L, N, E]`.
    pub batch_first: bool,
    /// Pre-norm (`x + f(norm(x))`) instead of post-norm (`norm(x + f(x))`).
    pub norm_first: bool,
    /// Biases in the linear layers and the layer norms.
    pub bias: bool,
}

impl TransformerEncoderLayerConfig {
    /// PyTorch's defaults for `d_model` and `nhead`.
    pub fn new(d_model: usize, nhead: usize) -> Self {
        TransformerEncoderLayerConfig {
            d_model,
            nhead,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: Activation::Relu,
            layer_norm_eps: 1e-5,
            batch_first: false,
            norm_first: false,
            bias: true,
        }
    }

    /// Builds the layer.
    pub fn build(&self, rng: &mut impl Rng) -> Result<TransformerEncoderLayer> {
        let c = *self;
        Ok(TransformerEncoderLayer {
            self_attn: MultiheadAttention::new(c.d_model, c.nhead, c.dropout, c.bias, c.batch_first, rng)?,
            linear1: Linear::new(c.d_model, c.dim_feedforward, c.bias, rng),
            dropout: Dropout::new(c.dropout)?,
            linear2: Linear::new(c.dim_feedforward, c.d_model, c.bias, rng),
            norm1: LayerNorm::with_options(&[c.d_model], c.layer_norm_eps, true, c.bias),
            norm2: LayerNorm::with_options(&[c.d_model], c.layer_norm_eps, true, c.bias),
            dropout1: Dropout::new(c.dropout)?,
            dropout2: Dropout::new(c.dropout)?,
            norm_first: c.norm_first,
            activation: c.activation,
        })
    }
}

/// One transformer encoder layer (PyTorch's `nn.TransformerEncoderLayer`), with its names:
/// `self_attn.{in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias}`,
/// `linear1.*`, `linear2.*`, `norm1.*`, `norm2.*` (and the parameterless `dropout`,
/// `dropout1`, `dropout2`).
///
/// Post-norm: `x = norm1(x + sa(x))`, `x = norm2(x + ff(x))`; pre-norm (`norm_first`):
/// `x = x + sa(norm1(x))`, `x = x + ff(norm2(x))`, where `sa` is self-attention followed by
/// `dropout1` and `ff(x) = dropout2(linear2(dropout(act(linear1(x)))))`.
///
/// ```
/// use kiln_nn::transformer::TransformerEncoderLayerConfig;
/// use kiln_nn::{Forward, Module};
/// use kiln_autograd::Tensor;
/// let mut cfg = TransformerEncoderLayerConfig::new(8, 2);
/// cfg.dim_feedforward = 16;
/// let layer = cfg.build(&mut kiln_nn::init::rng(0))?;
/// assert_eq!(layer.forward(&Tensor::zeros(&[5, 3, 8]))?.shape(), &[5, 3, 8]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
#[derive(Module, Debug)]
pub struct TransformerEncoderLayer {
    /// The self-attention.
    pub self_attn: MultiheadAttention,
    /// The first feed-forward projection `[dim_feedforward, d_model]`.
    pub linear1: Linear,
    /// Dropout inside the feed-forward block.
    pub dropout: Dropout,
    /// The second feed-forward projection `[d_model, dim_feedforward]`.
    pub linear2: Linear,
    /// The norm around the attention block.
    pub norm1: LayerNorm,
    /// The norm around the feed-forward block.
    pub norm2: LayerNorm,
    /// Dropout after the attention.
    pub dropout1: Dropout,
    /// Dropout after the feed-forward block.
    pub dropout2: Dropout,
    #[module(skip)]
    norm_first: bool,
    #[module(skip)]
    activation: Activation,
}

impl TransformerEncoderLayer {
    /// A layer with PyTorch's defaults (see [`TransformerEncoderLayerConfig::new`]).
    pub fn new(d_model: usize, nhead: usize, rng: &mut impl Rng) -> Result<TransformerEncoderLayer> {
        TransformerEncoderLayerConfig::new(d_model, nhead).build(rng)
    }

    /// True for pre-norm.
    pub fn norm_first(&self) -> bool {
        self.norm_first
    }

    /// Applies the layer to `src` with an optional attention mask (`[L, S]` or
    /// `[N·nhead, L, S]`) and key padding mask (`[N, S]`), both in
    /// `nn.MultiheadAttention`'s convention (bool 1 = not allowed, or f32 added), and
    /// optionally causal attention.
    pub fn forward_with(
        &self,
        src: &Tensor,
        src_mask: Option<&Tensor>,
        src_key_padding_mask: Option<&Tensor>,
        is_causal: bool,
    ) -> Result<Tensor> {
        if src.rank() == 0 || src.shape()[src.rank() - 1] != self.norm1.normalized_shape()[0] {
            return Err(Error::op(
                "transformer_encoder_layer",
                format!("input of shape {:?} must end with d_model {}", src.shape(), self.norm1.normalized_shape()[0]),
            ));
        }
        let opts =
            MhaOptions { attn_mask: src_mask, key_padding_mask: src_key_padding_mask, is_causal, ..Default::default() };
        let sa = |x: &Tensor| -> Result<Tensor> {
            let y = self.self_attn.forward_with(x, x, x, &opts)?.0;
            self.dropout1.forward(&y)
        };
        let ff = |x: &Tensor| -> Result<Tensor> {
            let h = self.linear1.forward(x)?;
            let h = match self.activation {
                Activation::Relu => h.try_relu()?,
                Activation::Gelu => h.try_gelu(GeluApproximate::None)?,
            };
            let h = self.linear2.forward(&self.dropout.forward(&h)?)?;
            self.dropout2.forward(&h)
        };
        let mut x = src.clone();
        if self.norm_first {
            x = x.try_add(&sa(&self.norm1.forward(&x)?)?)?;
            x = x.try_add(&ff(&self.norm2.forward(&x)?)?)?;
        } else {
            x = self.norm1.forward(&x.try_add(&sa(&x)?)?)?;
            x = self.norm2.forward(&x.try_add(&ff(&x)?)?)?;
        }
        Ok(x)
    }
}

impl Forward for TransformerEncoderLayer {
    /// The layer without masks.
    fn forward(&self, src: &Tensor) -> Result<Tensor> {
        self.forward_with(src, None, None, false)
    }
}
