//! Fused scaled dot-product attention: `softmax(q·kᵀ·scale + mask) @ v` and its backward.
//!
//! Every product goes through [`gemm`] with the operands' own strides: `kᵀ` and `vᵀ` are
//! read transposed in place, a permuted head layout (`[B, L, H, E]` viewed as `[B, H, L, E]`)
//! and a broadcast batch dim (stride 0) are never copied. The softmax runs row by row with
//! the row kernels of [`softmax`](super::softmax). The forward returns the attention
//! probabilities `P` (`[*, L, S]`) beside the output so that the backward needs no second
//! softmax:
//!
//! * `dV = Pᵀ·dO`, `dP = dO·Vᵀ`,
//! * `dS = P ∘ (dP − rowsum(dP ∘ P))`,
//! * `dQ = dS·K·scale`, `dK = dSᵀ·Q·scale`.
//!
//! Batches (the leading dims) are split over rayon's pool when there are several and the
//! work is large enough; otherwise each GEMM may use the pool itself.

use super::gemm::{gemm, MatMut, MatRef, Par, PAR_MNK};
use super::softmax::{softmax_backward_row, softmax_row};
use crate::layout::{broadcast_shapes, Dims};
use crate::{bail, Array, DType, Result};
use rayon::prelude::*;
use smallvec::SmallVec;

const OP: &str = "scaled_dot_product_attention";

/// A rank ≥ 2 array seen as a batch of matrices over the broadcast batch shape: the offset
/// of batch element `b` and the strides of the trailing two dims.
struct Batched<'a, T> {
    data: &'a [T],
    offset: usize,
    /// Strides of the batch dims aligned to the full batch shape (0 where broadcast).
    bstrides: SmallVec<[usize; 6]>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T: crate::Element> Batched<'a, T> {
    /// `x` (`[.., rows, cols]`, its batch dims broadcastable to `batch`) seen over `batch`.
    fn new(x: &'a Array, batch: &[usize]) -> Result<Self> {
        let r = x.rank();
        let (sh, st) = (x.shape(), x.layout().strides());
        let xb = &sh[..r - 2];
        let lead = batch.len() - xb.len();
        let bstrides = (0..batch.len()).map(|d| if d < lead || xb[d - lead] == 1 { 0 } else { st[d - lead] }).collect();
        Ok(Batched {
            data: x.buffer::<T>()?,
            offset: x.layout().offset(),
            bstrides,
            rows: sh[r - 2],
            cols: sh[r - 1],
            rs: st[r - 2],
            cs: st[r - 1],
        })
    }

    /// The storage offset of batch element `b` (row-major index into `batch`).
    fn offset_of(&self, mut b: usize, batch: &[usize]) -> usize {
        let mut off = self.offset;
        for (d, &size) in batch.iter().enumerate().rev() {
            off += (b % size) * self.bstrides[d];
            b /= size;
        }
        off
    }
}

impl<'a> Batched<'a, f32> {
    /// The matrix of batch element `b`.
    fn mat(&self, b: usize, batch: &[usize]) -> MatRef<'a> {
        MatRef::new(self.data, self.offset_of(b, batch), self.rows, self.cols, self.rs, self.cs)
    }

    /// Rows `r0..r0 + n` of the matrix of batch element `b`.
    fn rows(&self, b: usize, batch: &[usize], r0: usize, n: usize) -> MatRef<'a> {
        MatRef::new(self.data, self.offset_of(b, batch) + r0 * self.rs, n, self.cols, self.rs, self.cs)
    }
}

/// The attention mask, read per row.
enum Mask<'a> {
    /// U8: 0 excludes the key.
    Bool(Batched<'a, u8>),
    /// F32: added to the scores.
    Additive(Batched<'a, f32>),
}

impl Mask<'_> {
    /// Applies row `i` of batch element `b` of the mask to the scores `row`.
    fn apply(&self, b: usize, batch: &[usize], i: usize, row: &mut [f32]) {
        match self {
            Mask::Bool(m) => {
                let base = m.offset_of(b, batch) + i * m.rs;
                for (j, r) in row.iter_mut().enumerate() {
                    if m.data[base + j * m.cs] == 0 {
                        *r = f32::NEG_INFINITY;
                    }
                }
            }
            Mask::Additive(m) => {
                let base = m.offset_of(b, batch) + i * m.rs;
                for (j, r) in row.iter_mut().enumerate() {
                    *r += m.data[base + j * m.cs];
                }
            }
        }
    }
}

