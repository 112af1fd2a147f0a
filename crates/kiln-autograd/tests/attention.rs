//! scaled_dot_product_attention: finite-difference gradient checks (causal with L = S and
//! L ≠ S, bool and float masks, 3-d and 4-d, broadcast batch dims, a custom scale) and
//! forward values against a plain f64 reference, including strided (permuted) operands and
//! sizes large enough for the parallel path.

use kiln_autograd::gradcheck::{check_gradients, uniform};
use kiln_autograd::ops::attention::scaled_dot_product_attention;
use kiln_autograd::{Array, Tensor};

/// Reference attention in f64 over contiguous `[B, L, E]`, `[B, S, E]`, `[B, S, Ev]` values,
/// with an additive mask `[B, L, S]` (−inf excludes) already broadcast.
#[allow(clippy::too_many_arguments)]
fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f64]>,
    causal: bool,
    scale: f64,
    (b, l, s, e, ev): (usize, usize, usize, usize, usize),
) -> Vec<f64> {
    let mut out = vec![0f64; b * l * ev];
    for bi in 0..b {
        for i in 0..l {
            let mut sc: Vec<f64> = (0..s)
                .map(|j| {
                    let d: f64 = (0..e).map(|t| q[(bi * l + i) * e + t] as f64 * k[(bi * s + j) * e + t] as f64).sum();
                    let m = mask.map_or(0.0, |m| m[(bi * l + i) * s + j]);
                    let c = if causal && j > i { f64::NEG_INFINITY } else { 0.0 };
                    d * scale + m + c
                })
                .collect();
            let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            sc.iter_mut().for_each(|x| *x = (*x - mx).exp());
            let z: f64 = sc.iter().sum();
            for t in 0..ev {
                out[(bi * l + i) * ev + t] = (0..s).map(|j| sc[j] / z * v[(bi * s + j) * ev + t] as f64).sum();
            }
        }
    }
    out
}

fn close(a: &[f32], b: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!((x as f64 - y).abs() <= atol + rtol * y.abs(), "{what}[{i}]: got {x}, expected {y}");
    }
}

fn sdpa(t: &[Tensor], mask: Option<&Array>, causal: bool, scale: Option<f32>) -> kiln_autograd::Result<Tensor> {
    let m = mask.map(|m| Tensor::from_array(m.clone()));
    scaled_dot_product_attention(&t[0], &t[1], &t[2], m.as_ref(), causal, scale)
}

// ------------------------------------------------------------------------------ finite differences

#[test]
fn gradcheck_plain_3d_and_4d() {
    let cases: &[(&[usize], &[usize], &[usize])] = &[
        (&[2, 3, 4], &[2, 5, 4], &[2, 5, 3]),
        (&[2, 2, 4, 3], &[2, 2, 4, 3], &[2, 2, 4, 2]),
        (&[1, 1, 2], &[1, 3, 2], &[1, 3, 1]),
        (&[3, 2], &[4, 2], &[4, 5]),
    ];
    for (n, &(qs, ks, vs)) in cases.iter().enumerate() {
        let s = n as u64 * 10;
        let inputs = [uniform(qs, -1.0, 1.0, s + 1), uniform(ks, -1.0, 1.0, s + 2), uniform(vs, -1.0, 1.0, s + 3)];
        check_gradients(&inputs, |t| sdpa(t, None, false, None)).unwrap_or_else(|e| panic!("{qs:?}: {e}"));
        check_gradients(&inputs, |t| sdpa(t, None, false, Some(0.7))).unwrap_or_else(|e| panic!("{qs:?}: {e}"));
    }
}

#[test]
fn gradcheck_causal_square_and_rectangular() {
    // L = S, L < S and L > S (rows past S see every key).
    for (n, &(l, s)) in [(4, 4), (2, 5), (5, 3)].iter().enumerate() {
        let seed = 100 + n as u64 * 10;
        let inputs = [
            uniform(&[2, 2, l, 3], -1.0, 1.0, seed + 1),
            uniform(&[2, 2, s, 3], -1.0, 1.0, seed + 2),
            uniform(&[2, 2, s, 2], -1.0, 1.0, seed + 3),
        ];
        check_gradients(&inputs, |t| sdpa(t, None, true, None)).unwrap_or_else(|e| panic!("L {l} S {s}: {e}"));
    }
}

