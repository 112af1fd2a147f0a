//! Shape ops: finite-difference checks of every backward, hand-computed gradients, views.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::{Array, Tensor};

fn leaf(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_array(uniform(shape, -1.0, 1.0, seed)).requires_grad_(true)
}

fn grad(t: &Tensor) -> Vec<f32> {
    t.grad().expect("has a gradient").to_vec_f32().unwrap()
}

#[test]
fn gradcheck_views() {
    let x = uniform(&[2, 3, 4], -1.0, 1.0, 1);
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_reshape(&[4, -1])).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_view(&[6, 4])).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_transpose(0, -1)).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_transpose(1, 1)).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_t()).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_permute(&[2, 0, 1])).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_narrow(1, 1, 2)).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_narrow(-1, -3, 2)).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_unsqueeze(-1)).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_flatten(0, 1)).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_flatten(0, -1)).unwrap();
    // A transposed input makes flatten and reshape copy; the gradient is the same.
    check_gradients(std::slice::from_ref(&x), |t| t[0].try_transpose(0, 2)?.try_flatten(1, 2)).unwrap();
    check_gradients(std::slice::from_ref(&x), |t| Ok(t[0].try_transpose(0, 1)?.contiguous())).unwrap();
    let y = uniform(&[3, 1, 4], -1.0, 1.0, 2);
    check_gradients(std::slice::from_ref(&y), |t| t[0].try_squeeze(1)).unwrap();
    check_gradients(std::slice::from_ref(&y), |t| t[0].try_squeeze(0)).unwrap();
    check_gradients(std::slice::from_ref(&y), |t| t[0].try_squeeze_dims(&[0, -2])).unwrap();
    check_gradients(std::slice::from_ref(&y), |t| t[0].try_expand(&[2, 3, 5, -1])).unwrap();
    check_gradients(&[y], |t| t[0].try_broadcast_to(&[3, 2, 4])).unwrap();
}

#[test]
fn gradcheck_cat_stack_split() {
    let a = uniform(&[2, 1, 3], -1.0, 1.0, 3);
    let b = uniform(&[2, 4, 3], -1.0, 1.0, 4);
    let c = uniform(&[2, 2, 3], -1.0, 1.0, 5);
    check_gradients(&[a.clone(), b.clone(), c.clone()], |t| Tensor::try_cat(&[&t[0], &t[1], &t[2]], 1)).unwrap();
    check_gradients(&[b.clone(), a.clone()], |t| Tensor::try_cat(&[&t[0], &t[1], &t[0]], -2)).unwrap();
    check_gradients(&[c.clone(), c.clone()], |t| Tensor::try_cat(&[&t[0], &t[1]], 0)).unwrap();
    check_gradients(&[a.clone(), a.clone(), a.clone()], |t| Tensor::try_stack(&[&t[0], &t[1], &t[2]], 1)).unwrap();
    check_gradients(std::slice::from_ref(&a), |t| Tensor::try_stack(&[&t[0]], -1)).unwrap();
    // split / chunk, recombined with different weights per part.
    check_gradients(std::slice::from_ref(&b), |t| {
        let p = t[0].try_chunk(3, 1)?;
        Tensor::try_cat(&[&p[1], &p[0].mul_scalar(2.0)], 1)
    })
    .unwrap();
    check_gradients(&[b], |t| {
        let p = t[0].try_split_sizes(&[3, 1], 1)?;
        p[0].try_mul(&p[1])
    })
    .unwrap();
}

#[test]
fn view_forward_shares_storage_and_backward_is_the_inverse_view() {
    let x = leaf(&[2, 3, 4], 7);
    let xd = x.data();
    for y in [
        x.reshape(&[-1]),
        x.view(&[6, 4]),
        x.transpose(0, 1),
        x.t(),
        x.permute(&[1, 2, 0]),
        x.narrow(2, 1, 2),
        x.unsqueeze(0),
        x.flatten(1, 2),
        x.unsqueeze(1).squeeze(1),
        x.unsqueeze(0).expand(&[3, -1, -1, -1]),
    ] {
        assert!(y.data().shares_storage(&xd), "{y:?}");
    }
    for p in x.chunk(2, 1) {
        assert!(p.data().shares_storage(&xd));
    }
    // Contiguous of a contiguous tensor is the tensor itself.
    assert!(x.contiguous().same(&x));
    assert!(!x.t().is_contiguous() && x.t().contiguous().is_contiguous());
    // A view cannot be taken of a transposed tensor.
    let e = x.transpose(0, 2).try_view(&[-1]).unwrap_err().to_string();
    assert!(e.starts_with("view:") && e.contains("[4, 3, 2]"), "{e}");
}

