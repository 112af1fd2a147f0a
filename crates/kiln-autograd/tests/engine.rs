//! The backward engine: accumulation, no_grad, detach, freeing saved tensors.

use kiln_autograd::gradcheck::uniform;
use kiln_autograd::{no_grad, Tensor};

#[test]
fn a_tensor_used_twice_accumulates_both_paths() {
    let x = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3]).unwrap().requires_grad_(true);
    // y = x*x + x  =>  dy/dx = 2x + 1
    let y = (&(&x * &x) + &x).sum_all();
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![3.0, -3.0, 7.0]);
    // A second backward through a fresh graph accumulates into .grad.
    (&x * 2.0).sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![5.0, -1.0, 9.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn no_grad_records_nothing_and_detach_cuts_the_graph() {
    let w = Tensor::ones(&[4]).requires_grad_(true);
    let y = no_grad(|| &w * &w);
    assert!(!y.requires_grad() && y.is_leaf());
    let d = (&w * 3.0).detach();
    assert!(!d.requires_grad());
    let z = (&d * &w).sum_all();
    z.backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec_f32().unwrap(), vec![3.0; 4]);
}

#[test]
fn backward_twice_is_an_error_not_a_wrong_answer() {
    let x = Tensor::ones(&[2]).requires_grad_(true);
    let y = (&x * &x).sum_all();
    y.backward().unwrap();
    let err = y.backward().unwrap_err().to_string();
    assert!(err.contains("second time"), "{err}");
}

#[test]
fn saved_tensors_are_released_by_backward() {
    let x = Tensor::from_array(uniform(&[1000], -1.0, 1.0, 1)).requires_grad_(true);
    let h = x.exp();
    let saved = h.data(); // exp saves its output
    let y = h.sum_all();
    drop(h);
    // Held by `saved`, the graph's exp node and nothing else of ours.
    // Shared by `saved` and exp's backward closure (h itself is dropped).
    assert_eq!(saved.storage_refs(), 2);
    y.backward().unwrap();
    assert_eq!(saved.storage_refs(), 1, "backward must drop exp's saved output");
}

#[test]
fn deep_chains_drop_without_overflowing_the_stack() {
    let x = Tensor::ones(&[2]).requires_grad_(true);
    let mut h = x.clone();
    for _ in 0..200_000 {
        h = h.add_scalar(1.0);
    }
    drop(h);
}

#[test]
fn errors_name_the_op_and_shapes() {
    let a = Tensor::zeros(&[2, 3]);
    let b = Tensor::zeros(&[4]);
    let e = a.try_add(&b).unwrap_err().to_string();
    assert!(e.starts_with("add:") && e.contains("[2, 3]") && e.contains("[4]"), "{e}");
}
