//! Each optimizer's update against closed forms worked out by hand (in f64), parameter groups,
//! skipped parameters and hyperparameter validation.

use kiln_autograd::{Array, Result, Tensor};
use kiln_optim::{Adagrad, Adam, AdamW, Optimizer, Params, RmsProp, Sgd};

fn param(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap().requires_grad_(true)
}

fn grad(p: &Tensor, g: &[f32]) {
    p.set_grad(Some(Array::from_vec(g.to_vec(), p.shape()).unwrap())).unwrap();
}

#[track_caller]
fn close(actual: &Tensor, expected: &[f64]) {
    let a = actual.to_vec_f32().unwrap();
    assert_eq!(a.len(), expected.len());
    for (i, (&a, &e)) in a.iter().zip(expected).enumerate() {
        assert!((a as f64 - e).abs() <= 1e-6 + 1e-5 * e.abs(), "element {i}: got {a}, expected {e}");
    }
}

const P: [f32; 3] = [1.0, -2.0, 0.5];
const G1: [f32; 3] = [0.5, 1.0, -4.0];
const G2: [f32; 3] = [-1.0, 0.25, 2.0];

fn pg(i: usize) -> (f64, f64, f64) {
    (P[i] as f64, G1[i] as f64, G2[i] as f64)
}

/// Runs two steps with gradients G1 then G2, checking after each.
fn two_steps(opt: &mut dyn Optimizer, p: &Tensor, after1: impl Fn(usize) -> f64, after2: impl Fn(usize) -> f64) {
    grad(p, &G1);
    opt.step().unwrap();
    close(p, &(0..3).map(&after1).collect::<Vec<_>>());
    grad(p, &G2);
    opt.step().unwrap();
    close(p, &(0..3).map(&after2).collect::<Vec<_>>());
}

#[test]
fn sgd_plain_and_weight_decay() {
    let p = param(&P);
    let mut opt = Sgd::new(vec![p.clone()], 0.1).weight_decay(0.2);
    let s1 = |i| {
        let (p, g, _) = pg(i);
        p - 0.1 * (g + 0.2 * p)
    };
    two_steps(&mut opt, &p, s1, |i| {
        let (_, _, g2) = pg(i);
        let p1 = s1(i);
        p1 - 0.1 * (g2 + 0.2 * p1)
    });
}

#[test]
fn sgd_momentum_dampening() {
    let p = param(&P);
    let mut opt = Sgd::new(vec![p.clone()], 0.1).momentum(0.9).dampening(0.3);
    // Step 1: buf = g (no dampening on the first step).
    two_steps(
        &mut opt,
        &p,
        |i| pg(i).0 - 0.1 * pg(i).1,
        |i| {
            let (p, g1, g2) = pg(i);
            let buf = 0.9 * g1 + 0.7 * g2;
            p - 0.1 * g1 - 0.1 * buf
        },
    );
}

#[test]
fn sgd_nesterov() {
    let p = param(&P);
    let mut opt = Sgd::new(vec![p.clone()], 0.05).momentum(0.9).nesterov(true);
    two_steps(
        &mut opt,
        &p,
        |i| pg(i).0 - 0.05 * (pg(i).1 * 1.9),
        |i| {
            let (p, g1, g2) = pg(i);
            let buf = 0.9 * g1 + g2;
            p - 0.05 * 1.9 * g1 - 0.05 * (g2 + 0.9 * buf)
        },
    );
    let mut bad = Sgd::new(vec![p.clone()], 0.1).nesterov(true);
    let err = bad.step().unwrap_err().to_string();
    assert!(err.contains("nesterov"), "{err}");
}

/// Adam's two steps: step 1 moves by lr·g/(|g| + eps) (bias corrections cancel).
fn adam_expected(lr: f64, b1: f64, b2: f64, eps: f64, wd: f64, decoupled: bool, amsgrad: bool) -> [Vec<f64>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for i in 0..3 {
        let (mut p, g1, g2) = pg(i);
        let (mut m, mut v, mut vmax) = (0.0, 0.0, 0.0f64);
        for (t, g) in [(1, g1), (2, g2)] {
            let g = if decoupled {
                p *= 1.0 - lr * wd;
                g
            } else {
                g + wd * p
            };
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            vmax = vmax.max(v);
            let vv = if amsgrad { vmax } else { v };
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            p -= lr / bc1 * m / (vv.sqrt() / bc2.sqrt() + eps);
            out[t as usize - 1].push(p);
        }
    }
    out
}

#[test]
fn adam_first_step_closed_form() {
    let p = param(&P);
    let mut opt = Adam::new(vec![p.clone()], 0.01);
    grad(&p, &G1);
    opt.step().unwrap();
    close(&p, &(0..3).map(|i| pg(i).0 - 0.01 * pg(i).1 / (pg(i).1.abs() + 1e-8)).collect::<Vec<_>>());
}

