//! Matrix products: `matmul` (batched, broadcasting, 1-d operands as PyTorch), `linear`, and
//! the batched products their backward passes need. All of them call [`gemm`](super::gemm::gemm)
//! with the operands' own strides: transposed and permuted views are never copied.

use super::gemm::{gemm, MatMut, MatRef, Par, PAR_MNK};
use crate::layout::{broadcast_shapes, contiguous_strides, Dims};
use crate::{bail, Array, DType, Result};
use rayon::prelude::*;
use smallvec::SmallVec;
use std::mem::MaybeUninit;

/// A new `rows x cols` row-major buffer filled by `f`, which must overwrite every element
/// of the view it gets (a GEMM with `accumulate == false` does).
fn written_by(rows: usize, cols: usize, f: impl FnOnce(MatMut<'_>)) -> Vec<f32> {
    let n = rows * cols;
    let mut v = Vec::<f32>::with_capacity(n);
    f(MatMut::uninit(&mut v.spare_capacity_mut()[..n], 0, rows, cols, cols, 1));
    // SAFETY: `f` wrote all `rows x cols` elements of the contiguous view.
    unsafe { v.set_len(n) };
    v
}

/// The 2-d matrix view of a rank-2 f32 array.
fn mat(x: &Array) -> Result<MatRef<'_>> {
    let (sh, st) = (x.shape(), x.layout().strides());
    Ok(MatRef::new(x.buffer::<f32>()?, x.layout().offset(), sh[0], sh[1], st[0], st[1]))
}

/// Shapes after PyTorch's 1-d promotion: a 1-d lhs `[k]` is `[1, k]`, a 1-d rhs `[k]` is `[k, 1]`.
/// Checks the inner dims and returns (lhs shape, rhs shape, promoted output shape, final output shape).
fn matmul_shapes(a: &[usize], b: &[usize]) -> Result<(Dims, Dims, Dims, Dims)> {
    if a.is_empty() || b.is_empty() {
        bail!("matmul", "both arguments need at least 1 dim, got shapes {a:?} and {b:?}");
    }
    let a2: Dims = if a.len() == 1 { SmallVec::from_slice(&[1, a[0]]) } else { SmallVec::from_slice(a) };
    let b2: Dims = if b.len() == 1 { SmallVec::from_slice(&[b[0], 1]) } else { SmallVec::from_slice(b) };
    let (ra, rb) = (a2.len(), b2.len());
    if a2[ra - 1] != b2[rb - 2] {
        let (da, db) = (a.len() - 1, if b.len() == 1 { 0 } else { b.len() - 2 });
        bail!("matmul", "cannot multiply {a:?} by {b:?}: dim {da} of lhs ({}) != dim {db} of rhs ({})", a[da], b[db]);
    }
    let batch = broadcast_shapes("matmul", &a2[..ra - 2], &b2[..rb - 2]).map_err(|_| {
        crate::Error::op(
            "matmul",
            format!(
                "cannot multiply {a:?} by {b:?}: batch dims {:?} and {:?} do not broadcast",
                &a2[..ra - 2],
                &b2[..rb - 2]
            ),
        )
    })?;
    let mut out2 = batch.clone();
    out2.extend_from_slice(&[a2[ra - 2], b2[rb - 1]]);
    let mut out = batch;
    if a.len() > 1 {
        out.push(a2[ra - 2]);
    }
    if b.len() > 1 {
        out.push(b2[rb - 1]);
    }
    Ok((a2, b2, out2, out))
}

impl Array {
    /// Matrix product with PyTorch's `matmul` semantics: `[..., n, k] @ [..., k, m]` with
    /// broadcasting batch dims; a 1-d lhs is a row vector and a 1-d rhs a column vector (the
    /// added dim is removed from the result, so two 1-d operands give their dot product).
    ///
    /// ```
    /// use kiln_tensor::Array;
    /// let a = Array::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let b = Array::from_vec(vec![5.0, 6.0, 7.0, 8.0], &[2, 2])?;
    /// assert_eq!(a.matmul(&b)?.to_vec_f32()?, vec![19.0, 22.0, 43.0, 50.0]);
    /// # Ok::<(), kiln_tensor::Error>(())
    /// ```
    pub fn matmul(&self, other: &Array) -> Result<Array> {
        self.expect_dtype("matmul", DType::F32)?;
        other.expect_dtype("matmul", DType::F32)?;
        // The common case first, with as little bookkeeping as possible.
        if self.rank() == 2 && other.rank() == 2 {
            let (n, k, k2, m) = (self.shape()[0], self.shape()[1], other.shape()[0], other.shape()[1]);
            if k != k2 {
                bail!(
                    "matmul",
                    "cannot multiply {:?} by {:?}: dim 1 of lhs ({k}) != dim 0 of rhs ({k2})",
                    self.shape(),
                    other.shape()
                );
            }
            let (a, b) = (mat(self)?, mat(other)?);
            let out = written_by(n, m, |c| gemm(c, a, b, 1.0, false, Par::Auto));
            return Ok(Array::from_f32_unchecked(out, &[n, m]));
        }
        let (a2, b2, out2, out) = matmul_shapes(self.shape(), other.shape())?;
        let a = self.reshape_to(&a2)?;
        let b = other.reshape_to(&b2)?;
        batched_matmul(&a, &b, &out2)?.reshape_to(&out)
    }

