//! [`Dropout`]: randomly zeroes activations in training mode.

use crate::{Forward, Module};
use kiln_autograd::ops::dropout::{dropout, dropout_default_rng};
use kiln_autograd::random::{Generator, GeneratorState};
use kiln_autograd::{Error, Result, Tensor};
use std::sync::{Arc, Mutex};

/// Zeroes each element with probability `p` in training mode and scales the others by
/// `1/(1-p)` (PyTorch's `nn.Dropout`); the identity in evaluation mode. Has no parameters.
///
/// A layer built with [`Dropout::new`] draws its masks from the process-wide default
/// generator ([`kiln_autograd::random`]), as PyTorch does: `random::manual_seed` makes runs
/// reproducible and `random::rng_state` / `random::set_rng_state` (which checkpoints save)
/// capture every such layer at once. A layer built with [`Dropout::with_seed`] owns its
/// generator instead; its state is saved and restored with [`Dropout::generator_state`] and
/// [`Dropout::set_generator_state`]; a clone of the layer shares that generator, as clones of a
/// layer share its parameters.
#[derive(Module, Debug, Clone)]
pub struct Dropout {
    #[module(skip)]
    p: f32,
    #[module(training)]
    training: bool,
    /// `None`: the default generator. Shared by clones.
    #[module(skip)]
    rng: Option<Arc<Mutex<Generator>>>,
}

impl Dropout {
    /// Dropout with probability `p` in `[0, 1]`, in training mode, drawing from the default
    /// generator.
    pub fn new(p: f32) -> Result<Dropout> {
        check_p(p)?;
        Ok(Dropout { p, training: true, rng: None })
    }

    /// Dropout with probability `p` and its own generator seeded with `seed`.
    pub fn with_seed(p: f32, seed: u64) -> Result<Dropout> {
        check_p(p)?;
        Ok(Dropout { p, training: true, rng: Some(Arc::new(Mutex::new(Generator::new(seed)))) })
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// The state of the layer's own generator; `None` when it uses the default generator.
    pub fn generator_state(&self) -> Option<GeneratorState> {
        self.rng.as_ref().map(|g| g.lock().unwrap_or_else(|e| e.into_inner()).state())
    }

    /// Restores the layer's own generator. Errors when the layer uses the default generator
    /// (restore that one with `kiln_autograd::random::set_rng_state`).
    pub fn set_generator_state(&self, state: &GeneratorState) -> Result<()> {
        let g = self.rng.as_ref().ok_or_else(|| {
            Error::op("dropout", "this layer draws from the default generator and has no state of its own")
        })?;
        g.lock().unwrap_or_else(|e| e.into_inner()).set_state(state);
        Ok(())
    }
}

fn check_p(p: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::op("dropout", format!("probability has to be between 0 and 1, but got {p}")));
    }
    Ok(())
}

impl Forward for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        match &self.rng {
            Some(g) => dropout(x, self.p, true, &mut *g.lock().unwrap_or_else(|e| e.into_inner())),
            None => dropout_default_rng(x, self.p, true),
        }
    }
}
