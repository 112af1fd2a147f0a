//! RMSprop (PyTorch's `torch.optim.RMSprop`), plain or centered, with momentum.

use crate::optimizer::{
    delegate_to_core, for_chunks, non_negative, step_array, Core, Entries, ParamState, Params, StateDict,
};
use crate::Optimizer;
use kiln_autograd::{Array, Error, Result};

/// PyTorch's RMSprop. Per step, for each parameter `p` with gradient `g`:
/// `g += weight_decay·p`; `s = α·s + (1−α)·g²`; centered: `a = α·a + (1−α)·g` and
/// `avg = √(s − a²) + eps`, else `avg = √s + eps`; with momentum `buf = momentum·buf + g/avg`
/// and `p −= lr·buf`, else `p −= lr·g/avg`. Buffers start at zero.
///
/// One fused in-place pass per parameter and step. State: `<param>.step`, `.square_avg`,
/// `.grad_avg` (centered) and `.momentum_buffer` (momentum > 0).
pub struct RmsProp {
    core: Core<RmsState>,
    /// Smoothing constant α of the squared-gradient average.
    pub alpha: f32,
    /// Added to the denominator for stability.
    pub eps: f32,
    /// Momentum factor (0 = none).
    pub momentum: f32,
    /// Normalize by the variance estimate `s − a²` instead of `s`.
    pub centered: bool,
    /// L2 penalty added to the gradient, for groups without their own.
    pub weight_decay: f32,
}

struct RmsState {
    step: u64,
    square_avg: Array,
    grad_avg: Option<Array>,
    momentum_buffer: Option<Array>,
}

impl ParamState for RmsState {
    const KEYS: &'static [&'static str] = &["step", "square_avg", "grad_avg", "momentum_buffer"];
    fn save(&self, name: &str, out: &mut StateDict) {
        out.insert(format!("{name}.step"), step_array(self.step));
        out.insert(format!("{name}.square_avg"), self.square_avg.clone());
        if let Some(a) = &self.grad_avg {
            out.insert(format!("{name}.grad_avg"), a.clone());
        }
        if let Some(b) = &self.momentum_buffer {
            out.insert(format!("{name}.momentum_buffer"), b.clone());
        }
    }
    fn load(e: &Entries) -> Result<Option<RmsState>> {
        if !e.any(Self::KEYS) {
            return Ok(None);
        }
        Ok(Some(RmsState {
            step: e.step()?,
            square_avg: e.require("square_avg")?,
            grad_avg: e.buffer("grad_avg")?,
            momentum_buffer: e.buffer("momentum_buffer")?,
        }))
    }
}

impl RmsProp {
    /// RMSprop over `params` (a `Vec<Tensor>`, named parameters or [`Params`] groups) with
    /// learning rate `lr` for groups without their own, α 0.99, eps 1e-8, no momentum, not
    /// centered, no weight decay.
    pub fn new(params: impl Into<Params>, lr: f32) -> RmsProp {
        RmsProp {
            core: Core::new(params.into(), lr),
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            weight_decay: 0.0,
        }
    }
    /// Sets α.
    pub fn alpha(mut self, alpha: f32) -> RmsProp {
        self.alpha = alpha;
        self
    }
    /// Sets eps.
    pub fn eps(mut self, eps: f32) -> RmsProp {
        self.eps = eps;
        self
    }
    /// Sets the momentum factor.
    pub fn momentum(mut self, momentum: f32) -> RmsProp {
        self.momentum = momentum;
        self
    }
    /// Enables the centered variant.
    pub fn centered(mut self, centered: bool) -> RmsProp {
        self.centered = centered;
        self
    }
    /// Sets the weight decay (L2 penalty) of groups without their own.
    pub fn weight_decay(mut self, weight_decay: f32) -> RmsProp {
        self.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self) -> Result<()> {
        let (alpha, eps, mom, centered, wd_default) =
            (self.alpha, self.eps, self.momentum, self.centered, self.weight_decay);
        for (what, v) in [("alpha", alpha), ("epsilon", eps), ("momentum", mom)] {
            if !non_negative(v) {
                return Err(Error::op("rmsprop", format!("invalid {what} value: {v}")));
            }
        }
        let c = 1.0 - alpha;
        self.core.for_each_grad("rmsprop", wd_default, |lr, wd, shape, w, g, st| {
            let st = st.get_or_insert_with(|| RmsState {
                step: 0,
                square_avg: Array::zeros(shape),
                grad_avg: None,
                momentum_buffer: None,
            });
            if centered && st.grad_avg.is_none() {
                st.grad_avg = Some(Array::zeros(shape));
            }
            if mom > 0.0 && st.momentum_buffer.is_none() {
                st.momentum_buffer = Some(Array::zeros(shape));
            }
            st.step += 1;
            let s = st.square_avg.make_mut_f32()?;
            let a = match st.grad_avg.as_mut().filter(|_| centered) {
                Some(a) => Some(a.make_mut_f32()?),
                None => None,
            };
            let b = match st.momentum_buffer.as_mut().filter(|_| mom > 0.0) {
                Some(b) => Some(b.make_mut_f32()?),
                None => None,
            };
            match (a, b) {
                (None, None) => for_chunks([w, s], g, &|[w, s], g| {
                    for ((w, &g), s) in w.iter_mut().zip(g).zip(s.iter_mut()) {
                        let g = g + wd * *w;
                        *s = alpha * *s + c * g * g;
                        *w -= lr * g / (s.sqrt() + eps);
                    }
                }),
                (Some(a), None) => for_chunks([w, s, a], g, &|[w, s, a], g| {
                    for (((w, &g), s), a) in w.iter_mut().zip(g).zip(s.iter_mut()).zip(a.iter_mut()) {
                        let g = g + wd * *w;
                        *s = alpha * *s + c * g * g;
                        *a = alpha * *a + c * g;
                        *w -= lr * g / ((*s - *a * *a).sqrt() + eps);
                    }
                }),
                (None, Some(b)) => for_chunks([w, s, b], g, &|[w, s, b], g| {
                    for (((w, &g), s), b) in w.iter_mut().zip(g).zip(s.iter_mut()).zip(b.iter_mut()) {
                        let g = g + wd * *w;
                        *s = alpha * *s + c * g * g;
                        *b = mom * *b + g / (s.sqrt() + eps);
                        *w -= lr * *b;
                    }
                }),
                (Some(a), Some(b)) => for_chunks([w, s, a, b], g, &|[w, s, a, b], g| {
                    let it = w.iter_mut().zip(g).zip(s.iter_mut()).zip(a.iter_mut()).zip(b.iter_mut());
                    for ((((w, &g), s), a), b) in it {
                        let g = g + wd * *w;
                        *s = alpha * *s + c * g * g;
                        *a = alpha * *a + c * g;
                        *b = mom * *b + g / ((*s - *a * *a).sqrt() + eps);
                        *w -= lr * *b;
                    }
                }),
            }
            Ok(())
        })
    }

    delegate_to_core!();
}
