//! Learning-rate schedules against hand-computed values, and schedulers driving groups.

use kiln_autograd::{Result, Tensor};
use kiln_optim::scheduler::{
    cosine_annealing_lr, exponential_lr, linear_warmup_then_linear_decay, multistep_lr, step_lr,
};
use kiln_optim::{
    Anneal, CosineAnnealingLR, ExponentialLR, LinearWarmupDecay, LrScheduler, MultiStepLR, OneCycle, OneCycleLR,
    Optimizer, Params, Sgd, StepLR,
};

#[track_caller]
fn close(got: &[f64], expected: &[f64]) {
    assert_eq!(got.len(), expected.len());
    for (t, (&g, &e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= 1e-12 + 1e-9 * e.abs(), "t = {t}: got {g}, expected {e}");
    }
}

fn series(n: usize, f: impl Fn(usize) -> f64) -> Vec<f64> {
    (0..n).map(f).collect()
}

#[test]
fn step_multistep_exponential() {
    close(&series(8, |t| step_lr(0.1, 3, 0.5, t)), &[0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025]);
    // Milestone 5 is listed twice: it counts twice. Order does not matter.
    let m = [8, 5, 2, 5];
    close(&series(10, |t| multistep_lr(0.1, &m, 0.1, t)), &[0.1, 0.1, 0.01, 0.01, 0.01, 1e-4, 1e-4, 1e-4, 1e-5, 1e-5]);
    close(&series(4, |t| exponential_lr(2.0, 0.5, t)), &[2.0, 1.0, 0.5, 0.25]);
}

#[test]
fn cosine_annealing_rises_again_past_t_max() {
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let e = |c: f64| 0.01 + 0.09 * (1.0 + c) / 2.0;
    close(
        &series(9, |t| cosine_annealing_lr(0.1, 4, 0.01, t)),
        &[0.1, e(h), 0.055, e(-h), 0.01, e(-h), 0.055, e(h), 0.1],
    );
}

#[test]
fn one_cycle_two_phases() {
    // init = 1/10 = 0.1, final = 0.1/100 = 0.001; phase ends 2 and 9.
    let lin = OneCycle::new(1.0, 10).pct_start(0.3).div_factor(10.0).final_div_factor(100.0).anneal(Anneal::Linear);
    close(
        &series(10, |t| lin.lr_at(t)),
        &series(10, |t| match t {
            0 => 0.1,
            1 => 0.55,
            t => 1.0 - 0.999 * (t - 2) as f64 / 7.0,
        }),
    );
    let cos = lin.anneal(Anneal::Cos);
    let pi = std::f64::consts::PI;
    assert!((cos.lr_at(1) - 0.55).abs() < 1e-12);
    assert!((cos.lr_at(2) - 1.0).abs() < 1e-12);
    assert!((cos.lr_at(3) - (0.001 + 0.999 * (1.0 + (pi / 7.0).cos()) / 2.0)).abs() < 1e-12);
    assert!((cos.lr_at(9) - 0.001).abs() < 1e-12);
    // Past the cycle the final rate holds.
    assert!((cos.lr_at(15) - 0.001).abs() < 1e-12);
    // PyTorch's defaults: div 25, final div 1e4.
    assert!((OneCycle::new(0.5, 100).lr_at(0) - 0.02).abs() < 1e-12);
}

#[test]
fn one_cycle_unrounded_phase_ends_and_three_phases() {
    // pct_start·total − 1 = 1.5: t = 1 is 2/3 of the way up; t = 2 is in the second phase.
    let s = OneCycle::new(1.0, 10).pct_start(0.25).div_factor(10.0).final_div_factor(100.0).anneal(Anneal::Linear);
    assert!((s.lr_at(1) - (0.1 + 0.9 * 2.0 / 3.0)).abs() < 1e-12);
    assert!((s.lr_at(2) - (1.0 - 0.999 / 15.0)).abs() < 1e-12);
    // Three phases, ends 2, 4, 9: up, back down to the initial rate, then to the final one.
    let three = s.pct_start(0.3).three_phase(true);
    close(
        &series(10, |t| three.lr_at(t)),
        &[0.1, 0.55, 1.0, 0.55, 0.1, 0.1 - 0.099 * 0.2, 0.1 - 0.099 * 0.4, 0.1 - 0.099 * 0.6, 0.1 - 0.099 * 0.8, 0.001],
    );
    assert!(OneCycle::new(1.0, 0).validate().is_err());
    assert!(OneCycle::new(1.0, 10).pct_start(1.5).validate().is_err());
}

