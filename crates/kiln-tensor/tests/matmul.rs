//! GEMM, matmul and linear against a naive triple loop in f64.

use kiln_tensor::ops::gemm::{gemm, set_kernel, Kernel, MatMut, MatRef, Par};
use kiln_tensor::ops::matmul::batched_matmul;
use kiln_tensor::Array;

mod common;
use common::vals;

fn arr(shape: &[usize], seed: u64) -> Array {
    Array::from_vec(vals(shape.iter().product(), seed), shape).unwrap()
}

/// Reference element (i, j) of a strided matrix.
fn at(d: &[f32], off: usize, rs: usize, cs: usize, i: usize, j: usize) -> f64 {
    d[off + i * rs + j * cs] as f64
}

fn assert_close(got: &[f32], want: &[f64], k: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol = 1e-5 * (k as f64).sqrt().max(1.0) * 4.0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= tol * (1.0 + w.abs()), "{what}: element {i}: got {g}, want {w}");
    }
}

/// Reference matmul with PyTorch semantics over row-major data (batch broadcasting, 1-d).
fn ref_matmul(a: &[f32], sa: &[usize], b: &[f32], sb: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let a_shape: Vec<usize> = if sa.len() == 1 { vec![1, sa[0]] } else { sa.to_vec() };
    let b_shape: Vec<usize> = if sb.len() == 1 { vec![sb[0], 1] } else { sb.to_vec() };
    let (ra, rb) = (a_shape.len(), b_shape.len());
    let (n, k, m) = (a_shape[ra - 2], a_shape[ra - 1], b_shape[rb - 1]);
    let (ba, bb) = (&a_shape[..ra - 2], &b_shape[..rb - 2]);
    let r = ba.len().max(bb.len());
    let pad = |x: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, r - x.len()).chain(x.iter().copied()).collect() };
    let (pa, pb) = (pad(ba), pad(bb));
    let batch: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
    let nb: usize = batch.iter().product();
    let mut out = Vec::new();
    for bi in 0..nb {
        // Unravel bi over batch, then find each operand's batch index.
        let mut idx = vec![0; r];
        let mut t = bi;
        for d in (0..r).rev() {
            idx[d] = t % batch[d];
            t /= batch[d];
        }
        let lin = |p: &[usize]| idx.iter().zip(p).fold(0, |acc, (&i, &s)| acc * s + if s == 1 { 0 } else { i });
        let (oa, ob) = (lin(&pa) * n * k, lin(&pb) * k * m);
        for i in 0..n {
            for j in 0..m {
                out.push((0..k).map(|p| a[oa + i * k + p] as f64 * b[ob + p * m + j] as f64).sum());
            }
        }
    }
    let mut shape = batch;
    if sa.len() > 1 {
        shape.push(n);
    }
    if sb.len() > 1 {
        shape.push(m);
    }
    (out, shape)
}

fn check_matmul(a: &Array, b: &Array) {
    let (want, shape) = ref_matmul(&a.to_vec_f32().unwrap(), a.shape(), &b.to_vec_f32().unwrap(), b.shape());
    let c = a.matmul(b).unwrap();
    assert_eq!(c.shape(), shape.as_slice(), "{:?} @ {:?}", a.shape(), b.shape());
    let k = a.shape()[a.rank() - 1];
    assert_close(&c.to_vec_f32().unwrap(), &want, k, &format!("{:?} @ {:?}", a.shape(), b.shape()));
}

