//! [`MultiheadAttention`] with PyTorch's parameter names and mask conventions.

use crate::init;
use crate::{Forward, Linear, Module};
use kiln_autograd::ops::attention::scaled_dot_product_attention;
use kiln_autograd::ops::dropout::dropout_default_rng;
use kiln_autograd::{Array, DType, Error, Result, Tensor};
use rand::Rng;

const OP: &str = "multi_head_attention";

/// The optional arguments of [`MultiheadAttention::forward_with`] (PyTorch's keyword
/// arguments). `Default` gives no masks, `need_weights` false (the fused path),
/// `average_attn_weights` true and `is_causal` false.
#[derive(Debug, Clone, Copy)]
pub struct MhaOptions<'a> {
    /// `[N, S]` (or `[S]` for an unbatched input): bool (u8) 1 = ignore that key, or f32 added
    /// to the scores.
    pub key_padding_mask: Option<&'a Tensor>,
    /// `[L, S]` or `[N·num_heads, L, S]`: bool (u8) 1 = may NOT attend, or f32 added to the
    /// scores (PyTorch's convention, the opposite of `scaled_dot_product_attention`'s bool mask).
    pub attn_mask: Option<&'a Tensor>,
    /// Also return the attention weights (computed unfused).
    pub need_weights: bool,
    /// Average the returned weights over the heads (`[N, L, S]`), else `[N, H, L, S]`.
    pub average_attn_weights: bool,
    /// Causal attention (query `i` attends keys `j ≤ i`).
    pub is_causal: bool,
}

impl Default for MhaOptions<'_> {
    fn default() -> Self {
        MhaOptions {
            key_padding_mask: None,
            attn_mask: None,
            need_weights: false,
            average_attn_weights: true,
            is_causal: false,
        }
    }
}

/// Multi-head attention (PyTorch's `nn.MultiheadAttention` with `kdim = vdim = embed_dim`).
///
/// Parameters, in PyTorch's order: `in_proj_weight` `[3E, E]` (the q, k and v projections
/// stacked, Xavier-uniform), `in_proj_bias` `[3E]` (zeros), `out_proj.weight` `[E, E]` and
/// `out_proj.bias` `[E]` (zeros). Inputs are `[L, N, E]`, or `[N, L, E]` with `batch_first`,
/// or unbatched `[L, E]`. Without `need_weights` (and without dropout in training) the heads
/// go through the fused `scaled_dot_product_attention`.
///
/// ```
/// use kiln_nn::{Forward, Module, MultiheadAttention};
/// use kiln_autograd::Tensor;
/// let mha = MultiheadAttention::new(8, 2, 0.0, true, true, &mut kiln_nn::init::rng(0))?;
/// let names: Vec<String> = mha.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]);
/// assert_eq!(mha.forward(&Tensor::zeros(&[3, 5, 8]))?.shape(), &[3, 5, 8]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
#[derive(Module, Debug)]
pub struct MultiheadAttention {
    /// `[3·embed_dim, embed_dim]`: rows `0..E` project the query, `E..2E` the key, `2E..3E`
    /// the value.
    pub in_proj_weight: Tensor,
    /// `[3·embed_dim]`, if any.
    pub in_proj_bias: Option<Tensor>,
    /// The output projection.
    pub out_proj: Linear,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    dropout: f32,
    #[module(skip)]
    batch_first: bool,
    #[module(training)]
    training: bool,
}

impl MultiheadAttention {
    /// Attention over `embed_dim` features split into `num_heads` heads (`embed_dim` must be
    /// divisible by it), with dropout `dropout` on the attention weights in training mode.
    pub fn new(
        embed_dim: usize,
        num_heads: usize,
        dropout: f32,
        bias: bool,
        batch_first: bool,
        rng: &mut impl Rng,
    ) -> Result<MultiheadAttention> {
        if num_heads == 0 || !embed_dim.is_multiple_of(num_heads) {
            return Err(Error::op(OP, format!("embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")));
        }
        if !(0.0..=1.0).contains(&dropout) {
            return Err(Error::op(OP, format!("dropout probability has to be between 0 and 1, but got {dropout}")));
        }
        let bound = (6.0 / (4 * embed_dim).max(1) as f32).sqrt();
        let w = init::uniform(&[3 * embed_dim, embed_dim], -bound, bound, rng);
        let mut out_proj = Linear::new(embed_dim, embed_dim, bias, rng);
        if let Some(b) = &mut out_proj.bias {
            *b = Tensor::zeros(&[embed_dim]).requires_grad_(true);
        }
        Ok(MultiheadAttention {
            in_proj_weight: Tensor::from_array(w).requires_grad_(true),
            in_proj_bias: bias.then(|| Tensor::zeros(&[3 * embed_dim]).requires_grad_(true)),
            out_proj,
            num_heads,
            dropout,
            batch_first,
            training: true,
        })
    }

