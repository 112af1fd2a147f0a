//! Indexing ops: finite-difference checks (index and mask inputs are constants) and
//! hand-computed scatter-add gradients.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::{Array, Tensor};

fn ids(v: &[i64], s: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), s).unwrap()
}

fn mask(v: &[u8], s: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), s).unwrap()
}

fn grad(t: &Tensor) -> Vec<f32> {
    t.grad().expect("has a gradient").to_vec_f32().unwrap()
}

#[test]
fn gradcheck_index_select_and_gather() {
    let x = uniform(&[4, 3, 2], -1.0, 1.0, 1);
    check_gradients(&[x.clone(), ids(&[3, 0, 3, 1], &[4])], |t| t[0].try_index_select(0, &t[1])).unwrap();
    check_gradients(&[x.clone(), ids(&[2, 2], &[2])], |t| t[0].try_index_select(-2, &t[1])).unwrap();
    // A strided input.
    check_gradients(&[x.clone(), ids(&[1, 0, 1], &[3])], |t| t[0].try_transpose(0, 2)?.try_index_select(0, &t[1]))
        .unwrap();
    let g = ids(&[0, 2, 2, 1, 0, 0, 1, 1, 2, 0, 1, 2], &[3, 2, 2]);
    check_gradients(&[x.clone(), g.clone()], |t| t[0].try_gather(1, &t[1])).unwrap();
    let g0 = ids(&[3, 0, 0, 1, 3, 3], &[2, 3, 1]);
    check_gradients(&[x.clone(), g0], |t| t[0].try_gather(0, &t[1])).unwrap();
    let gl = ids(&[1, 1, 0, 1, 0, 0], &[2, 3, 1]);
    check_gradients(&[x, gl], |t| t[0].try_gather(-1, &t[1])).unwrap();
}

#[test]
fn gradcheck_embedding() {
    let w = uniform(&[5, 3], -1.0, 1.0, 2);
    let i = ids(&[4, 0, 4, 2, 1, 4], &[2, 3]);
    check_gradients(&[i.clone(), w.clone()], |t| t[0].try_embedding(&t[1], None)).unwrap();
    check_gradients(&[ids(&[0, 3, 3], &[3]), w.clone()], |t| t[0].try_embedding(&t[1], Some(-1))).unwrap();
    // With a padding row, every other row's gradient is the (finite-difference checked) one
    // above, and the padding row's is zero although the row is used.
    let grads = |p: Option<i64>| {
        let wt = Tensor::from_array(w.clone()).requires_grad_(true);
        let out = Tensor::from_array(i.clone()).embedding(&wt, p);
        out.backward_with(uniform(out.shape(), -1.0, 1.0, 9)).unwrap();
        grad(&wt)
    };
    let (plain, padded) = (grads(None), grads(Some(4)));
    assert_eq!(&padded[..12], &plain[..12]);
    assert_eq!(&padded[12..], &[0.0; 3]);
    assert!(plain[12..].iter().all(|&v| v != 0.0));
}

#[test]
fn embedding_padding_row_gets_zero_gradient() {
    let w =
        Tensor::from_array(Array::from_vec((0..8).map(|v| v as f32).collect(), &[4, 2]).unwrap()).requires_grad_(true);
    let i = Tensor::from_array(ids(&[1, 3, 1, 0], &[4]));
    let e = i.embedding(&w, Some(1));
    // The padding row is looked up normally.
    assert_eq!(e.to_vec_f32().unwrap(), vec![2., 3., 6., 7., 2., 3., 0., 1.]);
    e.backward_with(Array::from_vec((1..=8).map(|v| v as f32).collect(), &[4, 2]).unwrap()).unwrap();
    assert_eq!(grad(&w), vec![7., 8., 0., 0., 0., 0., 3., 4.]);
    // Without padding the repeated id accumulates.
    let w2 = Tensor::from_array(w.data()).requires_grad_(true);
    i.embedding(&w2, None).backward_with(Array::ones(&[4, 2])).unwrap();
    assert_eq!(grad(&w2), vec![1., 1., 2., 2., 0., 0., 1., 1.]);
}

#[test]
fn hand_computed_selection_gradients() {
    let x = Tensor::from_array(uniform(&[3, 2], -1.0, 1.0, 3)).requires_grad_(true);
    let i = Tensor::from_array(ids(&[2, 0, 2], &[3]));
    x.index_select(0, &i).backward_with(Array::from_vec(vec![1., 2., 3., 4., 5., 6.], &[3, 2]).unwrap()).unwrap();
    assert_eq!(grad(&x), vec![3., 4., 0., 0., 6., 8.]);
    let x = Tensor::from_array(uniform(&[2, 3], -1.0, 1.0, 4)).requires_grad_(true);
    let i = Tensor::from_array(ids(&[2, 2, 0, 1], &[2, 2]));
    x.gather(1, &i).backward_with(Array::from_vec(vec![1., 2., 3., 4.], &[2, 2]).unwrap()).unwrap();
    assert_eq!(grad(&x), vec![0., 0., 3., 3., 4., 0.]);
}