#[test]
fn hand_computed_gradients() {
    // narrow: the gradient is the upstream gradient written into zeros.
    let x = leaf(&[2, 4], 1);
    x.narrow(1, 1, 2).backward_with(Array::from_vec(vec![1., 2., 3., 4.], &[2, 2]).unwrap()).unwrap();
    assert_eq!(grad(&x), vec![0., 1., 2., 0., 0., 3., 4., 0.]);
    // expand: summed over the expanded dims. [2, 1] -> [3, 2, 2].
    let x = leaf(&[2, 1], 2);
    x.expand(&[3, -1, 2])
        .backward_with(Array::from_vec((1..=12).map(|v| v as f32).collect(), &[3, 2, 2]).unwrap())
        .unwrap();
    // Row 0 gets 1+2 + 5+6 + 9+10 = 33, row 1 gets 3+4 + 7+8 + 11+12 = 45.
    assert_eq!(grad(&x), vec![33., 45.]);
    // permute: the gradient is permuted back.
    let x = leaf(&[2, 3], 3);
    x.permute(&[1, 0]).backward_with(Array::from_vec(vec![1., 2., 3., 4., 5., 6.], &[3, 2]).unwrap()).unwrap();
    assert_eq!(grad(&x), vec![1., 3., 5., 2., 4., 6.]);
    // cat: each input gets its slice; an input used twice gets both slices.
    let a = leaf(&[1, 2], 4);
    let b = leaf(&[2, 2], 5);
    Tensor::cat(&[&a, &b, &a], 0)
        .backward_with(Array::from_vec((1..=8).map(|v| v as f32).collect(), &[4, 2]).unwrap())
        .unwrap();
    assert_eq!(grad(&a), vec![1. + 7., 2. + 8.]);
    assert_eq!(grad(&b), vec![3., 4., 5., 6.]);
    // stack along the last dim: input i gets column i.
    let a = leaf(&[2], 6);
    let b = leaf(&[2], 7);
    Tensor::stack(&[&a, &b], -1).backward_with(Array::from_vec(vec![1., 2., 3., 4.], &[2, 2]).unwrap()).unwrap();
    assert_eq!(grad(&a), vec![1., 3.]);
    assert_eq!(grad(&b), vec![2., 4.]);
}

#[test]
fn squeeze_and_unsqueeze_shapes() {
    let x = leaf(&[3, 1, 2], 8);
    assert_eq!(x.squeeze(1).shape(), &[3, 2]);
    assert_eq!(x.squeeze(-1).shape(), &[3, 1, 2]);
    assert!(x.squeeze(0).same(&x), "squeezing a non-1 dim returns the input");
    assert_eq!(x.unsqueeze(-1).shape(), &[3, 1, 2, 1]);
    assert_eq!(x.unsqueeze(3).shape(), &[3, 1, 2, 1]);
    assert_eq!(x.unsqueeze(-4).shape(), &[1, 3, 1, 2]);
    assert_eq!(x.squeeze_all().shape(), &[3, 2]);
    assert_eq!(x.flatten(0, -1).shape(), &[6]);
    assert_eq!(Tensor::scalar(1.0).flatten(0, -1).shape(), &[1]);
    assert_eq!(x.split(2, 0).len(), 2);
    let s = x.split_sizes(&[1, 2], 0);
    assert_eq!((s[0].shape(), s[1].shape()), (&[1, 1, 2][..], &[2, 1, 2][..]));
}

#[test]
fn shape_errors_name_the_op() {
    let x = Tensor::zeros(&[2, 3]);
    let cases: Vec<(&str, kiln_autograd::Result<Tensor>)> = vec![
        ("reshape:", x.try_reshape(&[4, -1])),
        ("reshape:", x.try_reshape(&[-1, -1])),
        ("transpose:", x.try_transpose(0, 2)),
        ("permute:", x.try_permute(&[0, 0])),
        ("narrow:", x.try_narrow(1, 2, 2)),
        ("narrow:", x.try_narrow(1, -4, 1)),
        ("squeeze:", x.try_squeeze(2)),
        ("unsqueeze:", x.try_unsqueeze(3)),
        ("expand:", x.try_expand(&[3, 3])),
        ("expand:", x.try_expand(&[3])),
        ("flatten:", x.try_flatten(1, 0)),
        ("t:", Tensor::zeros(&[3]).try_t()),
        ("cat:", Tensor::try_cat(&[&x, &Tensor::zeros(&[3, 3])], 1)),
        ("cat:", Tensor::try_cat(&[], 0)),
        ("stack:", Tensor::try_stack(&[&x, &Tensor::zeros(&[3, 2])], 0)),
    ];
    for (op, r) in cases {
        let e = r.unwrap_err().to_string();
        assert!(e.starts_with(op), "{op} {e}");
    }
    assert!(x.try_split(0, 1).unwrap_err().to_string().starts_with("split:"));
    assert!(x.try_chunk(0, 1).unwrap_err().to_string().starts_with("chunk:"));
}