    /// The gradient of `a.matmul(b)` with respect to `a` (whose shape is `a_shape`), given the
    /// output gradient `g`: `g @ bᵀ`, summed over the batch dims `a` was broadcast along.
    pub fn matmul_grad_lhs(g: &Array, b: &Array, a_shape: &[usize]) -> Result<Array> {
        let (a2, b2, out2, _) = matmul_shapes(a_shape, b.shape())?;
        let g2 = g.reshape_to(&out2)?;
        let bt = b.reshape_to(&b2)?.t()?;
        batched_matmul(&g2, &bt, &a2)?.reshape_to(a_shape)
    }

    /// The gradient of `a.matmul(b)` with respect to `b` (whose shape is `b_shape`), given the
    /// output gradient `g`: `aᵀ @ g`, summed over the batch dims `b` was broadcast along.
    pub fn matmul_grad_rhs(g: &Array, a: &Array, b_shape: &[usize]) -> Result<Array> {
        let (a2, b2, out2, _) = matmul_shapes(a.shape(), b_shape)?;
        let g2 = g.reshape_to(&out2)?;
        let at = a.reshape_to(&a2)?.t()?;
        batched_matmul(&at, &g2, &b2)?.reshape_to(b_shape)
    }

    /// `input @ weightᵀ + bias` (PyTorch's `linear`): input `[*, in]` (may be 1-d),
    /// weight `[out, in]`, bias `[out]`. One GEMM over the flattened leading dims, with the
    /// weight read transposed in place and the bias preloaded into the output.
    pub fn linear(&self, weight: &Array, bias: Option<&Array>) -> Result<Array> {
        self.expect_dtype("linear", DType::F32)?;
        weight.expect_dtype("linear", DType::F32)?;
        if weight.rank() != 2 {
            bail!("linear", "weight must be 2-d [out_features, in_features], got shape {:?}", weight.shape());
        }
        let (out_f, in_f) = (weight.shape()[0], weight.shape()[1]);
        if self.rank() == 0 || self.shape()[self.rank() - 1] != in_f {
            bail!(
                "linear",
                "input of shape {:?} does not match weight of shape {:?}: dim -1 of input must be {in_f} (dim 1 of weight)",
                self.shape(),
                weight.shape()
            );
        }
        let bias = match bias {
            Some(b) => {
                b.expect_dtype("linear", DType::F32)?;
                if b.shape() != [out_f] {
                    bail!(
                        "linear",
                        "bias must have shape [{out_f}] (dim 0 of weight {:?}), got {:?}",
                        weight.shape(),
                        b.shape()
                    );
                }
                Some(b.f32_cow()?)
            }
            None => None,
        };
        let rows: usize = self.shape()[..self.rank() - 1].iter().product();
        let x = self.reshape_to(&[rows, in_f])?;
        let (xm, wt) = (mat(&x)?, mat(weight)?.t());
        let out = match &bias {
            Some(b) => {
                let mut v = Vec::with_capacity(rows * out_f);
                for _ in 0..rows {
                    v.extend_from_slice(b);
                }
                gemm(MatMut::row_major(&mut v, rows, out_f), xm, wt, 1.0, true, Par::Auto);
                v
            }
            None => written_by(rows, out_f, |c| gemm(c, xm, wt, 1.0, false, Par::Auto)),
        };
        let mut shape: Dims = SmallVec::from_slice(&self.shape()[..self.rank() - 1]);
        shape.push(out_f);
        Ok(Array::from_f32_unchecked(out, &shape))
    }

    /// Sums a `[*, n]` array over all leading dims into `[n]` (the bias gradient of `linear`).
    /// Accumulates in f64.
    pub fn sum_leading(&self) -> Result<Array> {
        self.expect_dtype("sum", DType::F32)?;
        if self.rank() == 0 {
            return Ok(self.contiguous());
        }
        let n = self.shape()[self.rank() - 1];
        let x = self.f32_cow()?;
        let mut acc = vec![0f64; n];
        if n > 0 && !x.is_empty() {
            sum_rows_into(&mut acc, &x, &mut vec![0f32; n]);
        }
        Ok(Array::from_f32_unchecked(acc.into_iter().map(|s| s as f32).collect(), &[n]))
    }
}

