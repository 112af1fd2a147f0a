//! `pad` against a direct index mapping: every rank up to 4, pads of some or all dims, negative
//! pads (crops), strided inputs, integer dtypes, empty results, and the errors.

use kiln_tensor::Array;

mod common;
use common::vals;

/// The padded values by definition: output position `o` reads input position `o − before` in
/// every dim, or is `value` when that falls outside.
fn reference(x: &[f32], shape: &[usize], pads: &[isize], value: f32) -> (Vec<usize>, Vec<f32>) {
    let r = shape.len();
    let mut before = vec![0isize; r];
    let mut out_shape: Vec<usize> = shape.to_vec();
    for (i, p) in pads.chunks(2).enumerate() {
        let d = r - 1 - i;
        before[d] = p[0];
        out_shape[d] = (shape[d] as isize + p[0] + p[1]) as usize;
    }
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    for flat in 0..n {
        let (mut rem, mut src, mut inside) = (flat, 0usize, true);
        let mut idx = vec![0usize; r];
        for d in (0..r).rev() {
            idx[d] = rem % out_shape[d];
            rem /= out_shape[d];
        }
        for d in 0..r {
            let i = idx[d] as isize - before[d];
            inside &= i >= 0 && (i as usize) < shape[d];
            src = src * shape[d] + i.max(0) as usize;
        }
        out.push(if inside { x[src] } else { value });
    }
    (out_shape, out)
}

#[test]
fn pad_matches_the_index_mapping() {
    let cases: &[(&[usize], &[isize])] = &[
        (&[5], &[2, 3]),
        (&[5], &[-2, 1]),
        (&[5], &[0, -5]),
        (&[3, 4], &[1, 0]),
        (&[3, 4], &[0, 1, 0, 1]),
        (&[3, 4], &[-1, 2, 2, -1]),
        (&[2, 3, 4], &[1, 1, 1, 1, 1, 1]),
        (&[2, 3, 4], &[0, 0, -1, -1]),
        (&[2, 3, 5, 4], &[0, 1, 0, 1]),
        (&[2, 3, 5, 4], &[1, 2, 1, 2]),
        (&[2, 3, 5, 4], &[-1, -1, 2, 0, 0, 1, 1, 0]),
        (&[1, 1, 1], &[]),
        (&[0, 3], &[1, 1, 2, 0]),
    ];
    for (i, &(shape, pads)) in cases.iter().enumerate() {
        let xv = vals(shape.iter().product(), i as u64 + 1);
        let x = Array::from_vec(xv.clone(), shape).unwrap();
        for value in [0.0, -2.5] {
            let (want_shape, want) = reference(&xv, shape, pads, value);
            let got = x.pad(pads, value).unwrap();
            assert_eq!(got.shape(), want_shape.as_slice(), "case {i}");
            assert_eq!(got.to_vec_f32().unwrap(), want, "case {i} value {value}");
        }
    }
}

#[test]
fn pad_reads_strided_views_and_keeps_the_dtype() {
    // A transposed (non-contiguous) input.
    let base = Array::from_vec(vals(12, 9), &[4, 3]).unwrap();
    let x = base.transpose(0, 1).unwrap();
    let xv = x.contiguous().to_vec_f32().unwrap();
    let (shape, want) = reference(&xv, &[3, 4], &[1, -1, 0, 2], 7.0);
    let got = x.pad(&[1, -1, 0, 2], 7.0).unwrap();
    assert_eq!(got.shape(), shape.as_slice());
    assert_eq!(got.to_vec_f32().unwrap(), want);
    // Integers: the value is converted like `as`.
    let xi = Array::from_vec(vec![1i64, 2, 3], &[3]).unwrap();
    let yi = xi.pad(&[1, 2], 4.0).unwrap();
    assert_eq!(yi.to_vec::<i64>().unwrap(), vec![4, 1, 2, 3, 4, 4]);
    let xu = Array::from_vec(vec![1u8, 0], &[1, 2]).unwrap();
    assert_eq!(xu.pad(&[0, 0, 1, 0], 1.0).unwrap().to_vec::<u8>().unwrap(), vec![1, 1, 1, 0]);
}

#[test]
fn pad_errors_name_the_op_and_shapes() {
    let x = Array::from_vec(vals(6, 3), &[2, 3]).unwrap();
    let err = |pads: &[isize]| x.pad(pads, 0.0).unwrap_err().to_string();
    assert!(err(&[1]).contains("divisible by 2"), "{}", err(&[1]));
    let e = err(&[1, 1, 1, 1, 1, 1]);
    assert!(e.contains("pad") && e.contains("[2, 3]"), "{e}");
    let e = err(&[-2, -2]);
    assert!(e.contains("negative size") && e.contains("dim 1"), "{e}");
    // Cropping more than the dim holds, even when the other side pads it back.
    assert!(err(&[-4, 4]).contains("negative size"));
}