/// Shapes of one attention call: the broadcast batch shape and `L`, `S`, `E`, `Ev`.
struct Dimensions {
    batch: Dims,
    l: usize,
    s: usize,
    e: usize,
    ev: usize,
}

impl Dimensions {
    fn nbatch(&self) -> usize {
        self.batch.iter().product()
    }

    /// `batch + [a, b]`.
    fn shape(&self, a: usize, b: usize) -> Dims {
        let mut s = self.batch.clone();
        s.extend_from_slice(&[a, b]);
        s
    }
}

/// Checks the dtypes and shapes of q, k, v and returns the dimensions of the call.
fn dimensions(q: &Array, k: &Array, v: &Array) -> Result<Dimensions> {
    for (name, x) in [("query", q), ("key", k), ("value", v)] {
        x.expect_dtype(OP, DType::F32)?;
        if x.rank() < 2 {
            bail!(OP, "{name} must have at least 2 dims [*, len, features], got shape {:?}", x.shape());
        }
    }
    let (rq, rk, rv) = (q.rank(), k.rank(), v.rank());
    let (l, e) = (q.shape()[rq - 2], q.shape()[rq - 1]);
    let (s, ek) = (k.shape()[rk - 2], k.shape()[rk - 1]);
    let (sv, ev) = (v.shape()[rv - 2], v.shape()[rv - 1]);
    if ek != e {
        bail!(
            OP,
            "query {:?} and key {:?} must have the same last dim: dim {} of query ({e}) != dim {} of key ({ek})",
            q.shape(),
            k.shape(),
            rq - 1,
            rk - 1
        );
    }
    if sv != s {
        bail!(
            OP,
            "key {:?} and value {:?} must have the same sequence length: dim {} of key ({s}) != dim {} of value ({sv})",
            k.shape(),
            v.shape(),
            rk - 2,
            rv - 2
        );
    }
    let qk = broadcast_shapes(OP, &q.shape()[..rq - 2], &k.shape()[..rk - 2]);
    let batch = qk.and_then(|b| broadcast_shapes(OP, &b, &v.shape()[..rv - 2])).map_err(|_| {
        crate::Error::op(
            OP,
            format!(
                "the batch dims of query {:?}, key {:?} and value {:?} do not broadcast",
                q.shape(),
                k.shape(),
                v.shape()
            ),
        )
    })?;
    Ok(Dimensions { batch, l, s, e, ev })
}

/// Rows per block of the causal paths: with `is_causal` the products are computed block by
/// block, skipping the blocks above the diagonal (where the probabilities are exactly 0).
const CAUSAL_BLOCK: usize = 32;

/// The `(start, len)` row blocks of `n` rows.
fn blocks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(CAUSAL_BLOCK).map(move |r0| (r0, CAUSAL_BLOCK.min(n - r0)))
}

/// True when the batches should be split over the pool (each GEMM then stays on its thread).
fn batch_parallel(nbatch: usize, work_per_batch: usize) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && nbatch > 1 && nbatch.saturating_mul(work_per_batch) >= PAR_MNK
}

/// Runs `f(b, item)` for each batch element, over the pool when `par`.
fn for_each_batch<I: Send>(items: Vec<I>, par: bool, f: impl Fn(usize, I, Par) + Sync + Send) {
    if par {
        items.into_par_iter().enumerate().for_each(|(b, it)| f(b, it, Par::Seq));
    } else {
        items.into_iter().enumerate().for_each(|(b, it)| f(b, it, Par::Auto));
    }
}

/// `n` chunks of `len` elements of `v` (`n` empty ones when `len` is 0).
fn chunks(v: &mut [f32], len: usize, n: usize) -> Vec<&mut [f32]> {
    if len == 0 {
        (0..n).map(|_| &mut [][..]).collect()
    } else {
        v.chunks_mut(len).collect()
    }
}

