//! softmax and log_softmax along one dim, and their backward kernels.
//!
//! All four are computed on the contiguous input seen as `[outer, n, inner]` (`n` the size of
//! the softmax dim). When `inner` is 1 (the last dim) each of the `outer` rows is a contiguous
//! slice handled by a row kernel ([`softmax_row`], ...); otherwise each `[n, inner]` slab is
//! handled by whole rows of `inner` elements. Both are numerically stable (the maximum is
//! subtracted first): `-inf` logits give probability 0 (log-probability `-inf`) and finite
//! gradients. Large inputs are split over rayon's pool by rows or slabs.

use super::output_buffer;
use super::reduce::{dispatched, dot_slice, max_slice, par_rows, sum_slice};
use super::vmath::{exp_inplace, exp_slice};
use crate::layout::normalize_dim;
use crate::{bail, Array, DType, Result};

dispatched! {
    /// `out = softmax(x)` for one contiguous row.
    pub fn softmax_row(x: &[f32], out: &mut [f32]) {
        debug_assert_eq!(x.len(), out.len());
        let m = max_slice(x);
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = v - m);
        exp_inplace(out);
        let inv = 1.0 / sum_slice(out);
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

dispatched! {
    /// `out = log_softmax(x) = x − max − log Σ exp(x − max)` for one contiguous row.
    pub fn log_softmax_row(x: &[f32], out: &mut [f32]) {
        debug_assert_eq!(x.len(), out.len());
        let m = max_slice(x);
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = v - m);
        let mut buf = [0f32; 256];
        let mut s = 0f64;
        for chunk in out.chunks(buf.len()) {
            let b = &mut buf[..chunk.len()];
            exp_slice(chunk, b);
            s += sum_slice(b) as f64;
        }
        let ls = s.ln() as f32;
        out.iter_mut().for_each(|o| *o -= ls);
    }
}

dispatched! {
    /// Gradient of softmax for one row: `out = y · (g − Σ g·y)` with `y` the softmax output and
    /// `g` the output gradient.
    pub fn softmax_backward_row(y: &[f32], g: &[f32], out: &mut [f32]) {
        debug_assert!(y.len() == g.len() && y.len() == out.len());
        let d = dot_slice(g, y);
        out.iter_mut().zip(y).zip(g).for_each(|((o, &y), &g)| *o = y * (g - d));
    }
}

dispatched! {
    /// Gradient of log_softmax for one row: `out = g − exp(y) · Σ g` with `y` the log_softmax
    /// output and `g` the output gradient.
    pub fn log_softmax_backward_row(y: &[f32], g: &[f32], out: &mut [f32]) {
        debug_assert!(y.len() == g.len() && y.len() == out.len());
        let s = sum_slice(g);
        exp_slice(y, out);
        out.iter_mut().zip(g).for_each(|(o, &g)| *o = g - *o * s);
    }
}

/// Rows `i` of an `[n, inner]` slab.
fn rows(x: &[f32], inner: usize) -> std::slice::ChunksExact<'_, f32> {
    x.chunks_exact(inner)
}

dispatched! {
    /// softmax (or log_softmax) over the rows of an `[n, inner]` slab, i.e. along dim 0.
    fn softmax_slab(x: &[f32], inner: usize, out: &mut [f32], log: bool) {
        let mut m = x[..inner].to_vec();
        for r in rows(x, inner).skip(1) {
            m.iter_mut()
                .zip(r)
                .for_each(|(m, &v)| *m = if v > *m || v.is_nan() { v } else { *m });
        }
        for (o, r) in out.chunks_exact_mut(inner).zip(rows(x, inner)) {
            o.iter_mut().zip(r).zip(&m).for_each(|((o, &v), &m)| *o = v - m);
        }
        // Column sums in f64: a slab may have many rows.
        let mut s = vec![0f64; inner];
        if log {
            let mut e = vec![0f32; inner];
            for o in out.chunks_exact(inner) {
                exp_slice(o, &mut e);
                s.iter_mut().zip(&e).for_each(|(s, &e)| *s += e as f64);
            }
            let l: Vec<f32> = s.iter().map(|s| s.ln() as f32).collect();
            for o in out.chunks_exact_mut(inner) {
                o.iter_mut().zip(&l).for_each(|(o, &l)| *o -= l);
            }
        } else {
            for o in out.chunks_exact_mut(inner) {
                exp_inplace(o);
                s.iter_mut().zip(o.iter()).for_each(|(s, &e)| *s += e as f64);
            }
            let r: Vec<f32> = s.iter().map(|s| (1.0 / s) as f32).collect();
            for o in out.chunks_exact_mut(inner) {
                o.iter_mut().zip(&r).for_each(|(o, &r)| *o *= r);
            }
        }
    }
}

