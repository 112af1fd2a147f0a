//! Autoregressive generation for [`Gpt`]: greedy decoding and temperature / top-k sampling
//! from a seeded generator, with a key/value cache so that each step runs only the new token.

use crate::gpt::Gpt;
use kiln_autograd::{no_grad, DType, Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How [`Gpt::generate`] picks each next token.
///
/// A `temperature` of 0 (or below) is greedy decoding: the most likely token (the first one
/// on ties). Otherwise the logits are divided by `temperature`, restricted to the `top_k`
/// largest (ties with the k-th kept; `None` or `Some(0)`: all tokens), and a token is drawn
/// from their softmax with a generator seeded by `seed`, so equal seeds give equal samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; `<= 0` is greedy.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Seed of the sampling generator.
    pub seed: u64,
}

impl Sampling {
    /// Greedy decoding.
    pub fn greedy() -> Sampling {
        Sampling { temperature: 0.0, top_k: None, seed: 0 }
    }

    /// Sampling at `temperature` from the `top_k` most likely tokens, seeded with `seed`.
    pub fn new(temperature: f32, top_k: Option<usize>, seed: u64) -> Sampling {
        Sampling { temperature, top_k, seed }
    }

    /// True for greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Picks a token index from one row of `logits` (non-empty).
    pub fn pick(&self, logits: &[f32], rng: &mut impl Rng) -> usize {
        if self.is_greedy() {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.temperature as f64;
        let cutoff = match self.top_k {
            Some(k) if k > 0 && k < logits.len() => {
                let mut sorted = logits.to_vec();
                let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                *kth
            }
            _ => f32::NEG_INFINITY,
        };
        let max = logits.iter().copied().filter(|&x| x >= cutoff).fold(f32::NEG_INFINITY, f32::max) as f64;
        let weight = |x: f32| if x >= cutoff && x > f32::NEG_INFINITY { ((x as f64 - max) * inv_t).exp() } else { 0.0 };
        let total: f64 = logits.iter().map(|&x| weight(x)).sum();
        if !(total > 0.0 && total.is_finite()) {
            return argmax(logits);
        }
        let mut u = rng.gen::<f64>() * total;
        let mut last = 0;
        for (i, &x) in logits.iter().enumerate() {
            let w = weight(x);
            if w > 0.0 {
                last = i;
                if u < w {
                    return i;
                }
                u -= w;
            }
        }
        last
    }
}

impl Default for Sampling {
    /// Greedy decoding.
    fn default() -> Sampling {
        Sampling::greedy()
    }
}

/// Index of the first maximum.
fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

impl Gpt {
    /// Extends `prompt_ids` (i64, `[T]` or `[B, T]`, `T ≥ 1`) by `max_new_tokens` tokens, each
    /// picked by `sampling` from the logits of the last position; returns the prompt followed
    /// by the new tokens (`[T + max_new_tokens]` or `[B, T + max_new_tokens]`). The rows of a
    /// batch are sampled one after the other from the one seeded generator.
    ///
    /// The prompt runs once; after that each step runs only the new token against a key/value
    /// cache ([`Gpt::forward_cached`]). Once a sequence outgrows `n_positions`, each step
    /// instead runs the last `n_positions` tokens afresh (a sliding window, as the learned
    /// positions shift). Dropout follows the model's mode: call `eval()` first.
    pub fn generate(&self, prompt_ids: &Tensor, max_new_tokens: usize, sampling: Sampling) -> Result<Tensor> {
        const NAME: &str = "generate";
        let unbatched = prompt_ids.rank() == 1;
        if !(unbatched || prompt_ids.rank() == 2) || prompt_ids.dtype() != DType::I64 {
            return Err(Error::op(
                NAME,
                format!(
                    "prompt_ids must be i64 [T] or [B, T], got {} of shape {:?}",
                    prompt_ids.dtype(),
                    prompt_ids.shape()
                ),
            ));
        }
        let (b, t) =
            if unbatched { (1, prompt_ids.shape()[0]) } else { (prompt_ids.shape()[0], prompt_ids.shape()[1]) };
        if t == 0 {
            return Err(Error::op(NAME, "the prompt must hold at least one token"));
        }
        let total = t + max_new_tokens;
        let ids = prompt_ids.data().to_vec::<i64>()?;
        let mut seqs: Vec<Vec<i64>> = ids.chunks_exact(t).map(|r| r.to_vec()).collect();
        if b == 0 {
            seqs.clear();
        }
        let n_pos = self.config().n_positions;
        let vocab = self.config().vocab_size;
        let mut rng = StdRng::seed_from_u64(sampling.seed);
        no_grad(|| -> Result<()> {
            if max_new_tokens == 0 || b == 0 {
                return Ok(());
            }
            // The last `len` tokens of every row as a [B, len] batch.
            let tail = |seqs: &[Vec<i64>], len: usize| -> Result<Tensor> {
                let v: Vec<i64> = seqs.iter().flat_map(|s| s[s.len() - len..].iter().copied()).collect();
                Tensor::from_vec_i64(v, &[b, len])
            };
            let mut cache = self.new_cache(b, total.min(n_pos));
            let mut hidden = self.forward_cached_hidden(&tail(&seqs, t.min(n_pos))?, &mut cache)?;
            for step in 0..max_new_tokens {
                let l = hidden.shape()[1];
                let logits = self.logits(&hidden.try_narrow(1, (l - 1) as isize, 1)?)?.data().contiguous();
                let logits = logits.as_slice::<f32>().expect("contiguous f32");
                for (row, seq) in logits.chunks_exact(vocab).zip(seqs.iter_mut()) {
                    seq.push(sampling.pick(row, &mut rng) as i64);
                }
                if step + 1 == max_new_tokens {
                    break;
                }
                hidden = if cache.len() < n_pos {
                    self.forward_cached_hidden(&tail(&seqs, 1)?, &mut cache)?
                } else {
                    cache.clear();
                    self.forward_cached_hidden(&tail(&seqs, n_pos)?, &mut cache)?
                };
            }
            Ok(())
        })?;
        let flat: Vec<i64> = seqs.into_iter().flatten().collect();
        let shape: Vec<usize> = if unbatched { vec![total] } else { vec![b, total] };
        Tensor::from_vec_i64(flat, &shape)
    }
}
