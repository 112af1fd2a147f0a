//! Shape kernels: views share storage, cat/stack/narrow_backward/split values by hand.

use kiln_tensor::Array;

fn arr(v: &[f32], s: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), s).unwrap()
}

fn iota(s: &[usize]) -> Array {
    let n: usize = s.iter().product();
    Array::from_vec((0..n).map(|i| i as f32).collect(), s).unwrap()
}

#[test]
fn views_share_storage_and_do_not_copy() {
    let x = iota(&[2, 3, 4]);
    for v in [
        x.reshape(&[6, -1]).unwrap(),
        x.transpose(0, 2).unwrap(),
        x.permute(&[2, 0, 1]).unwrap(),
        x.narrow(1, 1, 2).unwrap(),
        x.unsqueeze(-1).unwrap(),
        x.flatten(1, 2).unwrap(),
        x.narrow(0, 0, 1).unwrap().squeeze(0).unwrap(),
        x.narrow(0, 0, 1).unwrap().expand(&[5, -1, -1]).unwrap(),
        x.t().unwrap(),
    ] {
        assert!(v.shares_storage(&x), "{v:?}");
    }
    let parts = x.chunk(2, 2).unwrap();
    assert!(parts.iter().all(|p| p.shares_storage(&x)));
    // A reshape that cannot be a view copies.
    assert!(!x.transpose(0, 2).unwrap().reshape(&[-1]).unwrap().shares_storage(&x));
}

#[test]
fn cat_values_along_each_dim() {
    let a = arr(&[1., 2., 3., 4.], &[2, 2]);
    let b = arr(&[5., 6.], &[1, 2]);
    assert_eq!(Array::cat(&[&a, &b], 0).unwrap().to_vec_f32().unwrap(), vec![1., 2., 3., 4., 5., 6.]);
    let c = arr(&[7., 8.], &[2, 1]);
    let r = Array::cat(&[&a, &c, &a], -1).unwrap();
    assert_eq!(r.shape(), &[2, 5]);
    assert_eq!(r.to_vec_f32().unwrap(), vec![1., 2., 7., 1., 2., 3., 4., 8., 3., 4.]);
}

#[test]
fn cat_of_strided_views_matches_contiguous_cat() {
    // [3, 2] transposed to [2, 3] (values [[0, 2, 4], [1, 3, 5]]), catted with a contiguous [2, 1].
    let t = iota(&[3, 2]).transpose(0, 1).unwrap();
    assert!(!t.is_contiguous());
    let c = arr(&[10., 11.], &[2, 1]);
    let r = Array::cat(&[&t, &c], 1).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![0., 2., 4., 10., 1., 3., 5., 11.]);
    let r = Array::cat(&[&c, &t], 1).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![10., 0., 2., 4., 11., 1., 3., 5.]);
    // A broadcast (stride 0) input.
    let e = arr(&[9.], &[1, 1]).expand(&[2, 2]).unwrap();
    assert_eq!(Array::cat(&[&e, &c], 1).unwrap().to_vec_f32().unwrap(), vec![9., 9., 10., 9., 9., 11.]);
}

#[test]
fn cat_keeps_integer_dtypes() {
    let a = Array::from_vec(vec![1i64, 2], &[2]).unwrap();
    let b = Array::from_vec(vec![3i64], &[1]).unwrap();
    assert_eq!(Array::cat(&[&a, &b], 0).unwrap().to_vec::<i64>().unwrap(), vec![1, 2, 3]);
}

#[test]
fn stack_inserts_a_dim() {
    let a = arr(&[1., 2., 3.], &[3]);
    let b = arr(&[4., 5., 6.], &[3]);
    let s0 = Array::stack(&[&a, &b], 0).unwrap();
    assert_eq!(s0.shape(), &[2, 3]);
    assert_eq!(s0.to_vec_f32().unwrap(), vec![1., 2., 3., 4., 5., 6.]);
    let s1 = Array::stack(&[&a, &b], -1).unwrap();
    assert_eq!(s1.shape(), &[3, 2]);
    assert_eq!(s1.to_vec_f32().unwrap(), vec![1., 4., 2., 5., 3., 6.]);
    let one = Array::stack(&[&a], 1).unwrap();
    assert_eq!(one.shape(), &[3, 1]);
}

