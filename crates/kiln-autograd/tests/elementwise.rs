//! Finite-difference checks of every elementwise op (binary with broadcasting either way,
//! scalar forms, unary), with inputs kept away from kinks, plus the gradient rules that
//! finite differences cannot see (exponent 0, clamped elements, inputs without grad).

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::ops::unary::GeluApproximate;
use kiln_autograd::{no_grad, Array, Result, Tensor};

/// Values of `shape` in [lo, hi) with every element at least `gap` away from each of `kinks`.
fn away(shape: &[usize], lo: f32, hi: f32, seed: u64, kinks: &[f32], gap: f32) -> Array {
    let a = uniform(shape, lo, hi, seed);
    let kinks = kinks.to_vec();
    let v = a
        .to_vec_f32()
        .unwrap()
        .into_iter()
        .map(|mut x| {
            for &k in &kinks {
                if (x - k).abs() < gap {
                    x = if x >= k { k + gap + (x - k) } else { k - gap + (x - k) };
                }
            }
            x
        })
        .collect();
    Array::from_vec(v, shape).unwrap()
}

fn check1(x: Array, f: impl Fn(&Tensor) -> Result<Tensor>) {
    check_gradients(&[x], |t| f(&t[0])).unwrap();
}

#[test]
fn gradcheck_binary_ops_with_broadcasting() {
    let pairs = [
        (uniform(&[3, 1, 4], 0.5, 2.0, 1), uniform(&[2, 1], 0.5, 2.0, 2)),
        (uniform(&[4], 0.5, 2.0, 3), uniform(&[2, 3, 4], 0.5, 2.0, 4)),
        (uniform(&[2, 3], 0.5, 2.0, 5), uniform(&[], 0.5, 2.0, 6)),
        (uniform(&[], 0.5, 2.0, 7), uniform(&[2, 3], 0.5, 2.0, 8)),
        (uniform(&[2, 3], 0.5, 2.0, 9), uniform(&[2, 3], 0.5, 2.0, 10)),
    ];
    for (a, b) in pairs {
        check_gradients(&[a.clone(), b.clone()], |t| t[0].try_add(&t[1])).unwrap();
        check_gradients(&[a.clone(), b.clone()], |t| t[0].try_sub(&t[1])).unwrap();
        check_gradients(&[a.clone(), b.clone()], |t| t[0].try_mul(&t[1])).unwrap();
        check_gradients(&[a.clone(), b.clone()], |t| t[0].try_div(&t[1])).unwrap();
    }
    // maximum/minimum: keep every pair at least 0.05 apart so differences never cross the kink.
    let a = Array::from_vec((0..12).map(|i| 0.1 * i as f32).collect(), &[3, 1, 4]).unwrap();
    let b = Array::from_vec(vec![0.25, 0.72], &[2, 1]).unwrap();
    check_gradients(&[a.clone(), b.clone()], |t| t[0].try_maximum(&t[1])).unwrap();
    check_gradients(&[a.clone(), b.clone()], |t| t[0].try_minimum(&t[1])).unwrap();
    check_gradients(&[b.clone(), a.clone()], |t| t[0].try_maximum(&t[1])).unwrap();
    check_gradients(&[b, a], |t| t[0].try_minimum(&t[1])).unwrap();
}

#[test]
fn gradcheck_scalar_forms_and_operators() {
    let a = uniform(&[2, 3], -2.0, 2.0, 11);
    check1(a.clone(), |x| Ok(x.add_scalar(1.5)));
    check1(a.clone(), |x| Ok(x.sub_scalar(1.5)));
    check1(a.clone(), |x| Ok(x.mul_scalar(-2.5)));
    check1(a.clone(), |x| Ok(x.div_scalar(4.0)));
    check1(a.clone(), |x| Ok(-x));
    check1(a.clone(), |x| Ok(&(&(x * 2.0) - 1.0) / 3.0 + 0.5));
    check1(a.clone(), |x| Ok(1.0 - x));
    check1(a.clone(), |x| Ok(2.0 * &(0.5 + x)));
    check1(uniform(&[2, 3], 0.5, 2.0, 13), |x| Ok(3.0 / x));
    check_gradients(&[a.clone(), uniform(&[3], 0.5, 2.0, 12)], |t| Ok(&(&t[0] * &t[1]) - &(&t[0] / &t[1]))).unwrap();
}

#[test]
fn gradcheck_smooth_unary_ops() {
    let x = uniform(&[3, 5], -3.0, 3.0, 21);
    check1(x.clone(), Tensor::try_neg);
    check1(x.clone(), Tensor::try_exp);
    check1(x.clone(), Tensor::try_sin);
    check1(x.clone(), Tensor::try_cos);
    check1(x.clone(), Tensor::try_tanh);
    check1(x.clone(), Tensor::try_sigmoid);
    check1(x.clone(), Tensor::try_silu);
    check1(x.clone(), |t| t.try_gelu(GeluApproximate::None));
    check1(x.clone(), |t| t.try_gelu(GeluApproximate::Tanh));
    let pos = uniform(&[3, 5], 0.3, 3.0, 22);
    check1(pos.clone(), Tensor::try_log);
    check1(pos.clone(), Tensor::try_sqrt);
}

