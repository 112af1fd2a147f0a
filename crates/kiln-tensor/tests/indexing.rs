//! Indexing kernels against hand-computed values and naive reference loops.

use kiln_tensor::Array;

fn arr(v: &[f32], s: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), s).unwrap()
}

fn ids(v: &[i64], s: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), s).unwrap()
}

fn mask(v: &[u8], s: &[usize]) -> Array {
    Array::from_vec(v.to_vec(), s).unwrap()
}

fn iota(s: &[usize]) -> Array {
    let n: usize = s.iter().product();
    Array::from_vec((0..n).map(|i| i as f32).collect(), s).unwrap()
}

/// A deterministic pseudo-random index list in [0, n).
fn rand_ids(len: usize, n: usize, seed: u64) -> Vec<i64> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % n as u64) as i64
        })
        .collect()
}

#[test]
fn index_select_by_hand() {
    let x = arr(&[1., 2., 3., 4., 5., 6.], &[3, 2]);
    let r = x.index_select(0, &ids(&[2, 0, 2], &[3])).unwrap();
    assert_eq!(r.shape(), &[3, 2]);
    assert_eq!(r.to_vec_f32().unwrap(), vec![5., 6., 1., 2., 5., 6.]);
    let r = x.index_select(-1, &ids(&[1, 1, 0], &[3])).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![2., 2., 1., 4., 4., 3., 6., 6., 5.]);
    // The same from a transposed (strided) view: x.t() = [[1, 3, 5], [2, 4, 6]].
    let r = x.t().unwrap().index_select(1, &ids(&[2, 0], &[2])).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![5., 1., 6., 2.]);
    // Integer inputs and an empty index.
    let xi = ids(&[10, 20, 30], &[3]);
    assert_eq!(xi.index_select(0, &ids(&[2, 2], &[2])).unwrap().to_vec::<i64>().unwrap(), vec![30, 30]);
    assert_eq!(x.index_select(0, &ids(&[], &[0])).unwrap().shape(), &[0, 2]);
}

#[test]
fn large_index_select_matches_a_naive_loop() {
    // Large enough for the parallel path; dim 1 of [7, 300, 40].
    let x = iota(&[7, 300, 40]);
    let idx = rand_ids(500, 300, 3);
    let r = x.index_select(1, &ids(&idx, &[500])).unwrap().to_vec_f32().unwrap();
    let mut want = Vec::new();
    for o in 0..7 {
        for &k in &idx {
            for i in 0..40 {
                want.push(((o * 300 + k as usize) * 40 + i) as f32);
            }
        }
    }
    assert_eq!(r, want);
}

#[test]
fn index_add_accumulates_repeats() {
    let mut z = Array::zeros(&[3, 2]);
    z.index_add_(0, &ids(&[2, 0, 2], &[3]), &arr(&[1., 2., 3., 4., 5., 6.], &[3, 2])).unwrap();
    assert_eq!(z.to_vec_f32().unwrap(), vec![3., 4., 0., 0., 6., 8.]);
    let mut z = Array::ones(&[2, 3]);
    z.index_add_(1, &ids(&[0, 0], &[2]), &arr(&[1., 2., 3., 4.], &[2, 2])).unwrap();
    assert_eq!(z.to_vec_f32().unwrap(), vec![4., 1., 1., 8., 1., 1.]);
}

#[test]
fn large_index_add_matches_a_naive_loop() {
    let (outer, size, n, inner) = (3, 50, 400, 64);
    let idx = rand_ids(n, size, 7);
    let src = iota(&[outer, n, inner]);
    let mut z = Array::zeros(&[outer, size, inner]);
    z.index_add_(1, &ids(&idx, &[n]), &src).unwrap();
    let mut want = vec![0f32; outer * size * inner];
    let s = src.to_vec_f32().unwrap();
    for o in 0..outer {
        for (j, &k) in idx.iter().enumerate() {
            for i in 0..inner {
                want[(o * size + k as usize) * inner + i] += s[(o * n + j) * inner + i];
            }
        }
    }
    assert_eq!(z.to_vec_f32().unwrap(), want);
}

