//! Gradients of the reductions and of softmax/log_softmax: finite differences over several
//! shapes, dim sets (rows, columns, permuted, all, 0-d) and keepdim, plus hand-computed
//! gradients at ties and at -inf logits.

use kiln_autograd::gradcheck::{check_gradients, uniform, GradCheck};
use kiln_autograd::{Array, Tensor};

/// Shapes and dim sets that cover every read plan of the kernels.
fn cases() -> Vec<(Vec<usize>, Option<Vec<isize>>)> {
    vec![
        (vec![3, 4, 5], Some(vec![1])),
        (vec![3, 4, 5], Some(vec![-1])),
        (vec![3, 4, 5], Some(vec![0])),
        (vec![3, 4, 5], Some(vec![0, 2])),
        (vec![3, 4, 5], Some(vec![1, 2])),
        (vec![3, 4, 5], None),
        (vec![2, 1, 3, 2], Some(vec![0, 3])),
        (vec![6], Some(vec![0])),
        (vec![], None),
    ]
}

fn input(shape: &[usize], seed: u64) -> Array {
    uniform(shape, -2.0, 2.0, seed)
}

#[test]
fn gradcheck_sum_mean_var_logsumexp() {
    for (i, (shape, dims)) in cases().into_iter().enumerate() {
        for keepdim in [false, true] {
            let x = input(&shape, 10 + i as u64);
            let d = dims.clone();
            check_gradients(std::slice::from_ref(&x), |t| t[0].try_sum(d.as_deref(), keepdim)).unwrap();
            check_gradients(std::slice::from_ref(&x), |t| t[0].try_mean(d.as_deref(), keepdim)).unwrap();
            check_gradients(std::slice::from_ref(&x), |t| t[0].try_logsumexp(d.as_deref(), keepdim)).unwrap();
            if !shape.is_empty() {
                for c in [0, 1] {
                    check_gradients(std::slice::from_ref(&x), |t| t[0].try_var(d.as_deref(), keepdim, c)).unwrap();
                }
            }
        }
    }
}

#[test]
fn gradcheck_amax_away_from_ties() {
    for (i, (shape, dims)) in cases().into_iter().enumerate() {
        // A random permutation of well-separated values: no ties, no crossings within eps.
        let n: usize = shape.iter().product();
        let mut v: Vec<f32> = (0..n).map(|k| 0.1 * k as f32).collect();
        let r = input(&[n], 30 + i as u64).to_vec_f32().unwrap();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| r[a].total_cmp(&r[b]));
        v = order.iter().map(|&k| v[k]).collect();
        let x = Array::from_vec(v, &shape).unwrap();
        for keepdim in [false, true] {
            let d = dims.clone();
            check_gradients(std::slice::from_ref(&x), |t| t[0].try_amax(d.as_deref(), keepdim)).unwrap();
        }
    }
}

#[test]
fn gradcheck_softmax_and_log_softmax_along_every_dim() {
    for (i, shape) in [vec![7], vec![3, 4, 5], vec![2, 1, 3], vec![4, 3]].into_iter().enumerate() {
        let x = uniform(&shape, -3.0, 3.0, 40 + i as u64);
        for d in 0..shape.len() as isize {
            for dim in [d, d - shape.len() as isize] {
                check_gradients(std::slice::from_ref(&x), |t| t[0].try_softmax(dim)).unwrap();
                check_gradients(std::slice::from_ref(&x), |t| t[0].try_log_softmax(dim)).unwrap();
            }
        }
    }
    // 0-d: softmax is the constant 1, log_softmax the constant 0.
    check_gradients(&[Array::scalar(0.3)], |t| t[0].try_softmax(0)).unwrap();
    check_gradients(&[Array::scalar(0.3)], |t| t[0].try_log_softmax(-1)).unwrap();
}

#[test]
fn gradcheck_large_logits() {
    // Logits of magnitude ~1e3 (a small step keeps the f32 differences meaningful).
    let x = Array::from_vec(vec![1000.0, 999.0, 998.5, -1000.0, -999.2, -1001.0], &[2, 3]).unwrap();
    let gc = GradCheck { eps: 1e-2, atol: 2e-2, rtol: 5e-2 };
    gc.check(std::slice::from_ref(&x), |t| t[0].try_softmax(1)).unwrap();
    gc.check(std::slice::from_ref(&x), |t| t[0].try_log_softmax(1)).unwrap();
    gc.check(&[x], |t| t[0].try_logsumexp(Some(&[1]), false)).unwrap();
}

