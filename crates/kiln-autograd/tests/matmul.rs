//! Finite-difference checks of matmul and linear, and that backward computes only what is needed.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::{no_grad, Array, Result, Tensor};

/// A differentiable transpose of the last two dims that hands matmul a strided view (no copy),
/// so the checks below cover transposed operands.
fn tr(t: &Tensor) -> Result<Tensor> {
    let out = t.data().t()?;
    Ok(Tensor::from_op(out, "transpose", &[t], |g, _| Ok(vec![Some(g.t()?.contiguous())])))
}

fn u(shape: &[usize], seed: u64) -> Array {
    uniform(shape, -1.0, 1.0, seed)
}

#[test]
fn matmul_gradients_match_finite_differences() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 4], &[4, 5]),
        (&[2, 3, 4], &[2, 4, 5]),
        (&[2, 2, 3, 4], &[2, 2, 4, 3]),
        (&[2, 1, 3, 4], &[1, 3, 4, 2]), // batch dims broadcast both ways
        (&[3, 4], &[2, 4, 5]),          // 2-d lhs broadcast over rhs batch
        (&[2, 3, 4], &[4, 5]),          // 2-d rhs broadcast over lhs batch
        (&[1, 3, 4], &[3, 4, 2]),
        (&[1, 1], &[1, 3]),
        (&[4], &[4]),       // dot
        (&[4], &[4, 3]),    // vector @ matrix
        (&[3, 4], &[4]),    // matrix @ vector
        (&[2, 3, 4], &[4]), // batch @ vector
        (&[4], &[2, 4, 3]), // vector @ batch
    ];
    for (i, &(sa, sb)) in cases.iter().enumerate() {
        let (a, b) = (u(sa, 2 * i as u64 + 1), u(sb, 2 * i as u64 + 2));
        check_gradients(&[a, b], |t| t[0].try_matmul(&t[1])).unwrap_or_else(|e| panic!("{sa:?} @ {sb:?}: {e}"));
    }
}

#[test]
fn matmul_gradients_through_transposed_operands() {
    // lhs stored [4, 3] used as [3, 4]; rhs stored [5, 4] used as [4, 5]
    check_gradients(&[u(&[4, 3], 1), u(&[5, 4], 2)], |t| tr(&t[0])?.try_matmul(&tr(&t[1])?)).unwrap();
    // batched: q @ kᵀ with broadcast batch
    check_gradients(&[u(&[2, 3, 4], 3), u(&[1, 5, 4], 4)], |t| t[0].try_matmul(&tr(&t[1])?)).unwrap();
    // 2-d transposed lhs against a batch
    check_gradients(&[u(&[4, 3], 5), u(&[2, 4, 2], 6)], |t| tr(&t[0])?.try_matmul(&t[1])).unwrap();
}

#[test]
fn linear_gradients_match_finite_differences() {
    // bias, no bias, 1-d input, 3-d input
    check_gradients(&[u(&[4, 5], 1), u(&[3, 5], 2), u(&[3], 3)], |t| t[0].try_linear(&t[1], Some(&t[2]))).unwrap();
    check_gradients(&[u(&[2, 3, 5], 4), u(&[3, 5], 5)], |t| t[0].try_linear(&t[1], None)).unwrap();
    check_gradients(&[u(&[5], 6), u(&[3, 5], 7), u(&[3], 8)], |t| t[0].try_linear(&t[1], Some(&t[2]))).unwrap();
    check_gradients(&[u(&[2, 3, 5], 9), u(&[4, 5], 10), u(&[4], 11)], |t| t[0].try_linear(&t[1], Some(&t[2]))).unwrap();
    // a strided (transposed) weight and input
    check_gradients(&[u(&[5, 4], 12), u(&[5, 3], 13)], |t| tr(&t[0])?.try_linear(&tr(&t[1])?, None)).unwrap();
}

#[test]
fn linear_matches_hand_computation() {
    let x = Tensor::from_vec(vec![1.0, 2.0], &[1, 2]).unwrap().requires_grad_(true);
    let w = Tensor::from_vec(vec![1.0, 0.0, 2.0, -1.0, 0.5, 3.0], &[3, 2]).unwrap().requires_grad_(true);
    let b = Tensor::from_vec(vec![0.5, -0.5, 1.0], &[3]).unwrap().requires_grad_(true);
    let y = x.linear(&w, Some(&b));
    assert_eq!(y.to_vec_f32().unwrap(), vec![1.5, -0.5, 7.5]);
    y.sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![3.5, 2.0]);
    assert_eq!(w.grad().unwrap().to_vec_f32().unwrap(), vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
    assert_eq!(b.grad().unwrap().to_vec_f32().unwrap(), vec![1.0, 1.0, 1.0]);
}

#[test]
fn frozen_operands_cost_nothing_and_keep_nothing() {
    let x = Tensor::from_array(u(&[4, 5], 1)).requires_grad_(true);
    let w = Tensor::from_array(u(&[3, 5], 2)); // frozen
    let y = x.linear(&w, None);
    // The graph keeps the weight (d_input needs it) but not the input (no d_weight).
    assert_eq!(x.data().storage_refs(), 2, "the input must not be saved for a frozen weight");
    y.sum_all().backward().unwrap();
    assert!(w.grad().is_none());
    assert_eq!(x.grad().unwrap().shape(), &[4, 5]);

    let a = Tensor::from_array(u(&[3, 4], 3));
    let b = Tensor::from_array(u(&[4, 2], 4)).requires_grad_(true);
    let c = a.matmul(&b);
    assert_eq!(b.data().storage_refs(), 2, "rhs must not be saved when lhs needs no gradient");
    c.sum_all().backward().unwrap();
    assert!(a.grad().is_none());
    // d(sum(a @ b))/db[p, j] = sum_i a[i, p]
    let av = a.to_vec_f32().unwrap();
    let want: Vec<f32> =
        (0..4).flat_map(|p| std::iter::repeat_n((0..3).map(|i| av[i * 4 + p]).sum::<f32>(), 2)).collect();
    let got = b.grad().unwrap().to_vec_f32().unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

#[test]
fn no_grad_matmul_records_nothing() {
    let a = Tensor::from_array(u(&[16, 16], 1)).requires_grad_(true);
    let y = no_grad(|| a.matmul(&a));
    assert!(y.is_leaf() && !y.requires_grad());
    assert!(a
        .try_matmul(&Tensor::from_array(u(&[3, 4], 2)))
        .unwrap_err()
        .to_string()
        .contains("dim 1 of lhs (16) != dim 0 of rhs (3)"));
}

/// Per-call overhead of a 16x16 matmul through `Tensor::matmul` with no grad:
/// `cargo test --release -p kiln-autograd --test matmul -- --ignored --nocapture`.
#[test]
#[ignore]
fn tiny_matmul_overhead() {
    let a = Tensor::from_array(u(&[16, 16], 1));
    let b = Tensor::from_array(u(&[16, 16], 2));
    let _g = kiln_autograd::NoGradGuard::new();
    let mut best = f64::MAX;
    for _ in 0..7 {
        let t = std::time::Instant::now();
        for _ in 0..200_000 {
            std::hint::black_box(a.matmul(std::hint::black_box(&b)));
        }
        best = best.min(t.elapsed().as_secs_f64() / 200_000.0);
    }
    println!("Tensor::matmul 16x16, no grad: {:.3} µs/call (best of 7)", best * 1e6);
}
