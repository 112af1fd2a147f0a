//! layer_norm, rms_norm, group_norm and batch_norm: finite-difference gradient checks over
//! several shapes (with and without affine parameters, group norm with no trailing dims,
//! batch norm 1-d/2-d in training and evaluation), hand-computed values, and large inputs
//! (the parallel and per-slice kernel paths) against a plain f64 reference.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::ops::norm::{batch_norm, group_norm, layer_norm, rms_norm};
use kiln_autograd::{Array, Tensor};

fn close(a: &[f32], b: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!((x as f64 - y).abs() <= atol + rtol * y.abs(), "{what}[{i}]: got {x}, expected {y}");
    }
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.to_vec_f32().unwrap()
}

fn grad(t: &Tensor) -> Vec<f32> {
    t.grad().expect("a gradient").to_vec_f32().unwrap()
}

// ------------------------------------------------------------------------------ finite differences

#[test]
fn gradcheck_layer_norm() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 5], &[5]),
        (&[2, 3, 4], &[3, 4]),
        (&[7], &[7]),
        (&[2, 1, 3], &[3]),
        (&[4, 1, 2], &[1, 2]),
        (&[3, 2], &[]),
    ];
    for (i, &(shape, norm)) in cases.iter().enumerate() {
        let s = i as u64 * 10;
        let x = uniform(shape, -2.0, 2.0, s + 1);
        let w = uniform(norm, 0.5, 1.5, s + 2);
        let b = uniform(norm, -0.5, 0.5, s + 3);
        check_gradients(&[x.clone(), w.clone(), b.clone()], |t| {
            layer_norm(&t[0], norm, Some(&t[1]), Some(&t[2]), 1e-5)
        })
        .unwrap_or_else(|e| panic!("{shape:?} {norm:?}: {e}"));
        check_gradients(&[x.clone(), w], |t| layer_norm(&t[0], norm, Some(&t[1]), None, 1e-5)).unwrap();
        check_gradients(&[x.clone(), b], |t| layer_norm(&t[0], norm, None, Some(&t[1]), 1e-5)).unwrap();
        check_gradients(&[x], |t| layer_norm(&t[0], norm, None, None, 1e-5)).unwrap();
    }
}

#[test]
fn gradcheck_rms_norm() {
    let cases: &[(&[usize], &[usize])] = &[(&[3, 5], &[5]), (&[2, 3, 4], &[3, 4]), (&[6], &[6]), (&[2, 2, 1], &[1])];
    for (i, &(shape, norm)) in cases.iter().enumerate() {
        let s = 100 + i as u64 * 10;
        let x = uniform(shape, -2.0, 2.0, s + 1);
        let w = uniform(norm, 0.5, 1.5, s + 2);
        check_gradients(&[x.clone(), w], |t| rms_norm(&t[0], norm, Some(&t[1]), Some(1e-6)))
            .unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        check_gradients(&[x], |t| rms_norm(&t[0], norm, None, None)).unwrap();
    }
}

#[test]
fn gradcheck_group_norm() {
    // (shape, groups): empty `*`, one group, a group per channel, 1-d and 2-d spatial dims,
    // and a spatial size large enough for the per-slice kernels.
    let cases: &[(&[usize], usize)] = &[
        (&[2, 6, 3], 3),
        (&[3, 4], 2),
        (&[2, 4], 4),
        (&[2, 4, 2, 3], 1),
        (&[1, 4, 3, 2], 4),
        (&[2, 4, 2, 3], 2),
        (&[2, 2, 20], 1),
    ];
    for (i, &(shape, g)) in cases.iter().enumerate() {
        let s = 200 + i as u64 * 10;
        let c = [shape[1]];
        let x = uniform(shape, -2.0, 2.0, s + 1);
        let w = uniform(&c, 0.5, 1.5, s + 2);
        let b = uniform(&c, -0.5, 0.5, s + 3);
        check_gradients(&[x.clone(), w, b], |t| group_norm(&t[0], g, Some(&t[1]), Some(&t[2]), 1e-5))
            .unwrap_or_else(|e| panic!("{shape:?} groups {g}: {e}"));
        check_gradients(&[x], |t| group_norm(&t[0], g, None, None, 1e-5)).unwrap();
    }
}

