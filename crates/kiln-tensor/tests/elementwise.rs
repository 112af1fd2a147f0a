//! Elementwise kernels against independent references: std's f64 functions, closed forms,
//! hand-computed broadcasts. Covers the contiguous, scalar, broadcast and strided paths,
//! sizes above the parallel threshold, and special values.

use kiln_tensor::ops::unary::GeluApproximate;
use kiln_tensor::parallel::PAR_ELEMS;
use kiln_tensor::Array;

fn arr(v: Vec<f32>, shape: &[usize]) -> Array {
    Array::from_vec(v, shape).unwrap()
}

/// Deterministic values in [lo, hi) (a simple LCG; independent of the code under test).
fn values(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// Checks `got` against an f64 reference elementwise: |got − want| ≤ atol + rtol·|want|,
/// with infinities and NaN required to match exactly.
fn assert_close(op: &str, xs: &[f32], got: &[f32], want: impl Fn(f64) -> f64, rtol: f64, atol: f64) {
    assert_eq!(xs.len(), got.len(), "{op}: length");
    for (&x, &g) in xs.iter().zip(got) {
        let w = want(x as f64);
        if w.is_nan() {
            assert!(g.is_nan(), "{op}({x}) = {g}, want NaN");
        } else if w.is_infinite() || (w.abs() > f32::MAX as f64) {
            assert_eq!(g as f64, if w > 0.0 { f64::INFINITY } else { f64::NEG_INFINITY }, "{op}({x})");
        } else {
            assert!(((g as f64) - w).abs() <= atol + rtol * w.abs(), "{op}({x}) = {g}, want {w}");
        }
    }
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// erfc in f64: 1 − the Taylor series of erf for |x| < 3, the continued fraction beyond.
fn erfc64(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc64(-x);
    }
    if x < 3.0 {
        let (mut sum, mut term, mut n) = (0.0, x, 0.0);
        while term.abs() > 1e-22 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        let mut f = x;
        for k in (1..100).rev() {
            f = x + (k as f64 / 2.0) / f;
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / f
    }
}

/// The standard normal CDF Φ(x), relatively accurate in the lower tail.
fn normal_cdf64(x: f64) -> f64 {
    0.5 * erfc64(-x / 2f64.sqrt())
}

#[test]
fn unary_ops_match_f64_references() {
    // Large enough to take the parallel path, with a ragged tail.
    let n = PAR_ELEMS * 2 + 13;
    let xs = values(n, -12.0, 12.0, 1);
    let a = arr(xs.clone(), &[n]);
    let run = |r: kiln_tensor::Result<Array>| r.unwrap().to_vec_f32().unwrap();
    assert_close("exp", &xs, &run(a.exp()), f64::exp, 3e-7, 0.0);
    assert_close("tanh", &xs, &run(a.tanh()), f64::tanh, 3e-7, 0.0);
    assert_close("sigmoid", &xs, &run(a.sigmoid()), sigmoid64, 3e-7, 0.0);
    assert_close("silu", &xs, &run(a.silu()), |x| x * sigmoid64(x), 4e-7, 0.0);
    assert_close("neg", &xs, &run(a.neg()), |x| -x, 0.0, 0.0);
    assert_close("abs", &xs, &run(a.abs()), f64::abs, 0.0, 0.0);
    assert_close("sin", &xs, &run(a.sin()), f64::sin, 1e-6, 1e-7);
    assert_close("cos", &xs, &run(a.cos()), f64::cos, 1e-6, 1e-7);
    assert_close("relu", &xs, &run(a.relu()), |x| x.max(0.0), 0.0, 0.0);
    assert_close("leaky_relu", &xs, &run(a.leaky_relu(0.2)), |x| if x > 0.0 { x } else { 0.2 * x }, 1e-7, 0.0);
    let gelu = |x: f64| x * normal_cdf64(x);
    assert_close("gelu", &xs, &run(a.gelu(GeluApproximate::None)), gelu, 1e-6, 1e-37);
    // 0.5·(1 + tanh(u)) = sigmoid(2u), which has no cancellation in f64 for negative u.
    let gelu_tanh = |x: f64| x * sigmoid64(2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x));
    // For negative x the result is about e^(2u), whose relative error is |2u| times that of
    // u as computed in f32 (inherent to evaluating the formula in f32): tight for x > -3,
    // looser in the far tail.
    let xs_g: Vec<f32> = xs.iter().copied().filter(|&x| x > -3.0).collect();
    let ag = arr(xs_g.clone(), &[xs_g.len()]);
    assert_close("gelu_tanh", &xs_g, &run(ag.gelu(GeluApproximate::Tanh)), gelu_tanh, 1e-6, 1e-30);
    assert_close("gelu_tanh", &xs, &run(a.gelu(GeluApproximate::Tanh)), gelu_tanh, 3e-5, 1e-38);
    // In place: the same references, on an owned buffer and on a shared one (which is copied
    // first and leaves the other holder unchanged).
    let mut own = arr(xs.clone(), &[n]);
    own.gelu_(GeluApproximate::None).unwrap();
    assert_close("gelu_", &xs, &own.to_vec_f32().unwrap(), gelu, 1e-6, 1e-37);
    let held = a.clone();
    let mut shared = a.clone();
    shared.gelu_(GeluApproximate::Tanh).unwrap();
    assert_close("gelu_ tanh", &xs, &shared.to_vec_f32().unwrap(), gelu_tanh, 3e-5, 1e-38);
    assert_eq!(held.to_vec_f32().unwrap(), xs);
    let softplus = |b: f64, t: f64| move |x: f64| if b * x > t { x } else { (b * x).exp().ln_1p() / b };
    assert_close("softplus", &xs, &run(a.softplus(1.0, 20.0)), softplus(1.0, 20.0), 4e-7, 0.0);
    assert_close("softplus", &xs, &run(a.softplus(2.0, 5.0)), softplus(2.0, 5.0), 4e-7, 0.0);
    assert_close("clamp", &xs, &run(a.clamp(Some(-0.5), Some(0.8))), |x| x.clamp(-0.5, 0.8f32 as f64), 0.0, 0.0);
    assert_close("clamp", &xs, &run(a.clamp(None, Some(0.3))), |x| x.min(0.3f32 as f64), 0.0, 0.0);
    assert_close("clamp", &xs, &run(a.clamp(Some(0.0), None)), |x| x.max(0.0), 0.0, 0.0);
    let pos = values(n, 1e-3, 50.0, 2);
    let p = arr(pos.clone(), &[n]);
    assert_close("log", &pos, &run(p.log()), f64::ln, 3e-7, 0.0);
    assert_close("sqrt", &pos, &run(p.sqrt()), f64::sqrt, 1e-7, 0.0);
    for e in [0.0, 1.0, 2.0, 3.0, 0.5, -0.5, -1.0, -1.5, -2.0, 2.7, 7.0] {
        assert_close("pow", &pos, &run(p.powf(e)), |x| x.powf(e as f64), 8e-7, 0.0);
    }
}

#[test]
fn pow_with_integral_exponents_accepts_negative_bases() {
    let xs = vec![-3.0, -1.5, -0.5, 0.5, 2.0];
    let a = arr(xs.clone(), &[5]);
    for e in [2.0, 3.0, -1.0, -2.0, 4.0, -3.0, 0.0] {
        assert_close("pow", &xs, &a.powf(e).unwrap().to_vec_f32().unwrap(), |x| x.powi(e as i32), 3e-7, 0.0);
    }
    // Non-integral exponents of negative bases are NaN, as in PyTorch.
    assert!(a.powf(0.5).unwrap().to_vec_f32().unwrap()[0].is_nan());
}

#[test]
fn special_values() {
    let inf = f32::INFINITY;
    let xs = vec![inf, -inf, f32::NAN, 0.0, -0.0, 1e30, -1e30, 100.0, -100.0, 88.0, -88.0, 1e-30, -1e-30];
    let a = arr(xs.clone(), &[xs.len()]);
    let get = |r: kiln_tensor::Result<Array>| r.unwrap().to_vec_f32().unwrap();
    assert_close("exp", &xs, &get(a.exp()), f64::exp, 3e-7, 1e-45);
    assert_close("tanh", &xs, &get(a.tanh()), f64::tanh, 3e-7, 0.0);
    // sigmoid(-100) is subnormal in f32; both 0 and the subnormal are acceptable.
    assert_close("sigmoid", &xs, &get(a.sigmoid()), |x| if x.is_nan() { x } else { sigmoid64(x) }, 3e-7, 1e-38);
    let l = get(a.log());
    assert_eq!(l[0], inf);
    assert!(l[1].is_nan() && l[2].is_nan() && l[6].is_nan() && l[8].is_nan() && l[12].is_nan());
    assert_eq!((l[3], l[4]), (-inf, -inf));
    assert_close("log", &xs[5..6], &l[5..6], f64::ln, 3e-7, 0.0);
    assert_close("log", &xs[11..12], &l[11..12], f64::ln, 3e-7, 0.0);
    let r = get(a.relu());
    assert!(r[2].is_nan(), "relu propagates NaN");
    assert_eq!((r[0], r[1]), (inf, 0.0));
    let g = get(a.gelu(GeluApproximate::None));
    assert_eq!((g[0], g[1]), (inf, 0.0));
    assert!(g[2].is_nan());
    let gt = get(a.gelu(GeluApproximate::Tanh));
    assert_eq!((gt[0], gt[1]), (inf, 0.0));
    let s = get(a.softplus(1.0, 20.0));
    assert_eq!((s[0], s[1], s[5], s[6]), (inf, 0.0, 1e30, 0.0));
    assert!(s[2].is_nan());
    // With a threshold of inf the stable form still gives x for large x (no overflow to inf).
    assert_eq!(get(a.softplus(1.0, f32::INFINITY))[7], 100.0);
    let c = get(a.clamp(Some(-1.0), Some(1.0)));
    assert_eq!((c[0], c[1]), (1.0, -1.0));
    assert!(c[2].is_nan(), "clamp propagates NaN");
    let sl = get(a.silu());
    assert_eq!((sl[0], sl[1]), (inf, 0.0));
    // Binary ops propagate NaN from either side in maximum/minimum.
    let n = arr(vec![f32::NAN, 1.0], &[2]);
    let m = arr(vec![1.0, f32::NAN], &[2]);
    assert!(n.maximum(&m).unwrap().to_vec_f32().unwrap().iter().all(|v| v.is_nan()));
    assert!(n.minimum(&m).unwrap().to_vec_f32().unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn binary_ops_broadcast_either_way() {
    // [2, 3] with [3], [2, 1], [1, 3], [] and [2, 1, 3] (both stretch).
    let a = arr(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    // (other operand, output shape, (k, i, j) -> (input value, other value))
    type Values = Box<dyn Fn(usize, usize, usize) -> (f32, f32)>;
    let cases: Vec<(Array, Vec<usize>, Values)> = vec![
        (
            arr(vec![10.0, 20.0, 30.0], &[3]),
            vec![2, 3],
            Box::new(|_, i, j| ((i * 3 + j + 1) as f32, ((j + 1) * 10) as f32)),
        ),
        (
            arr(vec![10.0, 20.0], &[2, 1]),
            vec![2, 3],
            Box::new(|_, i, j| ((i * 3 + j + 1) as f32, ((i + 1) * 10) as f32)),
        ),
        (Array::scalar(7.0), vec![2, 3], Box::new(|_, i, j| ((i * 3 + j + 1) as f32, 7.0))),
        (
            arr((1..=6).map(|v| v as f32 * 0.5).collect(), &[2, 1, 3]),
            vec![2, 2, 3],
            Box::new(|k, i, j| ((i * 3 + j + 1) as f32, (k * 3 + j + 1) as f32 * 0.5)),
        ),
    ];
    type F = fn(f32, f32) -> f32;
    let ops: [(&str, F); 6] = [
        ("add", |x, y| x + y),
        ("sub", |x, y| x - y),
        ("mul", |x, y| x * y),
        ("div", |x, y| x / y),
        ("maximum", f32::max),
        ("minimum", f32::min),
    ];
    for (b, shape, val) in &cases {
        for (name, f) in ops {
            for swap in [false, true] {
                let (l, r) = if swap { (b, &a) } else { (&a, b) };
                let out = match name {
                    "add" => l.add(r),
                    "sub" => l.sub(r),
                    "mul" => l.mul(r),
                    "div" => l.div(r),
                    "maximum" => l.maximum(r),
                    _ => l.minimum(r),
                }
                .unwrap();
                assert_eq!(out.shape(), shape.as_slice(), "{name} {:?} {:?}", l.shape(), r.shape());
                let v = out.to_vec_f32().unwrap();
                let (d0, d1) = if shape.len() == 3 { (shape[0], shape[1]) } else { (1, shape[0]) };
                for k in 0..d0 {
                    for i in 0..d1 {
                        for j in 0..3 {
                            let (x, y) = val(k, i, j);
                            let want = if swap { f(y, x) } else { f(x, y) };
                            assert_eq!(v[(k * d1 + i) * 3 + j], want, "{name} swap={swap} at {k},{i},{j}");
                        }
                    }
                }
            }
        }
    }
    let e = a.add(&arr(vec![1.0, 2.0], &[2])).unwrap_err().to_string();
    assert!(e.starts_with("add:") && e.contains("[2, 3]") && e.contains("[2]"), "{e}");
}

#[test]
fn large_broadcasts_and_strided_views_take_the_row_paths() {
    // [rows, cols] + [cols] and + [rows, 1], large enough to split rows across threads.
    let (rows, cols) = (PAR_ELEMS / 64 + 7, 67);
    let xa = values(rows * cols, -1.0, 1.0, 3);
    let xb = values(cols, -1.0, 1.0, 4);
    let xc = values(rows, -1.0, 1.0, 5);
    let a = arr(xa.clone(), &[rows, cols]);
    let s = a.add(&arr(xb.clone(), &[cols])).unwrap().to_vec_f32().unwrap();
    let m = arr(xc.clone(), &[rows, 1]).mul(&a).unwrap().to_vec_f32().unwrap();
    for i in 0..rows {
        for j in 0..cols {
            assert_eq!(s[i * cols + j], xa[i * cols + j] + xb[j]);
            assert_eq!(m[i * cols + j], xc[i] * xa[i * cols + j]);
        }
    }
    // A transposed (strided) operand, unary and binary.
    let t = a.transpose(0, 1).unwrap();
    let e = t.exp().unwrap().to_vec_f32().unwrap();
    let d = t.sub(&t.contiguous()).unwrap().to_vec_f32().unwrap();
    for j in 0..cols {
        for i in 0..rows {
            let x = xa[i * cols + j];
            assert!(((e[j * rows + i] as f64) - (x as f64).exp()).abs() <= 3e-7 * (x as f64).exp());
            assert_eq!(d[j * rows + i], 0.0);
        }
    }
    // A narrowed view with unit inner stride, and a 0-d array.
    let nv = a.narrow(1, 5, 20).unwrap();
    let r = nv.relu().unwrap().to_vec_f32().unwrap();
    for i in 0..rows {
        for j in 0..20 {
            assert_eq!(r[i * 20 + j], xa[i * cols + 5 + j].max(0.0));
        }
    }
    assert_eq!(Array::scalar(2.0).exp().unwrap().item().unwrap(), 2f32.exp());
    assert_eq!(Array::scalar(2.0).mul(&Array::scalar(3.0)).unwrap().shape(), &[] as &[usize]);
    // Empty arrays.
    let z = Array::zeros(&[0, 3]);
    assert_eq!(z.add(&arr(vec![1.0, 2.0, 3.0], &[3])).unwrap().shape(), &[0, 3]);
    assert_eq!(z.tanh().unwrap().shape(), &[0, 3]);
}

#[test]
fn scalar_forms_and_in_place_accumulation() {
    let a = arr(vec![1.0, -2.0, 3.0], &[3]);
    assert_eq!(a.add_scalar(1.0).unwrap().to_vec_f32().unwrap(), vec![2.0, -1.0, 4.0]);
    assert_eq!(a.sub_scalar(1.0).unwrap().to_vec_f32().unwrap(), vec![0.0, -3.0, 2.0]);
    assert_eq!(a.mul_scalar(2.0).unwrap().to_vec_f32().unwrap(), vec![2.0, -4.0, 6.0]);
    assert_eq!(a.div_scalar(3.0).unwrap().to_vec_f32().unwrap(), vec![1.0 / 3.0, -2.0 / 3.0, 1.0]);
    let mut acc = a.clone();
    acc.add_assign(&arr(vec![1.0, 1.0, 1.0], &[3])).unwrap();
    assert_eq!(acc.to_vec_f32().unwrap(), vec![2.0, -1.0, 4.0]);
    assert_eq!(a.to_vec_f32().unwrap(), vec![1.0, -2.0, 3.0], "add_assign copies a shared buffer");
    assert!(Array::arange_i64(3).exp().unwrap_err().to_string().starts_with("exp:"));
    assert!(a.clamp(None, None).unwrap_err().to_string().starts_with("clamp:"));
}

#[test]
fn backward_kernels_match_closed_forms() {
    let xs = values(1000, -6.0, 6.0, 7);
    let gs = values(1000, -1.0, 1.0, 8);
    let (x, g) = (arr(xs.clone(), &[1000]), arr(gs.clone(), &[1000]));
    let check = |name: &str, got: Array, d: &dyn Fn(f64) -> f64| {
        let got = got.to_vec_f32().unwrap();
        for ((&xi, &gi), &o) in xs.iter().zip(&gs).zip(&got) {
            let want = gi as f64 * d(xi as f64);
            assert!(((o as f64) - want).abs() <= 1e-6 + 2e-6 * want.abs(), "{name}'({xi}) · {gi} = {o}, want {want}");
        }
    };
    let phi = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    check("gelu", x.gelu_backward(&g, GeluApproximate::None).unwrap(), &|x| normal_cdf64(x) + x * phi(x));
    let k = (2.0 / std::f64::consts::PI).sqrt();
    check("gelu_tanh", x.gelu_backward(&g, GeluApproximate::Tanh).unwrap(), &|x| {
        let u = k * (x + 0.044715 * x * x * x);
        let t = u.tanh();
        0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x)
    });
    check("silu", x.silu_backward(&g).unwrap(), &|x| sigmoid64(x) * (1.0 + x * (1.0 - sigmoid64(x))));
    check("softplus", x.softplus_backward(&g, 2.0, 5.0).unwrap(), &|x| {
        if 2.0 * x > 5.0 {
            1.0
        } else {
            sigmoid64(2.0 * x)
        }
    });
    check("sin", x.sin_backward(&g).unwrap(), &f64::cos);
    check("cos", x.cos_backward(&g).unwrap(), &|x| -x.sin());
    check("abs", x.abs_backward(&g).unwrap(), &f64::signum);
    check("leaky_relu", x.leaky_relu_backward(&g, 0.1).unwrap(), &|x| if x > 0.0 { 1.0 } else { 0.1 });
    check("clamp", x.clamp_backward(&g, Some(-1.0), None).unwrap(), &|x| if x >= -1.0 { 1.0 } else { 0.0 });
    check("pow", x.powf_backward(&g, 3.0).unwrap(), &|x| 3.0 * x * x);
    check("pow", x.powf_backward(&g, 2.0).unwrap(), &|x| 2.0 * x);
    check("pow", x.powf_backward(&g, 0.0).unwrap(), &|_| 0.0);
    let y = x.tanh().unwrap();
    check("tanh", y.tanh_backward(&g).unwrap(), &|x| 1.0 - x.tanh().powi(2));
    let y = x.sigmoid().unwrap();
    check("sigmoid", y.sigmoid_backward(&g).unwrap(), &|x| sigmoid64(x) * (1.0 - sigmoid64(x)));
    let y = x.relu().unwrap();
    check("relu", y.relu_backward(&g).unwrap(), &|x| if x > 0.0 { 1.0 } else { 0.0 });
}
