//! Learning-rate schedules: pure functions giving the rate at step `t`, and schedulers
//! ([`LrScheduler`]) that write those rates into an optimizer's parameter groups.
//!
//! Step `t` is the number of scheduler steps taken: the rate at `t = 0` is the one in effect
//! for the first optimizer step, and the scheduler advances once after each optimizer step,
//! as in PyTorch:
//!
//! ```
//! use kiln_autograd::Tensor;
//! use kiln_optim::{LrScheduler, Optimizer, Sgd, StepLR};
//! let w = Tensor::zeros(&[2]).requires_grad_(true);
//! let mut opt = Sgd::new(vec![w.clone()], 0.1);
//! let mut sched = StepLR::new(&mut opt, 2, 0.5)?;
//! let mut lrs = Vec::new();
//! for _ in 0..5 {
//!     lrs.push(opt.lr());
//!     // ... forward, backward, opt.step()? ...
//!     sched.step(&mut opt);
//! }
//! assert_eq!(lrs, [0.1, 0.1, 0.05, 0.05, 0.025]);
//! # Ok::<(), kiln_autograd::Error>(())
//! ```
//!
//! Rates are computed in f64 from each group's `initial_lr` (set to the group's `lr` when the
//! first scheduler is attached) and stored as f32.

use crate::Optimizer;
use kiln_autograd::{Error, Result};
use std::f64::consts::PI;

/// A learning-rate scheduler: a schedule plus its step counter.
pub trait LrScheduler {
    /// The learning rate at step `t` for a group whose initial learning rate is `base_lr`.
    fn lr_at(&self, base_lr: f32, t: usize) -> f32;

    /// The number of steps taken (the `t` of the rates in effect).
    fn last_step(&self) -> usize;

    /// Sets the step counter, e.g. to resume from a checkpoint; follow with
    /// [`LrScheduler::apply`] to update an optimizer.
    fn set_last_step(&mut self, t: usize);

    /// Advances one step and sets the learning rate of every group of `opt`.
    fn step(&mut self, opt: &mut dyn Optimizer) {
        self.set_last_step(self.last_step() + 1);
        self.apply(opt);
    }

    /// Sets every group's `lr` to the rate at the current step, computed from the group's
    /// `initial_lr` (set to its `lr` first if unset).
    fn apply(&self, opt: &mut dyn Optimizer) {
        let t = self.last_step();
        for g in opt.param_groups_mut() {
            let base = *g.initial_lr.get_or_insert(g.lr);
            g.lr = self.lr_at(base, t);
        }
    }

    /// The rates at the current step, one per group of `opt`.
    fn get_lr(&self, opt: &dyn Optimizer) -> Vec<f32> {
        let t = self.last_step();
        opt.param_groups().iter().map(|g| self.lr_at(g.initial_lr.unwrap_or(g.lr), t)).collect()
    }

    /// What a checkpoint needs to resume the schedule: the step counter and the base rate of
    /// every group of `opt` (its `initial_lr`, else its `lr`). The schedule's own settings
    /// (`step_size`, `gamma`, ...) are not state: a resumed run builds the same scheduler.
    fn state_dict(&self, opt: &dyn Optimizer) -> SchedulerState {
        SchedulerState {
            last_step: self.last_step(),
            base_lrs: opt.param_groups().iter().map(|g| g.initial_lr.unwrap_or(g.lr)).collect(),
        }
    }

    /// Restores a [`SchedulerState`]: sets the step counter and every group's `initial_lr`,
    /// then writes the rates of that step into `opt` ([`LrScheduler::apply`]). Errors, changing
    /// nothing, when `opt` has another number of groups than the state.
    fn load_state_dict(&mut self, state: &SchedulerState, opt: &mut dyn Optimizer) -> Result<()> {
        let groups = opt.param_groups_mut();
        if groups.len() != state.base_lrs.len() {
            return Err(Error::op(
                "load_state_dict",
                format!(
                    "scheduler state has {} base learning rates, the optimizer {} parameter groups",
                    state.base_lrs.len(),
                    groups.len()
                ),
            ));
        }
        for (g, &lr) in groups.iter_mut().zip(&state.base_lrs) {
            g.initial_lr = Some(lr);
        }
        self.set_last_step(state.last_step);
        self.apply(opt);
        Ok(())
    }
}

/// A scheduler's resumable state ([`LrScheduler::state_dict`]), like the `last_epoch` and
/// `base_lrs` of a PyTorch scheduler's state dict.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SchedulerState {
    /// The number of scheduler steps taken.
    pub last_step: usize,
    /// Each parameter group's base (initial) learning rate.
    pub base_lrs: Vec<f32>,
}

// ---------------------------------------------------------------- pure schedules

