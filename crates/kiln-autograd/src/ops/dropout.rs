//! Dropout: zeroes each element with probability `p` and scales the kept ones by `1/(1-p)`.

use crate::Tensor;
use kiln_tensor::{bail, Array, DType, Result};
use rand::RngCore;

/// PyTorch's `F.dropout(x, p, training)` with an explicit generator: in training mode each
/// element is zeroed with probability `p` and the others are multiplied by `1/(1-p)`, so the
/// expected value is unchanged; the gradient is the upstream gradient times the same mask.
/// Out of training mode, or with `p = 0`, returns `x` itself. `p = 1` gives zeros.
///
/// The mask draws one `u32` per element from `rng`, so a generator seeded the same way gives
/// the same mask.
pub fn dropout(x: &Tensor, p: f32, training: bool, rng: &mut (impl RngCore + ?Sized)) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        bail!("dropout", "probability has to be between 0 and 1, but got {p}");
    }
    if x.dtype() != DType::F32 {
        bail!("dropout", "expected an f32 tensor, got {}", x.dtype());
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    let mask = dropout_mask(x.shape(), p, rng);
    let out = x.data().mul(&mask)?;
    Ok(Tensor::from_op(out, "dropout", &[x], move |g, _| Ok(vec![Some(g.mul(&mask)?)])))
}

/// [`dropout`] drawing from the process-wide default generator
/// ([`crate::random::with_default_generator`]), like PyTorch's `F.dropout`: reseed it with
/// [`crate::random::manual_seed`], save and restore it with [`crate::random::rng_state`] and
/// [`crate::random::set_rng_state`].
pub fn dropout_default_rng(x: &Tensor, p: f32, training: bool) -> Result<Tensor> {
    crate::random::with_default_generator(|g| dropout(x, p, training, g))
}

/// A dropout mask of `shape`: `1/(1-p)` with probability `1-p`, else 0.
fn dropout_mask(shape: &[usize], p: f32, rng: &mut (impl RngCore + ?Sized)) -> Array {
    let n: usize = shape.iter().product();
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    // Keep when a uniform u32 is at or above p·2³² (p = 1 keeps nothing).
    let threshold = (p as f64 * 4_294_967_296.0) as u64;
    let mask = (0..n).map(|_| if u64::from(rng.next_u32()) >= threshold { scale } else { 0.0 }).collect();
    Array::from_f32_unchecked(mask, shape)
}