#[test]
fn linear_warmup_then_decay() {
    close(
        &series(12, |t| linear_warmup_then_linear_decay(1.0, 4, 10, t)),
        &[0.0, 0.25, 0.5, 0.75, 1.0, 5.0 / 6.0, 4.0 / 6.0, 0.5, 2.0 / 6.0, 1.0 / 6.0, 0.0, 0.0],
    );
    // No warmup: decay from the first step.
    close(&series(4, |t| linear_warmup_then_linear_decay(1.0, 0, 4, t)), &[1.0, 0.75, 0.5, 0.25]);
}

fn two_groups() -> Sgd {
    let a = Tensor::zeros(&[1]).requires_grad_(true);
    let b = Tensor::zeros(&[1]).requires_grad_(true);
    Sgd::new(Params::new().group(vec![("a".into(), a)]).group_with(vec![("b".into(), b)], Some(0.01), None), 0.1)
}

fn lrs(opt: &Sgd) -> Vec<f32> {
    opt.param_groups().iter().map(|g| g.lr).collect()
}

#[test]
fn schedulers_drive_every_group_from_its_initial_lr() -> Result<()> {
    let mut opt = two_groups();
    let mut s = StepLR::new(&mut opt, 2, 0.5)?;
    assert_eq!(lrs(&opt), [0.1, 0.01]);
    s.step(&mut opt);
    assert_eq!(lrs(&opt), [0.1, 0.01]);
    s.step(&mut opt);
    assert_eq!(lrs(&opt), [0.05, 0.005]);
    assert_eq!(s.get_lr(&opt), [0.05, 0.005]);
    assert_eq!(s.last_step(), 2);
    assert_eq!(opt.param_groups()[1].initial_lr, Some(0.01));

    // A later scheduler starts from the initial rates, not the decayed ones.
    let mut e = ExponentialLR::new(&mut opt, 0.5);
    assert_eq!(lrs(&opt), [0.1, 0.01]);
    e.step(&mut opt);
    assert_eq!(lrs(&opt), [0.05, 0.005]);

    // Resuming: set the counter and apply.
    let mut m = MultiStepLR::new(&mut opt, vec![3], 0.1);
    m.set_last_step(3);
    m.apply(&mut opt);
    assert_eq!(lrs(&opt), [(0.1f32 as f64 * 0.1) as f32, (0.01f32 as f64 * 0.1) as f32]);
    Ok(())
}

#[test]
fn warmup_and_one_cycle_set_the_step_zero_rate() -> Result<()> {
    let mut opt = two_groups();
    let mut w = LinearWarmupDecay::new(&mut opt, 2, 4);
    assert_eq!(lrs(&opt), [0.0, 0.0]);
    w.step(&mut opt);
    assert_eq!(lrs(&opt), [0.05, 0.005]);

    let mut opt = two_groups();
    let mut c = CosineAnnealingLR::new(&mut opt, 2, 0.0)?;
    c.step(&mut opt);
    assert_eq!(lrs(&opt), [0.05, 0.005]);
    assert!(CosineAnnealingLR::new(&mut opt, 0, 0.0).is_err());
    assert!(StepLR::new(&mut opt, 0, 0.5).is_err());

    // One-cycle sets every group to its own schedule, whatever the groups' rates.
    let mut opt = two_groups();
    let mut o = OneCycleLR::new(&mut opt, OneCycle::new(1.0, 10).div_factor(10.0))?;
    assert_eq!(lrs(&opt), [0.1, 0.1]);
    o.step(&mut opt);
    let want = OneCycle::new(1.0, 10).div_factor(10.0).lr_at(1) as f32;
    assert_eq!(lrs(&opt), [want, want]);
    Ok(())
}

#[test]
fn scheduler_and_optimizer_steps_interleave() -> Result<()> {
    // The rate in effect for optimizer step t is the schedule at t.
    let w = Tensor::from_vec(vec![0.0], &[1])?.requires_grad_(true);
    let mut opt = Sgd::new(vec![w.clone()], 1.0);
    let mut s = StepLR::new(&mut opt, 1, 0.5)?;
    for _ in 0..3 {
        w.set_grad(Some(kiln_autograd::Array::from_vec(vec![1.0f32], &[1])?))?;
        opt.step()?;
        s.step(&mut opt);
    }
    assert_eq!(w.to_vec_f32()?, vec![-(1.0 + 0.5 + 0.25)]);
    Ok(())
}