/// Every kernel, odd sizes, strided A/B/C (transposed, gapped rows, stride-0 broadcast),
/// alpha and accumulate, through the one `gemm` entry point.
#[test]
fn gemm_matches_naive_for_every_kernel_and_layout() {
    let sizes = [1usize, 3, 17, 65];
    // Beyond the odd sizes: the thread split of kiln's kernel by rows and by columns, and the
    // `gemm` crate's sizes.
    let extra = [
        (100usize, 130usize, 70usize),
        (33, 1, 129),
        (1, 200, 40),
        (130, 97, 5),
        (9, 700, 90),
        (300, 40, 50),
        (300, 260, 220),
    ];
    let mut shapes: Vec<(usize, usize, usize)> = vec![];
    for &m in &sizes {
        for &n in &sizes {
            for &k in &sizes {
                shapes.push((m, n, k));
            }
        }
    }
    shapes.extend(extra);
    for kern in [Kernel::Auto, Kernel::GemmCrate, Kernel::MatrixMultiply, Kernel::Small] {
        set_kernel(kern);
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            // layout variants: 0 = row-major, 1 = transposed storage, 2 = gapped rows/cols,
            // 3 = broadcast, 4 = A row-major with B column-major (`x @ Wᵀ`)
            for lay in 0..5 {
                let seed = (si * 7 + lay) as u64;
                let (ad, aoff, ars, acs) = match lay {
                    0 => (vals(m * k, seed), 0, k, 1),
                    1 => (vals(m * k, seed), 0, 1, m),
                    2 => (vals(3 + m * (k + 2), seed), 3, k + 2, 1),
                    4 => (vals(m * k, seed), 0, k, 1),
                    _ => (vals(k, seed), 0, 0, 1), // every row the same
                };
                let (bd, boff, brs, bcs) = match lay {
                    0 => (vals(k * n, seed + 1), 0, n, 1),
                    1 | 4 => (vals(k * n, seed + 1), 0, 1, k),
                    2 => (vals(1 + 2 * k * n, seed + 1), 1, 2 * n, 2),
                    _ => (vals(k, seed + 1), 0, 1, 0), // every column the same
                };
                for (alpha, acc) in [(1.0f32, false), (-0.5, true)] {
                    let crs = if lay == 2 { n + 3 } else { n };
                    let mut c = vals(m * crs + 2, seed + 2);
                    let c0 = c.clone();
                    gemm(
                        MatMut::new(&mut c, 2, m, n, crs, 1),
                        MatRef::new(&ad, aoff, m, k, ars, acs),
                        MatRef::new(&bd, boff, k, n, brs, bcs),
                        alpha,
                        acc,
                        Par::Auto,
                    );
                    let mut got = vec![];
                    let mut want = vec![];
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 =
                                (0..k).map(|p| at(&ad, aoff, ars, acs, i, p) * at(&bd, boff, brs, bcs, p, j)).sum();
                            let base = if acc { c0[2 + i * crs + j] as f64 } else { 0.0 };
                            want.push(base + alpha as f64 * dot);
                            got.push(c[2 + i * crs + j]);
                        }
                    }
                    assert_close(&got, &want, k, &format!("{kern:?} m={m} n={n} k={k} layout {lay} acc {acc}"));
                    // Elements outside C's view are untouched.
                    assert_eq!(&c[..2], &c0[..2]);
                    if lay == 2 && m > 0 {
                        assert_eq!(c[2 + n], c0[2 + n], "gap after row 0");
                    }
                }
            }
        }
    }
    set_kernel(Kernel::Auto);
}

#[test]
fn matmul_2d_batched_and_broadcast() {
    check_matmul(&arr(&[3, 5], 1), &arr(&[5, 2], 2));
    check_matmul(&arr(&[17, 65], 3), &arr(&[65, 3], 4));
    check_matmul(&arr(&[1, 1], 5), &arr(&[1, 1], 6));
    check_matmul(&arr(&[4, 3, 5], 7), &arr(&[4, 5, 2], 8));
    check_matmul(&arr(&[2, 3, 4, 5], 9), &arr(&[2, 3, 5, 6], 10));
    // broadcast batch either way, a 2-d operand against a batch, rank mismatch
    check_matmul(&arr(&[2, 1, 3, 5], 11), &arr(&[1, 4, 5, 2], 12));
    check_matmul(&arr(&[3, 5], 13), &arr(&[4, 5, 2], 14));
    check_matmul(&arr(&[6, 3, 5], 15), &arr(&[5, 2], 16));
    check_matmul(&arr(&[2, 6, 3, 5], 17), &arr(&[6, 5, 2], 18));
    check_matmul(&arr(&[1, 3, 5], 19), &arr(&[4, 5, 2], 20));
    // big enough for the parallel paths (per-batch and inside the GEMM)
    check_matmul(&arr(&[8, 40, 33], 21), &arr(&[8, 33, 20], 22));
    check_matmul(&arr(&[2, 130, 100], 23), &arr(&[100, 120], 24));
    check_matmul(&arr(&[150, 130], 25), &arr(&[130, 140], 26));
}

#[test]
fn matmul_one_dim_operands() {
    check_matmul(&arr(&[5], 1), &arr(&[5], 2)); // dot -> []
    check_matmul(&arr(&[5], 3), &arr(&[5, 3], 4)); // vector @ matrix -> [3]
    check_matmul(&arr(&[4, 5], 5), &arr(&[5], 6)); // matrix @ vector -> [4]
    check_matmul(&arr(&[2, 4, 5], 7), &arr(&[5], 8)); // batch @ vector -> [2, 4]
    check_matmul(&arr(&[5], 9), &arr(&[3, 5, 2], 10)); // vector @ batch -> [3, 2]
    assert_eq!(arr(&[5], 1).matmul(&arr(&[5], 2)).unwrap().shape(), &[] as &[usize]);
}

