//! Reductions and softmax against hand-computed values and a naive f64 reference that walks
//! multi-indices (independent of the kernels' row/column plans), over every dim subset,
//! negative dims, keepdim, non-contiguous inputs, 0-d inputs and sizes that take the
//! parallel paths.

use kiln_tensor::Array;

fn arr(v: &[f32], s: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), s).unwrap()
}

/// Deterministic pseudo-random values in [-2, 2) without ties (a tiny LCG plus the index).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 + i as f32 * 1e-7
        })
        .collect()
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1] * shape[d + 1];
    }
    st
}

/// For each output element (row-major over kept dims), the reduced values in row-major order.
fn groups(x: &[f32], shape: &[usize], mask: &[bool]) -> Vec<Vec<f64>> {
    let kept: Vec<usize> = (0..shape.len()).filter(|&d| !mask[d]).collect();
    let red: Vec<usize> = (0..shape.len()).filter(|&d| mask[d]).collect();
    let ks: Vec<usize> = kept.iter().map(|&d| shape[d]).collect();
    let rs: Vec<usize> = red.iter().map(|&d| shape[d]).collect();
    let st = strides(shape);
    let (nk, nr): (usize, usize) = (ks.iter().product(), rs.iter().product());
    let unravel = |mut i: usize, sizes: &[usize]| -> Vec<usize> {
        let mut idx = vec![0; sizes.len()];
        for d in (0..sizes.len()).rev() {
            idx[d] = i % sizes[d];
            i /= sizes[d];
        }
        idx
    };
    (0..nk)
        .map(|k| {
            let ki = unravel(k, &ks);
            (0..nr)
                .map(|r| {
                    let ri = unravel(r, &rs);
                    let off: usize = kept.iter().zip(&ki).chain(red.iter().zip(&ri)).map(|(&d, &i)| i * st[d]).sum();
                    x[off] as f64
                })
                .collect()
        })
        .collect()
}

fn out_shape(shape: &[usize], mask: &[bool], keepdim: bool) -> Vec<usize> {
    shape.iter().zip(mask).filter(|(_, &m)| keepdim || !m).map(|(&s, &m)| if m { 1 } else { s }).collect()
}

fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g as f64 - w).abs() <= tol * (1.0 + w.abs()) || (g.is_infinite() && g as f64 == w);
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

fn ref_lse(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}
fn ref_var(v: &[f64], c: i64) -> f64 {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() as f64 - c as f64).max(0.0)
}

/// Checks every reduction of `a` (whose row-major values are `x`) over `dims` against the reference.
fn check_all(a: &Array, x: &[f32], dims: Option<&[isize]>, mask: &[bool], what: &str) {
    let shape = a.shape().to_vec();
    let g = groups(x, &shape, mask);
    for keepdim in [false, true] {
        let w = format!("{what} dims {dims:?} keepdim {keepdim}");
        let os = out_shape(&shape, mask, keepdim);
        let s = a.sum(dims, keepdim).unwrap();
        assert_eq!(s.shape(), os.as_slice(), "{w}");
        close(
            &s.to_vec_f32().unwrap(),
            &g.iter().map(|v| v.iter().sum()).collect::<Vec<_>>(),
            1e-5,
            &format!("sum {w}"),
        );
        let m = a.mean(dims, keepdim).unwrap();
        close(
            &m.to_vec_f32().unwrap(),
            &g.iter().map(|v| v.iter().sum::<f64>() / v.len() as f64).collect::<Vec<_>>(),
            1e-5,
            &format!("mean {w}"),
        );
        let mx = a.amax(dims, keepdim).unwrap();
        assert_eq!(mx.shape(), os.as_slice());
        close(
            &mx.to_vec_f32().unwrap(),
            &g.iter().map(|v| v.iter().cloned().fold(f64::MIN, f64::max)).collect::<Vec<_>>(),
            0.0,
            &format!("amax {w}"),
        );
        for c in [0, 1] {
            let va = a.var(dims, keepdim, c).unwrap();
            assert_eq!(va.shape(), os.as_slice());
            let want: Vec<f64> = g.iter().map(|v| ref_var(v, c)).collect();
            if g[0].len() > c as usize {
                close(&va.to_vec_f32().unwrap(), &want, 1e-4, &format!("var c={c} {w}"));
            }
        }
        let l = a.logsumexp(dims, keepdim).unwrap();
        close(
            &l.to_vec_f32().unwrap(),
            &g.iter().map(|v| ref_lse(v)).collect::<Vec<_>>(),
            1e-5,
            &format!("logsumexp {w}"),
        );
    }
}

