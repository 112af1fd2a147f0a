//! `clip_grad_norm` against hand-computed norms.

use kiln_autograd::{Array, Result, Tensor};
use kiln_optim::{clip_grad_norm, grad_norm};

fn with_grad(g: Vec<f32>, shape: &[usize]) -> Tensor {
    let p = Tensor::zeros(shape).requires_grad_(true);
    p.set_grad(Some(Array::from_vec(g, shape).unwrap())).unwrap();
    p
}

fn grad_of(p: &Tensor) -> Vec<f32> {
    p.grad().unwrap().to_vec_f32().unwrap()
}

#[track_caller]
fn close(a: &[f32], e: &[f64]) {
    assert_eq!(a.len(), e.len());
    for (&a, &e) in a.iter().zip(e) {
        assert!((a as f64 - e).abs() <= 1e-6 + 1e-6 * e.abs(), "got {a}, expected {e}");
    }
}

#[test]
fn l2_norm_over_all_tensors_clips() -> Result<()> {
    // Elements 1, 2, 2 | 4 | (0-d) -2: squares sum to 1 + 4 + 4 + 16 + 4 = 29.
    let a = with_grad(vec![1.0, 2.0, 2.0], &[3, 1]);
    let b = with_grad(vec![4.0], &[1]);
    let c = with_grad(vec![-2.0], &[]);
    let total = clip_grad_norm([&a, &b, &c], 2.0, 2.0)?;
    let norm = 29f64.sqrt();
    assert!((total as f64 - norm).abs() < 1e-6);
    let coef = 2.0 / (norm + 1e-6);
    close(&grad_of(&a), &[coef, 2.0 * coef, 2.0 * coef]);
    close(&grad_of(&b), &[4.0 * coef]);
    close(&grad_of(&c), &[-2.0 * coef]);
    assert_eq!(c.grad().unwrap().shape(), &[] as &[usize]);
    // The clipped gradients now have norm max_norm (up to the 1e-6).
    assert!((grad_norm([&a, &b, &c], 2.0)? - 2.0).abs() < 1e-5);
    Ok(())
}

#[test]
fn below_max_norm_nothing_changes() -> Result<()> {
    let a = with_grad(vec![0.3, -0.4], &[2]);
    let total = clip_grad_norm([&a], 1.0, 2.0)?;
    assert!((total - 0.5).abs() < 1e-7);
    assert_eq!(grad_of(&a), vec![0.3, -0.4]);
    Ok(())
}

#[test]
fn inf_norm_is_the_largest_magnitude() -> Result<()> {
    let a = with_grad(vec![0.5, -3.0], &[2]);
    let b = with_grad(vec![2.0], &[1, 1]);
    let total = clip_grad_norm(vec![&a, &b], 1.5, f32::INFINITY)?;
    assert_eq!(total, 3.0);
    let coef = 1.5 / (3.0 + 1e-6);
    close(&grad_of(&a), &[0.5 * coef, -3.0 * coef]);
    close(&grad_of(&b), &[2.0 * coef]);
    Ok(())
}

#[test]
fn other_p_norms() -> Result<()> {
    let a = with_grad(vec![1.0, -2.0, 3.0], &[3]);
    assert!((grad_norm([&a], 1.0)? - 6.0).abs() < 1e-12);
    assert!((grad_norm([&a], 3.0)? - 36f64.powf(1.0 / 3.0)).abs() < 1e-12);
    assert!(clip_grad_norm([&a], 1.0, 0.0).is_err());
    assert!(clip_grad_norm([&a], 1.0, f32::NAN).is_err());
    Ok(())
}

#[test]
fn skips_missing_gradients_and_scales_in_place() -> Result<()> {
    let none = Tensor::zeros(&[2]).requires_grad_(true);
    let a = with_grad(vec![6.0, 8.0], &[2]);
    let before = a.grad().unwrap().as_slice::<f32>().unwrap().as_ptr();
    let total = clip_grad_norm([&none, &a], 5.0, 2.0)?;
    assert_eq!(total, 10.0);
    assert!(none.grad().is_none());
    close(&grad_of(&a), &[3.0 * 10.0 / (10.0 + 1e-6), 4.0 * 10.0 / (10.0 + 1e-6)]);
    assert_eq!(
        a.grad().unwrap().as_slice::<f32>().unwrap().as_ptr(),
        before,
        "an unshared gradient is scaled in place"
    );
    // A gradient someone else holds is copied, not changed under them.
    let held = a.grad().unwrap();
    let snapshot = held.to_vec_f32()?;
    clip_grad_norm([&a], 1.0, 2.0)?;
    assert_eq!(held.to_vec_f32()?, snapshot);
    // No gradients at all: norm 0.
    assert_eq!(clip_grad_norm([&none], 1.0, 2.0)?, 0.0);
    Ok(())
}