#[test]
fn matmul_strided_operands_are_not_copied_wrong() {
    // transposed, permuted, narrowed and expanded views
    let a = arr(&[5, 3], 1).t().unwrap(); // [3, 5] column-major
    let b = arr(&[2, 5], 2).t().unwrap(); // [5, 2]
    check_matmul(&a, &b);
    let q = arr(&[2, 7, 3, 4], 3).permute(&[0, 2, 1, 3]).unwrap(); // [2, 3, 7, 4] head view
    let kt = arr(&[2, 9, 3, 4], 4).permute(&[0, 2, 3, 1]).unwrap(); // [2, 3, 4, 9]
    check_matmul(&q, &kt);
    let wide = arr(&[6, 10], 5).narrow(1, 2, 5).unwrap(); // [6, 5], rows with gaps
    check_matmul(&wide, &arr(&[5, 4], 6));
    let e = arr(&[1, 3, 5], 7).expand(&[4, 3, 5]).unwrap(); // stride-0 batch
    check_matmul(&e, &arr(&[4, 5, 2], 8));
    let col = arr(&[3, 1], 9).expand(&[3, 5]).unwrap(); // stride-0 columns
    check_matmul(&col, &arr(&[5, 4], 10));
    let big = arr(&[70, 90], 11).t().unwrap(); // [90, 70] through the gemm crate
    check_matmul(&big, &arr(&[70, 80], 12).narrow(1, 5, 60).unwrap());
}

#[test]
fn matmul_errors_name_op_shapes_and_dim() {
    let e = arr(&[8, 3], 1).matmul(&arr(&[4, 5], 2)).unwrap_err().to_string();
    assert_eq!(e, "matmul: cannot multiply [8, 3] by [4, 5]: dim 1 of lhs (3) != dim 0 of rhs (4)");
    let e = arr(&[2, 8, 3], 1).matmul(&arr(&[4], 2)).unwrap_err().to_string();
    assert!(e.contains("dim 2 of lhs (3) != dim 0 of rhs (4)"), "{e}");
    let e = arr(&[2, 3, 4], 1).matmul(&arr(&[3, 4, 2], 2)).unwrap_err().to_string();
    assert!(e.starts_with("matmul:") && e.contains("batch dims [2] and [3]"), "{e}");
    assert!(Array::scalar(1.0).matmul(&arr(&[1], 1)).is_err());
    assert!(Array::arange_i64(3).matmul(&arr(&[3], 1)).is_err());
}

#[test]
fn empty_dims() {
    let c = arr(&[3, 0], 1).matmul(&arr(&[0, 4], 2)).unwrap();
    assert_eq!(c.to_vec_f32().unwrap(), vec![0.0; 12]);
    assert_eq!(arr(&[0, 3], 1).matmul(&arr(&[3, 4], 2)).unwrap().shape(), &[0, 4]);
    assert_eq!(arr(&[2, 0, 3, 4], 1).matmul(&arr(&[4, 5], 2)).unwrap().shape(), &[2, 0, 3, 5]);
}

/// Batched products summed down to an operand's shape (what matmul's backward needs).
#[test]
fn batched_matmul_sums_over_broadcast_batches() {
    let (a, b) = (arr(&[2, 3, 4, 5], 1), arr(&[2, 3, 5, 6], 2));
    let full = a.matmul(&b).unwrap().to_vec_f32().unwrap();
    for target in [vec![4, 6], vec![3, 4, 6], vec![2, 1, 4, 6], vec![1, 3, 4, 6], vec![2, 3, 4, 6]] {
        let got = batched_matmul(&a, &b, &target).unwrap();
        assert_eq!(got.shape(), target.as_slice());
        // reference: sum the full product over the dims target lacks or has as 1
        let tb: Vec<usize> = std::iter::repeat_n(1, 4 - target.len()).chain(target.iter().copied()).collect();
        let mut want = vec![0f64; got.numel()];
        for (idx, &v) in full.iter().enumerate() {
            let (i0, i1, rest) = (idx / (3 * 24), (idx / 24) % 3, idx % 24);
            let o = (if tb[0] == 1 { 0 } else { i0 }) * tb[1] * 24 + (if tb[1] == 1 { 0 } else { i1 }) * 24 + rest;
            want[o] += v as f64;
        }
        assert_close(&got.to_vec_f32().unwrap(), &want, 30, &format!("sum to {target:?}"));
    }
    assert!(batched_matmul(&a, &b, &[5, 4, 6]).is_err());
}

