use kiln_tensor::Array;

fn arr(v: &[f32], s: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), s).unwrap()
}

#[test]
fn broadcast_add_matches_hand_computation() {
    let a = arr(&[1., 2., 3., 4., 5., 6.], &[3, 1, 2]);
    let b = arr(&[10., 20.], &[2, 1]);
    let c = a.add(&b).unwrap();
    assert_eq!(c.shape(), &[3, 2, 2]);
    assert_eq!(c.to_vec_f32().unwrap(), vec![11., 12., 21., 22., 13., 14., 23., 24., 15., 16., 25., 26.]);
    let s = c.sum_to(&[3, 1, 2]).unwrap();
    assert_eq!(s.to_vec_f32().unwrap(), vec![32., 34., 36., 38., 40., 42.]);
    let s = c.sum_to(&[2, 1]).unwrap();
    assert_eq!(s.to_vec_f32().unwrap(), vec![11. + 12. + 13. + 14. + 15. + 16., 21. + 22. + 23. + 24. + 25. + 26.]);
}
