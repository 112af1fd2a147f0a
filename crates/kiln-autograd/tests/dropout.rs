//! Dropout: mask statistics, scaling, eval identity, and gradients through a fixed mask.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::ops::dropout::dropout;
use kiln_autograd::{Array, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[test]
fn keeps_about_one_minus_p_and_scales_the_kept() {
    let n = 40_000;
    for &p in &[0.1f32, 0.5, 0.8] {
        let x = Tensor::from_vec((0..n).map(|i| 1.0 + (i % 7) as f32).collect(), &[200, 200]).unwrap();
        let y = dropout(&x, p, true, &mut rng(11)).unwrap().to_vec_f32().unwrap();
        let xs = x.to_vec_f32().unwrap();
        let mut kept = 0;
        for (a, b) in xs.iter().zip(&y) {
            if *b != 0.0 {
                kept += 1;
                // Kept values are scaled by 1/(1-p).
                assert!((b - a / (1.0 - p)).abs() < 1e-5 * b.abs(), "{a} -> {b} with p = {p}");
            }
        }
        let frac = kept as f64 / n as f64;
        // Binomial standard deviation √(p(1-p)/n) ≤ 0.0025: allow 5 of them.
        assert!((frac - (1.0 - p as f64)).abs() < 0.0125, "p = {p}: kept {frac}");
        // So the mean is about unchanged.
        let (mx, my) = (xs.iter().sum::<f32>() / n as f32, y.iter().sum::<f32>() / n as f32);
        assert!((mx - my).abs() < 0.05 * mx, "{mx} vs {my}");
    }
}

#[test]
fn eval_and_p_zero_return_the_input_and_p_one_zeroes_everything() {
    let x = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3]).unwrap().requires_grad_(true);
    assert!(dropout(&x, 0.7, false, &mut rng(0)).unwrap().same(&x));
    assert!(dropout(&x, 0.0, true, &mut rng(0)).unwrap().same(&x));
    let y = dropout(&x, 1.0, true, &mut rng(0)).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), vec![0.0; 3]);
    y.sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![0.0; 3]);
}

#[test]
fn same_seed_same_mask() {
    let x = Tensor::ones(&[64]);
    let a = dropout(&x, 0.5, true, &mut rng(5)).unwrap().to_vec_f32().unwrap();
    let b = dropout(&x, 0.5, true, &mut rng(5)).unwrap().to_vec_f32().unwrap();
    let c = dropout(&x, 0.5, true, &mut rng(6)).unwrap().to_vec_f32().unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn gradient_is_the_upstream_gradient_through_the_mask() {
    let x = Tensor::from_vec(vec![0.5; 32], &[4, 8]).unwrap().requires_grad_(true);
    let y = dropout(&x, 0.25, true, &mut rng(9)).unwrap();
    y.sum_all().backward().unwrap();
    // d(sum y)/dx = mask = y / x elementwise.
    let want: Vec<f32> = y.to_vec_f32().unwrap().iter().map(|v| v / 0.5).collect();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), want);
    assert!(want.iter().all(|&m| m == 0.0 || (m - 4.0 / 3.0).abs() < 1e-6));
}

#[test]
fn gradcheck_with_a_fixed_mask() {
    // A freshly seeded generator in each call gives the same mask every evaluation.
    let x = uniform(&[3, 5], -1.0, 1.0, 2);
    check_gradients(std::slice::from_ref(&x), |t| dropout(&t[0], 0.4, true, &mut rng(3))).unwrap();
    // A strided input.
    check_gradients(&[x], |t| dropout(&t[0].try_transpose(0, 1)?, 0.6, true, &mut rng(4))).unwrap();
}

#[test]
fn bad_arguments_are_errors() {
    let x = Tensor::ones(&[2]);
    for p in [-0.1, 1.5, f32::NAN] {
        let e = dropout(&x, p, true, &mut rng(0)).unwrap_err().to_string();
        assert!(e.contains("dropout") && e.contains("between 0 and 1"), "{e}");
    }
    let ids = Tensor::from_array(Array::from_vec(vec![1i64, 2], &[2]).unwrap());
    assert!(dropout(&ids, 0.5, true, &mut rng(0)).unwrap_err().to_string().contains("f32"));
}
