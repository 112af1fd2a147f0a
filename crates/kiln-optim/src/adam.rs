//! Adam and AdamW (PyTorch's `torch.optim.Adam` / `torch.optim.AdamW`), with AMSGrad.

use crate::optimizer::{
    delegate_to_core, for_chunks, non_negative, step_array, Core, Entries, ParamState, Params, StateDict,
};
use crate::Optimizer;
use kiln_autograd::{Array, Error, Result};

/// Adam with L2 weight decay added to the gradient (PyTorch's `Adam`).
pub type Adam = AdamBase<false>;

/// Adam with decoupled weight decay (PyTorch's `AdamW`): `p *= 1 − lr·weight_decay` before
/// the Adam update, and the gradient is left alone. The default weight decay is 0.01.
pub type AdamW = AdamBase<true>;

/// Adam ([`Adam`], `DECOUPLED = false`) and AdamW ([`AdamW`], `DECOUPLED = true`). Per step
/// t = 1, 2, … for each parameter `p` with gradient `g`:
///
/// * Adam: `g += weight_decay·p`; AdamW: `p *= 1 − lr·weight_decay`;
/// * `m = β1·m + (1−β1)·g`, `v = β2·v + (1−β2)·g²`; with AMSGrad `v̂ = max(v̂, v)` replaces `v`;
/// * `p −= lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)`.
///
/// Each step is one fused in-place pass per parameter; the moment buffers are allocated at the
/// parameter's first step. State: `<param>.step`, `.exp_avg`, `.exp_avg_sq` and, with
/// AMSGrad, `.max_exp_avg_sq`.
///
/// ```
/// use kiln_autograd::Tensor;
/// use kiln_optim::{Adam, Optimizer};
/// let w = Tensor::from_vec(vec![1.0, -2.0], &[2])?.requires_grad_(true);
/// let mut opt = Adam::new(vec![w.clone()], 0.1);
/// w.sum_all().backward()?; // grad = 1
/// opt.step()?; // the first Adam step moves each weight by about lr against the gradient's sign
/// let v = w.to_vec_f32()?;
/// assert!((v[0] - 0.9).abs() < 1e-6 && (v[1] + 2.1).abs() < 1e-6);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
pub struct AdamBase<const DECOUPLED: bool> {
    core: Core<AdamState>,
    /// Decay rates (β1, β2) of the first and second moments.
    pub betas: (f32, f32),
    /// Added to the denominator for stability.
    pub eps: f32,
    /// Weight decay for groups without their own (L2 for Adam, decoupled for AdamW).
    pub weight_decay: f32,
    /// Use the maximum of past second moments (AMSGrad).
    pub amsgrad: bool,
}

struct AdamState {
    step: u64,
    exp_avg: Array,
    exp_avg_sq: Array,
    max_exp_avg_sq: Option<Array>,
}

impl ParamState for AdamState {
    const KEYS: &'static [&'static str] = &["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"];
    fn save(&self, name: &str, out: &mut StateDict) {
        out.insert(format!("{name}.step"), step_array(self.step));
        out.insert(format!("{name}.exp_avg"), self.exp_avg.clone());
        out.insert(format!("{name}.exp_avg_sq"), self.exp_avg_sq.clone());
        if let Some(m) = &self.max_exp_avg_sq {
            out.insert(format!("{name}.max_exp_avg_sq"), m.clone());
        }
    }
    fn load(e: &Entries) -> Result<Option<AdamState>> {
        if !e.any(Self::KEYS) {
            return Ok(None);
        }
        Ok(Some(AdamState {
            step: e.step()?,
            exp_avg: e.require("exp_avg")?,
            exp_avg_sq: e.require("exp_avg_sq")?,
            max_exp_avg_sq: e.buffer("max_exp_avg_sq")?,
        }))
    }
}

impl<const DECOUPLED: bool> AdamBase<DECOUPLED> {
    /// Adam/AdamW over `params` (a `Vec<Tensor>`, named parameters or [`Params`] groups) with
    /// learning rate `lr` for groups without their own, betas (0.9, 0.999), eps 1e-8, and
    /// weight decay 0 (Adam) or 0.01 (AdamW).
    pub fn new(params: impl Into<Params>, lr: f32) -> Self {
        AdamBase {
            core: Core::new(params.into(), lr),
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: if DECOUPLED { 0.01 } else { 0.0 },
            amsgrad: false,
        }
    }
    /// Sets (β1, β2).
    pub fn betas(mut self, beta1: f32, beta2: f32) -> Self {
        self.betas = (beta1, beta2);
        self
    }
    /// Sets eps.
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    /// Sets the weight decay of groups without their own.
    pub fn weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// Enables AMSGrad.
    pub fn amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }
}

impl<const DECOUPLED: bool> Optimizer for AdamBase<DECOUPLED> {
    fn step(&mut self) -> Result<()> {
        let op = if DECOUPLED { "adamw" } else { "adam" };
        let ((b1, b2), eps, wd_default, amsgrad) = (self.betas, self.eps, self.weight_decay, self.amsgrad);
        for (i, b) in [b1, b2].into_iter().enumerate() {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::op(op, format!("invalid beta parameter at index {i}: {b}")));
            }
        }
        if !non_negative(eps) {
            return Err(Error::op(op, format!("invalid epsilon value: {eps}")));
        }
        self.core.for_each_grad(op, wd_default, |lr, wd, shape, w, g, st| {
            let st = st.get_or_insert_with(|| AdamState {
                step: 0,
                exp_avg: Array::zeros(shape),
                exp_avg_sq: Array::zeros(shape),
                max_exp_avg_sq: None,
            });
            if amsgrad && st.max_exp_avg_sq.is_none() {
                st.max_exp_avg_sq = Some(Array::zeros(shape));
            }
            st.step += 1;
            let t = st.step as f64;
            let step_size = (lr as f64 / (1.0 - (b1 as f64).powf(t))) as f32;
            let bc2_sqrt = (1.0 - (b2 as f64).powf(t)).sqrt() as f32;
            // Adam folds the decay into the gradient; AdamW scales the parameter first.
            let (gdecay, pdecay) = if DECOUPLED { (0.0, (1.0 - lr as f64 * wd as f64) as f32) } else { (wd, 1.0) };
            let (c1, c2) = (1.0 - b1, 1.0 - b2);
            let m = st.exp_avg.make_mut_f32()?;
            let v = st.exp_avg_sq.make_mut_f32()?;
            match st.max_exp_avg_sq.as_mut().filter(|_| amsgrad) {
                None => for_chunks([w, m, v], g, &|[w, m, v], g| {
                    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                        let g = if DECOUPLED { g } else { g + gdecay * *w };
                        let p = if DECOUPLED { *w * pdecay } else { *w };
                        *m = b1 * *m + c1 * g;
                        *v = b2 * *v + c2 * g * g;
                        *w = p - step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                    }
                }),
                Some(vmax) => {
                    let vmax = vmax.make_mut_f32()?;
                    for_chunks([w, m, v, vmax], g, &|[w, m, v, vmax], g| {
                        let it = w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()).zip(vmax.iter_mut());
                        for ((((w, &g), m), v), vmax) in it {
                            let g = if DECOUPLED { g } else { g + gdecay * *w };
                            let p = if DECOUPLED { *w * pdecay } else { *w };
                            *m = b1 * *m + c1 * g;
                            *v = b2 * *v + c2 * g * g;
                            *vmax = vmax.max(*v);
                            *w = p - step_size * *m / (vmax.sqrt() / bc2_sqrt + eps);
                        }
                    })
                }
            }
            Ok(())
        })
    }

    delegate_to_core!();
}