#[test]
fn linear_matches_reference() {
    for (xs, out_f, bias) in
        [(vec![4usize, 5], 3usize, true), (vec![2, 3, 5], 7, false), (vec![5], 3, true), (vec![70, 65], 66, true)]
    {
        let in_f = xs[xs.len() - 1];
        let x = arr(&xs, 1);
        let w = arr(&[out_f, in_f], 2);
        let b = arr(&[out_f], 3);
        let y = x.linear(&w, bias.then_some(&b)).unwrap();
        let mut want_shape = xs[..xs.len() - 1].to_vec();
        want_shape.push(out_f);
        assert_eq!(y.shape(), want_shape.as_slice());
        let (xv, wv, bv) = (x.to_vec_f32().unwrap(), w.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
        let rows = xv.len() / in_f;
        let mut want = vec![];
        for r in 0..rows {
            for o in 0..out_f {
                let dot: f64 = (0..in_f).map(|p| xv[r * in_f + p] as f64 * wv[o * in_f + p] as f64).sum();
                want.push(dot + if bias { bv[o] as f64 } else { 0.0 });
            }
        }
        assert_close(&y.to_vec_f32().unwrap(), &want, in_f, &format!("linear {xs:?} -> {out_f}"));
    }
    // A transposed (strided) weight view and a non-contiguous input.
    let w = arr(&[5, 3], 4).t().unwrap(); // [3, 5]
    let x = arr(&[5, 4], 5).t().unwrap(); // [4, 5]
    let y = x.linear(&w, None).unwrap();
    let want = x.matmul(&w.t().unwrap()).unwrap();
    let (wv, xv) = (w.to_vec_f32().unwrap(), x.to_vec_f32().unwrap());
    let reference: Vec<f64> = (0..4)
        .flat_map(|r| (0..3).map(move |o| (r, o)))
        .map(|(r, o)| (0..5).map(|p| xv[r * 5 + p] as f64 * wv[o * 5 + p] as f64).sum())
        .collect();
    assert_close(&y.to_vec_f32().unwrap(), &reference, 5, "linear strided");
    assert_close(&want.to_vec_f32().unwrap(), &reference, 5, "matmul strided");
    let e = arr(&[4, 5], 1).linear(&arr(&[3, 4], 2), None).unwrap_err().to_string();
    assert!(e.starts_with("linear:") && e.contains("[4, 5]") && e.contains("[3, 4]"), "{e}");
    assert!(arr(&[4, 5], 1).linear(&arr(&[3, 5], 2), Some(&arr(&[4], 3))).is_err());
}

#[test]
fn sum_leading_sums_rows() {
    let g = Array::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 1, 2]).unwrap();
    assert_eq!(g.sum_leading().unwrap().to_vec_f32().unwrap(), vec![9.0, 12.0]);
}

#[test]
fn sum_leading_over_many_rows_and_views() {
    // 103 rows (several blocks of f32 partial sums plus a short one) of x[r, j] = r + j/2:
    // column j sums to 0 + 1 + ... + 102 + 103·j/2, exact in f32.
    let (rows, n) = (103usize, 5usize);
    let data: Vec<f32> = (0..rows * n).map(|i| (i / n) as f32 + (i % n) as f32 * 0.5).collect();
    let x = Array::from_vec(data, &[rows, n]).unwrap();
    let want: Vec<f32> = (0..n).map(|j| (rows * (rows - 1) / 2) as f32 + rows as f32 * j as f32 * 0.5).collect();
    assert_eq!(x.sum_leading().unwrap().to_vec_f32().unwrap(), want);
    // A transposed view is gathered first: rows of xᵀ are the columns of x.
    let xt = x.t().unwrap();
    let col_sums: Vec<f32> = (0..rows).map(|r| (0..n).map(|j| r as f32 + j as f32 * 0.5).sum()).collect();
    assert_eq!(xt.sum_leading().unwrap().to_vec_f32().unwrap(), col_sums);
    // No rows: zeros; no columns: an empty result.
    assert_eq!(Array::zeros(&[0, 3]).sum_leading().unwrap().to_vec_f32().unwrap(), vec![0.0; 3]);
    assert_eq!(Array::zeros(&[4, 0]).sum_leading().unwrap().shape(), &[0]);
}