#[test]
fn amax_splits_the_gradient_equally_among_ties() {
    let x = Tensor::from_vec(vec![1., 3., 3., 3., 2., 0., 5., 5.], &[2, 4]).unwrap().requires_grad_(true);
    let y = x.amax(Some(&[1]), false);
    y.backward_with(Array::from_vec(vec![3.0, 1.0], &[2]).unwrap()).unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![0., 1., 1., 1., 0., 0., 0.5, 0.5]);
    // Over all dims: the two 5s share the gradient.
    let x = Tensor::from_vec(vec![1., 3., 3., 3., 2., 0., 5., 5.], &[2, 4]).unwrap().requires_grad_(true);
    x.amax(None, false).backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![0., 0., 0., 0., 0., 0., 0.5, 0.5]);
}

#[test]
fn gradients_at_neg_inf_logits_are_finite() {
    let ninf = f32::NEG_INFINITY;
    let data = vec![1000., ninf, 999., 2., 0., ninf];
    let g = Array::from_vec(vec![0.5, -1.0, 2.0, 1.0, 3.0, -2.0], &[2, 3]).unwrap();
    let x = Tensor::from_vec(data.clone(), &[2, 3]).unwrap().requires_grad_(true);
    x.softmax(-1).backward_with(g.clone()).unwrap();
    let gs = x.grad().unwrap().to_vec_f32().unwrap();
    assert!(gs.iter().all(|v| v.is_finite()), "{gs:?}");
    assert_eq!((gs[1], gs[5]), (0.0, 0.0));

    let x = Tensor::from_vec(data.clone(), &[2, 3]).unwrap().requires_grad_(true);
    x.log_softmax(1).backward_with(g.clone()).unwrap();
    let gl = x.grad().unwrap().to_vec_f32().unwrap();
    assert!(gl.iter().all(|v| v.is_finite()), "{gl:?}");
    assert_eq!((gl[1], gl[5]), (-1.0, -2.0));
    // g − p·Σg sums to 0 over each row.
    assert!((gl[0] + gl[1] + gl[2]).abs() < 1e-5);

    let x = Tensor::from_vec(data, &[2, 3]).unwrap().requires_grad_(true);
    x.logsumexp(Some(&[-1]), true).backward_with(Array::ones(&[2, 1])).unwrap();
    let ge = x.grad().unwrap().to_vec_f32().unwrap();
    assert_eq!((ge[1], ge[5]), (0.0, 0.0));
    // The gradient of logsumexp is softmax: each row sums to 1 (up to the f32 rounding of
    // an output near 1000).
    assert!((ge[0] + ge[2] - 1.0).abs() < 1e-4 && (ge[3] + ge[4] - 1.0).abs() < 1e-6, "{ge:?}");
}

#[test]
fn hand_computed_gradients() {
    // mean over dim 0 of [2, 3]: 1/2 each; var (unbiased) over dim 1 of [1, 2, 3]: 2(x − 2)/2.
    let x = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap().requires_grad_(true);
    x.mean(Some(&[0]), false).sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![0.5; 6]);
    x.zero_grad();
    x.var(Some(&[1]), false, 1).sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![-1., 0., 1., -1., 0., 1.]);
    x.zero_grad();
    x.mean_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![1. / 6.; 6]);
    x.zero_grad();
    x.sum(Some(&[-1]), true).backward_with(Array::from_vec(vec![2., 3.], &[2, 1]).unwrap()).unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![2., 2., 2., 3., 3., 3.]);
}

#[test]
fn argmax_is_not_differentiable_and_softmax_saves_only_its_output() {
    let x = Tensor::from_array(uniform(&[4, 5], -1.0, 1.0, 3)).requires_grad_(true);
    let i = x.argmax(Some(1), false);
    assert!(!i.requires_grad());
    assert_eq!(i.dtype(), kiln_autograd::DType::I64);
    let y = x.softmax(1);
    let saved = y.data();
    let loss = y.sum_all();
    drop(y);
    // The output is held by `saved` and softmax's backward closure only (not the input).
    assert_eq!(saved.storage_refs(), 2);
    assert_eq!(x.data().storage_refs(), 2, "x's buffer: the leaf and our handle only");
    loss.backward().unwrap();
    assert_eq!(saved.storage_refs(), 1);
}

#[test]
fn errors_name_the_op() {
    let x = Tensor::zeros(&[2, 3]);
    assert!(x.try_var(Some(&[3]), false, 1).unwrap_err().to_string().starts_with("var:"));
    assert!(x.try_logsumexp(Some(&[1, 1]), false).unwrap_err().to_string().starts_with("logsumexp:"));
    assert!(x.try_log_softmax(2).unwrap_err().to_string().starts_with("log_softmax:"));
}