#[test]
fn gradcheck_masked_fill_and_where() {
    let x = uniform(&[2, 3, 4], -1.0, 1.0, 5);
    let m_same = mask(&(0..24).map(|i| (i % 3 == 0) as u8).collect::<Vec<_>>(), &[2, 3, 4]);
    let m_row = mask(&[1, 0, 0, 1], &[4]);
    let m_col = mask(&[0, 1, 0], &[3, 1]);
    for m in [m_same.clone(), m_row.clone(), m_col.clone(), mask(&[1], &[])] {
        check_gradients(&[x.clone(), m.clone()], |t| t[0].try_masked_fill(&t[1], 2.5)).unwrap();
    }
    // A mask larger than the input: the input's gradient is summed over the broadcast dims.
    let small = uniform(&[4], -1.0, 1.0, 6);
    check_gradients(&[small.clone(), m_same.clone()], |t| t[0].try_masked_fill(&t[1], -1.0)).unwrap();
    // where: every combination of broadcasting.
    let y = uniform(&[3, 1], -1.0, 1.0, 7);
    check_gradients(&[m_same.clone(), x.clone(), y.clone()], |t| Tensor::try_where_cond(&t[0], &t[1], &t[2])).unwrap();
    check_gradients(&[m_row.clone(), y.clone(), small.clone()], |t| Tensor::try_where_cond(&t[0], &t[1], &t[2]))
        .unwrap();
    check_gradients(&[m_col, Array::scalar(0.3), x.clone()], |t| Tensor::try_where_cond(&t[0], &t[1], &t[2])).unwrap();
    check_gradients(&[m_row, x.clone(), x], |t| Tensor::try_where_cond(&t[0], &t[1], &t[2])).unwrap();
}

#[test]
fn hand_computed_masked_gradients() {
    let x = Tensor::from_array(Array::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap()).requires_grad_(true);
    let m = Tensor::from_array(mask(&[1, 0, 1], &[3]));
    let y = x.masked_fill(&m, f32::NEG_INFINITY);
    assert_eq!(
        y.to_vec_f32().unwrap(),
        vec![f32::NEG_INFINITY, 2., f32::NEG_INFINITY, f32::NEG_INFINITY, 5., f32::NEG_INFINITY]
    );
    y.backward_with(Array::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap()).unwrap();
    assert_eq!(grad(&x), vec![0., 2., 0., 0., 5., 0.]);
    // where with a [2, 1] input and a [3] other: their gradients are summed back.
    let c = Tensor::from_array(mask(&[1, 0, 1], &[3]));
    let a = Tensor::from_array(Array::from_vec(vec![1., 2.], &[2, 1]).unwrap()).requires_grad_(true);
    let b = Tensor::from_array(Array::from_vec(vec![10., 20., 30.], &[3]).unwrap()).requires_grad_(true);
    let r = Tensor::where_cond(&c, &a, &b);
    assert_eq!(r.to_vec_f32().unwrap(), vec![1., 20., 1., 2., 20., 2.]);
    r.backward_with(Array::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap()).unwrap();
    assert_eq!(grad(&a), vec![1. + 3., 4. + 6.]);
    assert_eq!(grad(&b), vec![0., 2. + 5., 0.]);
}

#[test]
fn index_and_mask_inputs_are_constants() {
    let x = Tensor::from_array(uniform(&[3, 2], -1.0, 1.0, 8)).requires_grad_(true);
    let i = Tensor::from_array(ids(&[1], &[1]));
    let y = x.index_select(0, &i);
    assert_eq!(y.grad_fn_name(), Some("index_select"));
    assert!(!i.requires_grad());
    assert!(i.try_requires_grad_(true).is_err(), "an i64 tensor cannot require grad");
}

#[test]
fn indexing_errors_name_op_index_and_size() {
    let x = Tensor::zeros(&[3, 4]);
    let e = x.try_index_select(1, &Tensor::from_array(ids(&[0, 4], &[2]))).unwrap_err().to_string();
    assert!(e.starts_with("index_select:") && e.contains("index 4") && e.contains("size 4"), "{e}");
    let e = x.try_gather(0, &Tensor::from_array(ids(&[0, -3], &[1, 2]))).unwrap_err().to_string();
    assert!(e.starts_with("gather:") && e.contains("index -3") && e.contains("size 3"), "{e}");
    let e = Tensor::from_array(ids(&[9], &[1])).try_embedding(&x, None).unwrap_err().to_string();
    assert!(e.starts_with("embedding:") && e.contains("index 9") && e.contains("size 3"), "{e}");
    let e = Tensor::from_array(ids(&[0], &[1])).try_embedding(&x, Some(3)).unwrap_err().to_string();
    assert!(e.starts_with("embedding:") && e.contains("padding_idx 3"), "{e}");
    let e = Tensor::from_array(ids(&[0], &[1])).try_embedding(&Tensor::zeros(&[3]), None).unwrap_err().to_string();
    assert!(e.starts_with("embedding:") && e.contains("2-d"), "{e}");
    let e = x.try_masked_fill(&Tensor::from_array(mask(&[1, 0, 1], &[3])), 0.0).unwrap_err().to_string();
    assert!(e.starts_with("masked_fill:"), "{e}");
    let e = Tensor::try_where_cond(&Tensor::from_array(mask(&[1], &[1])), &x, &Tensor::zeros(&[5]))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("where:") && e.contains("[5]"), "{e}");
}