#[test]
fn gradcheck_batch_norm_training_and_eval() {
    // 1-d [N, C] and [N, C, L], 2-d [N, C, H, W], and a long trailing dim (per-slice sums).
    let shapes: &[&[usize]] = &[&[4, 3], &[3, 2, 4], &[2, 3, 2, 3], &[2, 2, 20], &[5, 1]];
    for (i, &shape) in shapes.iter().enumerate() {
        let s = 300 + i as u64 * 10;
        let c = [shape[1]];
        let x = uniform(shape, -2.0, 2.0, s + 1);
        let w = uniform(&c, 0.5, 1.5, s + 2);
        let b = uniform(&c, -0.5, 0.5, s + 3);
        let rm = Tensor::from_array(uniform(&c, -0.5, 0.5, s + 4));
        let rv = Tensor::from_array(uniform(&c, 0.5, 2.0, s + 5));
        for training in [true, false] {
            let (rm, rv) = (&rm, &rv);
            check_gradients(&[x.clone(), w.clone(), b.clone()], |t| {
                Ok(batch_norm(&t[0], Some(rm), Some(rv), Some(&t[1]), Some(&t[2]), training, 0.1, 1e-5)?.0)
            })
            .unwrap_or_else(|e| panic!("{shape:?} training {training}: {e}"));
            check_gradients(std::slice::from_ref(&x), |t| {
                Ok(batch_norm(&t[0], Some(rm), Some(rv), None, None, training, 0.1, 1e-5)?.0)
            })
            .unwrap();
        }
        // Training without running statistics (track_running_stats = False).
        check_gradients(&[x, w], |t| Ok(batch_norm(&t[0], None, None, Some(&t[1]), None, true, 0.1, 1e-5)?.0)).unwrap();
    }
}

// ------------------------------------------------------------------------------ hand-computed

#[test]
fn layer_norm_hand_values_and_gradients() {
    // Row [1, 3, 5]: mean 3, biased var 8/3, x̂ = [-√1.5, 0, √1.5].
    let r = 1.5f64.sqrt();
    let x = Tensor::from_vec(vec![1.0, 3.0, 5.0, 2.0, 2.0, 8.0], &[2, 3]).unwrap().requires_grad_(true);
    let w = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap().requires_grad_(true);
    let b = Tensor::from_vec(vec![0.0, 0.5, -1.0], &[3]).unwrap().requires_grad_(true);
    let y = layer_norm(&x, &[3], Some(&w), Some(&b), 0.0).unwrap();
    // Row [2, 2, 8]: mean 4, var 8, x̂ = [-1/√2, -1/√2, √2].
    let h = 0.5f64.sqrt();
    close(&vals(&y), &[-r, 0.5, 3.0 * r - 1.0, -h, -2.0 * h + 0.5, 3.0 * 2f64.sqrt() - 1.0], 1e-6, 1e-6, "y");
    // An all-ones output gradient: dx = rstd·(w − mean(w) − x̂·mean(w·x̂)), dw = Σ x̂, db = 2.
    y.sum_all().backward().unwrap();
    close(&grad(&b), &[2.0, 2.0, 2.0], 1e-6, 0.0, "db");
    close(&grad(&w), &[-r - h, -h, r + 2f64.sqrt()], 1e-6, 1e-6, "dw");
    let row = |xh: [f64; 3], rstd: f64| -> Vec<f64> {
        let wv = [1.0, 2.0, 3.0];
        let mw = 2.0;
        let mwx = (0..3).map(|j| wv[j] * xh[j]).sum::<f64>() / 3.0;
        (0..3).map(|j| rstd * (wv[j] - mw - xh[j] * mwx)).collect()
    };
    let mut dx = row([-r, 0.0, r], 1.0 / (8.0f64 / 3.0).sqrt());
    dx.extend(row([-h, -h, 2f64.sqrt()], 1.0 / 8f64.sqrt()));
    close(&grad(&x), &dx, 1e-6, 1e-5, "dx");
}

#[test]
fn layer_norm_without_affine_has_zero_input_gradient_for_a_constant_seed() {
    let x = Tensor::from_array(uniform(&[4, 6], -3.0, 3.0, 5)).requires_grad_(true);
    let y = layer_norm(&x, &[6], None, None, 1e-5).unwrap();
    for row in vals(&y).chunks(6) {
        let m = row.iter().map(|&v| v as f64).sum::<f64>() / 6.0;
        let v = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / 6.0;
        assert!(m.abs() < 1e-6 && (v - 1.0).abs() < 1e-4, "mean {m} var {v}");
    }
    y.sum_all().backward().unwrap();
    assert!(grad(&x).iter().all(|g| g.abs() < 1e-5));
}