    /// The model dim `E`.
    pub fn embed_dim(&self) -> usize {
        self.in_proj_weight.shape()[1]
    }

    /// The number of heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// True when inputs are `[N, L, E]`.
    pub fn batch_first(&self) -> bool {
        self.batch_first
    }

    /// Attention of `query` over `key`/`value`: returns the output (the query's layout) and,
    /// with `need_weights`, the attention weights `[N, L, S]` (`[N, H, L, S]` without
    /// averaging; no batch dim for an unbatched input).
    pub fn forward_with(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        opts: &MhaOptions<'_>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let e = self.embed_dim();
        let h = self.num_heads;
        let d = e / h;
        let rank = query.rank();
        if !(rank == 2 || rank == 3) || key.rank() != rank || value.rank() != rank {
            return Err(Error::op(
                OP,
                format!(
                    "query, key and value must all be 2-d or 3-d, got {:?}, {:?} and {:?}",
                    query.shape(),
                    key.shape(),
                    value.shape()
                ),
            ));
        }
        for (name, t) in [("query", query), ("key", key), ("value", value)] {
            if t.shape()[rank - 1] != e {
                return Err(Error::op(
                    OP,
                    format!("{name} of shape {:?} must have embed_dim {e} as its last dim", t.shape()),
                ));
            }
        }
        // Everything batch first: [N, L, E].
        let to_bf = |t: &Tensor| -> Result<Tensor> {
            match (rank, self.batch_first) {
                (2, _) => t.try_unsqueeze(0),
                (_, true) => Ok(t.clone()),
                (_, false) => t.try_transpose(0, 1),
            }
        };
        // (batch, length) of an input.
        let nl = |t: &Tensor| match (rank, self.batch_first) {
            (2, _) => (1, t.shape()[0]),
            (_, true) => (t.shape()[0], t.shape()[1]),
            (_, false) => (t.shape()[1], t.shape()[0]),
        };
        let ((n, l), (nk, s)) = (nl(query), nl(key));
        if key.shape() != value.shape() || nk != n {
            return Err(Error::op(
                OP,
                format!(
                    "key {:?} and value {:?} must match each other and the batch of query {:?}",
                    key.shape(),
                    value.shape(),
                    query.shape()
                ),
            ));
        }
        // Input projections in the inputs' own layout (one GEMM for self-attention, else
        // three over row blocks of the weight), then batch-first views.
        let (q, k, v) = if query.same(key) && key.same(value) {
            let qkv = query.try_linear(&self.in_proj_weight, self.in_proj_bias.as_ref())?;
            (qkv.try_narrow(-1, 0, e)?, qkv.try_narrow(-1, e as isize, e)?, qkv.try_narrow(-1, 2 * e as isize, e)?)
        } else {
            let proj = |x: &Tensor, i: usize| -> Result<Tensor> {
                let w = self.in_proj_weight.try_narrow(0, (i * e) as isize, e)?;
                let b = self.in_proj_bias.as_ref().map(|b| b.try_narrow(0, (i * e) as isize, e)).transpose()?;
                x.try_linear(&w, b.as_ref())
            };
            (proj(query, 0)?, proj(key, 1)?, proj(value, 2)?)
        };
        let (q, k, v) = (to_bf(&q)?, to_bf(&k)?, to_bf(&v)?);
        // [N, T, E] -> [N, H, T, D] (a view).
        let heads = |t: &Tensor, len: usize| {
            t.try_reshape(&[n as isize, len as isize, h as isize, d as isize])?.try_transpose(1, 2)
        };
        let (q, k, v) = (heads(&q, l)?, heads(&k, s)?, heads(&v, s)?);
        let mask = self.merged_mask(opts, n, l, s, rank == 2)?.map(Tensor::from_array);
        let use_dropout = self.training && self.dropout > 0.0;
        let (ctx, weights) = if !opts.need_weights && !use_dropout {
            let ctx = scaled_dot_product_attention(&q, &k, &v, mask.as_ref(), opts.is_causal, None)?;
            (ctx, None)
        } else {
            let mut scores = q.try_matmul(&k.try_transpose(-2, -1)?)?.mul_scalar(1.0 / (d as f32).sqrt());
            if let Some(m) = &mask {
                scores = scores.try_add(m)?;
            }
            if opts.is_causal {
                scores = scores.try_add(&Tensor::from_array(causal_mask(l, s)))?;
            }
            let mut p = scores.try_softmax(-1)?;
            if use_dropout {
                // The process-wide default generator, as in PyTorch: its state is checkpointed.
                p = dropout_default_rng(&p, self.dropout, true)?;
            }
            let ctx = p.try_matmul(&v)?;
            (ctx, Some(p))
        };
        // [N, H, L, D] -> [N, L, E] -> the query's layout.
        let ctx = ctx.try_transpose(1, 2)?.try_reshape(&[n as isize, l as isize, e as isize])?;
        let ctx = match (rank, self.batch_first) {
            (2, _) => ctx.try_squeeze(0)?,
            (_, true) => ctx,
            (_, false) => ctx.try_transpose(0, 1)?,
        };
        let out = self.out_proj.forward(&ctx)?;
        let weights = match weights {
            Some(w) if opts.need_weights => {
                let w = if opts.average_attn_weights { w.try_mean(Some(&[1]), false)? } else { w };
                Some(if rank == 2 { w.try_squeeze(0)? } else { w })
            }
            _ => None,
        };
        Ok((out, weights))
    }