#[test]
fn adam_variants_two_steps() {
    for (decoupled, amsgrad, wd) in
        [(false, false, 0.0), (false, false, 0.1), (false, true, 0.1), (true, false, 0.1), (true, true, 0.05)]
    {
        let p = param(&P);
        let [e1, e2] = adam_expected(0.02, 0.8, 0.9, 1e-6, wd, decoupled, amsgrad);
        let mut opt: Box<dyn Optimizer> = if decoupled {
            Box::new(
                AdamW::new(vec![p.clone()], 0.02).betas(0.8, 0.9).eps(1e-6).weight_decay(wd as f32).amsgrad(amsgrad),
            )
        } else {
            Box::new(
                Adam::new(vec![p.clone()], 0.02).betas(0.8, 0.9).eps(1e-6).weight_decay(wd as f32).amsgrad(amsgrad),
            )
        };
        two_steps(opt.as_mut(), &p, |i| e1[i], |i| e2[i]);
    }
}

#[test]
fn amsgrad_keeps_the_largest_second_moment() {
    // A large gradient then a small one: v shrinks, v̂ keeps step 1's value.
    let p = param(&[0.0]);
    let mut opt = Adam::new(vec![p.clone()], 0.1).amsgrad(true);
    grad(&p, &[10.0]);
    opt.step().unwrap();
    grad(&p, &[0.1]);
    opt.step().unwrap();
    let (b1, b2) = (0.9f64, 0.999f64);
    let m = b1 * 1.0 + 0.1 * 0.1;
    let vmax: f64 = 0.001 * 100.0;
    let step2 = 0.1 / (1.0 - b1 * b1) * m / (vmax.sqrt() / (1.0 - b2 * b2).sqrt() + 1e-8);
    close(&p, &[-0.1 * 10.0 / (10.0 + 1e-8) - step2]);
    let vmax_state = opt.state_dict().unwrap()["0.max_exp_avg_sq"].to_vec_f32().unwrap();
    assert!((vmax_state[0] as f64 - vmax).abs() < 1e-5, "{vmax_state:?}");
}

#[test]
fn adamw_default_decay_is_decoupled() {
    // With a zero gradient Adam's moments stay 0, so AdamW only shrinks the weights.
    let p = param(&P);
    let mut opt = AdamW::new(vec![p.clone()], 0.1);
    grad(&p, &[0.0; 3]);
    opt.step().unwrap();
    close(&p, &(0..3).map(|i| pg(i).0 * (1.0 - 0.1 * 0.01)).collect::<Vec<_>>());
}

#[test]
fn rmsprop_variants() {
    let (lr, a, eps) = (0.01f64, 0.9f64, 1e-3f64);
    for (centered, mom, wd) in [(false, 0.0, 0.0), (true, 0.0, 0.0), (false, 0.5, 0.0), (true, 0.5, 0.1)] {
        let p = param(&P);
        let mut opt = RmsProp::new(vec![p.clone()], lr as f32)
            .alpha(a as f32)
            .eps(eps as f32)
            .centered(centered)
            .momentum(mom as f32)
            .weight_decay(wd as f32);
        let expected = |steps: usize| -> Vec<f64> {
            (0..3)
                .map(|i| {
                    let (mut p, g1, g2) = pg(i);
                    let (mut s, mut ga, mut buf) = (0.0, 0.0, 0.0);
                    for g in [g1, g2].into_iter().take(steps) {
                        let g = g + wd * p;
                        s = a * s + (1.0 - a) * g * g;
                        ga = a * ga + (1.0 - a) * g;
                        let avg = if centered { (s - ga * ga).sqrt() } else { s.sqrt() } + eps;
                        if mom > 0.0 {
                            buf = mom * buf + g / avg;
                            p -= lr * buf;
                        } else {
                            p -= lr * g / avg;
                        }
                    }
                    p
                })
                .collect()
        };
        let (e1, e2) = (expected(1), expected(2));
        two_steps(&mut opt, &p, |i| e1[i], |i| e2[i]);
    }
    // The first plain step by hand: avg = √(1−α)|g| + eps.
    let p = param(&[1.0]);
    let mut opt = RmsProp::new(vec![p.clone()], 0.01).alpha(0.99).eps(0.0);
    grad(&p, &[2.0]);
    opt.step().unwrap();
    close(&p, &[1.0 - 0.01 * 2.0 / (0.01f64.sqrt() * 2.0)]);
}

#[test]
fn adagrad_lr_decay_and_initial_accumulator() {
    let p = param(&P);
    let mut opt =
        Adagrad::new(vec![p.clone()], 0.1).lr_decay(0.5).initial_accumulator_value(0.25).eps(1e-3).weight_decay(0.1);
    let s1 = |i| {
        let (p, g, _) = pg(i);
        let g = g + 0.1 * p;
        p - 0.1 * g / ((0.25 + g * g).sqrt() + 1e-3)
    };
    two_steps(&mut opt, &p, s1, |i| {
        let (p0, g1, g2) = pg(i);
        let g1 = g1 + 0.1 * p0;
        let p1 = s1(i);
        let g2 = g2 + 0.1 * p1;
        let sum = 0.25 + g1 * g1 + g2 * g2;
        p1 - 0.1 / 1.5 * g2 / (sum.sqrt() + 1e-3)
    });
}