/// Rows of [`Array::sum_leading`] added in f32 before their partial sum joins the f64 total.
const SUM_ROWS: usize = 32;

/// `acc[j] += Σ_r x[r·n + j]` (`n = acc.len()`, `x` whole rows, `part` scratch of `n`): rows
/// are summed in f32 over blocks of [`SUM_ROWS`] (vectorized along the row) and each block's
/// sums added in f64, so the error is about `SUM_ROWS·ε` relative, not `rows·ε`.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma", "x86_64+avx2+fma"))]
fn sum_rows_into(acc: &mut [f64], x: &[f32], part: &mut [f32]) {
    let n = acc.len();
    for block in x.chunks(n * SUM_ROWS) {
        part.copy_from_slice(&block[..n]);
        for row in block[n..].chunks_exact(n) {
            for (p, &v) in part.iter_mut().zip(row) {
                *p += v;
            }
        }
        for (s, &p) in acc.iter_mut().zip(part.iter()) {
            *s += p as f64;
        }
    }
}

/// One batch dim after broadcasting: its size and the strides of lhs, rhs and the output
/// (0 where the operand is broadcast, or where the output sums over the dim).
#[derive(Clone, Copy, Debug)]
struct BatchDim {
    size: usize,
    sl: usize,
    sr: usize,
    so: usize,
}

/// Merges a batch dim (stride `st`) into the matrix dim just inside it (size `n`,
/// stride `inner`): the new stride of the merged dim, if one stride walks both.
fn merge(st: usize, n: usize, inner: usize) -> Option<usize> {
    if n == 1 {
        Some(st)
    } else if st == n * inner {
        Some(inner)
    } else {
        None
    }
}

/// The strides of `x`'s batch dims aligned to a batch of rank `rank` (0 where broadcast).
fn batch_strides(x: &Array, rank: usize, batch: &[usize]) -> SmallVec<[usize; 6]> {
    let xb = &x.shape()[..x.rank() - 2];
    let xs = &x.layout().strides()[..x.rank() - 2];
    let lead = rank - xb.len();
    (0..rank).map(|d| if d < lead || (xb[d - lead] == 1 && batch[d] != 1) { 0 } else { xs[d - lead] }).collect()
}

