//! Finite-difference gradient checks, independent of any backward rule.
//!
//! [`check_gradients`] compares the gradient that backward computes for
//! `L = Σ f(inputs) · R` (R a fixed random weighting of the output) with central differences
//! `(L(x + h) − L(x − h)) / 2h` taken element by element. Used by the tests of every op and
//! layer in kiln.

use crate::{no_grad, Array, Error, Result, Tensor};

/// Tolerances and step of a finite-difference check.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Step `h` of the central difference.
    pub eps: f32,
    /// Absolute tolerance.
    pub atol: f32,
    /// Relative tolerance.
    pub rtol: f32,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck { eps: 1e-2, atol: 2e-3, rtol: 2e-2 }
    }
}

/// A deterministic pseudo-random f32 in [-1, 1) from a 64-bit state (SplitMix64).
fn next_unit(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Deterministic uniform values in [lo, hi) of `shape`, for tests.
pub fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Array {
    let mut s = seed;
    let n = shape.iter().product();
    let v = (0..n).map(|_| lo + (hi - lo) * (next_unit(&mut s) * 0.5 + 0.5)).collect();
    Array::from_vec(v, shape).expect("length matches shape")
}

impl GradCheck {
    /// Checks the gradients of `f` with respect to every f32 input in `inputs` (other dtypes
    /// are passed through as constants). Returns an error describing the worst mismatch.
    pub fn check(&self, inputs: &[Array], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
        let leaves: Vec<Tensor> = inputs
            .iter()
            .map(|a| {
                let t = Tensor::from_array(a.contiguous());
                if a.dtype() == crate::DType::F32 {
                    t.requires_grad_(true)
                } else {
                    t
                }
            })
            .collect();
        let out = f(&leaves)?;
        let mut seed = 0x5EED;
        let weights = uniform(out.shape(), -1.0, 1.0, {
            seed += 1;
            seed
        });
        out.backward_with(weights.clone())?;
        let loss = |vals: &[Tensor]| -> Result<f64> {
            let o = no_grad(|| f(vals))?;
            let (o, w) = (o.to_vec_f32()?, weights.to_vec_f32()?);
            Ok(o.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum())
        };
        for (i, leaf) in leaves.iter().enumerate() {
            if !leaf.requires_grad() {
                continue;
            }
            let analytic = leaf.grad().map(|g| g.to_vec_f32()).transpose()?.unwrap_or_else(|| vec![0.0; leaf.numel()]);
            let base = inputs[i].to_vec_f32()?;
            for j in 0..base.len() {
                let shifted = |delta: f32| -> Result<f64> {
                    let mut v = base.clone();
                    v[j] += delta;
                    let mut vals = leaves.iter().map(|t| t.detach()).collect::<Vec<_>>();
                    vals[i] = Tensor::from_vec(v, leaf.shape())?;
                    loss(&vals)
                };
                let numeric = ((shifted(self.eps)? - shifted(-self.eps)?) / (2.0 * self.eps as f64)) as f32;
                let a = analytic[j];
                if (a - numeric).abs() > self.atol + self.rtol * numeric.abs() {
                    return Err(Error::Msg(format!(
                        "gradcheck: input {i} (shape {:?}) element {j}: backward gives {a}, finite differences give {numeric}",
                        leaf.shape()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// [`GradCheck::check`] with the default tolerances.
pub fn check_gradients(inputs: &[Array], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    GradCheck::default().check(inputs, f)
}
