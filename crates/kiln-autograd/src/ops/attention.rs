//! Fused scaled dot-product attention with its own backward.
//!
//! The forward keeps query, key, value (views, no copies) and the attention probabilities
//! `P`; backward computes `dV = Pᵀ·dO`, `dS = P ∘ (dO·Vᵀ − rowsum(dO·Vᵀ ∘ P))`,
//! `dQ = dS·K·scale` and `dK = dSᵀ·Q·scale` (only those asked for) with one GEMM each per
//! batch element. The mask is a constant: it gets no gradient.

use crate::Tensor;
use kiln_tensor::{Array, Result};

/// PyTorch's `F.scaled_dot_product_attention` (no dropout):
/// `softmax(query·keyᵀ·scale + mask, −1) @ value`.
///
/// `query` is `[*, L, E]`, `key` `[*, S, E]`, `value` `[*, S, Ev]` (the batch dims broadcast),
/// and the output `[*, L, Ev]`. `attn_mask` broadcasts to `[*, L, S]`: a U8 (bool) mask keeps
/// the keys where it is 1, an F32 mask is added to the scores (−inf allowed). With
/// `is_causal`, query `i` attends only keys `j ≤ i` (top-left aligned, also when `L ≠ S`).
/// `scale` `None` is `1/√E`.
///
/// ```
/// use kiln_autograd::ops::attention::scaled_dot_product_attention;
/// use kiln_autograd::Tensor;
/// let q = Tensor::from_vec(vec![1.0, 0.0], &[1, 1, 2])?;
/// let k = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[1, 2, 2])?;
/// let v = Tensor::from_vec(vec![1.0, 3.0], &[1, 2, 1])?;
/// // Causal: the only query attends only to the first key.
/// let y = scaled_dot_product_attention(&q, &k, &v, None, true, None)?;
/// assert_eq!(y.to_vec_f32()?, vec![1.0]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
pub fn scaled_dot_product_attention(
    query: &Tensor,
    key: &Tensor,
    value: &Tensor,
    attn_mask: Option<&Tensor>,
    is_causal: bool,
    scale: Option<f32>,
) -> Result<Tensor> {
    let (q, k, v) = (query.data(), key.data(), value.data());
    let mask = attn_mask.map(Tensor::data);
    let (out, probs) = q.scaled_dot_product_attention_probs(&k, &v, mask.as_ref(), is_causal, scale)?;
    Ok(Tensor::from_op(out, "scaled_dot_product_attention", &[query, key, value], move |g, needs| {
        let needs = [needs[0], needs[1], needs[2]];
        let [dq, dk, dv] = if is_causal {
            Array::scaled_dot_product_attention_backward_causal(&q, &k, &v, &probs, g, scale, needs)?
        } else {
            Array::scaled_dot_product_attention_backward(&q, &k, &v, &probs, g, scale, needs)?
        };
        Ok(vec![dq, dk, dv])
    }))
}