#[test]
fn rms_norm_hand_values() {
    // [3, 4]: mean of squares 12.5; [1, -1]: 1.
    let x = Tensor::from_vec(vec![3.0, 4.0, 1.0, -1.0], &[2, 2]).unwrap();
    let w = Tensor::from_vec(vec![2.0, 0.5], &[2]).unwrap();
    let y = rms_norm(&x, &[2], Some(&w), Some(0.0)).unwrap();
    let r = 12.5f64.sqrt();
    close(&vals(&y), &[6.0 / r, 2.0 / r, 2.0, -0.5], 1e-6, 1e-6, "y");
    // Default eps: f32 machine epsilon.
    let y = rms_norm(&Tensor::from_vec(vec![0.0, 0.0], &[2]).unwrap(), &[2], None, None).unwrap();
    assert_eq!(vals(&y), vec![0.0, 0.0]);
}

#[test]
fn group_norm_hand_values() {
    // [1, 4] with 2 groups: (1, 3) and (10, 14), each normalizing to (-1, 1).
    let x = Tensor::from_vec(vec![1.0, 3.0, 10.0, 14.0], &[1, 4]).unwrap().requires_grad_(true);
    let w = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[4]).unwrap().requires_grad_(true);
    let b = Tensor::from_vec(vec![0.0, 0.0, 0.0, 1.0], &[4]).unwrap().requires_grad_(true);
    let y = group_norm(&x, 2, Some(&w), Some(&b), 0.0).unwrap();
    close(&vals(&y), &[-1.0, 2.0, -3.0, 5.0], 1e-6, 1e-6, "y");
    y.sum_all().backward().unwrap();
    close(&grad(&w), &[-1.0, 1.0, -1.0, 1.0], 1e-6, 0.0, "dw");
    close(&grad(&b), &[1.0; 4], 0.0, 0.0, "db");
    // Group (1, 3): rstd 1, x̂ = (-1, 1), w = (1, 2): dx = w − mean(w) − x̂·mean(w·x̂) = (0, 0)
    // since mean(w) = 1.5 and mean(w·x̂) = 0.5. Group 2: rstd 1/2, w = (3, 4) likewise 0.
    close(&grad(&x), &[0.0; 4], 1e-6, 0.0, "dx");

    // Channels with trailing dims: [1, 2, 2], one group over all 4 values (0, 2, 4, 6).
    let x = Tensor::from_vec(vec![0.0, 2.0, 4.0, 6.0], &[1, 2, 2]).unwrap();
    let w = Tensor::from_vec(vec![1.0, -1.0], &[2]).unwrap();
    let y = group_norm(&x, 1, Some(&w), None, 0.0).unwrap();
    let s = 5f64.sqrt();
    close(&vals(&y), &[-3.0 / s, -1.0 / s, -1.0 / s, -3.0 / s], 1e-6, 1e-6, "y");
}

#[test]
fn batch_norm_hand_values_and_running_update() {
    // [N=2, C=2]: channel 0 (1, 3): mean 2, var 1; channel 1 (10, 20): mean 15, var 25.
    let x = Tensor::from_vec(vec![1.0, 10.0, 3.0, 20.0], &[2, 2]).unwrap().requires_grad_(true);
    let rm = Tensor::from_vec(vec![0.0, 1.0], &[2]).unwrap().requires_grad_(true);
    let rv = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap().requires_grad_(true);
    let w = Tensor::from_vec(vec![2.0, 1.0], &[2]).unwrap().requires_grad_(true);
    let (y, upd) = batch_norm(&x, Some(&rm), Some(&rv), Some(&w), None, true, 0.1, 0.0).unwrap();
    close(&vals(&y), &[-2.0, -1.0, 2.0, 1.0], 1e-6, 1e-6, "y");
    let (um, uv) = upd.expect("an update in training");
    // mean: 0.9·rm + 0.1·(2, 15); var: 0.9·rv + 0.1·var·2/1.
    close(&um.to_vec_f32().unwrap(), &[0.2, 0.9 + 1.5], 1e-6, 1e-6, "running_mean");
    close(&uv.to_vec_f32().unwrap(), &[0.9 + 0.2, 1.8 + 5.0], 1e-6, 1e-6, "running_var");
    // The running tensors are inputs only: unchanged and without gradient.
    assert_eq!(vals(&rm), vec![0.0, 1.0]);
    let gout = Tensor::from_vec(vec![1.0, 0.0, 0.0, 0.0], &[2, 2]).unwrap();
    y.try_mul(&gout).unwrap().sum_all().backward().unwrap();
    assert!(rm.grad().is_none() && rv.grad().is_none());
    // Channel 0, x̂ = (-1, 1), rstd 1, w 2, g = (1, 0): dx = 2·(g − 0.5 − x̂·(-0.5)) = (0, 0).
    close(&grad(&x), &[0.0; 4], 1e-6, 0.0, "dx");
    close(&grad(&w), &[-1.0, 0.0], 1e-6, 0.0, "dw");

    // Evaluation: the running statistics are used and nothing is updated.
    let x = Tensor::from_vec(vec![1.0, 10.0, 3.0, 20.0], &[2, 2]).unwrap().requires_grad_(true);
    let rv4 = Tensor::from_vec(vec![4.0, 1.0], &[2]).unwrap();
    let (y, upd) = batch_norm(&x, Some(&rm), Some(&rv4), Some(&w), None, false, 0.1, 0.0).unwrap();
    assert!(upd.is_none());
    close(&vals(&y), &[1.0, 9.0, 3.0, 19.0], 1e-6, 1e-6, "y eval");
    y.sum_all().backward().unwrap();
    close(&grad(&x), &[1.0, 1.0, 1.0, 1.0], 1e-6, 0.0, "dx eval");
}