dispatched! {
    /// The backward of softmax (or log_softmax) over the rows of an `[n, inner]` slab.
    fn softmax_backward_slab(y: &[f32], g: &[f32], inner: usize, out: &mut [f32], log: bool) {
        // Column sums in f64: a slab may have many rows.
        let mut s = vec![0f64; inner];
        if log {
            rows(g, inner).for_each(|g| s.iter_mut().zip(g).for_each(|(s, &g)| *s += g as f64));
            let s: Vec<f32> = s.iter().map(|&s| s as f32).collect();
            for ((o, y), g) in out.chunks_exact_mut(inner).zip(rows(y, inner)).zip(rows(g, inner)) {
                exp_slice(y, o);
                o.iter_mut().zip(g).zip(&s).for_each(|((o, &g), &s)| *o = g - *o * s);
            }
        } else {
            for (y, g) in rows(y, inner).zip(rows(g, inner)) {
                s.iter_mut().zip(y).zip(g).for_each(|((s, &y), &g)| *s += (y * g) as f64);
            }
            let s: Vec<f32> = s.iter().map(|&s| s as f32).collect();
            for ((o, y), g) in out.chunks_exact_mut(inner).zip(rows(y, inner)).zip(rows(g, inner)) {
                o.iter_mut()
                    .zip(y)
                    .zip(g)
                    .zip(&s)
                    .for_each(|(((o, &y), &g), &d)| *o = y * (g - d));
            }
        }
    }
}

/// `(outer, n, inner)` of `shape` split at the (normalized) dim `d`.
fn split_at_dim(shape: &[usize], d: usize) -> (usize, usize, usize) {
    if shape.is_empty() {
        return (1, 1, 1);
    }
    (shape[..d].iter().product(), shape[d], shape[d + 1..].iter().product())
}

/// Normalizes the softmax dim; a 0-d array accepts 0 and -1.
fn softmax_dim(op: &'static str, a: &Array, dim: isize) -> Result<usize> {
    a.expect_dtype(op, DType::F32)?;
    normalize_dim(op, dim, a.rank().max(1))
}

/// Runs the forward kernels of softmax (`log` false) or log_softmax (`log` true).
fn softmax_forward(op: &'static str, x: &Array, dim: isize, log: bool) -> Result<Array> {
    let d = softmax_dim(op, x, dim)?;
    let (_, n, inner) = split_at_dim(x.shape(), d);
    let mut out = output_buffer(x.numel());
    if out.is_empty() {
        return Ok(Array::from_f32_unchecked(out, x.shape()));
    }
    let x = x.contiguous();
    let xs = x.as_slice::<f32>().expect("contiguous f32");
    if inner == 1 {
        let row = if log { log_softmax_row } else { softmax_row };
        par_rows([xs], n, &mut out, n, |[r], o| row(r, o));
    } else {
        par_rows([xs], n * inner, &mut out, n * inner, |[s], o| softmax_slab(s, inner, o, log));
    }
    Ok(Array::from_f32_unchecked(out, x.shape()))
}

/// Runs the backward kernels of softmax (`log` false) or log_softmax (`log` true).
fn softmax_backward(op: &'static str, y: &Array, g: &Array, dim: isize, log: bool) -> Result<Array> {
    let d = softmax_dim(op, y, dim)?;
    g.expect_dtype(op, DType::F32)?;
    if g.shape() != y.shape() {
        bail!(op, "the output gradient has shape {:?}, the output has shape {:?}", g.shape(), y.shape());
    }
    let (_, n, inner) = split_at_dim(y.shape(), d);
    let mut out = output_buffer(y.numel());
    if out.is_empty() {
        return Ok(Array::from_f32_unchecked(out, y.shape()));
    }
    let (y, g) = (y.contiguous(), g.contiguous());
    let ys = y.as_slice::<f32>().expect("contiguous f32");
    let gs = g.as_slice::<f32>().expect("contiguous f32");
    if inner == 1 {
        let row = if log { log_softmax_backward_row } else { softmax_backward_row };
        par_rows([ys, gs], n, &mut out, n, |[y, g], o| row(y, g, o));
    } else {
        par_rows([ys, gs], n * inner, &mut out, n * inner, |[y, g], o| softmax_backward_slab(y, g, inner, o, log));
    }
    Ok(Array::from_f32_unchecked(out, y.shape()))
}

impl Array {
    /// `exp(x) / Σ exp(x)` along `dim` (negative counts from the end), computed stably:
    /// `-inf` entries give 0 (a slice of only `-inf` gives NaN, as in PyTorch).
    pub fn softmax(&self, dim: isize) -> Result<Array> {
        softmax_forward("softmax", self, dim, false)
    }

    /// `x − log Σ exp(x)` along `dim`, computed stably: `-inf` entries stay `-inf`.
    pub fn log_softmax(&self, dim: isize) -> Result<Array> {
        softmax_forward("log_softmax", self, dim, true)
    }

    /// The gradient of softmax along `dim`, where `self` is the softmax output and `grad` the
    /// gradient of the output: `y · (g − Σ g·y)`.
    pub fn softmax_backward(&self, grad: &Array, dim: isize) -> Result<Array> {
        softmax_backward("softmax", self, grad, dim, false)
    }

    /// The gradient of log_softmax along `dim`, where `self` is the log_softmax output and
    /// `grad` the gradient of the output: `g − exp(y) · Σ g`.
    pub fn log_softmax_backward(&self, grad: &Array, dim: isize) -> Result<Array> {
        softmax_backward("log_softmax", self, grad, dim, true)
    }
}