/// [`chunks`] wrapped in `Some` when `need`, else `n` times `None`.
fn opt_chunks(v: &mut [f32], need: bool, len: usize, n: usize) -> Vec<Option<&mut [f32]>> {
    if need {
        chunks(v, len, n).into_iter().map(Some).collect()
    } else {
        (0..n).map(|_| None).collect()
    }
}

impl Array {
    /// PyTorch's `scaled_dot_product_attention` (without dropout):
    /// `softmax(query·keyᵀ·scale + mask, −1) @ value`. See
    /// [`Array::scaled_dot_product_attention_probs`] for the arguments.
    pub fn scaled_dot_product_attention(
        &self,
        key: &Array,
        value: &Array,
        attn_mask: Option<&Array>,
        is_causal: bool,
        scale: Option<f32>,
    ) -> Result<Array> {
        Ok(self.scaled_dot_product_attention_probs(key, value, attn_mask, is_causal, scale)?.0)
    }

    /// Scaled dot-product attention returning `(output, probs)`: `self` is the query
    /// `[*, L, E]`, `key` `[*, S, E]`, `value` `[*, S, Ev]` (the batch dims `*` broadcast);
    /// the output is `[*, L, Ev]` and `probs = softmax(scores)` is `[*, L, S]` (contiguous).
    ///
    /// `attn_mask` broadcasts to `[*, L, S]`: a U8 mask keeps the keys where it is 1 (0 gives
    /// the score −inf), an F32 mask is added to the scores (it may hold −inf). With
    /// `is_causal`, query `i` attends only keys `j ≤ i` (the top-left lower triangle, also
    /// when `L ≠ S`). `scale` `None` is `1/√E`. A fully masked row gives NaN, as in PyTorch.
    pub fn scaled_dot_product_attention_probs(
        &self,
        key: &Array,
        value: &Array,
        attn_mask: Option<&Array>,
        is_causal: bool,
        scale: Option<f32>,
    ) -> Result<(Array, Array)> {
        let dm = dimensions(self, key, value)?;
        let (l, s, e, ev) = (dm.l, dm.s, dm.e, dm.ev);
        let scale = scale.unwrap_or(1.0 / (e as f32).sqrt());
        let nb = dm.nbatch();
        let mask_full;
        let mask = match attn_mask {
            None => None,
            Some(m) => {
                let target = dm.shape(l, s);
                mask_full = m.broadcast_to(&target).map_err(|_| {
                    crate::Error::op(OP, format!("attn_mask of shape {:?} does not broadcast to {target:?}", m.shape()))
                })?;
                Some(match m.dtype() {
                    DType::U8 => Mask::Bool(Batched::new(&mask_full, &dm.batch)?),
                    DType::F32 => Mask::Additive(Batched::new(&mask_full, &dm.batch)?),
                    d => bail!(OP, "attn_mask must be bool (u8) or f32, got {d}"),
                })
            }
        };
        let (qb, kb, vb) =
            (Batched::new(self, &dm.batch)?, Batched::new(key, &dm.batch)?, Batched::new(value, &dm.batch)?);
        let mut probs = vec![0f32; nb * l * s];
        let mut out = vec![0f32; nb * l * ev];
        let items: Vec<_> = chunks(&mut probs, l * s, nb).into_iter().zip(chunks(&mut out, l * ev, nb)).collect();
        let par = batch_parallel(nb, l * s * (e + ev));
        let batch = &dm.batch;
        for_each_batch(items, par, |b, (p, o), par| {
            if l == 0 {
                return;
            }
            if is_causal {
                // Query rows r0..r0+n see keys 0..min(r0+n, s) only: the rest of their
                // scores stay 0 here and are set to −inf below.
                for (r0, n) in blocks(l) {
                    let c1 = (r0 + n).min(s);
                    let pm = MatMut::new(p, r0 * s, n, c1, s, 1);
                    gemm(pm, qb.rows(b, batch, r0, n), kb.rows(b, batch, 0, c1).t(), scale, false, par);
                }
            } else {
                gemm(MatMut::row_major(p, l, s), qb.mat(b, batch), kb.mat(b, batch).t(), scale, false, par);
            }
            if s > 0 {
                let mut row = vec![0f32; s];
                for (i, pr) in p.chunks_exact_mut(s).enumerate() {
                    row.copy_from_slice(pr);
                    if let Some(m) = &mask {
                        m.apply(b, batch, i, &mut row);
                    }
                    if is_causal && i + 1 < s {
                        row[i + 1..].fill(f32::NEG_INFINITY);
                    }
                    softmax_row(&row, pr);
                }
            }
            if is_causal && s > 0 {
                for (r0, n) in blocks(l) {
                    let c1 = (r0 + n).min(s);
                    let pm = MatRef::new(p, r0 * s, n, c1, s, 1);
                    gemm(MatMut::new(o, r0 * ev, n, ev, ev, 1), pm, vb.rows(b, batch, 0, c1), 1.0, false, par);
                }
            } else {
                gemm(MatMut::row_major(o, l, ev), MatRef::row_major(p, l, s), vb.mat(b, batch), 1.0, false, par);
            }
        });
        let out = Array::from_f32_unchecked(out, &dm.shape(l, ev));
        let probs = Array::from_f32_unchecked(probs, &dm.shape(l, s));
        Ok((out, probs))
    }