#[test]
fn gradcheck_bool_and_float_masks() {
    let (l, s) = (3, 4);
    let inputs =
        [uniform(&[2, l, 3], -1.0, 1.0, 201), uniform(&[2, s, 3], -1.0, 1.0, 202), uniform(&[2, s, 2], -1.0, 1.0, 203)];
    // A bool mask [L, S] broadcast over the batch; every row keeps at least one key.
    let bm = Array::from_vec(vec![1u8, 0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0], &[l, s]).unwrap();
    check_gradients(&inputs, |t| sdpa(t, Some(&bm), false, None)).unwrap();
    // A float mask [2, 1, S] (broadcast over the rows) with −inf entries.
    let ninf = f32::NEG_INFINITY;
    let fm = Array::from_vec(vec![0.5, ninf, -1.0, 0.0, ninf, 0.3, 0.0, 2.0], &[2, 1, s]).unwrap();
    check_gradients(&inputs, |t| sdpa(t, Some(&fm), false, None)).unwrap();
    // 4-d with a per-head bool mask [1, H, L, S].
    let inputs4 = [
        uniform(&[2, 2, l, 3], -1.0, 1.0, 211),
        uniform(&[2, 2, s, 3], -1.0, 1.0, 212),
        uniform(&[2, 2, s, 2], -1.0, 1.0, 213),
    ];
    let bm4 =
        Array::from_vec((0..2 * l * s).map(|i| u8::from(i % 3 != 1)).collect::<Vec<u8>>(), &[1, 2, l, s]).unwrap();
    check_gradients(&inputs4, |t| sdpa(t, Some(&bm4), false, None)).unwrap();
}

#[test]
fn gradcheck_broadcast_batch_dims() {
    // key and value shared over the heads: their gradients sum over the broadcast dim.
    let inputs = [
        uniform(&[2, 3, 2, 4], -1.0, 1.0, 301),
        uniform(&[2, 1, 3, 4], -1.0, 1.0, 302),
        uniform(&[3, 2], -1.0, 1.0, 303),
    ];
    check_gradients(&inputs, |t| sdpa(t, None, false, None)).unwrap();
}

#[test]
fn gradcheck_strided_operands() {
    // q, k, v as the [B, H, L, D] head view of a [B, L, H, D] tensor (no copy).
    let inputs = [
        uniform(&[2, 3, 2, 4], -1.0, 1.0, 401),
        uniform(&[2, 5, 2, 4], -1.0, 1.0, 402),
        uniform(&[2, 5, 2, 3], -1.0, 1.0, 403),
    ];
    check_gradients(&inputs, |t| {
        let h: Vec<Tensor> = t.iter().map(|x| x.transpose(1, 2)).collect();
        scaled_dot_product_attention(&h[0], &h[1], &h[2], None, true, None)
    })
    .unwrap();
}

// ------------------------------------------------------------------------------ values

#[test]
fn hand_computed_values() {
    // One query [1, 0], keys [1, 0] and [0, 1], scale 1: weights softmax([1, 0]).
    let q = Tensor::from_vec(vec![1.0, 0.0], &[1, 1, 2]).unwrap();
    let k = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], &[1, 2, 2]).unwrap();
    let v = Tensor::from_vec(vec![2.0, -4.0], &[1, 2, 1]).unwrap();
    let y = scaled_dot_product_attention(&q, &k, &v, None, false, Some(1.0)).unwrap();
    let w = 1.0f64.exp() / (1.0f64.exp() + 1.0);
    close(&y.to_vec_f32().unwrap(), &[2.0 * w - 4.0 * (1.0 - w)], 1e-6, 1e-6, "output");
    // A bool mask excluding the first key leaves only the second value.
    let m = Tensor::from_array(Array::from_vec(vec![0u8, 1], &[1, 2]).unwrap());
    let y = scaled_dot_product_attention(&q, &k, &v, Some(&m), false, None).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), vec![-4.0]);
}

#[test]
fn matches_reference_with_masks_causal_and_strides() {
    let (b, l, s, e, ev) = (3, 5, 7, 4, 6);
    let q = uniform(&[b, l, e], -1.5, 1.5, 501);
    let k = uniform(&[b, s, e], -1.5, 1.5, 502);
    let v = uniform(&[b, s, ev], -1.5, 1.5, 503);
    let (qv, kv, vv) = (q.to_vec_f32().unwrap(), k.to_vec_f32().unwrap(), v.to_vec_f32().unwrap());
    let dims = (b, l, s, e, ev);
    let t = |a: &Array| Tensor::from_array(a.clone());
    let scale = 1.0 / (e as f64).sqrt();
    for causal in [false, true] {
        let y = scaled_dot_product_attention(&t(&q), &t(&k), &t(&v), None, causal, None).unwrap();
        close(&y.to_vec_f32().unwrap(), &reference(&qv, &kv, &vv, None, causal, scale, dims), 1e-5, 1e-4, "plain");
    }
    // Float mask [L, S] with −inf, broadcast over the batch.
    let fm: Vec<f32> =
        (0..l * s).map(|i| if i % 4 == 3 { f32::NEG_INFINITY } else { (i % 5) as f32 * 0.3 - 0.5 }).collect();
    let full: Vec<f64> = (0..b).flat_map(|_| fm.iter().map(|&x| x as f64)).collect();
    let m = Tensor::from_array(Array::from_vec(fm, &[l, s]).unwrap());
    let y = scaled_dot_product_attention(&t(&q), &t(&k), &t(&v), Some(&m), false, Some(0.4)).unwrap();
    close(&y.to_vec_f32().unwrap(), &reference(&qv, &kv, &vv, Some(&full), false, 0.4, dims), 1e-5, 1e-4, "float mask");
    // The same values through a transposed key (a strided view) give the same output.
    let kt = Tensor::from_array(k.transpose(1, 2).unwrap().contiguous()).transpose(1, 2);
    let y2 = scaled_dot_product_attention(&t(&q), &kt, &t(&v), Some(&m), false, Some(0.4)).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), y2.to_vec_f32().unwrap());
}

