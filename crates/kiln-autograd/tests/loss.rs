//! The losses: values against hand-computed numbers and a naive f64 reference written here
//! (log-softmax, the label-smoothing formula, weighted means), finite-difference gradients of
//! every loss under every option (weights, ignore_index, label smoothing, the [N, C, d...]
//! layouts, all reductions, broadcasting), numerical stability, and the errors.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::ops::loss::{
    binary_cross_entropy_with_logits, cross_entropy, kl_div, l1_loss, mse_loss, nll_loss, smooth_l1_loss,
    BceWithLogitsOptions, CrossEntropyOptions, NllLossOptions, Reduction,
};
use kiln_autograd::{Array, Tensor};

const REDUCTIONS: [Reduction; 3] = [Reduction::None, Reduction::Sum, Reduction::Mean];

fn t(a: &Array) -> Tensor {
    Tensor::from_array(a.clone())
}

fn targets(v: Vec<i64>, shape: &[usize]) -> Array {
    Array::from_vec(v, shape).unwrap()
}

fn assert_close(actual: &[f32], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!((a as f64 - e).abs() <= tol * (1.0 + e.abs()), "{what}: element {i}: got {a}, expected {e}");
    }
}

// ------------------------------------------------------------------------------ reference

/// Naive cross-entropy in f64 over an `[n, c, d]` view: per-position losses (0 where
/// ignored) and the summed weight of the non-ignored targets.
#[allow(clippy::too_many_arguments)]
fn ce_reference(
    x: &[f32],
    (n, c, d): (usize, usize, usize),
    target: &[i64],
    weight: Option<&[f32]>,
    ignore: i64,
    eps: f64,
    log_probs: bool,
) -> (Vec<f64>, f64) {
    let w = |k: usize| weight.map_or(1.0, |w| w[k] as f64);
    let mut losses = vec![0.0; n * d];
    let mut denom = 0.0;
    for i in 0..n {
        for j in 0..d {
            let tk = target[i * d + j];
            if tk == ignore {
                continue;
            }
            let tk = tk as usize;
            let v: Vec<f64> = (0..c).map(|k| x[i * c * d + k * d + j] as f64).collect();
            let lp: Vec<f64> = if log_probs {
                v
            } else {
                let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + v.iter().map(|&a| (a - m).exp()).sum::<f64>().ln();
                v.iter().map(|&a| a - lse).collect()
            };
            let mut l = (1.0 - eps) * (-w(tk) * lp[tk]);
            if eps > 0.0 {
                l += eps / c as f64 * -(0..c).map(|k| w(k) * lp[k]).sum::<f64>();
            }
            losses[i * d + j] = l;
            denom += w(tk);
        }
    }
    (losses, denom)
}

fn reduce_reference(losses: Vec<f64>, r: Reduction, denom: f64) -> Vec<f64> {
    match r {
        Reduction::None => losses,
        Reduction::Sum => vec![losses.iter().sum()],
        Reduction::Mean => vec![losses.iter().sum::<f64>() / denom],
        Reduction::BatchMean => unreachable!(),
    }
}

/// `(n, c, d)` of an input shape in the class-loss layouts.
fn ncd(shape: &[usize]) -> (usize, usize, usize) {
    match shape.len() {
        1 => (1, shape[0], 1),
        _ => (shape[0], shape[1], shape[2..].iter().product()),
    }
}

/// Target shape for an input shape.
fn target_shape(shape: &[usize]) -> Vec<usize> {
    match shape.len() {
        1 => vec![],
        _ => [&shape[..1], &shape[2..]].concat(),
    }
}

/// Deterministic targets in `[0, c)`, with every `every`-th position set to `ignore`.
fn make_targets(shape: &[usize], c: usize, ignore: i64, every: usize, seed: u64) -> Array {
    let ts = target_shape(shape);
    let n: usize = ts.iter().product();
    let r = uniform(&[n.max(1)], 0.0, c as f32, seed).to_vec_f32().unwrap();
    let v: Vec<i64> =
        (0..n).map(|i| if every > 0 && i % every == 1 { ignore } else { (r[i] as i64).min(c as i64 - 1) }).collect();
    targets(v, &ts)
}