#[test]
fn narrow_backward_pads_with_zeros() {
    let g = arr(&[1., 2., 3., 4.], &[2, 2]);
    let p = g.narrow_backward(&[2, 4], 1, 1).unwrap();
    assert_eq!(p.to_vec_f32().unwrap(), vec![0., 1., 2., 0., 0., 3., 4., 0.]);
    let p = g.narrow_backward(&[3, 2], 0, 1).unwrap();
    assert_eq!(p.to_vec_f32().unwrap(), vec![0., 0., 1., 2., 3., 4.]);
    // A transposed (strided) gradient.
    let p = g.t().unwrap().narrow_backward(&[2, 3], -1, 0).unwrap();
    assert_eq!(p.to_vec_f32().unwrap(), vec![1., 3., 0., 2., 4., 0.]);
    assert!(g.narrow_backward(&[2, 2], 1, 1).is_err());
}

#[test]
fn split_and_chunk_sizes() {
    let x = iota(&[7, 2]);
    let sizes: Vec<usize> = x.split(3, 0).unwrap().iter().map(|p| p.shape()[0]).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    let sizes: Vec<usize> = x.chunk(3, 0).unwrap().iter().map(|p| p.shape()[0]).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    // 6 rows in 4 chunks: ceil(6/4) = 2 per chunk, so only 3 chunks come back (as in PyTorch).
    let sizes: Vec<usize> = iota(&[6]).chunk(4, 0).unwrap().iter().map(|p| p.numel()).collect();
    assert_eq!(sizes, vec![2, 2, 2]);
    let parts = x.split_sizes(&[1, 6], 0).unwrap();
    assert_eq!(parts[0].to_vec_f32().unwrap(), vec![0., 1.]);
    assert_eq!(parts[1].shape(), &[6, 2]);
    assert!(x.split_sizes(&[1, 5], 0).is_err());
}

#[test]
fn large_cat_is_correct() {
    // Large enough that nothing is special-cased by size; strided on one input.
    let a = iota(&[300, 200]);
    let b = iota(&[200, 300]).t().unwrap();
    let r = Array::cat(&[&a, &b], 0).unwrap();
    assert_eq!(r.shape(), &[600, 200]);
    let v = r.to_vec_f32().unwrap();
    assert_eq!(v[299 * 200 + 199], (299 * 200 + 199) as f32);
    // Row 300 + i, column j is b[i][j] = (j * 300 + i).
    assert_eq!(v[(300 + 7) * 200 + 11], (11 * 300 + 7) as f32);
}

#[test]
fn shape_errors_name_the_op_and_shapes() {
    let a = iota(&[2, 3]);
    let b = iota(&[3, 3]);
    let e = Array::cat(&[&a, &b], 1).unwrap_err().to_string();
    assert!(e.starts_with("cat:") && e.contains("[3, 3]") && e.contains("dim 0"), "{e}");
    let e = Array::cat(&[], 0).unwrap_err().to_string();
    assert!(e.starts_with("cat:"), "{e}");
    let e = Array::cat(&[&a, &iota(&[6])], 0).unwrap_err().to_string();
    assert!(e.contains("same number of dims"), "{e}");
    let e = Array::cat(&[&a, &Array::from_vec(vec![1i64; 6], &[2, 3]).unwrap()], 0).unwrap_err().to_string();
    assert!(e.contains("i64"), "{e}");
    let e = Array::stack(&[&a, &b], 0).unwrap_err().to_string();
    assert!(e.starts_with("stack:") && e.contains("[2, 3]") && e.contains("[3, 3]"), "{e}");
    let e = Array::stack(&[&a], 3).unwrap_err().to_string();
    assert!(e.starts_with("stack:") && e.contains("dim 3"), "{e}");
    let e = a.narrow(1, 2, 2).unwrap_err().to_string();
    assert!(e.starts_with("narrow:"), "{e}");
}