/// Every subset of dims of `shape`, given as non-negative and as negative dims.
fn check_shape(shape: &[usize], seed: u64) {
    let n: usize = shape.iter().product();
    let x = values(n, seed);
    let a = arr(&x, shape);
    let r = shape.len();
    for bits in 0..(1u32 << r) {
        let mask: Vec<bool> = (0..r).map(|d| bits >> d & 1 == 1).collect();
        let dims: Vec<isize> = (0..r as isize).filter(|&d| mask[d as usize]).collect();
        let neg: Vec<isize> = dims.iter().map(|&d| d - r as isize).collect();
        if dims.is_empty() {
            // An empty list reduces every dim (as in PyTorch).
            check_all(&a, &x, Some(&[]), &vec![true; r], &format!("{shape:?}"));
            continue;
        }
        check_all(&a, &x, Some(&dims), &mask, &format!("{shape:?}"));
        check_all(&a, &x, Some(&neg), &mask, &format!("{shape:?}"));
    }
    check_all(&a, &x, None, &vec![true; r], &format!("{shape:?}"));
}

#[test]
fn reductions_match_the_reference_over_every_dim_subset() {
    for (i, shape) in
        [vec![7], vec![3, 4, 5], vec![2, 1, 3, 4], vec![1, 6], vec![5, 1], vec![2, 3, 1, 4, 2]].iter().enumerate()
    {
        check_shape(shape, i as u64 + 1);
    }
}

#[test]
fn large_reductions_take_the_parallel_paths_and_stay_accurate() {
    // Rows (last dim), columns of a single slab (bands), columns of several slabs, full.
    for (i, shape) in
        [vec![300, 1000], vec![3000, 100], vec![3, 700, 80], vec![2, 5000, 7], vec![1 << 18]].iter().enumerate()
    {
        let n: usize = shape.iter().product();
        let x = values(n, 50 + i as u64);
        let a = arr(&x, shape);
        let r = shape.len();
        for bits in 1..(1u32 << r) {
            let mask: Vec<bool> = (0..r).map(|d| bits >> d & 1 == 1).collect();
            let dims: Vec<isize> = (0..r as isize).filter(|&d| mask[d as usize]).collect();
            check_all(&a, &x, Some(&dims), &mask, &format!("{shape:?}"));
        }
    }
}

#[test]
fn non_contiguous_inputs_reduce_like_their_contiguous_copies() {
    let base = arr(&values(4 * 6 * 5, 9), &[4, 6, 5]);
    let views = [
        base.transpose(0, 2).unwrap(),
        base.permute(&[1, 2, 0]).unwrap(),
        base.narrow(1, 1, 4).unwrap(),
        arr(&values(6, 3), &[6, 1]).broadcast_to(&[3, 6, 5]).unwrap(),
    ];
    for v in views {
        assert!(!v.is_contiguous());
        let x = v.to_vec_f32().unwrap();
        let r = v.rank();
        for bits in 0..(1u32 << r) {
            let mask: Vec<bool> = (0..r).map(|d| bits >> d & 1 == 1).collect();
            let dims: Vec<isize> = (0..r as isize).filter(|&d| mask[d as usize]).collect();
            if dims.is_empty() {
                continue;
            }
            check_all(&v, &x, Some(&dims), &mask, "view");
        }
    }
}