/// The layouts exercised: `[C]`, `[N, C]`, `[N, C, d]`, `[N, C, d1, d2]`, size-1 dims.
fn class_shapes() -> Vec<Vec<usize>> {
    vec![vec![5], vec![4, 3], vec![3, 4, 5], vec![2, 3, 2, 3], vec![1, 3, 1], vec![3, 1]]
}

// ------------------------------------------------------------------------------ cross_entropy

#[test]
fn cross_entropy_of_uniform_logits_is_ln_c() {
    for c in [2usize, 3, 7, 300] {
        let logits = Tensor::full(&[4, c], 0.37).requires_grad_(true);
        let target = Tensor::from_vec_i64(vec![0, 1, (c - 1) as i64, 1], &[4]).unwrap();
        let loss = cross_entropy(&logits, &target, &CrossEntropyOptions::default()).unwrap();
        assert!((loss.item().unwrap() - (c as f32).ln()).abs() < 1e-5);
        loss.backward().unwrap();
        // d/dx = (softmax − onehot) / N = (1/C − onehot) / 4
        let g = logits.grad().unwrap().to_vec_f32().unwrap();
        let tg = [0, 1, c - 1, 1];
        for i in 0..4 {
            for k in 0..c {
                let e = (1.0 / c as f32 - (k == tg[i]) as u8 as f32) / 4.0;
                assert!((g[i * c + k] - e).abs() < 1e-6, "c {c}, row {i}, class {k}");
            }
        }
        let none = CrossEntropyOptions { reduction: Reduction::None, ..Default::default() };
        let l = cross_entropy(&logits, &target, &none).unwrap().to_vec_f32().unwrap();
        assert!(l.iter().all(|&v| (v - (c as f32).ln()).abs() < 1e-5));
        let sum = CrossEntropyOptions { reduction: Reduction::Sum, ..Default::default() };
        let s = cross_entropy(&logits, &target, &sum).unwrap().item().unwrap();
        assert!((s - 4.0 * (c as f32).ln()).abs() < 1e-4);
    }
}

#[test]
fn cross_entropy_hand_computed() {
    // Row [1, 2, 3], target 2: ℓ = ln(e + e² + e³) − 3.
    let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[1, 3]).unwrap();
    let tg = Tensor::from_vec_i64(vec![2], &[1]).unwrap();
    let l = cross_entropy(&x, &tg, &CrossEntropyOptions::default()).unwrap().item().unwrap();
    assert!((l as f64 - (lse - 3.0)).abs() < 1e-6);
    // With ε = 0.3: (1 − ε)(lse − 3) + ε/3·Σ_c (lse − x_c) = (1 − ε)(lse − 3) + ε(lse − 2).
    let opts = CrossEntropyOptions { label_smoothing: 0.3, ..Default::default() };
    let l = cross_entropy(&x, &tg, &opts).unwrap().item().unwrap();
    assert!((l as f64 - (0.7 * (lse - 3.0) + 0.3 * (lse - 2.0))).abs() < 1e-6);
    // A 1-d input with a 0-d target gives a 0-d loss even with reduction none.
    let x1 = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
    let t0 = Tensor::from_vec_i64(vec![0], &[]).unwrap();
    let none = CrossEntropyOptions { reduction: Reduction::None, ..Default::default() };
    let l = cross_entropy(&x1, &t0, &none).unwrap();
    assert_eq!(l.shape(), &[] as &[usize]);
    assert!((l.item().unwrap() as f64 - (lse - 1.0)).abs() < 1e-6);
    // Weighted mean divides by Σ w_t: two rows of uniform logits over 2 classes, targets 0 and
    // 1 with weights 3 and 1: (3·ln2 + 1·ln2) / 4 = ln 2.
    let x = Tensor::zeros(&[2, 2]);
    let tg = Tensor::from_vec_i64(vec![0, 1], &[2]).unwrap();
    let w = Tensor::from_vec(vec![3.0, 1.0], &[2]).unwrap();
    let opts = CrossEntropyOptions { weight: Some(w), ..Default::default() };
    let l = cross_entropy(&x, &tg, &opts).unwrap().item().unwrap();
    assert!((l - 2f32.ln()).abs() < 1e-6);
}