#[test]
fn gather_by_hand() {
    // out[i][j] = x[i][index[i][j]] for dim 1.
    let x = arr(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    let r = x.gather(1, &ids(&[2, 0, 1, 1], &[2, 2])).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![3., 1., 5., 5.]);
    // dim 0 with an index smaller than the input in dim 1: out[i][j] = x[index[i][j]][j].
    let r = x.gather(0, &ids(&[1, 0], &[1, 2])).unwrap();
    assert_eq!(r.shape(), &[1, 2]);
    assert_eq!(r.to_vec_f32().unwrap(), vec![4., 2.]);
    // From a transposed view: x.t() = [[1, 4], [2, 5], [3, 6]], dim -1.
    let r = x.t().unwrap().gather(-1, &ids(&[1, 0, 1], &[3, 1])).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![4., 2., 6.]);
}

#[test]
fn large_gather_matches_a_naive_loop() {
    let (a, b, c) = (40, 30, 50);
    let x = iota(&[a, b, c]);
    let idx = rand_ids(a * 20 * c, b, 11);
    let r = x.gather(1, &ids(&idx, &[a, 20, c])).unwrap().to_vec_f32().unwrap();
    for i in 0..a {
        for j in 0..20 {
            for k in 0..c {
                let q = (i * 20 + j) * c + k;
                assert_eq!(r[q], ((i * b + idx[q] as usize) * c + k) as f32);
            }
        }
    }
}

#[test]
fn scatter_add_inverts_gather() {
    // grad[i][index[i][j]] += g[i][j] for dim 1.
    let mut z = Array::zeros(&[2, 3]);
    z.scatter_add_(1, &ids(&[2, 2, 0, 1], &[2, 2]), &arr(&[1., 2., 3., 4.], &[2, 2])).unwrap();
    assert_eq!(z.to_vec_f32().unwrap(), vec![0., 0., 3., 3., 4., 0.]);
    // Large, parallel over dim 0, compared with a naive loop.
    let (a, b, c) = (64, 30, 40);
    let idx = rand_ids(a * 20 * c, b, 5);
    let g = iota(&[a, 20, c]);
    let mut z = Array::zeros(&[a, b, c]);
    z.scatter_add_(1, &ids(&idx, &[a, 20, c]), &g).unwrap();
    let mut want = vec![0f32; a * b * c];
    let gv = g.to_vec_f32().unwrap();
    for i in 0..a {
        for j in 0..20 {
            for k in 0..c {
                let q = (i * 20 + j) * c + k;
                want[(i * b + idx[q] as usize) * c + k] += gv[q];
            }
        }
    }
    assert_eq!(z.to_vec_f32().unwrap(), want);
}

#[test]
fn embedding_and_its_backward() {
    let w = arr(&[0., 1., 10., 11., 20., 21.], &[3, 2]);
    let i = ids(&[2, 0, 2, 1], &[2, 2]);
    let e = w.embedding(&i).unwrap();
    assert_eq!(e.shape(), &[2, 2, 2]);
    assert_eq!(e.to_vec_f32().unwrap(), vec![20., 21., 0., 1., 20., 21., 10., 11.]);
    let g = arr(&[1., 2., 3., 4., 5., 6., 7., 8.], &[2, 2, 2]);
    let gw = g.embedding_backward(&i, 3, None).unwrap();
    assert_eq!(gw.to_vec_f32().unwrap(), vec![3., 4., 7., 8., 6., 8.]);
    let gw = g.embedding_backward(&i, 3, Some(2)).unwrap();
    assert_eq!(gw.to_vec_f32().unwrap(), vec![3., 4., 7., 8., 0., 0.]);
    let gw = g.embedding_backward(&i, 3, Some(-3)).unwrap();
    assert_eq!(gw.to_vec_f32().unwrap(), vec![0., 0., 7., 8., 6., 8.]);
}

