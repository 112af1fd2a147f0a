//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay
//! (PyTorch's `torch.optim.SGD`).

use crate::optimizer::{delegate_to_core, for_chunks, non_negative, Core, Entries, ParamState, Params, StateDict};
use crate::Optimizer;
use kiln_autograd::{Array, Error, Result};

/// PyTorch's SGD. Per step, for each parameter `p` with gradient `g`:
/// `g += weight_decay·p`; with momentum, `buf = g` on the first step, else
/// `buf = momentum·buf + (1 − dampening)·g`, then `g = g + momentum·buf` (Nesterov) or `g = buf`;
/// finally `p −= lr·g`. Updates are in place: no allocation per step after the first.
///
/// State (see [`Optimizer::state_dict`]): `<param>.momentum_buffer` when momentum is on.
///
/// ```
/// use kiln_autograd::Tensor;
/// use kiln_optim::{Optimizer, Sgd};
/// let w = Tensor::from_vec(vec![1.0, 2.0], &[2])?.requires_grad_(true);
/// let mut opt = Sgd::new(vec![w.clone()], 0.1);
/// (&w * &w).sum_all().backward()?; // grad = 2w
/// opt.step()?;
/// assert_eq!(w.to_vec_f32()?, vec![0.8, 1.6]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
pub struct Sgd {
    core: Core<SgdState>,
    /// Momentum factor (0 = none).
    pub momentum: f32,
    /// Dampening of the momentum.
    pub dampening: f32,
    /// Nesterov momentum (needs momentum > 0 and dampening 0).
    pub nesterov: bool,
    /// L2 penalty added to the gradient, for groups without their own.
    pub weight_decay: f32,
}

struct SgdState {
    momentum_buffer: Array,
}

impl ParamState for SgdState {
    const KEYS: &'static [&'static str] = &["momentum_buffer"];
    fn save(&self, name: &str, out: &mut StateDict) {
        out.insert(format!("{name}.momentum_buffer"), self.momentum_buffer.clone());
    }
    fn load(e: &Entries) -> Result<Option<SgdState>> {
        Ok(e.buffer("momentum_buffer")?.map(|b| SgdState { momentum_buffer: b }))
    }
}

impl Sgd {
    /// Plain SGD over `params` (a `Vec<Tensor>`, named parameters or [`Params`] groups) with
    /// learning rate `lr` for groups without their own.
    pub fn new(params: impl Into<Params>, lr: f32) -> Sgd {
        Sgd { core: Core::new(params.into(), lr), momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
    }

    /// Sets the momentum factor.
    pub fn momentum(mut self, momentum: f32) -> Sgd {
        self.momentum = momentum;
        self
    }
    /// Sets the dampening.
    pub fn dampening(mut self, dampening: f32) -> Sgd {
        self.dampening = dampening;
        self
    }
    /// Enables Nesterov momentum.
    pub fn nesterov(mut self, nesterov: bool) -> Sgd {
        self.nesterov = nesterov;
        self
    }
    /// Sets the weight decay (L2 penalty) of groups without their own.
    pub fn weight_decay(mut self, weight_decay: f32) -> Sgd {
        self.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let (mom, damp, nesterov, wd_default) = (self.momentum, self.dampening, self.nesterov, self.weight_decay);
        if !non_negative(mom) {
            return Err(Error::op("sgd", format!("invalid momentum {mom}")));
        }
        if nesterov && (mom <= 0.0 || damp != 0.0) {
            return Err(Error::op("sgd", "nesterov momentum requires a momentum and zero dampening"));
        }
        self.core.for_each_grad("sgd", wd_default, |lr, wd, shape, w, g, st| {
            if mom == 0.0 {
                for_chunks([w], g, &|[w], g| {
                    for (w, &g) in w.iter_mut().zip(g) {
                        *w -= lr * (g + wd * *w);
                    }
                });
                return Ok(());
            }
            // The first step sets buf = g: a fresh buffer is zero, so keep·0 + 1·g is exact.
            let (keep, take) = if st.is_none() { (0.0, 1.0) } else { (mom, 1.0 - damp) };
            let st = st.get_or_insert_with(|| SgdState { momentum_buffer: Array::zeros(shape) });
            let b = st.momentum_buffer.make_mut_f32()?;
            for_chunks([w, b], g, &|[w, b], g| {
                for ((w, &g), b) in w.iter_mut().zip(g).zip(b.iter_mut()) {
                    let d = g + wd * *w;
                    *b = keep * *b + take * d;
                    *w -= lr * if nesterov { d + mom * *b } else { *b };
                }
            });
            Ok(())
        })
    }

    delegate_to_core!();
}