#[test]
fn gradcheck_piecewise_unary_ops_away_from_kinks() {
    let x = away(&[4, 6], -2.0, 2.0, 31, &[0.0], 0.1);
    check1(x.clone(), Tensor::try_abs);
    check1(x.clone(), Tensor::try_relu);
    check1(x.clone(), |t| t.try_leaky_relu(0.01));
    check1(x.clone(), |t| t.try_leaky_relu(0.2));
    // softplus switches to the identity where beta·x > threshold.
    let x = away(&[4, 6], -4.0, 4.0, 32, &[2.5], 0.1);
    check1(x.clone(), |t| t.try_softplus(1.0, 20.0));
    check1(x.clone(), |t| t.try_softplus(2.0, 5.0));
    let x = away(&[4, 6], -1.5, 1.5, 33, &[-0.5, 0.8, 0.0, 0.3], 0.05);
    check1(x.clone(), |t| t.try_clamp(Some(-0.5), Some(0.8)));
    check1(x.clone(), |t| t.try_clamp(Some(0.0), None));
    check1(x.clone(), |t| t.try_clamp(None, Some(0.3)));
}

#[test]
fn gradcheck_pow() {
    let pos = uniform(&[2, 4], 0.5, 2.0, 41);
    for e in [2.0, 3.0, 0.5, -1.5, -2.0, -1.0, 1.0, 2.7, -0.5, 0.0] {
        check1(pos.clone(), |t| t.try_powf(e));
    }
    // Integral exponents must work for negative inputs too.
    let mixed = away(&[2, 4], -2.0, 2.0, 42, &[0.0], 0.4);
    for e in [2.0, 3.0, -2.0, -1.0, 4.0, -3.0] {
        check1(mixed.clone(), |t| t.try_powf(e));
    }
}

#[test]
fn scalar_forms_compute_the_right_values() {
    let x = Tensor::from_vec(vec![1.0, -2.0, 4.0], &[3]).unwrap();
    assert_eq!((1.0 - &x).to_vec_f32().unwrap(), vec![0.0, 3.0, -3.0]);
    assert_eq!((2.0 / &x).to_vec_f32().unwrap(), vec![2.0, -1.0, 0.5]);
    assert_eq!((&x / 2.0).to_vec_f32().unwrap(), vec![0.5, -1.0, 2.0]);
    assert_eq!((&x - 1.0).to_vec_f32().unwrap(), vec![0.0, -3.0, 3.0]);
    assert_eq!((3.0 * &x + 1.0).to_vec_f32().unwrap(), vec![4.0, -5.0, 13.0]);
    assert_eq!((-&x).to_vec_f32().unwrap(), vec![-1.0, 2.0, -4.0]);
}

#[test]
fn gradients_finite_differences_cannot_see() {
    // Exponent 0: x^0 = 1 everywhere, gradient exactly 0 (also at x = 0).
    let x = Tensor::from_vec(vec![0.0, -2.0, 3.0], &[3]).unwrap().requires_grad_(true);
    x.powf(0.0).sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![0.0; 3]);
    assert_eq!(x.powf(0.0).to_vec_f32().unwrap(), vec![1.0; 3]);
    // clamp: 0 where clamped, 1 inside (PyTorch passes the gradient at the bounds too).
    let x = Tensor::from_vec(vec![-2.0, -0.5, 0.1, 0.8, 5.0], &[5]).unwrap().requires_grad_(true);
    x.clamp(Some(-0.5), Some(0.8)).sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![0.0, 1.0, 1.0, 1.0, 0.0]);
    // relu and abs at 0.
    let x = Tensor::from_vec(vec![-1.0, 0.0, 2.0], &[3]).unwrap().requires_grad_(true);
    x.relu().sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![0.0, 0.0, 1.0]);
    x.zero_grad();
    x.abs().sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![-1.0, 0.0, 1.0]);
}

#[test]
fn only_inputs_that_require_grad_get_one() {
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap().requires_grad_(true);
    let c = Tensor::from_vec(vec![4.0, 5.0, 6.0], &[3]).unwrap();
    (&x * &c).sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![4.0, 5.0, 6.0]);
    assert!(c.grad().is_none());
    let y = no_grad(|| x.tanh());
    assert!(!y.requires_grad() && y.is_leaf());
    assert_eq!(x.exp().grad_fn_name(), Some("exp"));
    assert_eq!(x.gelu(GeluApproximate::Tanh).grad_fn_name(), Some("gelu"));
}

#[test]
fn ops_on_integer_tensors_are_errors_not_panics() {
    let i = Tensor::from_vec_i64(vec![1, 2], &[2]).unwrap();
    let f = Tensor::ones(&[2]);
    assert!(i.try_exp().unwrap_err().to_string().starts_with("exp:"));
    assert!(i.try_add(&f).unwrap_err().to_string().starts_with("add:"));
    assert!(f.try_clamp(None, None).is_err());
}

#[test]
fn gelu_matches_its_tanh_approximation_closely() {
    // An independent sanity check of the two forms against each other (they differ < 1e-3).
    let x = Tensor::from_array(uniform(&[100], -4.0, 4.0, 51));
    let (a, b) =
        (x.gelu(GeluApproximate::None).to_vec_f32().unwrap(), x.gelu(GeluApproximate::Tanh).to_vec_f32().unwrap());
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-3));
}