/// `lhs @ rhs` over broadcast batch dims (`lhs [.., n, k]`, `rhs [.., k, m]`, both rank >= 2),
/// summed down to `out_shape` (`[.., n, m]` whose batch dims are those of the broadcast batch,
/// or 1 / missing where they are summed). Never materializes a broadcast operand: batch dims
/// that allow it are folded into one GEMM (rows of lhs when rhs is shared, the inner dim when
/// the output sums over the batch), the rest are a loop of GEMMs, spread over rayon's pool
/// by batch when there are enough batches (or each GEMM is too small to split), otherwise in
/// turn with each GEMM using the pool.
pub fn batched_matmul(lhs: &Array, rhs: &Array, out_shape: &[usize]) -> Result<Array> {
    lhs.expect_dtype("matmul", DType::F32)?;
    rhs.expect_dtype("matmul", DType::F32)?;
    let (rl, rr) = (lhs.rank(), rhs.rank());
    if rl < 2 || rr < 2 || out_shape.len() < 2 {
        bail!("matmul", "batched product needs rank >= 2, got {:?} @ {:?} -> {out_shape:?}", lhs.shape(), rhs.shape());
    }
    let (mut n, mut k, m) = (lhs.shape()[rl - 2], lhs.shape()[rl - 1], rhs.shape()[rr - 1]);
    if rhs.shape()[rr - 2] != k {
        bail!(
            "matmul",
            "cannot multiply {:?} by {:?}: dim {} of lhs ({k}) != dim {} of rhs ({})",
            lhs.shape(),
            rhs.shape(),
            rl - 1,
            rr - 2,
            rhs.shape()[rr - 2]
        );
    }
    let batch = broadcast_shapes("matmul", &lhs.shape()[..rl - 2], &rhs.shape()[..rr - 2])?;
    let r = batch.len();
    let ro = out_shape.len();
    let ob = &out_shape[..ro - 2];
    if out_shape[ro - 2..] != [n, m]
        || ob.len() > r
        || ob.iter().enumerate().any(|(i, &s)| s != 1 && s != batch[r - ob.len() + i])
    {
        bail!("matmul", "the product {:?} @ {:?} cannot be summed to shape {out_shape:?}", lhs.shape(), rhs.shape());
    }
    let total: usize = out_shape.iter().product();
    if batch.contains(&0) || k == 0 {
        return Ok(Array::zeros(out_shape));
    }
    if total == 0 {
        return Ok(Array::zeros(out_shape));
    }
    let (sl, sr) = (batch_strides(lhs, r, &batch), batch_strides(rhs, r, &batch));
    let ostr = contiguous_strides(out_shape);
    let lead = r - ob.len();
    let mut dims: SmallVec<[BatchDim; 6]> = SmallVec::new();
    for d in 0..r {
        if batch[d] == 1 {
            continue;
        }
        let so = if d < lead || ob[d - lead] == 1 { 0 } else { ostr[d - lead] };
        dims.push(BatchDim { size: batch[d], sl: sl[d], sr: sr[d], so });
    }
    let (lst, rst) = (lhs.layout().strides(), rhs.layout().strides());
    let (mut rs_l, mut cs_l, mut rs_r, cs_r) = (lst[rl - 2], lst[rl - 1], rst[rr - 2], rst[rr - 1]);
    let mut rs_o = m;
    // Fold the innermost batch dims into the matrices while one stride can walk them.
    while let Some(&d) = dims.last() {
        if d.so != 0 && d.sr == 0 {
            if let (Some(l), Some(o)) = (merge(d.sl, n, rs_l), merge(d.so, n, rs_o)) {
                (rs_l, rs_o, n) = (l, o, n * d.size);
                dims.pop();
                continue;
            }
        } else if d.so == 0 {
            if let (Some(l), Some(rr)) = (merge(d.sl, k, cs_l), merge(d.sr, k, rs_r)) {
                (cs_l, rs_r, k) = (l, rr, k * d.size);
                dims.pop();
                continue;
            }
        }
        break;
    }
    debug_assert!(rs_o == m || n == 1);
    let kept: SmallVec<[BatchDim; 6]> = dims.iter().copied().filter(|d| d.so != 0).collect();
    let red: SmallVec<[BatchDim; 6]> = dims.iter().copied().filter(|d| d.so == 0).collect();
    let n_red: usize = red.iter().map(|d| d.size).product();
    let (lbuf, rbuf) = (lhs.buffer::<f32>()?, rhs.buffer::<f32>()?);
    let (lo, ro_) = (lhs.layout().offset(), rhs.layout().offset());
    let unravel = |mut i: usize, ds: &[BatchDim]| -> (usize, usize) {
        let (mut ol, mut or) = (0, 0);
        for d in ds.iter().rev() {
            let x = i % d.size;
            i /= d.size;
            ol += x * d.sl;
            or += x * d.sr;
        }
        (ol, or)
    };
    let chunk = n * m;
    let run = |i: usize, c: &mut [MaybeUninit<f32>], par: Par| {
        let (kl, kr) = unravel(i, &kept);
        let len = c.len();
        for j in 0..n_red {
            let (jl, jr) = unravel(j, &red);
            let cm = if j == 0 {
                MatMut::uninit(c, 0, n, m, m, 1)
            } else {
                // SAFETY: the first product (j == 0) wrote every element of `c`.
                MatMut::row_major(unsafe { std::slice::from_raw_parts_mut(c.as_mut_ptr().cast::<f32>(), len) }, n, m)
            };
            gemm(
                cm,
                MatRef::new(lbuf, lo + kl + jl, n, k, rs_l, cs_l),
                MatRef::new(rbuf, ro_ + kr + jr, k, m, rs_r, cs_r),
                1.0,
                j > 0,
                par,
            );
        }
    };
    let per = n * m * k;
    let n_out = total / chunk;
    let mut out = Vec::<f32>::with_capacity(total);
    let spare = &mut out.spare_capacity_mut()[..total];
    // One fork-join over the batches beats one per product (each costs a worker wake-up):
    // split the batches when there are enough of them to keep the threads even, or when the
    // products are too small to split themselves.
    let threads = rayon::current_num_threads();
    let batch_par = threads > 1
        && n_out > 1
        && per * n_red * n_out >= PAR_MNK
        && (per < PAR_MNK || n_out >= 2 * threads || n_out.is_multiple_of(threads));
    if batch_par {
        spare.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| run(i, c, Par::Seq));
    } else {
        for (i, c) in spare.chunks_mut(chunk).enumerate() {
            run(i, c, Par::Auto);
        }
    }
    // SAFETY: the chunks tile `0..total` and `run` wrote each one entirely.
    unsafe { out.set_len(total) };
    Ok(Array::from_f32_unchecked(out, out_shape))
}
