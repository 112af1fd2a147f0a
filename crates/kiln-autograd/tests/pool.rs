//! max_pool2d, avg_pool2d and adaptive_avg_pool2d: finite-difference gradient checks (max
//! pooling on inputs whose values are spaced well apart, so no window has a near-tie), over
//! stride, padding, rectangular windows, odd sizes and unbatched inputs.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::ops::pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d, Pool2dOptions};
use kiln_autograd::{Array, Tensor};

/// A shuffled grid of distinct values 0.1 apart (centered), so a ±0.01 step never swaps maxima.
fn distinct(shape: &[usize], seed: u64) -> Array {
    let n: usize = shape.iter().product();
    let r = uniform(&[n], 0.0, 1.0, seed).to_vec_f32().unwrap();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| r[a].total_cmp(&r[b]));
    let mut v = vec![0f32; n];
    for (rank, &i) in order.iter().enumerate() {
        v[i] = (rank as f32 - n as f32 / 2.0) * 0.1;
    }
    Array::from_vec(v, shape).unwrap()
}

fn cases() -> Vec<(Vec<usize>, Pool2dOptions)> {
    let o = |k: [usize; 2], s: [usize; 2], p: [usize; 2]| Pool2dOptions::new(k).stride(s).padding(p);
    vec![
        (vec![2, 2, 4, 4], o([2, 2], [2, 2], [0, 0])),
        (vec![1, 2, 5, 5], o([2, 2], [2, 2], [0, 0])),
        (vec![1, 2, 5, 5], o([3, 3], [2, 2], [1, 1])),
        (vec![2, 1, 5, 4], o([3, 2], [2, 1], [1, 0])),
        (vec![1, 1, 4, 5], o([2, 3], [1, 2], [1, 1])),
        (vec![2, 3, 3], o([2, 2], [1, 1], [1, 1])),
        (vec![1, 1, 3, 3], o([3, 3], [1, 1], [1, 1])),
    ]
}

#[test]
fn gradcheck_max_pool2d() {
    for (i, (shape, o)) in cases().into_iter().enumerate() {
        check_gradients(&[distinct(&shape, i as u64)], |t| max_pool2d(&t[0], &o))
            .unwrap_or_else(|e| panic!("{shape:?} {o:?}: {e}"));
    }
}

#[test]
fn gradcheck_avg_pool2d() {
    for include in [true, false] {
        for (i, (shape, o)) in cases().into_iter().enumerate() {
            check_gradients(&[uniform(&shape, -1.0, 1.0, 50 + i as u64)], |t| avg_pool2d(&t[0], &o, include))
                .unwrap_or_else(|e| panic!("{shape:?} {o:?} include {include}: {e}"));
        }
    }
}

#[test]
fn gradcheck_adaptive_avg_pool2d() {
    let cases: [(&[usize], [usize; 2]); 6] = [
        (&[1, 2, 6, 6], [3, 3]),
        (&[2, 1, 5, 7], [3, 2]),
        (&[1, 2, 4, 5], [1, 1]),
        (&[1, 1, 3, 2], [4, 3]),
        (&[2, 4, 3], [2, 2]),
        (&[1, 1, 7, 3], [3, 5]),
    ];
    for (i, &(shape, size)) in cases.iter().enumerate() {
        check_gradients(&[uniform(shape, -1.0, 1.0, 90 + i as u64)], |t| adaptive_avg_pool2d(&t[0], size))
            .unwrap_or_else(|e| panic!("{shape:?} -> {size:?}: {e}"));
    }
}

#[test]
fn max_pool2d_hand_computed() {
    // Padding is -inf: a window of negative values still picks a real element.
    let x = Tensor::from_vec(vec![-5.0, -2.0, -3.0, -4.0], &[1, 1, 2, 2]).unwrap().requires_grad_(true);
    let y = max_pool2d(&x, &Pool2dOptions::new([2, 2]).stride([1, 1]).padding([1, 1])).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), vec![-5.0, -2.0, -2.0, -3.0, -2.0, -2.0, -3.0, -3.0, -4.0]);
    y.sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![1.0, 4.0, 3.0, 1.0]);
}