/// `lr·gamma^⌊t/step_size⌋` (PyTorch's `StepLR`). A `step_size` of 0 is treated as 1.
pub fn step_lr(lr: f64, step_size: usize, gamma: f64, t: usize) -> f64 {
    lr * gamma.powf((t / step_size.max(1)) as f64)
}

/// `lr·gamma^(number of milestones ≤ t)`; a milestone listed twice counts twice
/// (PyTorch's `MultiStepLR`).
pub fn multistep_lr(lr: f64, milestones: &[usize], gamma: f64, t: usize) -> f64 {
    lr * gamma.powf(milestones.iter().filter(|&&m| m <= t).count() as f64)
}

/// `lr·gammaᵗ` (PyTorch's `ExponentialLR`).
pub fn exponential_lr(lr: f64, gamma: f64, t: usize) -> f64 {
    lr * gamma.powf(t as f64)
}

/// `eta_min + (lr − eta_min)(1 + cos(πt/t_max))/2` (PyTorch's `CosineAnnealingLR` in closed
/// form). Past `t_max` the curve rises again.
pub fn cosine_annealing_lr(lr: f64, t_max: usize, eta_min: f64, t: usize) -> f64 {
    eta_min + (lr - eta_min) * (1.0 + (PI * t as f64 / t_max as f64).cos()) / 2.0
}

/// Linear warmup from 0 over `warmup` steps, then linear decay to 0 at step `total`
/// (Hugging Face's `get_linear_schedule_with_warmup`): `lr·t/max(1, warmup)` for
/// `t < warmup`, else `lr·max(0, (total − t)/max(1, total − warmup))`.
pub fn linear_warmup_then_linear_decay(lr: f64, warmup: usize, total: usize, t: usize) -> f64 {
    if t < warmup {
        lr * t as f64 / warmup.max(1) as f64
    } else {
        let left = total as f64 - t as f64;
        lr * (left / (total.saturating_sub(warmup)).max(1) as f64).max(0.0)
    }
}

/// How [`OneCycle`] moves between two rates within a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anneal {
    /// Cosine: `to + (from − to)(1 + cos(πf))/2`.
    Cos,
    /// Linear: `from + (to − from)·f`.
    Linear,
}

/// The one-cycle policy (PyTorch's `OneCycleLR`): from `max_lr/div_factor` up to `max_lr`
/// over the first `pct_start` of `total_steps`, then down to
/// `max_lr/div_factor/final_div_factor`; with `three_phase`, back down to the initial rate
/// symmetrically before the final annealing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycle {
    /// The peak learning rate.
    pub max_lr: f64,
    /// The length of the cycle in steps.
    pub total_steps: usize,
    /// The fraction of the cycle spent increasing the rate.
    pub pct_start: f64,
    /// Cosine or linear annealing.
    pub anneal: Anneal,
    /// The initial rate is `max_lr/div_factor`.
    pub div_factor: f64,
    /// The final rate is the initial rate divided by this.
    pub final_div_factor: f64,
    /// Use the three-phase variant.
    pub three_phase: bool,
}

impl OneCycle {
    /// PyTorch's defaults: pct_start 0.3, cosine, div_factor 25, final_div_factor 1e4, two
    /// phases.
    pub fn new(max_lr: f64, total_steps: usize) -> OneCycle {
        OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal: Anneal::Cos,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }
    /// Sets pct_start.
    pub fn pct_start(mut self, pct_start: f64) -> OneCycle {
        self.pct_start = pct_start;
        self
    }
    /// Sets the annealing strategy.
    pub fn anneal(mut self, anneal: Anneal) -> OneCycle {
        self.anneal = anneal;
        self
    }
    /// Sets div_factor.
    pub fn div_factor(mut self, div_factor: f64) -> OneCycle {
        self.div_factor = div_factor;
        self
    }
    /// Sets final_div_factor.
    pub fn final_div_factor(mut self, final_div_factor: f64) -> OneCycle {
        self.final_div_factor = final_div_factor;
        self
    }
    /// Enables the three-phase variant.
    pub fn three_phase(mut self, three_phase: bool) -> OneCycle {
        self.three_phase = three_phase;
        self
    }

    /// Errors on a zero `total_steps`, a `pct_start` outside [0, 1] or a non-positive divisor.
    pub fn validate(&self) -> Result<()> {
        if self.total_steps == 0 {
            return Err(Error::op("one_cycle_lr", "total_steps must be positive"));
        }
        if !(0.0..=1.0).contains(&self.pct_start) {
            return Err(Error::op("one_cycle_lr", format!("pct_start must be in [0, 1], got {}", self.pct_start)));
        }
        if !(self.div_factor > 0.0 && self.final_div_factor > 0.0) {
            return Err(Error::op(
                "one_cycle_lr",
                format!(
                    "div_factor ({}) and final_div_factor ({}) must be positive",
                    self.div_factor, self.final_div_factor
                ),
            ));
        }
        Ok(())
    }