#[test]
fn frozen_parameters_get_no_gradient() {
    let x = Tensor::from_array(uniform(&[3, 4], -1.0, 1.0, 9)).requires_grad_(true);
    let w = Tensor::ones(&[4]);
    let b = Tensor::zeros(&[4]).requires_grad_(true);
    layer_norm(&x, &[4], Some(&w), Some(&b), 1e-5).unwrap().sum_all().backward().unwrap();
    assert!(w.grad().is_none() && x.grad().is_some() && b.grad().is_some());
    // Nothing requires grad: no graph is recorded.
    let y = group_norm(&Tensor::ones(&[2, 4]), 2, Some(&w), None, 1e-5).unwrap();
    assert!(y.grad_fn_name().is_none());
}

#[test]
fn bad_arguments_are_errors() {
    let x = Tensor::zeros(&[2, 3, 4]);
    let err = |r: kiln_autograd::Result<Tensor>| r.unwrap_err().to_string();
    assert!(err(layer_norm(&x, &[3], None, None, 1e-5)).contains("normalized_shape [3]"));
    assert!(err(layer_norm(&x, &[4], Some(&Tensor::ones(&[3])), None, 1e-5)).contains("weight of shape [4]"));
    assert!(err(layer_norm(&x, &[2, 3, 4, 1], None, None, 1e-5)).contains("layer_norm"));
    assert!(err(rms_norm(&x, &[5], None, None)).contains("rms_norm"));
    assert!(err(group_norm(&x, 2, None, None, 1e-5)).contains("divisible by num_groups (2)"));
    assert!(err(group_norm(&x, 0, None, None, 1e-5)).contains("num_groups"));
    assert!(err(group_norm(&Tensor::zeros(&[3]), 1, None, None, 1e-5)).contains("[N, C, *]"));
    assert!(err(group_norm(&x, 3, None, Some(&Tensor::ones(&[4])), 1e-5)).contains("bias of shape [3]"));
    let bn = |x: &Tensor, r: Option<&Tensor>, training| {
        batch_norm(x, r, r, None, None, training, 0.1, 1e-5).map(|o| o.0).unwrap_err().to_string()
    };
    let r3 = Tensor::zeros(&[3]);
    assert!(bn(&Tensor::zeros(&[1, 3]), Some(&r3), true).contains("more than 1 value per channel"));
    assert!(bn(&x, None, false).contains("required"));
    assert!(bn(&x, Some(&Tensor::zeros(&[4])), true).contains("running_mean of shape [3]"));
    let xi = Tensor::from_vec_i64(vec![1, 2, 3, 4], &[2, 2]).unwrap();
    assert!(err(layer_norm(&xi, &[2], None, None, 1e-5)).contains("f32"));
}

#[test]
fn empty_inputs_give_empty_outputs() {
    let y = layer_norm(&Tensor::zeros(&[0, 4]), &[4], None, None, 1e-5).unwrap();
    assert_eq!(y.shape(), &[0, 4]);
    let y = group_norm(&Tensor::zeros(&[0, 4, 3]), 2, None, None, 1e-5).unwrap();
    assert_eq!(y.shape(), &[0, 4, 3]);
}