    /// The backward of [`Array::scaled_dot_product_attention_probs`]: given the query, key,
    /// value, the `probs` it returned, the output gradient `grad` (`[*, L, Ev]`) and the
    /// `scale` used (`None` = `1/√E`), returns the gradients of query, key and value (those
    /// for which `needs` is true), each of its input's shape (summed over broadcast batch dims).
    pub fn scaled_dot_product_attention_backward(
        query: &Array,
        key: &Array,
        value: &Array,
        probs: &Array,
        grad: &Array,
        scale: Option<f32>,
        needs: [bool; 3],
    ) -> Result<[Option<Array>; 3]> {
        sdpa_backward(query, key, value, probs, grad, scale, needs, false)
    }

    /// [`Array::scaled_dot_product_attention_backward`] for `probs` from a call with
    /// `is_causal` (whatever the mask): the probabilities above the diagonal are exactly 0, so
    /// the blocks there are skipped in every product.
    pub fn scaled_dot_product_attention_backward_causal(
        query: &Array,
        key: &Array,
        value: &Array,
        probs: &Array,
        grad: &Array,
        scale: Option<f32>,
        needs: [bool; 3],
    ) -> Result<[Option<Array>; 3]> {
        sdpa_backward(query, key, value, probs, grad, scale, needs, true)
    }
}