    /// The rate at step `t`. The phases `(end, from, to)` are `(pct_start·total − 1, initial,
    /// max_lr)` and `(total − 1, max_lr, final)`, or with three phases `(pct_start·total − 1,
    /// initial, max_lr)`, `(2·pct_start·total − 2, max_lr, initial)`, `(total − 1, initial,
    /// final)`, with real (unrounded) ends. Step `t` is in the first phase with `t ≤ end` (or
    /// the last), and `f = (t − start)/(end − start)` with `start` the previous phase's end
    /// (0 for the first). Past the end of the cycle the final rate holds, and a phase of zero
    /// length is taken as finished (`f = 1`).
    pub fn lr_at(&self, t: usize) -> f64 {
        let init = self.max_lr / self.div_factor;
        let low = init / self.final_div_factor;
        let (total, pct) = (self.total_steps as f64, self.pct_start);
        let three = [
            (pct * total - 1.0, init, self.max_lr),
            (2.0 * pct * total - 2.0, self.max_lr, init),
            (total - 1.0, init, low),
        ];
        let two = [(pct * total - 1.0, init, self.max_lr), (total - 1.0, self.max_lr, low)];
        let phases: &[(f64, f64, f64)] = if self.three_phase { &three } else { &two };
        let t = t as f64;
        let mut start = 0.0;
        for (i, &(end, from, to)) in phases.iter().enumerate() {
            if t <= end || i + 1 == phases.len() {
                let f = if end > start { ((t - start) / (end - start)).min(1.0) } else { 1.0 };
                return match self.anneal {
                    Anneal::Cos => to + (from - to) * (1.0 + (PI * f).cos()) / 2.0,
                    Anneal::Linear => from + (to - from) * f,
                };
            }
            start = end;
        }
        unreachable!("the last phase always matches")
    }
}

// ---------------------------------------------------------------- schedulers

/// Writes the step-0 rates into `opt` and returns the scheduler.
fn attach<S: LrScheduler>(s: S, opt: &mut dyn Optimizer) -> S {
    s.apply(opt);
    s
}

macro_rules! step_counter {
    () => {
        fn last_step(&self) -> usize {
            self.t
        }
        fn set_last_step(&mut self, t: usize) {
            self.t = t;
        }
    };
}

/// Multiplies each group's initial rate by `gamma` every `step_size` steps ([`step_lr`]).
#[derive(Clone, Debug)]
pub struct StepLR {
    step_size: usize,
    gamma: f64,
    t: usize,
}

impl StepLR {
    /// Attaches to `opt` (setting its step-0 rates). Errors when `step_size` is 0.
    pub fn new(opt: &mut dyn Optimizer, step_size: usize, gamma: f64) -> Result<StepLR> {
        if step_size == 0 {
            return Err(Error::op("step_lr", "step_size must be positive"));
        }
        Ok(attach(StepLR { step_size, gamma, t: 0 }, opt))
    }
}

impl LrScheduler for StepLR {
    fn lr_at(&self, base_lr: f32, t: usize) -> f32 {
        step_lr(base_lr as f64, self.step_size, self.gamma, t) as f32
    }
    step_counter!();
}

/// Multiplies each group's initial rate by `gamma` once per milestone reached
/// ([`multistep_lr`]).
#[derive(Clone, Debug)]
pub struct MultiStepLR {
    milestones: Vec<usize>,
    gamma: f64,
    t: usize,
}

impl MultiStepLR {
    /// Attaches to `opt` (setting its step-0 rates). Milestones may repeat and come in any
    /// order.
    pub fn new(opt: &mut dyn Optimizer, milestones: Vec<usize>, gamma: f64) -> MultiStepLR {
        attach(MultiStepLR { milestones, gamma, t: 0 }, opt)
    }
}

impl LrScheduler for MultiStepLR {
    fn lr_at(&self, base_lr: f32, t: usize) -> f32 {
        multistep_lr(base_lr as f64, &self.milestones, self.gamma, t) as f32
    }
    step_counter!();
}

/// Multiplies the rate by `gamma` every step ([`exponential_lr`]).
#[derive(Clone, Debug)]
pub struct ExponentialLR {
    gamma: f64,
    t: usize,
}

impl ExponentialLR {
    /// Attaches to `opt` (setting its step-0 rates).
    pub fn new(opt: &mut dyn Optimizer, gamma: f64) -> ExponentialLR {
        attach(ExponentialLR { gamma, t: 0 }, opt)
    }
}

impl LrScheduler for ExponentialLR {
    fn lr_at(&self, base_lr: f32, t: usize) -> f32 {
        exponential_lr(base_lr as f64, self.gamma, t) as f32
    }
    step_counter!();
}

