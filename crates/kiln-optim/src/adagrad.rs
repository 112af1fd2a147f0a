//! Adagrad (PyTorch's `torch.optim.Adagrad`).

use crate::optimizer::{
    delegate_to_core, for_chunks, non_negative, step_array, Core, Entries, ParamState, Params, StateDict,
};
use crate::Optimizer;
use kiln_autograd::{Array, Error, Result};

/// PyTorch's Adagrad. Per step t = 1, 2, … for each parameter `p` with gradient `g`:
/// `g += weight_decay·p`; `clr = lr/(1 + (t−1)·lr_decay)`; `sum += g²`;
/// `p −= clr·g/(√sum + eps)`. The sum starts at `initial_accumulator_value`.
///
/// One fused in-place pass per parameter and step. State: `<param>.step`, `<param>.sum`.
pub struct Adagrad {
    core: Core<AdagradState>,
    /// Learning-rate decay per step.
    pub lr_decay: f32,
    /// Added to the denominator for stability.
    pub eps: f32,
    /// L2 penalty added to the gradient, for groups without their own.
    pub weight_decay: f32,
    /// The starting value of the sum of squared gradients.
    pub initial_accumulator_value: f32,
}

struct AdagradState {
    step: u64,
    sum: Array,
}

impl ParamState for AdagradState {
    const KEYS: &'static [&'static str] = &["step", "sum"];
    fn save(&self, name: &str, out: &mut StateDict) {
        out.insert(format!("{name}.step"), step_array(self.step));
        out.insert(format!("{name}.sum"), self.sum.clone());
    }
    fn load(e: &Entries) -> Result<Option<AdagradState>> {
        if !e.any(Self::KEYS) {
            return Ok(None);
        }
        Ok(Some(AdagradState { step: e.step()?, sum: e.require("sum")? }))
    }
}

impl Adagrad {
    /// Adagrad over `params` (a `Vec<Tensor>`, named parameters or [`Params`] groups) with
    /// learning rate `lr` for groups without their own, eps 1e-10 and everything else 0.
    pub fn new(params: impl Into<Params>, lr: f32) -> Adagrad {
        Adagrad {
            core: Core::new(params.into(), lr),
            lr_decay: 0.0,
            eps: 1e-10,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
        }
    }
    /// Sets the learning-rate decay.
    pub fn lr_decay(mut self, lr_decay: f32) -> Adagrad {
        self.lr_decay = lr_decay;
        self
    }
    /// Sets eps.
    pub fn eps(mut self, eps: f32) -> Adagrad {
        self.eps = eps;
        self
    }
    /// Sets the weight decay (L2 penalty) of groups without their own.
    pub fn weight_decay(mut self, weight_decay: f32) -> Adagrad {
        self.weight_decay = weight_decay;
        self
    }
    /// Sets the starting value of the accumulated squared gradients.
    pub fn initial_accumulator_value(mut self, value: f32) -> Adagrad {
        self.initial_accumulator_value = value;
        self
    }
}

impl Optimizer for Adagrad {
    fn step(&mut self) -> Result<()> {
        let (lr_decay, eps, wd_default, init) =
            (self.lr_decay, self.eps, self.weight_decay, self.initial_accumulator_value);
        for (what, v) in [("lr_decay", lr_decay), ("epsilon", eps), ("initial_accumulator_value", init)] {
            if !non_negative(v) {
                return Err(Error::op("adagrad", format!("invalid {what} value: {v}")));
            }
        }
        self.core.for_each_grad("adagrad", wd_default, |lr, wd, shape, w, g, st| {
            let st = st.get_or_insert_with(|| AdagradState { step: 0, sum: Array::full(shape, init) });
            st.step += 1;
            let clr = (lr as f64 / (1.0 + (st.step - 1) as f64 * lr_decay as f64)) as f32;
            let s = st.sum.make_mut_f32()?;
            for_chunks([w, s], g, &|[w, s], g| {
                for ((w, &g), s) in w.iter_mut().zip(g).zip(s.iter_mut()) {
                    let g = g + wd * *w;
                    *s += g * g;
                    *w -= clr * g / (s.sqrt() + eps);
                }
            });
            Ok(())
        })
    }

    delegate_to_core!();
}
