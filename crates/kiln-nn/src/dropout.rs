//! [`Dropout`]: randomly zeroes activations in training mode.

use crate::{Forward, Module};
use kiln_autograd::ops::dropout::dropout;
use kiln_autograd::{Error, Result, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Seeds handed to dropout layers built without one: distinct per layer, the same from run to
/// run of a program that builds its layers in the same order.
static NEXT_SEED: AtomicU64 = AtomicU64::new(0x6B69_6C6E_0D70_0000);

/// Zeroes each element with probability `p` in training mode and scales the others by
/// `1/(1-p)` (PyTorch's `nn.Dropout`); the identity in evaluation mode. Has no parameters.
///
/// Each layer owns a seeded generator, so runs are reproducible.
#[derive(Module, Debug)]
pub struct Dropout {
    #[module(skip)]
    p: f32,
    #[module(training)]
    training: bool,
    #[module(skip)]
    rng: Mutex<StdRng>,
}

impl Dropout {
    /// Dropout with probability `p` in `[0, 1]`, in training mode, with a generator seeded from
    /// a per-program sequence (see [`Dropout::with_seed`] to choose the seed).
    pub fn new(p: f32) -> Result<Dropout> {
        Dropout::with_seed(p, NEXT_SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed))
    }

    /// Dropout with probability `p` and a generator seeded with `seed`.
    pub fn with_seed(p: f32, seed: u64) -> Result<Dropout> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::op("dropout", format!("probability has to be between 0 and 1, but got {p}")));
        }
        Ok(Dropout { p, training: true, rng: Mutex::new(StdRng::seed_from_u64(seed)) })
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }
}

impl Forward for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        dropout(x, self.p, true, &mut *rng)
    }
}