/// The backward of the attention; with `causal`, skips the blocks of `probs` above the
/// diagonal (exactly 0 there).
#[allow(clippy::too_many_arguments)]
fn sdpa_backward(
    query: &Array,
    key: &Array,
    value: &Array,
    probs: &Array,
    grad: &Array,
    scale: Option<f32>,
    needs: [bool; 3],
    causal: bool,
) -> Result<[Option<Array>; 3]> {
    {
        let dm = dimensions(query, key, value)?;
        let (l, s, e, ev) = (dm.l, dm.s, dm.e, dm.ev);
        let scale = scale.unwrap_or(1.0 / (e as f32).sqrt());
        let nb = dm.nbatch();
        if probs.shape() != dm.shape(l, s).as_slice() || !probs.is_contiguous() {
            bail!(OP, "backward: probs must be contiguous of shape {:?}, got {:?}", dm.shape(l, s), probs.shape());
        }
        if grad.shape() != dm.shape(l, ev).as_slice() {
            bail!(
                OP,
                "backward: the output gradient has shape {:?}, the output has shape {:?}",
                grad.shape(),
                dm.shape(l, ev)
            );
        }
        grad.expect_dtype(OP, DType::F32)?;
        let batch = &dm.batch;
        let (qb, kb, vb, gb) = (
            Batched::new(query, batch)?,
            Batched::new(key, batch)?,
            Batched::new(value, batch)?,
            Batched::new(grad, batch)?,
        );
        let ps = probs.as_slice::<f32>().expect("contiguous f32");
        let need_s = needs[0] || needs[1];
        let buf = |need: bool, n: usize| if need { vec![0f32; nb * n] } else { Vec::new() };
        let (mut dq, mut dk, mut dv) = (buf(needs[0], l * e), buf(needs[1], s * e), buf(needs[2], s * ev));
        let items: Vec<_> = opt_chunks(&mut dq, needs[0], l * e, nb)
            .into_iter()
            .zip(opt_chunks(&mut dk, needs[1], s * e, nb))
            .zip(opt_chunks(&mut dv, needs[2], s * ev, nb))
            .collect();
        let par = batch_parallel(nb, l * s * (2 * e + 2 * ev));
        for_each_batch(items, par, |b, ((dq, dk), dv), par| {
            let p = &ps[b * l * s..(b + 1) * l * s];
            let pm = MatRef::row_major(p, l, s);
            let g = gb.mat(b, batch);
            // Causal: P[i, j] = 0 for j > i, so key block c0..c0+n only meets query rows
            // c0..l, and query block r0..r0+n only keys 0..min(r0+n, s).
            let causal = causal && l > 0 && s > 0;
            if let Some(dv) = dv {
                if causal {
                    for (c0, n) in blocks(s) {
                        let r = l.saturating_sub(c0);
                        let dvm = MatMut::new(dv, c0 * ev, n, ev, ev, 1);
                        if r == 0 {
                            continue; // no query sees these keys: dv stays 0
                        }
                        let pt = MatRef::new(p, c0 * s + c0, r, n, s, 1).t();
                        gemm(dvm, pt, gb.rows(b, batch, c0, r), 1.0, false, par);
                    }
                } else {
                    gemm(MatMut::row_major(dv, s, ev), pm.t(), g, 1.0, false, par);
                }
            }
            if !need_s || l == 0 || s == 0 {
                return;
            }
            let mut dp = vec![0f32; l * s];
            if causal {
                for (r0, n) in blocks(l) {
                    let c1 = (r0 + n).min(s);
                    let dpm = MatMut::new(&mut dp, r0 * s, n, c1, s, 1);
                    gemm(dpm, gb.rows(b, batch, r0, n), vb.rows(b, batch, 0, c1).t(), 1.0, false, par);
                }
            } else {
                gemm(MatMut::row_major(&mut dp, l, s), g, vb.mat(b, batch).t(), 1.0, false, par);
            }
            let mut ds = vec![0f32; l * s];
            for ((y, gr), o) in p.chunks_exact(s).zip(dp.chunks_exact(s)).zip(ds.chunks_exact_mut(s)) {
                softmax_backward_row(y, gr, o);
            }
            let dsm = MatRef::row_major(&ds, l, s);
            if let Some(dq) = dq {
                if causal {
                    for (r0, n) in blocks(l) {
                        let c1 = (r0 + n).min(s);
                        let dsb = MatRef::new(&ds, r0 * s, n, c1, s, 1);
                        gemm(MatMut::new(dq, r0 * e, n, e, e, 1), dsb, kb.rows(b, batch, 0, c1), scale, false, par);
                    }
                } else {
                    gemm(MatMut::row_major(dq, l, e), dsm, kb.mat(b, batch), scale, false, par);
                }
            }
            if let Some(dk) = dk {
                if causal {
                    for (c0, n) in blocks(s) {
                        let r = l.saturating_sub(c0);
                        if r == 0 {
                            continue;
                        }
                        let dst = MatRef::new(&ds, c0 * s + c0, r, n, s, 1).t();
                        let dkm = MatMut::new(dk, c0 * e, n, e, e, 1);
                        gemm(dkm, dst, qb.rows(b, batch, c0, r), scale, false, par);
                    }
                } else {
                    gemm(MatMut::row_major(dk, s, e), dsm.t(), qb.mat(b, batch), scale, false, par);
                }
            }
        });
        let finish = |v: Vec<f32>, need: bool, rows: usize, cols: usize, like: &Array| -> Result<Option<Array>> {
            if !need {
                return Ok(None);
            }
            let full = Array::from_f32_unchecked(v, &dm.shape(rows, cols));
            Ok(Some(if full.shape() == like.shape() { full } else { full.sum_to(like.shape())? }))
        };
        Ok([finish(dq, needs[0], l, e, query)?, finish(dk, needs[1], s, e, key)?, finish(dv, needs[2], s, ev, value)?])
    }
}