#[test]
fn large_embedding_backward_matches_a_naive_loop() {
    let (num, dim, n) = (100, 48, 3000);
    let idx = rand_ids(n, num, 9);
    let g = iota(&[n, dim]);
    let gw = g.embedding_backward(&ids(&idx, &[n]), num, Some(5)).unwrap();
    let mut want = vec![0f32; num * dim];
    let gv = g.to_vec_f32().unwrap();
    for (j, &k) in idx.iter().enumerate() {
        if k == 5 {
            continue;
        }
        for i in 0..dim {
            want[k as usize * dim + i] += gv[j * dim + i];
        }
    }
    assert_eq!(gw.to_vec_f32().unwrap(), want);
}

#[test]
fn masked_fill_broadcasts_the_mask() {
    let x = arr(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    let r = x.masked_fill(&mask(&[1, 0, 1], &[3]), -1.0).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![-1., 2., -1., -1., 5., -1.]);
    let r = x.masked_fill(&mask(&[0, 1], &[2, 1]), f32::NEG_INFINITY).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![1., 2., 3., f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY]);
    let r = x.masked_fill(&mask(&[1], &[]), f32::INFINITY).unwrap();
    assert!(r.to_vec_f32().unwrap().iter().all(|&v| v == f32::INFINITY));
    let r = x.masked_fill(&mask(&[0, 2, 0, 0, 0, 1], &[2, 3]), 0.5).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![1., 0.5, 3., 4., 5., 0.5]);
    // A mask larger than the input broadcasts the input too (as torch.masked_fill does).
    let r = arr(&[1., 2.], &[2]).masked_fill(&mask(&[1, 0, 0, 1], &[2, 2]), 0.0).unwrap();
    assert_eq!(r.shape(), &[2, 2]);
    assert_eq!(r.to_vec_f32().unwrap(), vec![0., 2., 1., 0.]);
}

#[test]
fn where_broadcasts_all_three() {
    let c = mask(&[1, 0, 1], &[3]);
    let a = arr(&[1., 2.], &[2, 1]);
    let b = arr(&[10., 20., 30.], &[3]);
    let r = Array::where_cond(&c, &a, &b).unwrap();
    assert_eq!(r.shape(), &[2, 3]);
    assert_eq!(r.to_vec_f32().unwrap(), vec![1., 20., 1., 2., 20., 2.]);
    let c = mask(&[1, 0, 0, 1], &[2, 2]);
    let a = arr(&[1., 2., 3., 4.], &[2, 2]);
    let b = arr(&[5., 6., 7., 8.], &[2, 2]);
    assert_eq!(Array::where_cond(&c, &a, &b).unwrap().to_vec_f32().unwrap(), vec![1., 6., 7., 4.]);
    // Strided operands.
    let r = Array::where_cond(&c, &a.t().unwrap(), &b).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![1., 6., 7., 4.]);
    let r = Array::where_cond(&c.t().unwrap(), &a, &b).unwrap();
    assert_eq!(r.to_vec_f32().unwrap(), vec![1., 6., 7., 4.]);
}