/// Cosine annealing from each group's initial rate to `eta_min` over `t_max` steps
/// ([`cosine_annealing_lr`]).
#[derive(Clone, Debug)]
pub struct CosineAnnealingLR {
    t_max: usize,
    eta_min: f64,
    t: usize,
}

impl CosineAnnealingLR {
    /// Attaches to `opt` (setting its step-0 rates). Errors when `t_max` is 0.
    pub fn new(opt: &mut dyn Optimizer, t_max: usize, eta_min: f64) -> Result<CosineAnnealingLR> {
        if t_max == 0 {
            return Err(Error::op("cosine_annealing_lr", "T_max must be positive"));
        }
        Ok(attach(CosineAnnealingLR { t_max, eta_min, t: 0 }, opt))
    }
}

impl LrScheduler for CosineAnnealingLR {
    fn lr_at(&self, base_lr: f32, t: usize) -> f32 {
        cosine_annealing_lr(base_lr as f64, self.t_max, self.eta_min, t) as f32
    }
    step_counter!();
}

/// The one-cycle policy ([`OneCycle`]). Like PyTorch's `OneCycleLR`, it sets every group to
/// the same schedule, whatever the groups' own rates.
#[derive(Clone, Debug)]
pub struct OneCycleLR {
    schedule: OneCycle,
    t: usize,
}

impl OneCycleLR {
    /// Attaches to `opt` (setting its step-0 rates). Errors when the schedule is invalid
    /// ([`OneCycle::validate`]).
    pub fn new(opt: &mut dyn Optimizer, schedule: OneCycle) -> Result<OneCycleLR> {
        schedule.validate()?;
        Ok(attach(OneCycleLR { schedule, t: 0 }, opt))
    }
}

impl LrScheduler for OneCycleLR {
    fn lr_at(&self, _base_lr: f32, t: usize) -> f32 {
        self.schedule.lr_at(t) as f32
    }
    step_counter!();
}

/// Linear warmup over `warmup` steps, then linear decay to 0 at step `total`
/// ([`linear_warmup_then_linear_decay`]).
#[derive(Clone, Debug)]
pub struct LinearWarmupDecay {
    warmup: usize,
    total: usize,
    t: usize,
}

impl LinearWarmupDecay {
    /// Attaches to `opt` (setting its step-0 rates, 0 when there is a warmup).
    pub fn new(opt: &mut dyn Optimizer, warmup: usize, total: usize) -> LinearWarmupDecay {
        attach(LinearWarmupDecay { warmup, total, t: 0 }, opt)
    }
}

impl LrScheduler for LinearWarmupDecay {
    fn lr_at(&self, base_lr: f32, t: usize) -> f32 {
        linear_warmup_then_linear_decay(base_lr as f64, self.warmup, self.total, t) as f32
    }
    step_counter!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Params, Sgd};
    use kiln_autograd::Tensor;

    fn two_groups() -> Sgd {
        let p = || vec![("w".to_string(), Tensor::zeros(&[2]).requires_grad_(true))];
        Sgd::new(Params::new().group_with(p(), Some(0.1), None).group_with(p(), Some(0.01), None), 0.1)
    }

    #[test]
    fn state_restores_the_counter_and_base_rates_into_a_fresh_optimizer() -> Result<()> {
        let mut opt = two_groups();
        let mut s = StepLR::new(&mut opt, 2, 0.5)?;
        for _ in 0..5 {
            s.step(&mut opt);
        }
        let st = s.state_dict(&opt);
        assert_eq!(st, SchedulerState { last_step: 5, base_lrs: vec![0.1, 0.01] });

        // A fresh optimizer whose groups start at other rates.
        let mut fresh = two_groups();
        fresh.set_lr(0.7);
        let mut r = StepLR::new(&mut fresh, 2, 0.5)?;
        r.load_state_dict(&st, &mut fresh)?;
        assert_eq!(r.last_step(), 5);
        // 0.1·0.5² and 0.01·0.5², as at step 5 of the original.
        let lrs: Vec<f32> = fresh.param_groups().iter().map(|g| g.lr).collect();
        assert_eq!(lrs, [0.025, 0.0025]);
        r.step(&mut fresh);
        s.step(&mut opt);
        assert_eq!(fresh.param_groups()[1].lr, opt.param_groups()[1].lr);

        let mut one = Sgd::new(vec![Tensor::zeros(&[1]).requires_grad_(true)], 0.1);
        let e = r.load_state_dict(&st, &mut one).unwrap_err().to_string();
        assert!(e.contains("2 base learning rates") && e.contains("1 parameter groups"), "{e}");
        assert_eq!(r.last_step(), 6);
        Ok(())
    }
}