#[test]
fn long_sums_stay_accurate() {
    // 1e6 copies of 0.1: a naive f32 running sum is off by ~1%.
    let a = Array::full(&[1_000_000], 0.1);
    let s = a.sum(None, false).unwrap().item().unwrap();
    assert!((s as f64 - 100_000.0).abs() < 1.0, "{s}");
    let a = Array::full(&[200_000, 2], 0.1);
    let s = a.sum(Some(&[0]), false).unwrap().to_vec_f32().unwrap();
    assert!(s.iter().all(|&v| (v as f64 - 20_000.0).abs() < 0.5), "{s:?}");
    let m = Array::full(&[3, 100_000], 0.1).mean(Some(&[-1]), false).unwrap().to_vec_f32().unwrap();
    assert!(m.iter().all(|&v| (v - 0.1).abs() < 1e-6), "{m:?}");
}

#[test]
fn hand_computed_values() {
    let a = arr(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    assert_eq!(a.sum(Some(&[0]), false).unwrap().to_vec_f32().unwrap(), vec![5., 7., 9.]);
    assert_eq!(a.sum(Some(&[1]), true).unwrap().shape(), &[2, 1]);
    assert_eq!(a.mean(Some(&[-1]), false).unwrap().to_vec_f32().unwrap(), vec![2., 5.]);
    assert_eq!(a.amax(None, false).unwrap().shape(), &[] as &[usize]);
    assert_eq!(a.amax(Some(&[0]), false).unwrap().to_vec_f32().unwrap(), vec![4., 5., 6.]);
    // var of [1, 2, 3] is 1 (unbiased) or 2/3 (biased).
    assert_eq!(a.var(Some(&[1]), false, 1).unwrap().to_vec_f32().unwrap(), vec![1., 1.]);
    let b = a.var(Some(&[1]), false, 0).unwrap().to_vec_f32().unwrap();
    assert!((b[0] - 2.0 / 3.0).abs() < 1e-6);
    // var over dim 0 of [[1,2,3],[4,5,6]]: deviations ±1.5 -> 4.5 (unbiased).
    assert_eq!(a.var(Some(&[0]), false, 1).unwrap().to_vec_f32().unwrap(), vec![4.5, 4.5, 4.5]);
    // logsumexp([0, ln 3]) = ln 4.
    let l = arr(&[0.0, 3f32.ln()], &[2]).logsumexp(Some(&[0]), false).unwrap().item().unwrap();
    assert!((l - 4f32.ln()).abs() < 1e-6);
    assert_eq!(a.argmax(None, false).unwrap().to_vec::<i64>().unwrap(), vec![5]);
    assert_eq!(a.argmax(Some(0), false).unwrap().to_vec::<i64>().unwrap(), vec![1, 1, 1]);
    assert_eq!(a.argmax(Some(-1), true).unwrap().shape(), &[2, 1]);
    assert_eq!(a.argmax(None, true).unwrap().shape(), &[1, 1]);
}

#[test]
fn logsumexp_is_stable_for_large_and_infinite_logits() {
    let x = arr(&[1000., f32::NEG_INFINITY, 999., -1000., f32::NEG_INFINITY, -1001.], &[2, 3]);
    let l = x.logsumexp(Some(&[1]), false).unwrap().to_vec_f32().unwrap();
    let e = (1.0 + (-1f64).exp()).ln();
    assert!((l[0] as f64 - (1000.0 + e)).abs() < 1e-3, "{l:?}");
    assert!((l[1] as f64 - (-1000.0 + e)).abs() < 1e-3, "{l:?}");
    // Along dim 0 (the column path), with a column of only -inf.
    let c = x.logsumexp(Some(&[0]), false).unwrap().to_vec_f32().unwrap();
    assert_eq!(c[1], f32::NEG_INFINITY);
    assert!((c[0] - 1000.0).abs() < 1e-3);
    let all = Array::full(&[3], f32::NEG_INFINITY).logsumexp(None, false).unwrap().item().unwrap();
    assert_eq!(all, f32::NEG_INFINITY);
}

#[test]
fn argmax_takes_the_first_of_tied_maxima_and_nan_wins() {
    let a = arr(&[1., 3., 3., 0., 2., 2., 2., 1.], &[2, 4]);
    assert_eq!(a.argmax(Some(1), false).unwrap().to_vec::<i64>().unwrap(), vec![1, 0]);
    assert_eq!(a.argmax(None, false).unwrap().to_vec::<i64>().unwrap(), vec![1]);
    let c = arr(&[1., 5., 5., 5., 1., 0.], &[3, 2]);
    assert_eq!(c.argmax(Some(0), false).unwrap().to_vec::<i64>().unwrap(), vec![1, 0]);
    let n = arr(&[1., f32::NAN, 3., f32::NAN], &[4]);
    assert_eq!(n.argmax(Some(0), false).unwrap().to_vec::<i64>().unwrap(), vec![1]);
    assert!(n.amax(None, false).unwrap().item().unwrap().is_nan());
    let nc = arr(&[1., 2., f32::NAN, 0., 3., 4.], &[3, 2]);
    assert_eq!(nc.argmax(Some(0), false).unwrap().to_vec::<i64>().unwrap(), vec![1, 2]);
    assert!(nc.amax(Some(&[0]), false).unwrap().to_vec_f32().unwrap()[0].is_nan());
}

#[test]
fn zero_dim_inputs() {
    let s = Array::scalar(2.5);
    for dims in [None, Some(&[0isize][..]), Some(&[-1][..])] {
        assert_eq!(s.sum(dims, false).unwrap().shape(), &[] as &[usize]);
        assert_eq!(s.sum(dims, true).unwrap().item().unwrap(), 2.5);
        assert_eq!(s.mean(dims, false).unwrap().item().unwrap(), 2.5);
        assert_eq!(s.amax(dims, false).unwrap().item().unwrap(), 2.5);
        assert_eq!(s.logsumexp(dims, false).unwrap().item().unwrap(), 2.5);
        assert_eq!(s.var(dims, false, 0).unwrap().item().unwrap(), 0.0);
        assert!(s.var(dims, false, 1).unwrap().item().unwrap().is_nan());
    }
    assert_eq!(s.argmax(None, false).unwrap().to_vec::<i64>().unwrap(), vec![0]);
    assert_eq!(s.argmax(Some(-1), false).unwrap().shape(), &[] as &[usize]);
    assert_eq!(s.softmax(-1).unwrap().item().unwrap(), 1.0);
    assert_eq!(s.log_softmax(0).unwrap().item().unwrap(), 0.0);
}

#[test]
fn empty_inputs() {
    let e = Array::zeros(&[3, 0]);
    assert_eq!(e.sum(Some(&[1]), false).unwrap().to_vec_f32().unwrap(), vec![0.; 3]);
    assert!(e.mean(Some(&[1]), false).unwrap().to_vec_f32().unwrap().iter().all(|v| v.is_nan()));
    assert_eq!(e.logsumexp(Some(&[1]), false).unwrap().to_vec_f32().unwrap(), vec![f32::NEG_INFINITY; 3]);
    assert_eq!(e.sum(Some(&[0]), false).unwrap().shape(), &[0]);
    assert_eq!(e.amax(Some(&[0]), false).unwrap().shape(), &[0]);
    let err = e.amax(Some(&[1]), false).unwrap_err().to_string();
    assert!(err.starts_with("amax:") && err.contains("[3, 0]"), "{err}");
    assert!(e.argmax(None, false).is_err());
    assert_eq!(e.softmax(1).unwrap().shape(), &[3, 0]);
}

#[test]
fn bad_dims_are_errors_that_name_the_op() {
    let a = Array::zeros(&[2, 3]);
    let e = a.sum(Some(&[2]), false).unwrap_err().to_string();
    assert!(e.starts_with("sum:") && e.contains("dim 2"), "{e}");
    assert!(a.mean(Some(&[0, -2]), false).unwrap_err().to_string().contains("more than once"));
    assert!(a.softmax(-3).unwrap_err().to_string().starts_with("softmax:"));
    assert!(a.argmax(Some(5), false).unwrap_err().to_string().starts_with("argmax:"));
    let i = Array::arange_i64(4);
    assert!(i.sum(None, false).unwrap_err().to_string().starts_with("sum:"));
    let s = Array::scalar(1.0);
    assert!(s.sum(Some(&[0, -1]), false).is_err());
    assert!(s.sum(Some(&[1]), false).is_err());
}

#[test]
fn sum_to_reduces_broadcast_dims() {
    let g = arr(&values(2 * 3 * 4, 4), &[2, 3, 4]);
    let x = g.to_vec_f32().unwrap();
    for (target, mask) in [
        (vec![3, 4], vec![true, false, false]),
        (vec![4], vec![true, true, false]),
        (vec![3, 1], vec![true, false, true]),
        (vec![2, 1, 4], vec![false, true, false]),
        (vec![1, 1, 1], vec![true, true, true]),
        (vec![], vec![true, true, true]),
    ] {
        let s = g.sum_to(&target).unwrap();
        assert_eq!(s.shape(), target.as_slice());
        close(
            &s.to_vec_f32().unwrap(),
            &groups(&x, &[2, 3, 4], &mask).iter().map(|v| v.iter().sum()).collect::<Vec<_>>(),
            1e-5,
            "sum_to",
        );
    }
    assert!(g.sum_to(&[5]).is_err());
}

// ------------------------------------------------------------------------------- softmax

fn ref_softmax(x: &[f32], shape: &[usize], d: usize, log: bool) -> Vec<f64> {
    let st = strides(shape);
    let n = shape[d];
    let mut out = vec![0f64; x.len()];
    for start in 0..x.len() {
        if !(start / st[d]).is_multiple_of(n) {
            continue;
        }
        let idx: Vec<usize> = (0..n).map(|k| start + k * st[d]).collect();
        let v: Vec<f64> = idx.iter().map(|&i| x[i] as f64).collect();
        let l = ref_lse(&v);
        for (&i, &v) in idx.iter().zip(&v) {
            out[i] = if log { v - l } else { (v - l).exp() };
        }
    }
    out
}

#[test]
fn softmax_of_large_and_infinite_logits() {
    let x = arr(&[1000., f32::NEG_INFINITY, 999.], &[3]);
    let p = x.softmax(0).unwrap().to_vec_f32().unwrap();
    let (a, b) = (1.0 / (1.0 + (-1f64).exp()), (-1f64).exp() / (1.0 + (-1f64).exp()));
    close(&p, &[a, 0.0, b], 1e-6, "softmax");
    assert_eq!(p[1], 0.0);
    let l = x.log_softmax(-1).unwrap().to_vec_f32().unwrap();
    assert_eq!(l[1], f32::NEG_INFINITY);
    close(&[l[0], l[2]], &[a.ln(), b.ln()], 1e-6, "log_softmax");
    // Along a non-last dim (the slab path).
    let c = arr(&[1000., 0., f32::NEG_INFINITY, 1., 999., 2.], &[3, 2]);
    let p = c.softmax(0).unwrap().to_vec_f32().unwrap();
    close(&[p[0], p[2], p[4]], &[a, 0.0, b], 1e-6, "softmax dim 0");
    let l = c.log_softmax(0).unwrap().to_vec_f32().unwrap();
    assert_eq!(l[2], f32::NEG_INFINITY);
    // Backward: finite everywhere, 0 for softmax and g for log_softmax at -inf.
    let g = arr(&[0.5, -1.0, 2.0], &[3]);
    let gs = x.softmax(0).unwrap().softmax_backward(&g, 0).unwrap().to_vec_f32().unwrap();
    assert_eq!(gs[1], 0.0);
    // y·(g − Σ g·y) by hand.
    let d = 0.5 * a + 2.0 * b;
    close(&gs, &[a * (0.5 - d), 0.0, b * (2.0 - d)], 1e-6, "softmax backward");
    let gl = x.log_softmax(0).unwrap().log_softmax_backward(&g, 0).unwrap().to_vec_f32().unwrap();
    close(&gl, &[0.5 - a * 1.5, -1.0, 2.0 - b * 1.5], 1e-6, "log_softmax backward");
}

#[test]
fn softmax_matches_the_reference_along_every_dim() {
    for (i, shape) in
        [vec![5], vec![3, 4, 5], vec![2, 1, 3], vec![256, 1024], vec![4, 300, 40], vec![1, 2000, 30]].iter().enumerate()
    {
        let n: usize = shape.iter().product();
        let x: Vec<f32> = values(n, 70 + i as u64).iter().map(|v| v * 5.0).collect();
        let a = arr(&x, shape);
        let g = arr(&values(n, 90 + i as u64), shape);
        let gv: Vec<f64> = g.to_vec_f32().unwrap().iter().map(|&v| v as f64).collect();
        for d in 0..shape.len() {
            for dim in [d as isize, d as isize - shape.len() as isize] {
                let p = a.softmax(dim).unwrap();
                let rp = ref_softmax(&x, shape, d, false);
                close(&p.to_vec_f32().unwrap(), &rp, 1e-5, &format!("softmax {shape:?} dim {dim}"));
                let l = a.log_softmax(dim).unwrap();
                let rl = ref_softmax(&x, shape, d, true);
                close(&l.to_vec_f32().unwrap(), &rl, 1e-5, &format!("log_softmax {shape:?} dim {dim}"));
                // Backward references: y·(g − Σ g·y) and g − p·Σ g, sums taken along `d`.
                let st = strides(shape);
                let (dn, sd) = (shape[d], st[d]);
                let line_sum = |f: &dyn Fn(usize) -> f64, i: usize| -> f64 {
                    let start = i - ((i / sd) % dn) * sd;
                    (0..dn).map(|k| f(start + k * sd)).sum()
                };
                let want: Vec<f64> = (0..n).map(|i| rp[i] * (gv[i] - line_sum(&|j| gv[j] * rp[j], i))).collect();
                close(&p.softmax_backward(&g, dim).unwrap().to_vec_f32().unwrap(), &want, 1e-5, "softmax backward");
                let want: Vec<f64> = (0..n).map(|i| gv[i] - rp[i] * line_sum(&|j| gv[j], i)).collect();
                close(
                    &l.log_softmax_backward(&g, dim).unwrap().to_vec_f32().unwrap(),
                    &want,
                    1e-4,
                    "log_softmax backward",
                );
            }
        }
    }
}

#[test]
fn softmax_of_a_non_contiguous_input() {
    let base = arr(&values(4 * 5, 5), &[4, 5]);
    let t = base.t().unwrap();
    let x = t.to_vec_f32().unwrap();
    for d in 0..2 {
        close(
            &t.softmax(d as isize).unwrap().to_vec_f32().unwrap(),
            &ref_softmax(&x, &[5, 4], d, false),
            1e-5,
            "softmax of a view",
        );
        let g = base.t().unwrap(); // a non-contiguous gradient too
        let y = t.log_softmax(d as isize).unwrap();
        let a = y.log_softmax_backward(&g, d as isize).unwrap();
        let b = y.log_softmax_backward(&g.contiguous(), d as isize).unwrap();
        assert_eq!(a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    }
}

/// A 0-d tensor takes dims 0 and -1 (PyTorch wraps dims by max(rank, 1)); other dims fail.
#[test]
fn zero_dim_tensor_takes_dim_minus_one() {
    let x = Array::scalar(3.5);
    for d in [0isize, -1] {
        let s = x.sum(Some(&[d]), false).unwrap();
        assert_eq!(s.shape(), &[] as &[usize]);
        assert_eq!(s.item().unwrap(), 3.5);
        assert_eq!(x.softmax(d).unwrap().item().unwrap(), 1.0);
    }
    for d in [1isize, -2] {
        let e = x.sum(Some(&[d]), false).unwrap_err().to_string();
        assert!(e.contains("out of range") && e.contains("[-1, 0]"), "{e}");
    }
}