#[test]
fn large_masked_ops_match_a_naive_loop() {
    let (r, c) = (300, 257);
    let x = iota(&[r, c]);
    let mv: Vec<u8> = rand_ids(r * c, 2, 1).into_iter().map(|v| v as u8).collect();
    let row_mask: Vec<u8> = rand_ids(c, 2, 2).into_iter().map(|v| v as u8).collect();
    let full = x.masked_fill(&mask(&mv, &[r, c]), -5.0).unwrap().to_vec_f32().unwrap();
    let bcast = x.masked_fill(&mask(&row_mask, &[c]), -5.0).unwrap().to_vec_f32().unwrap();
    let col = Array::where_cond(
        &mask(&row_mask[..r.min(c)], &[r.min(c), 1]),
        &x.narrow(0, 0, r.min(c)).unwrap(),
        &Array::scalar(7.0),
    )
    .unwrap()
    .to_vec_f32()
    .unwrap();
    for i in 0..r {
        for j in 0..c {
            let v = (i * c + j) as f32;
            assert_eq!(full[i * c + j], if mv[i * c + j] != 0 { -5.0 } else { v });
            assert_eq!(bcast[i * c + j], if row_mask[j] != 0 { -5.0 } else { v });
            if i < c {
                assert_eq!(col[i * c + j], if row_mask[i] != 0 { v } else { 7.0 });
            }
        }
    }
}

#[test]
fn out_of_range_indices_are_errors_naming_op_value_and_size() {
    let x = iota(&[3, 4]);
    let e = x.index_select(0, &ids(&[0, 3], &[2])).unwrap_err().to_string();
    assert!(e.starts_with("index_select:") && e.contains("index 3") && e.contains("size 3"), "{e}");
    let e = x.index_select(1, &ids(&[-1], &[1])).unwrap_err().to_string();
    assert!(e.contains("index -1") && e.contains("size 4"), "{e}");
    let e = x.index_select(0, &arr(&[0.], &[1])).unwrap_err().to_string();
    assert!(e.contains("i64"), "{e}");
    let e = x.index_select(2, &ids(&[0], &[1])).unwrap_err().to_string();
    assert!(e.starts_with("index_select:") && e.contains("dim 2"), "{e}");
    let e = x.gather(1, &ids(&[0, 4], &[1, 2])).unwrap_err().to_string();
    assert!(e.starts_with("gather:") && e.contains("index 4") && e.contains("size 4"), "{e}");
    let e = x.gather(1, &ids(&[0; 8], &[4, 2])).unwrap_err().to_string();
    assert!(e.starts_with("gather:") && e.contains("[4, 2]") && e.contains("dim 0"), "{e}");
    let e = x.gather(1, &ids(&[0; 2], &[2])).unwrap_err().to_string();
    assert!(e.starts_with("gather:") && e.contains("same number of dims"), "{e}");
    let e = x.embedding(&ids(&[1, 7], &[2])).unwrap_err().to_string();
    assert!(e.starts_with("embedding:") && e.contains("index 7") && e.contains("size 3"), "{e}");
    let e = iota(&[2, 3]).embedding_backward(&ids(&[0, 1], &[2]), 3, Some(3)).unwrap_err().to_string();
    assert!(e.starts_with("embedding:") && e.contains("padding_idx 3"), "{e}");
    let e = x.masked_fill(&mask(&[1, 0], &[2]), 0.0).unwrap_err().to_string();
    assert!(e.starts_with("masked_fill:") && e.contains("[3, 4]") && e.contains("[2]"), "{e}");
    let e = x.masked_fill(&ids(&[1; 4], &[4]), 0.0).unwrap_err().to_string();
    assert!(e.starts_with("masked_fill:") && e.contains("u8"), "{e}");
    let e = Array::where_cond(&mask(&[1, 0, 1], &[3]), &x, &x).unwrap_err().to_string();
    assert!(e.starts_with("where:") && e.contains("[3]"), "{e}");
    let mut z = Array::zeros(&[2, 2]);
    let e = z.index_add_(0, &ids(&[5], &[1]), &Array::zeros(&[1, 2])).unwrap_err().to_string();
    assert!(e.starts_with("index_add_:") && e.contains("index 5"), "{e}");
    let e = z.scatter_add_(0, &ids(&[2], &[1, 1]), &Array::zeros(&[1, 1])).unwrap_err().to_string();
    assert!(e.starts_with("scatter_add_:") && e.contains("index 2"), "{e}");
}