#[test]
fn cross_entropy_matches_reference_in_every_configuration() {
    let mut seed = 100;
    for shape in class_shapes() {
        let (n, c, d) = ncd(&shape);
        for (ignore, every) in [(-100, 0), (-100, 3), (1, 0), (0, 2)] {
            for weighted in [false, true] {
                for eps in [0.0f32, 0.15, 1.0] {
                    for r in REDUCTIONS {
                        seed += 1;
                        let x = uniform(&shape, -3.0, 3.0, seed);
                        let tg = make_targets(&shape, c, ignore, every, seed + 7);
                        let w = weighted.then(|| uniform(&[c], 0.2, 2.0, seed + 11));
                        let opts = CrossEntropyOptions {
                            weight: w.as_ref().map(t),
                            ignore_index: ignore,
                            reduction: r,
                            label_smoothing: eps,
                        };
                        let out = cross_entropy(&t(&x), &t(&tg), &opts).unwrap();
                        let (losses, denom) = ce_reference(
                            &x.to_vec_f32().unwrap(),
                            (n, c, d),
                            &tg.to_vec::<i64>().unwrap(),
                            w.as_ref().map(|w| w.to_vec_f32().unwrap()).as_deref(),
                            ignore,
                            eps as f64,
                            false,
                        );
                        let expected = reduce_reference(losses, r, denom);
                        if denom == 0.0 && r == Reduction::Mean {
                            continue; // 0 / 0, as PyTorch
                        }
                        let what = format!("{shape:?} ignore {ignore}/{every} w {weighted} eps {eps} {r}");
                        let want_shape = if r == Reduction::None { target_shape(&shape) } else { vec![] };
                        assert_eq!(out.shape(), want_shape.as_slice(), "{what}");
                        assert_close(&out.to_vec_f32().unwrap(), &expected, 1e-5, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn gradcheck_cross_entropy_every_option() {
    let mut seed = 500;
    for shape in class_shapes() {
        let c = ncd(&shape).1;
        for (ignore, every) in [(-100, 0), (-100, 3), (1, 0)] {
            for eps in [0.0f32, 0.2] {
                for r in REDUCTIONS {
                    seed += 1;
                    let x = uniform(&shape, -2.0, 2.0, seed);
                    let tg = make_targets(&shape, c, ignore, every, seed + 3);
                    let w = uniform(&[c], 0.3, 2.0, seed + 5);
                    let what = format!("{shape:?} ignore {ignore}/{every} eps {eps} {r}");
                    // Without weights.
                    check_gradients(&[x.clone(), tg.clone()], |v| {
                        let opts = CrossEntropyOptions {
                            ignore_index: ignore,
                            reduction: r,
                            label_smoothing: eps,
                            ..Default::default()
                        };
                        cross_entropy(&v[0], &v[1], &opts)
                    })
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                    // With weights: the gradient of the weights is checked too.
                    check_gradients(&[x, tg, w], |v| {
                        let opts = CrossEntropyOptions {
                            weight: Some(v[2].clone()),
                            ignore_index: ignore,
                            reduction: r,
                            label_smoothing: eps,
                        };
                        cross_entropy(&v[0], &v[1], &opts)
                    })
                    .unwrap_or_else(|e| panic!("{what} weighted: {e}"));
                }
            }
        }
    }
}

#[test]
fn cross_entropy_is_stable_for_large_and_infinite_logits() {
    // Shifting every logit by 1000 changes nothing.
    let base = uniform(&[3, 5], -2.0, 2.0, 7);
    let big = base.add_scalar(1000.0).unwrap();
    let tg = Tensor::from_vec_i64(vec![0, 4, 2], &[3]).unwrap();
    for eps in [0.0, 0.1] {
        let opts = CrossEntropyOptions { reduction: Reduction::None, label_smoothing: eps, ..Default::default() };
        let a = cross_entropy(&t(&base), &tg, &opts).unwrap().to_vec_f32().unwrap();
        let xb = t(&big).requires_grad_(true);
        let b = cross_entropy(&xb, &tg, &opts).unwrap();
        let bv = b.to_vec_f32().unwrap();
        for (p, q) in a.iter().zip(&bv) {
            assert!((p - q).abs() < 2e-3, "{a:?} vs {bv:?}");
        }
        b.sum_all().backward().unwrap();
        assert!(xb.grad().unwrap().to_vec_f32().unwrap().iter().all(|g| g.is_finite()));
    }
    // Logits of magnitude 1e3 with a wide spread: the target's loss is exact, the rest is 0.
    let x = Tensor::from_vec(vec![1000.0, -1000.0, 0.0], &[1, 3]).unwrap().requires_grad_(true);
    let l = cross_entropy(&x, &Tensor::from_vec_i64(vec![1], &[1]).unwrap(), &CrossEntropyOptions::default()).unwrap();
    assert_eq!(l.item().unwrap(), 2000.0);
    l.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![1.0, -1.0, 0.0]);

    // -inf logits (never a whole row): probability 0, finite loss and gradient, no NaN, in
    // both layouts.
    let ninf = f32::NEG_INFINITY;
    let x = Tensor::from_vec(vec![0.5, ninf, 1.5, ninf, 2.0, 0.0], &[2, 3]).unwrap().requires_grad_(true);
    let tg = Tensor::from_vec_i64(vec![0, 2], &[2]).unwrap();
    let l = cross_entropy(&x, &tg, &CrossEntropyOptions::default()).unwrap();
    let e0 = ((0.5f64.exp() + 1.5f64.exp()).ln() - 0.5 + (2f64.exp() + 1.0).ln()) / 2.0;
    assert!((l.item().unwrap() as f64 - e0).abs() < 1e-6);
    l.backward().unwrap();
    let g = x.grad().unwrap().to_vec_f32().unwrap();
    assert!(g.iter().all(|v| v.is_finite()));
    assert_eq!((g[1], g[3]), (0.0, 0.0));
    let x3 = Tensor::from_vec(vec![0.5, ninf, ninf, 1.0, 1.5, 0.0], &[1, 3, 2]).unwrap().requires_grad_(true);
    let tg3 = Tensor::from_vec_i64(vec![0, 1], &[1, 2]).unwrap();
    let l = cross_entropy(&x3, &tg3, &CrossEntropyOptions::default()).unwrap();
    assert!(l.item().unwrap().is_finite());
    l.backward().unwrap();
    let g = x3.grad().unwrap().to_vec_f32().unwrap();
    assert!(g.iter().all(|v| v.is_finite()));
    assert_eq!((g[1], g[2]), (0.0, 0.0));
}

#[test]
fn cross_entropy_whole_sample_ignored() {
    // Sample 1 of [2, 3, 2] is entirely ignored: its loss and gradient are 0 and it adds no
    // weight to the mean.
    let x = uniform(&[2, 3, 2], -1.0, 1.0, 3);
    let tg = targets(vec![2, 0, -100, -100], &[2, 2]);
    let xt = t(&x).requires_grad_(true);
    let l = cross_entropy(&xt, &t(&tg), &CrossEntropyOptions::default()).unwrap();
    let (losses, denom) =
        ce_reference(&x.to_vec_f32().unwrap(), (2, 3, 2), &[2, 0, -100, -100], None, -100, 0.0, false);
    assert_eq!(denom, 2.0);
    assert!((l.item().unwrap() as f64 - losses.iter().sum::<f64>() / 2.0).abs() < 1e-6);
    l.backward().unwrap();
    let g = xt.grad().unwrap().to_vec_f32().unwrap();
    assert!(g[6..].iter().all(|&v| v == 0.0));
    assert!(g[..6].iter().any(|&v| v != 0.0));
}

#[test]
fn cross_entropy_large_inputs_use_the_parallel_path_correctly() {
    // Big enough to be split over threads, in both layouts: values against the reference and
    // gradients against the closed form (softmax − onehot) / N.
    for shape in [vec![300, 130], vec![6, 40, 150]] {
        let (n, c, d) = ncd(&shape);
        let x = uniform(&shape, -4.0, 4.0, 42);
        let tg = make_targets(&shape, c, -100, 0, 43);
        let xt = t(&x).requires_grad_(true);
        let l = cross_entropy(&xt, &t(&tg), &CrossEntropyOptions::default()).unwrap();
        let xv = x.to_vec_f32().unwrap();
        let tv = tg.to_vec::<i64>().unwrap();
        let (losses, denom) = ce_reference(&xv, (n, c, d), &tv, None, -100, 0.0, false);
        assert_close(&[l.item().unwrap()], &[losses.iter().sum::<f64>() / denom], 1e-5, "mean");
        l.backward().unwrap();
        let g = xt.grad().unwrap().to_vec_f32().unwrap();
        let mut expected = vec![0.0; n * c * d];
        for i in 0..n {
            for j in 0..d {
                let col: Vec<f64> = (0..c).map(|k| xv[i * c * d + k * d + j] as f64).collect();
                let s: f64 = col.iter().map(|v| v.exp()).sum();
                for k in 0..c {
                    let onehot = (tv[i * d + j] as usize == k) as u8 as f64;
                    expected[i * c * d + k * d + j] = (col[k].exp() / s - onehot) / (n * d) as f64;
                }
            }
        }
        assert_close(&g, &expected, 1e-5, "gradient");
    }
}

#[test]
fn cross_entropy_of_a_strided_input() {
    // A transposed view: read through its strides, same result as the contiguous copy.
    let x = uniform(&[5, 4], -1.0, 1.0, 9);
    let xt = x.transpose(0, 1).unwrap();
    let tg = t(&targets(vec![0, 4, 2, 1], &[4]));
    let a = cross_entropy(&t(&xt), &tg, &CrossEntropyOptions::default()).unwrap().item().unwrap();
    let b = cross_entropy(&t(&xt.contiguous()), &tg, &CrossEntropyOptions::default()).unwrap().item().unwrap();
    assert_eq!(a, b);
}

#[test]
fn cross_entropy_errors_name_the_op_and_shapes() {
    let x = Tensor::zeros(&[2, 3]);
    let err = |tg: Tensor, opts: CrossEntropyOptions| cross_entropy(&x, &tg, &opts).unwrap_err().to_string();
    let e = err(Tensor::zeros(&[2]), Default::default());
    assert!(e.starts_with("cross_entropy:") && e.contains("i64") && e.contains("[2]"), "{e}");
    let e = err(Tensor::from_vec_i64(vec![0, 1, 2], &[3]).unwrap(), Default::default());
    assert!(e.contains("[3]") && e.contains("[2, 3]"), "{e}");
    let e = err(Tensor::from_vec_i64(vec![0, 3], &[2]).unwrap(), Default::default());
    assert!(e.contains("target 3") && e.contains("3 classes"), "{e}");
    let e = err(Tensor::from_vec_i64(vec![-1, 0], &[2]).unwrap(), Default::default());
    assert!(e.contains("target -1"), "{e}");
    let tg = Tensor::from_vec_i64(vec![0, 1], &[2]).unwrap();
    let e = err(tg.clone(), CrossEntropyOptions { weight: Some(Tensor::ones(&[4])), ..Default::default() });
    assert!(e.contains("weight") && e.contains("[4]"), "{e}");
    let e = err(tg.clone(), CrossEntropyOptions { label_smoothing: 1.5, ..Default::default() });
    assert!(e.contains("label_smoothing"), "{e}");
    let e = err(tg.clone(), CrossEntropyOptions { reduction: Reduction::BatchMean, ..Default::default() });
    assert!(e.contains("batchmean"), "{e}");
    let e = cross_entropy(&Tensor::scalar(1.0), &tg, &Default::default()).unwrap_err().to_string();
    assert!(e.contains("0-d"), "{e}");
    // ignore_index may be out of range: it is skipped, not checked.
    let tg = Tensor::from_vec_i64(vec![7, 1], &[2]).unwrap();
    cross_entropy(&x, &tg, &CrossEntropyOptions { ignore_index: 7, ..Default::default() }).unwrap();
}

// ------------------------------------------------------------------------------ nll_loss

#[test]
fn nll_loss_matches_reference_and_gradients() {
    let mut seed = 900;
    for shape in class_shapes() {
        let (n, c, d) = ncd(&shape);
        for (ignore, every) in [(-100, 0), (-100, 3), (2, 0)] {
            for weighted in [false, true] {
                for r in REDUCTIONS {
                    seed += 1;
                    let x = uniform(&shape, -3.0, 0.0, seed);
                    let tg = make_targets(&shape, c, ignore, every, seed + 1);
                    let w = uniform(&[c], 0.3, 2.0, seed + 2);
                    let opts = NllLossOptions { weight: weighted.then(|| t(&w)), ignore_index: ignore, reduction: r };
                    let out = nll_loss(&t(&x), &t(&tg), &opts).unwrap();
                    let (losses, denom) = ce_reference(
                        &x.to_vec_f32().unwrap(),
                        (n, c, d),
                        &tg.to_vec::<i64>().unwrap(),
                        weighted.then(|| w.to_vec_f32().unwrap()).as_deref(),
                        ignore,
                        0.0,
                        true,
                    );
                    let what = format!("{shape:?} ignore {ignore}/{every} w {weighted} {r}");
                    if !(denom == 0.0 && r == Reduction::Mean) {
                        assert_close(&out.to_vec_f32().unwrap(), &reduce_reference(losses, r, denom), 1e-5, &what);
                    }
                    let inputs = if weighted { vec![x, tg, w] } else { vec![x, tg] };
                    check_gradients(&inputs, |v| {
                        let opts = NllLossOptions { weight: v.get(2).cloned(), ignore_index: ignore, reduction: r };
                        nll_loss(&v[0], &v[1], &opts)
                    })
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                }
            }
        }
    }
    // Hand-computed: −(w_0·x[0,0] + w_1·x[1,1]) / (w_0 + w_1).
    let x = Tensor::from_vec(vec![-0.5, -1.0, -2.0, -0.25], &[2, 2]).unwrap();
    let tg = Tensor::from_vec_i64(vec![0, 1], &[2]).unwrap();
    let w = Tensor::from_vec(vec![2.0, 0.5], &[2]).unwrap();
    let l = nll_loss(&x, &tg, &NllLossOptions { weight: Some(w), ..Default::default() }).unwrap();
    assert!((l.item().unwrap() - (2.0 * 0.5 + 0.5 * 0.25) / 2.5).abs() < 1e-6);
}

// ------------------------------------------------------------------------------ pointwise

/// Input/target pairs whose differences are kept away from 0 and ±0.5, ±1, ±2 (the kinks of
/// l1 and smooth_l1 for the betas tested), with and without broadcasting.
fn pointwise_pairs() -> Vec<(Array, Array)> {
    let diffs = [-2.3f32, -0.8, -0.3, 0.2, 0.7, 1.6, -1.3, 0.35, 2.6, -0.65, 1.2, -1.7];
    let y = uniform(&[3, 4], -1.0, 1.0, 77);
    let x = Array::from_vec(y.to_vec_f32().unwrap().iter().zip(diffs).map(|(&y, d)| y + d).collect(), &[3, 4]).unwrap();
    let row = Array::from_vec(vec![0.1f32, -0.2, 0.3, 0.05], &[4]).unwrap();
    let x2 = Array::from_vec(diffs.iter().map(|d| d + 0.1).collect(), &[3, 4]).unwrap();
    vec![
        (x.clone(), y),
        (x2, row.clone()),
        (Array::from_vec(vec![0.9f32; 1], &[]).unwrap(), Array::from_vec(vec![0.1f32, -0.6, -1.7], &[3]).unwrap()),
    ]
}

#[test]
fn pointwise_losses_hand_computed() {
    let x = Tensor::from_vec(vec![1.0, -2.0, 0.5], &[3]).unwrap();
    let y = Tensor::from_vec(vec![0.0, 1.0, 0.25], &[3]).unwrap();
    // d = [1, -3, 0.25]
    let v = |l: Tensor| l.to_vec_f32().unwrap();
    assert_eq!(v(mse_loss(&x, &y, Reduction::None).unwrap()), vec![1.0, 9.0, 0.0625]);
    assert!((mse_loss(&x, &y, Reduction::Mean).unwrap().item().unwrap() - 10.0625 / 3.0).abs() < 1e-6);
    assert_eq!(v(l1_loss(&x, &y, Reduction::Sum).unwrap()), vec![4.25]);
    // beta 1: |1| ≥ 1 → 0.5, |−3| → 2.5, 0.25 < 1 → 0.03125
    assert_eq!(v(smooth_l1_loss(&x, &y, Reduction::None, 1.0).unwrap()), vec![0.5, 2.5, 0.03125]);
    // beta 0 is the l1 loss.
    assert_eq!(v(smooth_l1_loss(&x, &y, Reduction::None, 0.0).unwrap()), vec![1.0, 3.0, 0.25]);
    // Broadcasting: a [3] input against a [2, 3] target gives a [2, 3] loss.
    let y2 = Tensor::zeros(&[2, 3]);
    assert_eq!(mse_loss(&x, &y2, Reduction::None).unwrap().shape(), &[2, 3]);
}

#[test]
fn gradcheck_mse_l1_smooth_l1() {
    for (x, y) in pointwise_pairs() {
        for r in REDUCTIONS {
            let inputs = [x.clone(), y.clone()];
            check_gradients(&inputs, |v| mse_loss(&v[0], &v[1], r)).unwrap();
            check_gradients(&inputs, |v| l1_loss(&v[0], &v[1], r)).unwrap();
            for beta in [0.5, 1.0, 2.0] {
                check_gradients(&inputs, |v| smooth_l1_loss(&v[0], &v[1], r, beta))
                    .unwrap_or_else(|e| panic!("beta {beta} {r}: {e}"));
            }
        }
    }
}

/// Naive BCE with logits in f64 over equal-length slices.
fn bce_reference(x: &[f32], y: &[f32], w: &[f32], pw: &[f32]) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let (x, y, w, pw) = (x[i] as f64, y[i] as f64, w[i] as f64, pw[i] as f64);
            let s = 1.0 / (1.0 + (-x).exp());
            -w * (pw * y * s.ln() + (1.0 - y) * (1.0 - s).ln())
        })
        .collect()
}

#[test]
fn bce_with_logits_values_and_stability() {
    let x = uniform(&[3, 4], -3.0, 3.0, 5);
    let y = uniform(&[3, 4], 0.0, 1.0, 6);
    let w = uniform(&[3, 1], 0.5, 2.0, 7);
    let pw = uniform(&[4], 0.5, 3.0, 8);
    let opts = BceWithLogitsOptions { weight: Some(t(&w)), pos_weight: Some(t(&pw)), reduction: Reduction::None };
    let out = binary_cross_entropy_with_logits(&t(&x), &t(&y), &opts).unwrap();
    let wb = w.broadcast_to(&[3, 4]).unwrap().to_vec_f32().unwrap();
    let pwb = pw.broadcast_to(&[3, 4]).unwrap().to_vec_f32().unwrap();
    let expected = bce_reference(&x.to_vec_f32().unwrap(), &y.to_vec_f32().unwrap(), &wb, &pwb);
    assert_close(&out.to_vec_f32().unwrap(), &expected, 1e-5, "bce none");
    let mean = binary_cross_entropy_with_logits(&t(&x), &t(&y), &BceWithLogitsOptions::default()).unwrap();
    let ones = vec![1.0; 12];
    let e = bce_reference(&x.to_vec_f32().unwrap(), &y.to_vec_f32().unwrap(), &ones, &ones);
    assert_close(&[mean.item().unwrap()], &[e.iter().sum::<f64>() / 12.0], 1e-5, "bce mean");
    // Logits of ±100: exact, no inf/NaN (a naive log σ would give −inf).
    let x = Tensor::from_vec(vec![100.0, -100.0, 100.0, -100.0], &[4]).unwrap().requires_grad_(true);
    let y = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[4]).unwrap();
    let none = BceWithLogitsOptions { reduction: Reduction::None, ..Default::default() };
    let l = binary_cross_entropy_with_logits(&x, &y, &none).unwrap();
    assert_close(&l.to_vec_f32().unwrap(), &[0.0, 0.0, 100.0, 100.0], 1e-7, "bce ±100");
    l.sum_all().backward().unwrap();
    assert_close(&x.grad().unwrap().to_vec_f32().unwrap(), &[0.0, 0.0, 1.0, -1.0], 1e-7, "bce ±100 grad");
}

#[test]
fn gradcheck_bce_with_logits_every_operand() {
    let x = uniform(&[2, 3, 4], -3.0, 3.0, 15);
    let y = uniform(&[2, 3, 4], 0.05, 0.95, 16);
    let w = uniform(&[3, 1], 0.5, 2.0, 17);
    let pw = uniform(&[4], 0.5, 3.0, 18);
    for r in REDUCTIONS {
        for (use_w, use_pw) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut inputs = vec![x.clone(), y.clone()];
            if use_w {
                inputs.push(w.clone());
            }
            if use_pw {
                inputs.push(pw.clone());
            }
            check_gradients(&inputs, |v| {
                let opts = BceWithLogitsOptions {
                    weight: use_w.then(|| v[2].clone()),
                    pos_weight: use_pw.then(|| v[2 + use_w as usize].clone()),
                    reduction: r,
                };
                binary_cross_entropy_with_logits(&v[0], &v[1], &opts)
            })
            .unwrap_or_else(|e| panic!("{r} w {use_w} pw {use_pw}: {e}"));
        }
    }
}

#[test]
fn kl_div_values_and_gradients() {
    let x = uniform(&[3, 4], -3.0, -0.1, 25);
    let y = uniform(&[3, 4], 0.05, 1.0, 26);
    let (xv, yv) = (x.to_vec_f32().unwrap(), y.to_vec_f32().unwrap());
    let plain: Vec<f64> = xv.iter().zip(&yv).map(|(&x, &y)| y as f64 * ((y as f64).ln() - x as f64)).collect();
    let logt: Vec<f64> = xv.iter().zip(&yv).map(|(&x, &y)| (y as f64).exp() * (y as f64 - x as f64)).collect();
    for (log_target, e) in [(false, &plain), (true, &logt)] {
        let s: f64 = e.iter().sum();
        let get = |r| kl_div(&t(&x), &t(&y), r, log_target).unwrap().to_vec_f32().unwrap();
        assert_close(&get(Reduction::None), e, 1e-5, "none");
        assert_close(&get(Reduction::Sum), &[s], 1e-5, "sum");
        assert_close(&get(Reduction::Mean), &[s / 12.0], 1e-5, "mean");
        assert_close(&get(Reduction::BatchMean), &[s / 3.0], 1e-5, "batchmean");
        for r in [Reduction::None, Reduction::Sum, Reduction::Mean, Reduction::BatchMean] {
            check_gradients(&[x.clone(), y.clone()], |v| kl_div(&v[0], &v[1], r, log_target))
                .unwrap_or_else(|e| panic!("{r} log_target {log_target}: {e}"));
        }
    }
    // A zero target contributes 0 (0·ln 0 = 0).
    let l = kl_div(&Tensor::scalar(-1.0), &Tensor::scalar(0.0), Reduction::Sum, false).unwrap();
    assert_eq!(l.item().unwrap(), 0.0);
    // Broadcast target, gradient summed back to its shape.
    let yb = uniform(&[4], 0.1, 1.0, 27);
    check_gradients(&[x, yb], |v| kl_div(&v[0], &v[1], Reduction::BatchMean, false)).unwrap();
}

#[test]
fn pointwise_errors() {
    let x = Tensor::zeros(&[2, 3]);
    let e = mse_loss(&x, &Tensor::zeros(&[4]), Reduction::Mean).unwrap_err().to_string();
    assert!(e.starts_with("mse_loss:") && e.contains("[2, 3]") && e.contains("[4]"), "{e}");
    let e = l1_loss(&x, &x, Reduction::BatchMean).unwrap_err().to_string();
    assert!(e.contains("batchmean"), "{e}");
    let e = smooth_l1_loss(&x, &x, Reduction::Mean, -1.0).unwrap_err().to_string();
    assert!(e.contains("beta"), "{e}");
    let opts = BceWithLogitsOptions { pos_weight: Some(Tensor::ones(&[2])), ..Default::default() };
    let e = binary_cross_entropy_with_logits(&x, &x, &opts).unwrap_err().to_string();
    assert!(e.contains("pos_weight") && e.contains("[2]") && e.contains("[2, 3]"), "{e}");
    let e =
        kl_div(&x, &Tensor::from_vec_i64(vec![0; 6], &[2, 3]).unwrap(), Reduction::Sum, false).unwrap_err().to_string();
    assert!(e.starts_with("kl_div:"), "{e}");
    assert!(Reduction::parse("avg").is_err());
    assert_eq!("batchmean".parse::<Reduction>().unwrap(), Reduction::BatchMean);
}