    /// The attention and key-padding masks as one additive f32 mask that broadcasts to
    /// `[N, H, L, S]` (bool masks: 1 gives −inf), or `None` without masks.
    fn merged_mask(
        &self,
        opts: &MhaOptions<'_>,
        n: usize,
        l: usize,
        s: usize,
        unbatched: bool,
    ) -> Result<Option<Array>> {
        let h = self.num_heads;
        let mut mask: Option<Array> = None;
        if let Some(m) = opts.attn_mask {
            let a = additive(&m.data())?;
            let a = match a.shape() {
                [ml, ms] if (*ml, *ms) == (l, s) => a,
                [b, ml, ms] if (*b, *ml, *ms) == (n * h, l, s) => a.reshape_to(&[n, h, l, s])?,
                sh => {
                    return Err(Error::op(
                        OP,
                        format!("attn_mask of shape {sh:?} must be [{l}, {s}] or [{}, {l}, {s}]", n * h),
                    ))
                }
            };
            mask = Some(a);
        }
        if let Some(m) = opts.key_padding_mask {
            let a = additive(&m.data())?;
            let want: &[usize] = if unbatched { &[s] } else { &[n, s] };
            if a.shape() != want {
                return Err(Error::op(OP, format!("key_padding_mask of shape {:?} must be {want:?}", a.shape())));
            }
            let a = a.reshape_to(&[n, 1, 1, s])?;
            mask = Some(match mask {
                Some(m) => m.add(&a)?,
                None => a,
            });
        }
        Ok(mask)
    }
}

/// An attention mask in PyTorch's `nn.MultiheadAttention` convention as an additive f32 mask:
/// a bool (u8) mask gives −inf where it is nonzero (not allowed) and 0 elsewhere.
fn additive(m: &Array) -> Result<Array> {
    match m.dtype() {
        DType::F32 => Ok(m.clone()),
        DType::U8 => {
            let v: Vec<f32> =
                m.to_vec::<u8>()?.into_iter().map(|b| if b != 0 { f32::NEG_INFINITY } else { 0.0 }).collect();
            Array::from_vec(v, m.shape())
        }
        d => Err(Error::op(OP, format!("masks must be bool (u8) or f32, got {d}"))),
    }
}

/// The additive causal mask `[L, S]`: −inf where key `j > i`.
fn causal_mask(l: usize, s: usize) -> Array {
    let v = (0..l * s).map(|x| if x % s.max(1) > x / s.max(1) { f32::NEG_INFINITY } else { 0.0 }).collect();
    Array::from_f32_unchecked(v, &[l, s])
}

impl Forward for MultiheadAttention {
    /// Self-attention of `x` (no masks, no weights returned).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with(x, x, x, &MhaOptions::default())?.0)
    }
}