#[test]
fn groups_have_their_own_lr_and_weight_decay() -> Result<()> {
    let a = param(&[1.0, 2.0]);
    let b = param(&[3.0]);
    let c = param(&[-1.0]);
    let params = Params::new()
        .group(vec![("a".into(), a.clone())])
        .group_with(vec![("b".into(), b.clone())], Some(0.5), None)
        .group_with(vec![("c".into(), c.clone())], None, Some(0.0));
    let mut opt = Sgd::new(params, 0.1).weight_decay(0.5);
    for (p, g) in [(&a, vec![1.0, 1.0]), (&b, vec![1.0]), (&c, vec![1.0])] {
        grad(p, &g);
    }
    opt.step()?;
    close(&a, &[1.0 - 0.1 * (1.0 + 0.5), 2.0 - 0.1 * (1.0 + 1.0)]);
    close(&b, &[3.0 - 0.5 * (1.0 + 1.5)]);
    close(&c, &[-1.0 - 0.1]);
    let lrs: Vec<f32> = opt.param_groups().iter().map(|g| g.lr).collect();
    assert_eq!(lrs, [0.1, 0.5, 0.1]);
    opt.set_lr(0.01);
    assert!(opt.param_groups().iter().all(|g| g.lr == 0.01));
    opt.param_groups_mut()[1].lr = 0.2;
    assert_eq!(opt.lr(), 0.01);
    assert_eq!(opt.param_groups()[1].lr, 0.2);
    Ok(())
}

#[test]
fn split_no_decay_spares_biases_and_norm_weights() -> Result<()> {
    let w = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?.requires_grad_(true);
    let b = param(&[1.0, 1.0]);
    let ln = param(&[2.0, 2.0]);
    let named = vec![
        ("fc.weight".to_string(), w.clone()),
        ("fc.bias".to_string(), b.clone()),
        ("ln.weight".to_string(), ln.clone()),
    ];
    let mut opt = AdamW::new(Params::split_no_decay(named), 0.1).weight_decay(0.5);
    let names = |g: usize| -> Vec<String> { opt.param_groups()[g].params().iter().map(|(n, _)| n.clone()).collect() };
    assert_eq!(names(0), ["fc.weight"]);
    assert_eq!(names(1), ["fc.bias", "ln.weight"]);
    for p in [&w, &b, &ln] {
        p.set_grad(Some(Array::zeros(p.shape())))?;
    }
    opt.step()?;
    close(&w, &[0.95, 1.9, 2.85, 3.8]);
    close(&b, &[1.0, 1.0]);
    close(&ln, &[2.0, 2.0]);
    Ok(())
}

#[test]
fn parameters_without_gradients_are_skipped() -> Result<()> {
    let a = param(&[1.0]);
    let b = param(&[2.0]);
    let mut opt = Adam::new(vec![a.clone(), b.clone()], 0.1);
    grad(&a, &[1.0]);
    opt.step()?;
    assert_eq!(b.to_vec_f32()?, vec![2.0]);
    let sd = opt.state_dict()?;
    assert!(sd.contains_key("0.exp_avg") && !sd.contains_key("1.exp_avg"));
    opt.zero_grad();
    assert!(a.grad().is_none());
    opt.step()?; // nothing has a gradient: nothing moves
    close(&a, &[0.9]);
    Ok(())
}

#[test]
fn zero_d_parameters() -> Result<()> {
    let p = Tensor::scalar(1.0).requires_grad_(true);
    let mut opt = Sgd::new(vec![p.clone()], 0.5).momentum(0.9);
    p.set_grad(Some(Array::scalar(2.0)))?;
    opt.step()?;
    opt.step()?;
    assert_eq!(p.shape(), &[] as &[usize]);
    close(&p, &[1.0 - 1.0 - 0.5 * (0.9 * 2.0 + 2.0)]);
    Ok(())
}

#[test]
fn invalid_hyperparameters_are_errors() {
    let p = param(&[1.0]);
    grad(&p, &[1.0]);
    assert!(Adam::new(vec![p.clone()], 0.1).betas(1.0, 0.9).step().is_err());
    assert!(Adam::new(vec![p.clone()], -0.1).step().is_err());
    assert!(RmsProp::new(vec![p.clone()], 0.1).alpha(-1.0).step().is_err());
    assert!(Adagrad::new(vec![p.clone()], 0.1).lr_decay(f32::NAN).step().is_err());
    assert!(Sgd::new(vec![p.clone()], 0.1).weight_decay(-1.0).step().is_err());
    assert_eq!(p.to_vec_f32().unwrap(), vec![1.0], "a failed step leaves the parameter alone");
    // A bad setting in a later group fails the step before the first group moves.
    let q = param(&[1.0]);
    grad(&q, &[1.0]);
    let groups =
        Params::new().group(vec![("p".into(), p.clone())]).group_with(vec![("q".into(), q.clone())], None, Some(-0.5));
    let err = Sgd::new(groups, 0.1).step().unwrap_err().to_string();
    assert!(err.contains("group 1"), "{err}");
    assert_eq!(p.to_vec_f32().unwrap(), vec![1.0]);
}