#[test]
fn large_batches_use_the_parallel_path_and_agree() {
    let (b, l, s, e, ev) = (16, 33, 40, 24, 20);
    let q = uniform(&[b, l, e], -1.0, 1.0, 601);
    let k = uniform(&[b, s, e], -1.0, 1.0, 602);
    let v = uniform(&[b, s, ev], -1.0, 1.0, 603);
    let (qv, kv, vv) = (q.to_vec_f32().unwrap(), k.to_vec_f32().unwrap(), v.to_vec_f32().unwrap());
    let y = q.scaled_dot_product_attention(&k, &v, None, true, None).unwrap();
    let want = reference(&qv, &kv, &vv, None, true, 1.0 / (e as f64).sqrt(), (b, l, s, e, ev));
    close(&y.to_vec_f32().unwrap(), &want, 1e-5, 1e-4, "large");
    // Backward: the sum of the output's gradient w.r.t. v is Σ_i P[i, j] per key, and the
    // probabilities of each row sum to 1, so Σ_j dV[j, t] = L for an all-ones upstream gradient.
    let vt = Tensor::from_array(v).requires_grad_(true);
    let out =
        scaled_dot_product_attention(&Tensor::from_array(q), &Tensor::from_array(k), &vt, None, true, None).unwrap();
    out.sum_all().backward().unwrap();
    let g = vt.grad().unwrap().to_vec_f32().unwrap();
    for bi in 0..b {
        for c in 0..ev {
            let col: f32 = (0..s).map(|j| g[(bi * s + j) * ev + c]).sum();
            assert!((col - l as f32).abs() < 1e-3, "batch {bi} column {c}: {col}");
        }
    }
}

#[test]
fn errors_name_the_op_and_shapes() {
    let t = |s: &[usize]| Tensor::zeros(s);
    let e =
        scaled_dot_product_attention(&t(&[2, 3, 4]), &t(&[2, 5, 3]), &t(&[2, 5, 2]), None, false, None).unwrap_err();
    assert!(e.to_string().contains("scaled_dot_product_attention") && e.to_string().contains("[2, 5, 3]"), "{e}");
    let e =
        scaled_dot_product_attention(&t(&[2, 3, 4]), &t(&[2, 5, 4]), &t(&[2, 6, 2]), None, false, None).unwrap_err();
    assert!(e.to_string().contains("sequence length"), "{e}");
    let m = t(&[4, 5]);
    let e = scaled_dot_product_attention(&t(&[2, 3, 4]), &t(&[2, 5, 4]), &t(&[2, 5, 2]), Some(&m), false, None)
        .unwrap_err();
    assert!(e.to_string().contains("attn_mask"), "{e}");
    let e = scaled_dot_product_attention(&t(&[4]), &t(&[5, 4]), &t(&[5, 2]), None, false, None).unwrap_err();
    assert!(e.to_string().contains("at least 2 dims"), "{e}");
}

#[test]
fn causal_blocks_match_an_explicit_mask_on_long_sequences() {
    // Several 32-row blocks, L = S, L < S and L > S: `is_causal` (blocked, skipping the upper
    // triangle) against the same triangle given as a -inf mask (the full products).
    for (n, &(l, s)) in [(70, 70), (40, 100), (100, 40)].iter().enumerate() {
        let seed = 900 + n as u64 * 10;
        let mk = |shape: &[usize], k: u64| Tensor::from_array(uniform(shape, -1.0, 1.0, seed + k)).requires_grad_(true);
        let run = |causal: bool| {
            let (q, k, v) = (mk(&[2, 3, l, 8], 1), mk(&[2, 3, s, 8], 2), mk(&[2, 3, s, 5], 3));
            let mask = (!causal).then(|| {
                let m: Vec<f32> = (0..l * s).map(|x| if x % s > x / s { f32::NEG_INFINITY } else { 0.0 }).collect();
                Tensor::from_vec(m, &[l, s]).unwrap()
            });
            let y = scaled_dot_product_attention(&q, &k, &v, mask.as_ref(), causal, None).unwrap();
            let w = Tensor::from_array(uniform(y.shape(), -1.0, 1.0, seed + 4));
            y.try_mul(&w).unwrap().sum_all().backward().unwrap();
            let mut all = y.to_vec_f32().unwrap();
            for t in [&q, &k, &v] {
                all.extend(t.grad().unwrap().to_vec_f32().unwrap());
            }
            all
        };
        let (a, b) = (run(true), run(false));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 1e-5 + 1e-4 * y.abs(), "L {l} S {s}: element {i}: {x} vs {y}");
        }
    }
}