// ------------------------------------------------------------------------------ large inputs

/// A plain f64 reference of a normalization over `groups` (lists of element indices), with
/// the affine channel of element `i` given by `chan(i)`: output, and the input, weight and
/// bias gradients for the output gradient `g`.
struct Reference {
    y: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
    db: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
fn reference(
    x: &[f32],
    g: &[f32],
    groups: &[Vec<usize>],
    chan: impl Fn(usize) -> usize,
    nch: usize,
    w: &[f32],
    b: &[f32],
    center: bool,
    eps: f64,
) -> Reference {
    let mut r = Reference { y: vec![0.0; x.len()], dx: vec![0.0; x.len()], dw: vec![0.0; nch], db: vec![0.0; nch] };
    for idx in groups {
        let n = idx.len() as f64;
        let mean = if center { idx.iter().map(|&i| x[i] as f64).sum::<f64>() / n } else { 0.0 };
        let var = idx.iter().map(|&i| (x[i] as f64 - mean).powi(2)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps).sqrt();
        let xh = |i: usize| (x[i] as f64 - mean) * rstd;
        let gw = |i: usize| g[i] as f64 * w[chan(i)] as f64;
        let m_gw = if center { idx.iter().map(|&i| gw(i)).sum::<f64>() / n } else { 0.0 };
        let m_gwx = idx.iter().map(|&i| gw(i) * xh(i)).sum::<f64>() / n;
        for &i in idx {
            let c = chan(i);
            r.y[i] = xh(i) * w[c] as f64 + b[c] as f64;
            r.dx[i] = rstd * (gw(i) - m_gw - xh(i) * m_gwx);
            r.dw[c] += g[i] as f64 * xh(i);
            r.db[c] += g[i] as f64;
        }
    }
    r
}

/// Runs `f` on fresh leaves `(x, w, b)`, backpropagates `g`, and compares with `r`.
fn check_large(
    x: &Array,
    w: &Array,
    b: &Array,
    g: &Array,
    r: &Reference,
    f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
    what: &str,
) {
    let (xt, wt, bt) = (
        Tensor::from_array(x.clone()).requires_grad_(true),
        Tensor::from_array(w.clone()).requires_grad_(true),
        Tensor::from_array(b.clone()).requires_grad_(true),
    );
    let y = f(&xt, &wt, &bt);
    close(&vals(&y), &r.y, 1e-5, 1e-4, &format!("{what} y"));
    y.backward_with(g.clone()).unwrap();
    close(&grad(&xt), &r.dx, 1e-4, 1e-3, &format!("{what} dx"));
    close(&grad(&wt), &r.dw, 1e-3, 1e-4, &format!("{what} dw"));
    if bt.grad().is_some() {
        close(&grad(&bt), &r.db, 1e-3, 1e-4, &format!("{what} db"));
    }
}

#[test]
fn large_layer_and_rms_norm_match_the_reference() {
    let (rows, d) = (300, 130);
    // A large mean relative to the spread checks the two-pass statistics.
    let x = uniform(&[rows, d], 99.0, 101.0, 1);
    let g = uniform(&[rows, d], -1.0, 1.0, 2);
    let (w, b) = (uniform(&[d], 0.5, 1.5, 3), uniform(&[d], -1.0, 1.0, 4));
    let groups: Vec<Vec<usize>> = (0..rows).map(|r| (r * d..(r + 1) * d).collect()).collect();
    let (xs, gs, ws, bs) =
        (x.to_vec_f32().unwrap(), g.to_vec_f32().unwrap(), w.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    let r = reference(&xs, &gs, &groups, |i| i % d, d, &ws, &bs, true, 1e-5);
    check_large(&x, &w, &b, &g, &r, |x, w, b| layer_norm(x, &[d], Some(w), Some(b), 1e-5).unwrap(), "layer_norm");
    // Two normalized dims, of a transposed (non-contiguous) input.
    let xt = x.reshape(&[rows as isize, 10, 13]).unwrap().transpose(0, 1).unwrap();
    let xc = xt.to_vec_f32().unwrap();
    let len = rows * 13;
    let groups2: Vec<Vec<usize>> = (0..10).map(|r| (r * len..(r + 1) * len).collect()).collect();
    let r2 = reference(&xc, &xc, &groups2, |i| i % len, len, &vec![1.0; len], &vec![0.0; len], true, 1e-5);
    let y = layer_norm(&Tensor::from_array(xt), &[rows, 13], None, None, 1e-5).unwrap();
    assert_eq!(y.shape(), &[10, rows, 13]);
    close(&vals(&y), &r2.y, 1e-5, 1e-4, "layer_norm of a transposed input");

    let x = uniform(&[rows, d], -3.0, 3.0, 5);
    let xs = x.to_vec_f32().unwrap();
    let zeros = vec![0.0; d];
    let r = reference(&xs, &gs, &groups, |i| i % d, d, &ws, &zeros, false, 1e-6);
    let bz = Array::zeros(&[d]);
    check_large(&x, &w, &bz, &g, &r, |x, w, _| rms_norm(x, &[d], Some(w), Some(1e-6)).unwrap(), "rms_norm");
}

#[test]
fn large_group_norm_matches_the_reference() {
    // (shape, groups): long channel slices, and many rows with no trailing dims.
    for (shape, ng) in [(vec![3usize, 8, 40, 40], 4usize), (vec![4000, 12], 3), (vec![64, 6, 100], 2)] {
        let (n, c) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        let x = uniform(&shape, -2.0, 4.0, 11);
        let g = uniform(&shape, -1.0, 1.0, 12);
        let (w, b) = (uniform(&[c], 0.5, 1.5, 13), uniform(&[c], -1.0, 1.0, 14));
        let k = c / ng;
        let groups: Vec<Vec<usize>> = (0..n * ng).map(|r| (r * k * s..(r + 1) * k * s).collect()).collect();
        let (xs, gs) = (x.to_vec_f32().unwrap(), g.to_vec_f32().unwrap());
        let r = reference(
            &xs,
            &gs,
            &groups,
            |i| (i / s) % c,
            c,
            &w.to_vec_f32().unwrap(),
            &b.to_vec_f32().unwrap(),
            true,
            1e-5,
        );
        check_large(&x, &w, &b, &g, &r, |x, w, b| group_norm(x, ng, Some(w), Some(b), 1e-5).unwrap(), "group_norm");
    }
}

#[test]
fn large_batch_norm_matches_the_reference() {
    // Long slices (per-channel sums), [N, C] with many rows, short trailing dims (row sums).
    for shape in [vec![4usize, 6, 1600], vec![6000, 7], vec![520, 5, 13]] {
        let (n, c) = (shape[0], shape[1]);
        let s: usize = shape[2..].iter().product();
        let x = uniform(&shape, 9.0, 13.0, 21);
        let g = uniform(&shape, -1.0, 1.0, 22);
        let (w, b) = (uniform(&[c], 0.5, 1.5, 23), uniform(&[c], -1.0, 1.0, 24));
        let groups: Vec<Vec<usize>> =
            (0..c).map(|ch| (0..n).flat_map(|i| (0..s).map(move |t| (i * c + ch) * s + t)).collect()).collect();
        let (xs, gs) = (x.to_vec_f32().unwrap(), g.to_vec_f32().unwrap());
        let r = reference(
            &xs,
            &gs,
            &groups,
            |i| (i / s) % c,
            c,
            &w.to_vec_f32().unwrap(),
            &b.to_vec_f32().unwrap(),
            true,
            1e-5,
        );
        let rm = Tensor::zeros(&[c]);
        let rv = Tensor::ones(&[c]);
        check_large(
            &x,
            &w,
            &b,
            &g,
            &r,
            |x, w, b| {
                let (y, upd) = batch_norm(x, Some(&rm), Some(&rv), Some(w), Some(b), true, 0.25, 1e-5).unwrap();
                // The update, against the reference statistics.
                let (um, uv) = upd.unwrap();
                let m = (n * s) as f64;
                for (ch, idx) in groups.iter().enumerate() {
                    let mean = idx.iter().map(|&i| xs[i] as f64).sum::<f64>() / m;
                    let var = idx.iter().map(|&i| (xs[i] as f64 - mean).powi(2)).sum::<f64>() / (m - 1.0);
                    close(&um.to_vec_f32().unwrap()[ch..ch + 1], &[0.25 * mean], 1e-5, 1e-5, "running_mean");
                    close(&uv.to_vec_f32().unwrap()[ch..ch + 1], &[0.75 + 0.25 * var], 1e-5, 1e-5, "running_var");
                }
                y
            },
            &format!("batch_norm {shape:?}"),
        );
    }
}
