//! Normalization kernels: layer_norm, rms_norm, group_norm and batch_norm, each a fused
//! forward (statistics, normalization and affine in one kernel) and a fused backward built on
//! the closed-form gradients.
//!
//! layer_norm, rms_norm and group_norm normalize contiguous *rows*: `[outer, D]` for the first
//! two (`D` the product of `normalized_shape`) and `[N·G, (C/G)·S]` for group_norm. A row is
//! seen as `k` channels of `s` elements each, and channel `j` of row `r` uses the affine
//! parameters of channel `(r mod groups)·k + j` (`groups = 1, k = D, s = 1` for the first two,
//! `groups = G, k = C/G, s = S` for group_norm). Statistics are taken in two passes with blocked
//! accumulation: a first estimate `m` of the mean, then `Σ(x − m)` and `Σ(x − m)²`, which
//! correct the mean and give the variance; they stay accurate for long rows and for means
//! large against the spread. `rstd = 1/√(var + eps)` is computed in f64.
//!
//! The backward of a row, with `x̂ = (x − mean)·rstd` and `gw = g·w`, is
//! `dx = rstd·(gw − mean(gw) − x̂·mean(gw·x̂))` (rms_norm drops the `mean(gw)` term and uses
//! `mean = 0`), `dweight = Σ g·x̂` and `dbias = Σ g` over the rows (and spatial positions).
//!
//! batch_norm takes its statistics per channel of `[N, C, S]`, over `N·S` elements, and its
//! backward is the same formula with the means taken per channel.
//!
//! Large inputs are split over rayon's pool by rows (or channels); small ones stay on the
//! calling thread. Per-chunk partial sums (parameter gradients, batch statistics) are kept
//! in f64 and merged in chunk order, so repeated runs give identical results.

use super::output_buffer;
use super::reduce::{dispatched, sum_slice, sum_sq_dev};
use crate::parallel::PAR_ELEMS;
use crate::{bail, Array, DType, Result};
use rayon::prelude::*;

/// The statistics a normalization's forward saves for its backward: the mean and
/// `rstd = 1/√(var + eps)` of each normalized group (a row for layer_norm, a sample and group
/// for group_norm, a channel for batch_norm).
#[derive(Debug, Clone)]
pub struct NormStats {
    /// The mean of each group: shape `input.shape[..rank − len(normalized_shape)]` for
    /// layer_norm, `[N, num_groups]` for group_norm, `[C]` for batch_norm.
    pub mean: Array,
    /// `1/√(var + eps)` of each group (biased variance), same shape as `mean`.
    pub rstd: Array,
}

/// The gradients computed by a normalization's backward; `None` for those not asked for (or
/// for a weight or bias the op did not have).
#[derive(Debug, Clone, Default)]
pub struct NormGrads {
    /// Gradient of the input.
    pub input: Option<Array>,
    /// Gradient of the weight.
    pub weight: Option<Array>,
    /// Gradient of the bias.
    pub bias: Option<Array>,
}

// ------------------------------------------------------------------------------- slice kernels

/// Lanes of the accumulating kernels below: independent f32 accumulators that LLVM keeps in
/// vector registers (several per sum, enough to hide the latency of the adds).
const LANES: usize = 64;
/// Elements per block: blocks are summed in f32 lanes, block sums in f64.
const BLOCK: usize = 2048;

/// Pairwise sum of the lanes.
#[inline(always)]
fn sum_lanes(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0]
}

dispatched! {
    /// [`dev_dot`] of one block.
    fn dev_dot_block(g: &[f32], x: &[f32], m: f32) -> f32 {
        let (cg, cx) = (g.chunks_exact(LANES), x.chunks_exact(LANES));
        let tail: f32 = cg.remainder().iter().zip(cx.remainder()).map(|(&g, &x)| g * (x - m)).sum();
        let mut acc = [0f32; LANES];
        for (g, x) in cg.zip(cx) {
            for i in 0..LANES {
                acc[i] += g[i] * (x[i] - m);
            }
        }
        sum_lanes(acc) + tail
    }
}

/// `Σ g_i·(x_i − m)`, blocked (f64 across blocks). The slices have the same length.
fn dev_dot(g: &[f32], x: &[f32], m: f32) -> f64 {
    debug_assert_eq!(g.len(), x.len());
    if g.len() <= BLOCK {
        return dev_dot_block(g, x, m) as f64;
    }
    g.chunks(BLOCK).zip(x.chunks(BLOCK)).map(|(g, x)| dev_dot_block(g, x, m) as f64).sum()
}

dispatched! {
    /// [`shifted_moments`] of one block.
    fn shifted_moments_block(x: &[f32], m: f32) -> (f32, f32) {
        let cx = x.chunks_exact(LANES);
        let (mut t1, mut t2) = (0f32, 0f32);
        for &v in cx.remainder() {
            t1 += v - m;
            t2 += (v - m) * (v - m);
        }
        let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
        for x in cx {
            for i in 0..LANES {
                let d = x[i] - m;
                a[i] += d;
                b[i] += d * d;
            }
        }
        (sum_lanes(a) + t1, sum_lanes(b) + t2)
    }
}

/// `(Σ (x_i − m), Σ (x_i − m)²)`, blocked (f64 across blocks). With `m` close to the mean the
/// differences are small and exact, so the mean `m + Σ(x − m)/n` and the variance
/// `Σ(x − m)²/n − (Σ(x − m)/n)²` are accurate even when the mean is large against the spread.
fn shifted_moments(x: &[f32], m: f32) -> (f64, f64) {
    x.chunks(BLOCK).fold((0.0, 0.0), |(a, b), x| {
        let (p, q) = shifted_moments_block(x, m);
        (a + p as f64, b + q as f64)
    })
}

dispatched! {
    /// [`dev_dot_w`] of one block: `(Σ g·w, Σ g·w·(x − m))`.
    fn dev_dot_w_block(g: &[f32], w: &[f32], x: &[f32], m: f32) -> (f32, f32) {
        let (cg, cw, cx) = (g.chunks_exact(LANES), w.chunks_exact(LANES), x.chunks_exact(LANES));
        let (mut ta, mut tb) = (0f32, 0f32);
        for ((&g, &w), &x) in cg.remainder().iter().zip(cw.remainder()).zip(cx.remainder()) {
            ta += g * w;
            tb += g * w * (x - m);
        }
        let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
        for ((g, w), x) in cg.zip(cw).zip(cx) {
            for i in 0..LANES {
                let gw = g[i] * w[i];
                a[i] += gw;
                b[i] += gw * (x[i] - m);
            }
        }
        (sum_lanes(a) + ta, sum_lanes(b) + tb)
    }
}

/// `(Σ g_i·w_i, Σ g_i·w_i·(x_i − m))`, blocked (f64 across blocks).
fn dev_dot_w(g: &[f32], w: &[f32], x: &[f32], m: f32) -> (f64, f64) {
    g.chunks(BLOCK).zip(w.chunks(BLOCK)).zip(x.chunks(BLOCK)).fold((0.0, 0.0), |(a, b), ((g, w), x)| {
        let (p, q) = dev_dot_w_block(g, w, x, m);
        (a + p as f64, b + q as f64)
    })
}

dispatched! {
    /// `out = (x − m − e)·r·w + b` over a row whose affine parameters are per element (`m` the
    /// rounded mean, `e` its small remainder); a missing weight is 1 and a missing bias 0.
    fn normalize_elementwise(x: &[f32], out: &mut [f32], me: (f32, f32), r: f32, w: Option<&[f32]>, b: Option<&[f32]>) {
        let (m, e) = me;
        match (w, b) {
            (Some(w), Some(b)) => {
                for (((o, &x), &w), &b) in out.iter_mut().zip(x).zip(w).zip(b) {
                    *o = (x - m - e) * r * w + b;
                }
            }
            (Some(w), None) => {
                for ((o, &x), &w) in out.iter_mut().zip(x).zip(w) {
                    *o = (x - m - e) * r * w;
                }
            }
            (None, Some(b)) => {
                for ((o, &x), &b) in out.iter_mut().zip(x).zip(b) {
                    *o = (x - m - e) * r + b;
                }
            }
            (None, None) => {
                for (o, &x) in out.iter_mut().zip(x) {
                    *o = (x - m - e) * r;
                }
            }
        }
    }
}

dispatched! {
    /// `out = a·p + b·(q − m − e) + d` for one slice with scalar coefficients.
    #[allow(clippy::too_many_arguments)]
    fn affine2_scalar(p: &[f32], q: &[f32], out: &mut [f32], a: f32, b: f32, me: (f32, f32), d: f32) {
        let (m, e) = me;
        for ((o, &p), &q) in out.iter_mut().zip(p).zip(q) {
            *o = a * p + b * (q - m - e) + d;
        }
    }
}

dispatched! {
    /// `out = a·p + d` for one slice with scalar coefficients.
    fn affine1_scalar(p: &[f32], out: &mut [f32], a: f32, d: f32) {
        for (o, &p) in out.iter_mut().zip(p) {
            *o = a * p + d;
        }
    }
}

dispatched! {
    /// `acc_j += x_j` in f64.
    fn acc_add(acc: &mut [f64], x: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a += v as f64;
        }
    }
}

dispatched! {
    /// `acc_j += g_j·(x_j − m)·r` in f64 (a row's contribution to a weight gradient).
    fn acc_dev_prod(acc: &mut [f64], g: &[f32], x: &[f32], m: f32, r: f32) {
        for ((a, &g), &x) in acc.iter_mut().zip(g).zip(x) {
            *a += (g * ((x - m) * r)) as f64;
        }
    }
}

dispatched! {
    /// `p_j += d_j`, `q_j += d_j²` with `d_j = x_j − m_j`, in f64.
    fn acc_shifted(p: &mut [f64], q: &mut [f64], x: &[f32], m: &[f32]) {
        for (((p, q), &v), &m) in p.iter_mut().zip(q.iter_mut()).zip(x).zip(m) {
            let d = v - m;
            *p += d as f64;
            *q += (d * d) as f64;
        }
    }
}

dispatched! {
    /// `p_j += g_j`, `q_j += g_j·(x_j − m_j)`, in f64.
    fn acc_grad_pair(p: &mut [f64], q: &mut [f64], g: &[f32], x: &[f32], m: &[f32]) {
        for ((((p, q), &g), &v), &m) in p.iter_mut().zip(q.iter_mut()).zip(g).zip(x).zip(m) {
            *p += g as f64;
            *q += (g * (v - m)) as f64;
        }
    }
}

dispatched! {
    /// The input gradient of a row with per-element weights:
    /// `dx_j = r·(g_j·w_j − ca − (x_j − m)·cb)` (weight 1 when absent).
    #[allow(clippy::too_many_arguments)]
    fn row_dx(dx: &mut [f32], g: &[f32], w: Option<&[f32]>, x: &[f32], m: f32, r: f32, ca: f32, cb: f32) {
        match w {
            Some(w) => {
                for (((o, &g), &w), &x) in dx.iter_mut().zip(g).zip(w).zip(x) {
                    *o = r * (g * w - ca - (x - m) * cb);
                }
            }
            None => {
                for ((o, &g), &x) in dx.iter_mut().zip(g).zip(x) {
                    *o = r * (g - ca - (x - m) * cb);
                }
            }
        }
    }
}

/// Per-channel coefficients of `out = a·p + b·(q − m − e) + d` (the `b` term is skipped when
/// there is no `q`; `e` is the small remainder of a rounded mean `m`, or empty for zeros).
struct Coef {
    a: Vec<f32>,
    b: Vec<f32>,
    m: Vec<f32>,
    e: Vec<f32>,
    d: Vec<f32>,
}

dispatched! {
    /// `out_j = a_j·p_j + b_j·(q_j − m_j − e_j) + d_j` (or `a_j·p_j + d_j` without `q`) over a
    /// row whose coefficients are per element.
    fn affine_vec(p: &[f32], q: Option<&[f32]>, out: &mut [f32], k: &Coef) {
        let (a, b, m, e, d) = (&k.a[..], &k.b[..], &k.m[..], &k.e[..], &k.d[..]);
        match q {
            Some(q) if e.is_empty() => {
                let it = out.iter_mut().zip(p).zip(q).zip(a).zip(b).zip(m).zip(d);
                for ((((((o, &p), &q), &a), &b), &m), &d) in it {
                    *o = a * p + b * (q - m) + d;
                }
            }
            Some(q) => {
                let it = out.iter_mut().zip(p).zip(q).zip(a).zip(b).zip(m).zip(e).zip(d);
                for (((((((o, &p), &q), &a), &b), &m), &e), &d) in it {
                    *o = a * p + b * (q - m - e) + d;
                }
            }
            None => {
                for (((o, &p), &a), &d) in out.iter_mut().zip(p).zip(a).zip(d) {
                    *o = a * p + d;
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------- row engine

/// Rows per parallel chunk for `rows` rows of `len` elements: all of them (one chunk on the
/// calling thread) when the work is small.
fn rows_per_chunk(rows: usize, len: usize) -> usize {
    let threads = rayon::current_num_threads();
    if rows < 2 || threads == 1 || rows.saturating_mul(len) < PAR_ELEMS {
        return rows.max(1);
    }
    rows.div_ceil(threads * 4).max((PAR_ELEMS / 8).div_ceil(len.max(1)))
}

/// The row view of a row-wise normalization (see the module docs).
#[derive(Clone, Copy, Debug)]
struct Rows {
    /// Number of rows.
    rows: usize,
    /// Row `r` uses the affine parameters of group `r mod groups`.
    groups: usize,
    /// Channels per row.
    k: usize,
    /// Elements per channel.
    s: usize,
    /// Subtract the mean (false for rms_norm).
    center: bool,
}

impl Rows {
    fn len(&self) -> usize {
        self.k * self.s
    }
    /// The first affine channel of row `r`.
    fn channel0(&self, r: usize) -> usize {
        (r % self.groups) * self.k
    }
}

/// `((m, e), rstd)` of one row, the mean being `m + e` (`m` a first estimate, `e` the small
/// correction from a second pass); the mean is 0 when not centering (rms_norm).
fn row_stats(x: &[f32], center: bool, eps: f64) -> ((f32, f32), f32) {
    let n = x.len() as f64;
    if !center {
        let var = sum_sq_dev(x, 0.0) as f64 / n;
        return ((0.0, 0.0), (1.0 / (var + eps).sqrt()) as f32);
    }
    let m = (sum_slice(x) as f64 / n) as f32;
    let (s1, s2) = shifted_moments(x, m);
    let e = s1 / n;
    let var = (s2 / n - e * e).max(0.0);
    ((m, e as f32), (1.0 / (var + eps).sqrt()) as f32)
}

/// Normalizes one row with its affine parameters (`w`, `b` are the row's `k` channels).
fn row_forward(x: &[f32], out: &mut [f32], (m, r): ((f32, f32), f32), w: Option<&[f32]>, b: Option<&[f32]>, s: usize) {
    if s == 1 {
        normalize_elementwise(x, out, m, r, w, b);
        return;
    }
    for (c, (o, x)) in out.chunks_exact_mut(s).zip(x.chunks_exact(s)).enumerate() {
        let scale = r * w.map_or(1.0, |w| w[c]);
        let shift = b.map_or(0.0, |b| b[c]);
        affine2_scalar(x, x, o, 0.0, scale, m, shift);
    }
}

/// The forward of a row-wise normalization: `(output, mean, rstd)`.
fn rows_forward(x: &[f32], p: Rows, w: Option<&[f32]>, b: Option<&[f32]>, eps: f64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let len = p.len();
    // Every row is written in full by `row_forward` below (one call per row, all rows).
    let mut out = output_buffer(x.len());
    if x.is_empty() {
        return (out, vec![f32::NAN; p.rows], vec![f32::NAN; p.rows]);
    }
    let mut mean = vec![0f32; p.rows];
    let mut rstd = vec![0f32; p.rows];
    let run = |first: usize, out: &mut [f32], mean: &mut [f32], rstd: &mut [f32]| {
        for (i, ((o, m), r)) in out.chunks_exact_mut(len).zip(mean).zip(rstd).enumerate() {
            let row = first + i;
            let xr = &x[row * len..(row + 1) * len];
            let (me, rs) = row_stats(xr, p.center, eps);
            (*m, *r) = (me.0 + me.1, rs);
            let c0 = p.channel0(row);
            let (wr, br) = (w.map(|w| &w[c0..c0 + p.k]), b.map(|b| &b[c0..c0 + p.k]));
            row_forward(xr, o, (me, rs), wr, br, p.s);
        }
    };
    let per = rows_per_chunk(p.rows, len);
    if per >= p.rows {
        run(0, &mut out, &mut mean, &mut rstd);
    } else {
        out.par_chunks_mut(per * len)
            .zip(mean.par_chunks_mut(per))
            .zip(rstd.par_chunks_mut(per))
            .enumerate()
            .for_each(|(i, ((o, m), r))| run(i * per, o, m, r));
    }
    (out, mean, rstd)
}

/// Optional per-channel f64 accumulators (present when that gradient is needed).
type Acc = Option<Vec<f64>>;

/// What a backward computes.
#[derive(Clone, Copy, Debug)]
struct Needs {
    input: bool,
    weight: bool,
    bias: bool,
}

/// The backward of one row. `w` is the row's `k` weights; `aw`, `ab` its `k` accumulators of
/// `Σ g·x̂` and `Σ g` (present when those gradients are needed).
#[allow(clippy::too_many_arguments)]
fn row_backward(
    x: &[f32],
    g: &[f32],
    (m, r): (f32, f32),
    w: Option<&[f32]>,
    p: Rows,
    dx: Option<&mut [f32]>,
    aw: Option<&mut [f64]>,
    ab: Option<&mut [f64]>,
) {
    let n = x.len() as f64;
    // Σ g·w and Σ g·w·(x − mean) over the row, for dx.
    let (sa, sb);
    if p.s == 1 {
        if let Some(aw) = aw {
            acc_dev_prod(aw, g, x, m, r);
        }
        if let Some(ab) = ab {
            acc_add(ab, g);
        }
        let Some(dx) = dx else { return };
        (sa, sb) = match w {
            Some(w) => dev_dot_w(g, w, x, m),
            None => (if p.center { sum_slice(g) as f64 } else { 0.0 }, dev_dot(g, x, m)),
        };
        let ca = if p.center { (sa / n) as f32 } else { 0.0 };
        let cb = (sb / n) as f32 * r * r;
        row_dx(dx, g, w, x, m, r, ca, cb);
        return;
    }
    // Channels of s elements: per-channel sums, then scalar coefficients per channel.
    let (mut aw, mut ab) = (aw, ab);
    let (mut ta, mut tb) = (0f64, 0f64);
    for (c, (gs, xs)) in g.chunks_exact(p.s).zip(x.chunks_exact(p.s)).enumerate() {
        let sg = sum_slice(gs) as f64;
        let sgd = dev_dot(gs, xs, m);
        if let Some(aw) = aw.as_deref_mut() {
            aw[c] += sgd * r as f64;
        }
        if let Some(ab) = ab.as_deref_mut() {
            ab[c] += sg;
        }
        let wc = w.map_or(1.0, |w| w[c] as f64);
        ta += wc * sg;
        tb += wc * sgd;
    }
    let Some(dx) = dx else { return };
    let ca = if p.center { (ta / n) as f32 } else { 0.0 };
    let cb = (tb / n) as f32 * r * r;
    for (c, ((o, gs), xs)) in dx.chunks_exact_mut(p.s).zip(g.chunks_exact(p.s)).zip(x.chunks_exact(p.s)).enumerate() {
        let wc = w.map_or(1.0, |w| w[c]);
        // dx = r·(w·g − ca − (x − m)·cb)
        affine2_scalar(gs, xs, o, r * wc, -r * cb, (m, 0.0), -r * ca);
    }
}

/// The backward of a row-wise normalization: `(dx, Σ g·x̂, Σ g)`, the last two per affine
/// channel (`groups·k` of them), each present when asked for.
#[allow(clippy::type_complexity)]
fn rows_backward(
    x: &[f32],
    g: &[f32],
    mean: &[f32],
    rstd: &[f32],
    w: Option<&[f32]>,
    p: Rows,
    needs: Needs,
) -> (Option<Vec<f32>>, Acc, Acc) {
    let len = p.len();
    let nacc = p.groups * p.k;
    // `row_backward` writes every element of each row's `dx` (all rows are visited).
    let mut dx = needs.input.then(|| output_buffer(x.len()));
    if x.is_empty() {
        let acc = |need: bool| need.then(|| vec![0f64; nacc]);
        return (dx, acc(needs.weight), acc(needs.bias));
    }
    let per = rows_per_chunk(p.rows, len);
    let chunks = p.rows.div_ceil(per);
    let run = |ci: usize, dx: Option<&mut [f32]>| -> (Acc, Acc) {
        let mut aw = needs.weight.then(|| vec![0f64; nacc]);
        let mut ab = needs.bias.then(|| vec![0f64; nacc]);
        let r0 = ci * per;
        let mut dx_rows = dx.map(|d| d.chunks_exact_mut(len));
        for row in r0..(r0 + per).min(p.rows) {
            let o = dx_rows.as_mut().and_then(|it| it.next());
            let c0 = p.channel0(row);
            let span = c0..c0 + p.k;
            row_backward(
                &x[row * len..(row + 1) * len],
                &g[row * len..(row + 1) * len],
                (mean[row], rstd[row]),
                w.map(|w| &w[span.clone()]),
                p,
                o,
                aw.as_mut().map(|a| &mut a[span.clone()]),
                ab.as_mut().map(|a| &mut a[span]),
            );
        }
        (aw, ab)
    };
    let parts: Vec<(Acc, Acc)> = match dx.as_deref_mut() {
        Some(d) if chunks > 1 => d.par_chunks_mut(per * len).enumerate().map(|(ci, o)| run(ci, Some(o))).collect(),
        Some(d) => vec![run(0, Some(d))],
        None if chunks > 1 => (0..chunks).into_par_iter().map(|ci| run(ci, None)).collect(),
        None => vec![run(0, None)],
    };
    let (aw, ab) = merge_parts(parts);
    (dx, aw, ab)
}

/// Adds per-chunk accumulators, in chunk order.
fn merge_parts(parts: Vec<(Acc, Acc)>) -> (Acc, Acc) {
    let add = |acc: &mut Acc, part: Acc| match (acc.as_mut(), part) {
        (Some(a), Some(p)) => a.iter_mut().zip(p).for_each(|(a, p)| *a += p),
        (None, p) => *acc = p,
        _ => {}
    };
    let (mut aw, mut ab) = (None, None);
    for (w, b) in parts {
        add(&mut aw, w);
        add(&mut ab, b);
    }
    (aw, ab)
}

fn to_f32(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|x| x as f32).collect()
}

// ------------------------------------------------------------------------------- channel engine

/// `[N, C, S]`: batch, channels and the product of the trailing dims.
#[derive(Clone, Copy, Debug)]
struct Ncs {
    n: usize,
    c: usize,
    s: usize,
}

/// Below this many elements per channel slice, channel sums accumulate whole `[C·S]` rows
/// (vectorized across channels) instead of reducing each slice.
const SLICE_MIN: usize = 16;

/// What [`channel_sums`] accumulates per channel.
#[derive(Clone, Copy)]
enum ChannelSum<'a> {
    /// `Σ x`.
    Sum,
    /// `Σ (x − m_c)` and `Σ (x − m_c)²`.
    Shifted(&'a [f32]),
    /// `Σ q` and `Σ q·(x − m_c)` (q the output gradient).
    GradPair(&'a [f32], &'a [f32]),
}

/// Per-channel sums over `N·S` elements, in f64: one vector, or two for `GradPair`.
fn channel_sums(x: &[f32], d: Ncs, what: ChannelSum<'_>) -> (Vec<f64>, Vec<f64>) {
    let two = !matches!(what, ChannelSum::Sum);
    let row = d.c * d.s;
    if d.s >= SLICE_MIN {
        // One channel at a time: N contiguous slices of S elements each.
        let one = |c: usize| -> (f64, f64) {
            let (mut p, mut q) = (0f64, 0f64);
            for n in 0..d.n {
                let span = n * row + c * d.s..n * row + (c + 1) * d.s;
                let xs = &x[span.clone()];
                match what {
                    ChannelSum::Sum => p += sum_slice(xs) as f64,
                    ChannelSum::Shifted(m) => {
                        let (a, b) = shifted_moments(xs, m[c]);
                        p += a;
                        q += b;
                    }
                    ChannelSum::GradPair(g, m) => {
                        let gs = &g[span];
                        p += sum_slice(gs) as f64;
                        q += dev_dot(gs, xs, m[c]);
                    }
                }
            }
            (p, q)
        };
        let res: Vec<(f64, f64)> = if x.len() < PAR_ELEMS || d.c < 2 || rayon::current_num_threads() == 1 {
            (0..d.c).map(one).collect()
        } else {
            (0..d.c).into_par_iter().map(one).collect()
        };
        let (p, q): (Vec<f64>, Vec<f64>) = res.into_iter().unzip();
        return (p, if two { q } else { Vec::new() });
    }
    // Few elements per slice: accumulate whole rows of C·S elements, then fold S.
    let mexp: Vec<f32> = match what {
        ChannelSum::Sum => Vec::new(),
        ChannelSum::Shifted(m) | ChannelSum::GradPair(_, m) => {
            m.iter().flat_map(|&v| std::iter::repeat_n(v, d.s)).collect()
        }
    };
    let per = rows_per_chunk(d.n, row);
    let chunks = d.n.div_ceil(per);
    let run = |ci: usize| -> (Vec<f64>, Vec<f64>) {
        let mut p = vec![0f64; row];
        let mut q = if two { vec![0f64; row] } else { Vec::new() };
        for n in ci * per..((ci + 1) * per).min(d.n) {
            let xr = &x[n * row..(n + 1) * row];
            match what {
                ChannelSum::Sum => acc_add(&mut p, xr),
                ChannelSum::Shifted(_) => acc_shifted(&mut p, &mut q, xr, &mexp),
                ChannelSum::GradPair(g, _) => acc_grad_pair(&mut p, &mut q, &g[n * row..(n + 1) * row], xr, &mexp),
            }
        }
        (p, q)
    };
    let parts: Vec<(Vec<f64>, Vec<f64>)> =
        if chunks > 1 { (0..chunks).into_par_iter().map(run).collect() } else { vec![run(0)] };
    let (mut p, mut q) = (vec![0f64; row], if two { vec![0f64; row] } else { Vec::new() });
    for (a, b) in parts {
        p.iter_mut().zip(a).for_each(|(p, a)| *p += a);
        q.iter_mut().zip(b).for_each(|(q, b)| *q += b);
    }
    let fold = |v: Vec<f64>| -> Vec<f64> {
        if v.is_empty() {
            return v;
        }
        v.chunks_exact(d.s).map(|c| c.iter().sum()).collect()
    };
    (fold(p), fold(q))
}

/// `out[n, c, t] = a_c·p[n, c, t] + b_c·(q[n, c, t] − m_c) + d_c` (without the `b` term when
/// there is no `q`).
fn channel_affine(p: &[f32], q: Option<&[f32]>, d: Ncs, k: &Coef) -> Vec<f32> {
    let mut out = vec![0f32; p.len()];
    if p.is_empty() {
        return out;
    }
    if d.s == 1 {
        // Rows of C elements with per-element coefficients.
        let per = rows_per_chunk(d.n, d.c);
        let run = |first: usize, out: &mut [f32]| {
            for (i, o) in out.chunks_exact_mut(d.c).enumerate() {
                let span = (first + i) * d.c..(first + i + 1) * d.c;
                affine_vec(&p[span.clone()], q.map(|q| &q[span]), o, k);
            }
        };
        if per >= d.n {
            run(0, &mut out);
        } else {
            out.par_chunks_mut(per * d.c).enumerate().for_each(|(i, o)| run(i * per, o));
        }
        return out;
    }
    // Slices of S elements, one per (n, c), with scalar coefficients.
    let slices = d.n * d.c;
    let per = rows_per_chunk(slices, d.s);
    let run = |first: usize, out: &mut [f32]| {
        for (i, o) in out.chunks_exact_mut(d.s).enumerate() {
            let sl = first + i;
            let c = sl % d.c;
            let span = sl * d.s..(sl + 1) * d.s;
            match q {
                Some(q) => {
                    let e = k.e.get(c).copied().unwrap_or(0.0);
                    affine2_scalar(&p[span.clone()], &q[span], o, k.a[c], k.b[c], (k.m[c], e), k.d[c])
                }
                None => affine1_scalar(&p[span], o, k.a[c], k.d[c]),
            }
        }
    };
    if per >= slices {
        run(0, &mut out);
    } else {
        out.par_chunks_mut(per * d.s).enumerate().for_each(|(i, o)| run(i * per, o));
    }
    out
}

// ------------------------------------------------------------------------------- validation

/// The contiguous f32 elements of `a` (borrowed when possible).
fn f32_data<'a>(op: &'static str, what: &str, a: &'a Array) -> Result<std::borrow::Cow<'a, [f32]>> {
    if a.dtype() != DType::F32 {
        bail!(op, "expected {what} to be an f32 tensor, got {} of shape {:?}", a.dtype(), a.shape());
    }
    a.f32_cow()
}

/// Checks that an optional affine parameter `what` has exactly `shape`.
fn check_param(op: &'static str, what: &str, p: Option<&Array>, shape: &[usize]) -> Result<()> {
    if let Some(p) = p {
        if p.shape() != shape {
            bail!(op, "expected {what} of shape {shape:?}, got {:?}", p.shape());
        }
    }
    Ok(())
}

/// Checks that `g` (an output gradient) matches the input's shape and dtype.
fn check_grad(op: &'static str, x: &Array, g: &Array) -> Result<()> {
    if g.shape() != x.shape() {
        bail!(op, "the output gradient has shape {:?}, the input has shape {:?}", g.shape(), x.shape());
    }
    Ok(())
}

/// `(outer, D)` of a layer_norm / rms_norm input: checks that `x` ends with `normalized_shape`.
fn trailing_split(op: &'static str, x: &Array, normalized_shape: &[usize]) -> Result<(usize, usize)> {
    let (r, k) = (x.rank(), normalized_shape.len());
    if k > r || &x.shape()[r - k..] != normalized_shape {
        bail!(
            op,
            "input of shape {:?} does not end with normalized_shape {normalized_shape:?} (expected input of shape [*, {}])",
            x.shape(),
            normalized_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok((x.shape()[..r - k].iter().product(), normalized_shape.iter().product()))
}

/// `[N, C, S]` of a group_norm / batch_norm input (rank ≥ 2).
fn ncs(op: &'static str, x: &Array) -> Result<Ncs> {
    if x.rank() < 2 {
        bail!(op, "expected an input of shape [N, C, *] with at least 2 dims, got {:?}", x.shape());
    }
    let sh = x.shape();
    Ok(Ncs { n: sh[0], c: sh[1], s: sh[2..].iter().product() })
}

/// Checks `num_groups` against an input's channels; returns the channels per group.
fn group_split(x: &Array, num_groups: usize) -> Result<Ncs> {
    let d = ncs("group_norm", x)?;
    if d.c.checked_rem(num_groups) != Some(0) {
        bail!(
            "group_norm",
            "expected the number of channels ({}) of input of shape {:?} to be divisible by num_groups ({num_groups})",
            d.c,
            x.shape()
        );
    }
    Ok(d)
}

fn check_eps(op: &'static str, eps: f64) -> Result<()> {
    if eps.is_nan() || eps < 0.0 {
        bail!(op, "eps has to be non-negative, got {eps}");
    }
    Ok(())
}

// ------------------------------------------------------------------------------- ops

impl Array {
    /// Layer normalization over the trailing `normalized_shape` dims (PyTorch's
    /// `F.layer_norm`): `(x − mean)/√(var + eps)·weight + bias` with the biased variance.
    /// `weight` and `bias`, when given, have shape `normalized_shape`. Returns the output and
    /// the per-row statistics (shape: the leading dims) for
    /// [`layer_norm_backward`](Array::layer_norm_backward).
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Array>,
        bias: Option<&Array>,
        eps: f64,
    ) -> Result<(Array, NormStats)> {
        const OP: &str = "layer_norm";
        check_eps(OP, eps)?;
        let (rows, d) = trailing_split(OP, self, normalized_shape)?;
        check_param(OP, "weight", weight, normalized_shape)?;
        check_param(OP, "bias", bias, normalized_shape)?;
        let x = f32_data(OP, "input", self)?;
        let w = weight.map(|w| f32_data(OP, "weight", w)).transpose()?;
        let b = bias.map(|b| f32_data(OP, "bias", b)).transpose()?;
        let p = Rows { rows, groups: 1, k: d, s: 1, center: true };
        let (out, mean, rstd) = rows_forward(&x, p, w.as_deref(), b.as_deref(), eps);
        let lead = &self.shape()[..self.rank() - normalized_shape.len()];
        Ok((
            Array::from_f32_unchecked(out, self.shape()),
            NormStats { mean: Array::from_f32_unchecked(mean, lead), rstd: Array::from_f32_unchecked(rstd, lead) },
        ))
    }

    /// The backward of [`layer_norm`](Array::layer_norm), where `self` is its input, `grad`
    /// the output gradient and `stats` what the forward returned. `needs` says which of
    /// `[input, weight, bias]` to compute; the others are `None`.
    pub fn layer_norm_backward(
        &self,
        grad: &Array,
        stats: &NormStats,
        normalized_shape: &[usize],
        weight: Option<&Array>,
        needs: [bool; 3],
    ) -> Result<NormGrads> {
        const OP: &str = "layer_norm_backward";
        let (rows, d) = trailing_split(OP, self, normalized_shape)?;
        check_grad(OP, self, grad)?;
        check_param(OP, "weight", weight, normalized_shape)?;
        let p = Rows { rows, groups: 1, k: d, s: 1, center: true };
        let grads = self.rows_backward(OP, grad, Some(&stats.mean), &stats.rstd, weight, p, needs)?;
        Ok(NormGrads {
            input: grads.0,
            weight: grads.1.map(|v| Array::from_f32_unchecked(v, normalized_shape)),
            bias: grads.2.map(|v| Array::from_f32_unchecked(v, normalized_shape)),
        })
    }

    /// RMS normalization over the trailing `normalized_shape` dims (PyTorch's `F.rms_norm`):
    /// `x/√(mean(x²) + eps)·weight`. `eps` `None` is f32's machine epsilon, as in PyTorch.
    /// Returns the output and `rstd = 1/√(mean(x²) + eps)` per row (shape: the leading dims).
    pub fn rms_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Array>,
        eps: Option<f64>,
    ) -> Result<(Array, Array)> {
        const OP: &str = "rms_norm";
        let eps = eps.unwrap_or(f32::EPSILON as f64);
        check_eps(OP, eps)?;
        let (rows, d) = trailing_split(OP, self, normalized_shape)?;
        check_param(OP, "weight", weight, normalized_shape)?;
        let x = f32_data(OP, "input", self)?;
        let w = weight.map(|w| f32_data(OP, "weight", w)).transpose()?;
        let p = Rows { rows, groups: 1, k: d, s: 1, center: false };
        let (out, _, rstd) = rows_forward(&x, p, w.as_deref(), None, eps);
        let lead = &self.shape()[..self.rank() - normalized_shape.len()];
        Ok((Array::from_f32_unchecked(out, self.shape()), Array::from_f32_unchecked(rstd, lead)))
    }

    /// The backward of [`rms_norm`](Array::rms_norm): `self` is its input, `rstd` what the
    /// forward returned; `needs` says which of `[input, weight]` to compute.
    pub fn rms_norm_backward(
        &self,
        grad: &Array,
        rstd: &Array,
        normalized_shape: &[usize],
        weight: Option<&Array>,
        needs: [bool; 2],
    ) -> Result<NormGrads> {
        const OP: &str = "rms_norm_backward";
        let (rows, d) = trailing_split(OP, self, normalized_shape)?;
        check_grad(OP, self, grad)?;
        check_param(OP, "weight", weight, normalized_shape)?;
        let p = Rows { rows, groups: 1, k: d, s: 1, center: false };
        let grads = self.rows_backward(OP, grad, None, rstd, weight, p, [needs[0], needs[1], false])?;
        Ok(NormGrads {
            input: grads.0,
            weight: grads.1.map(|v| Array::from_f32_unchecked(v, normalized_shape)),
            bias: None,
        })
    }

    /// Group normalization (PyTorch's `F.group_norm`) of an input `[N, C, *]` (`*` may be
    /// empty): statistics per sample and group of `C/num_groups` consecutive channels, over
    /// those channels and the trailing dims (biased variance), then the per-channel affine
    /// (`weight`, `bias` of shape `[C]`). Returns the output and the statistics, `[N, num_groups]`.
    pub fn group_norm(
        &self,
        num_groups: usize,
        weight: Option<&Array>,
        bias: Option<&Array>,
        eps: f64,
    ) -> Result<(Array, NormStats)> {
        const OP: &str = "group_norm";
        check_eps(OP, eps)?;
        let d = group_split(self, num_groups)?;
        check_param(OP, "weight", weight, &[d.c])?;
        check_param(OP, "bias", bias, &[d.c])?;
        let x = f32_data(OP, "input", self)?;
        let w = weight.map(|w| f32_data(OP, "weight", w)).transpose()?;
        let b = bias.map(|b| f32_data(OP, "bias", b)).transpose()?;
        let p = Rows { rows: d.n * num_groups, groups: num_groups, k: d.c / num_groups, s: d.s, center: true };
        let (out, mean, rstd) = rows_forward(&x, p, w.as_deref(), b.as_deref(), eps);
        let st = [d.n, num_groups];
        Ok((
            Array::from_f32_unchecked(out, self.shape()),
            NormStats { mean: Array::from_f32_unchecked(mean, &st), rstd: Array::from_f32_unchecked(rstd, &st) },
        ))
    }

    /// The backward of [`group_norm`](Array::group_norm): `self` is its input, `stats` what the
    /// forward returned; `needs` says which of `[input, weight, bias]` to compute.
    pub fn group_norm_backward(
        &self,
        grad: &Array,
        stats: &NormStats,
        num_groups: usize,
        weight: Option<&Array>,
        needs: [bool; 3],
    ) -> Result<NormGrads> {
        const OP: &str = "group_norm_backward";
        let d = group_split(self, num_groups)?;
        check_grad(OP, self, grad)?;
        check_param(OP, "weight", weight, &[d.c])?;
        let p = Rows { rows: d.n * num_groups, groups: num_groups, k: d.c / num_groups, s: d.s, center: true };
        let grads = self.rows_backward(OP, grad, Some(&stats.mean), &stats.rstd, weight, p, needs)?;
        Ok(NormGrads {
            input: grads.0,
            weight: grads.1.map(|v| Array::from_f32_unchecked(v, &[d.c])),
            bias: grads.2.map(|v| Array::from_f32_unchecked(v, &[d.c])),
        })
    }

    /// Shared backward of the row-wise normalizations: `(dx, dweight, dbias)` as flat vectors
    /// (dx already shaped like `self`).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn rows_backward(
        &self,
        op: &'static str,
        grad: &Array,
        mean: Option<&Array>,
        rstd: &Array,
        weight: Option<&Array>,
        p: Rows,
        needs: [bool; 3],
    ) -> Result<(Option<Array>, Option<Vec<f32>>, Option<Vec<f32>>)> {
        let needs = Needs { input: needs[0], weight: needs[1], bias: needs[2] };
        if rstd.numel() != p.rows || mean.is_some_and(|m| m.numel() != p.rows) {
            bail!(op, "expected {} saved statistics, got rstd of shape {:?}", p.rows, rstd.shape());
        }
        let x = f32_data(op, "input", self)?;
        let g = f32_data(op, "grad", grad)?;
        let rs = f32_data(op, "rstd", rstd)?;
        let zeros;
        let m = match mean {
            Some(m) => f32_data(op, "mean", m)?,
            None => {
                zeros = vec![0f32; p.rows];
                std::borrow::Cow::Borrowed(&zeros[..])
            }
        };
        let w = weight.map(|w| f32_data(op, "weight", w)).transpose()?;
        let (dx, dw, db) = rows_backward(&x, &g, &m, &rs, w.as_deref(), p, needs);
        Ok((dx.map(|v| Array::from_f32_unchecked(v, self.shape())), dw.map(to_f32), db.map(to_f32)))
    }

    /// Batch normalization (PyTorch's `F.batch_norm`) of an input `[N, C, *]`.
    ///
    /// With `training`, the mean and biased variance are taken per channel over the `M`
    /// elements of all other dims, and the output is `(x − mean)/√(var + eps)·weight + bias`.
    /// When `running` (`(running_mean, running_var)`, each `[C]`) is given, the updated
    /// running statistics `(1 − momentum)·running_mean + momentum·mean` and
    /// `(1 − momentum)·running_var + momentum·var·M/(M − 1)` (the unbiased variance) are
    /// returned as new arrays; the inputs are not changed. Needs `M > 1`.
    ///
    /// Without `training`, normalizes with the running statistics (required) and returns no
    /// update. Returns the output, the statistics used (`[C]`, for
    /// [`batch_norm_backward`](Array::batch_norm_backward)) and the update.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    pub fn batch_norm(
        &self,
        running: Option<(&Array, &Array)>,
        weight: Option<&Array>,
        bias: Option<&Array>,
        training: bool,
        momentum: f64,
        eps: f64,
    ) -> Result<(Array, NormStats, Option<(Array, Array)>)> {
        const OP: &str = "batch_norm";
        check_eps(OP, eps)?;
        let d = ncs(OP, self)?;
        check_param(OP, "weight", weight, &[d.c])?;
        check_param(OP, "bias", bias, &[d.c])?;
        if let Some((rm, rv)) = running {
            check_param(OP, "running_mean", Some(rm), &[d.c])?;
            check_param(OP, "running_var", Some(rv), &[d.c])?;
        }
        let x = f32_data(OP, "input", self)?;
        let m_count = d.n * d.s;
        // The mean is `mean + resid`: a rounded first estimate and the correction of a second pass.
        let (mean, resid, rstd, update): (Vec<f32>, Vec<f32>, Vec<f32>, Option<(Array, Array)>) = if training {
            if m_count <= 1 {
                bail!(
                    OP,
                    "expected more than 1 value per channel when training, got input of shape {:?}",
                    self.shape()
                );
            }
            let mf = m_count as f64;
            let m0: Vec<f32> = channel_sums(&x, d, ChannelSum::Sum).0.into_iter().map(|s| (s / mf) as f32).collect();
            let (s1, s2) = channel_sums(&x, d, ChannelSum::Shifted(&m0));
            let e: Vec<f64> = s1.iter().map(|&s| s / mf).collect();
            let var: Vec<f64> = s2.iter().zip(&e).map(|(&s, &e)| (s / mf - e * e).max(0.0)).collect();
            let rstd = var.iter().map(|&v| (1.0 / (v + eps).sqrt()) as f32).collect();
            let mean: Vec<f64> = m0.iter().zip(&e).map(|(&m, &e)| m as f64 + e).collect();
            let update = match running {
                Some((rm, rv)) => {
                    let (rm, rv) = (f32_data(OP, "running_mean", rm)?, f32_data(OP, "running_var", rv)?);
                    let um = rm.iter().zip(&mean).map(|(&r, &m)| ((1.0 - momentum) * r as f64 + momentum * m) as f32);
                    let uv = rv
                        .iter()
                        .zip(&var)
                        .map(|(&r, &v)| ((1.0 - momentum) * r as f64 + momentum * v * mf / (mf - 1.0)) as f32);
                    Some((
                        Array::from_f32_unchecked(um.collect(), &[d.c]),
                        Array::from_f32_unchecked(uv.collect(), &[d.c]),
                    ))
                }
                None => None,
            };
            (m0, e.iter().map(|&e| e as f32).collect(), rstd, update)
        } else {
            let Some((rm, rv)) = running else {
                bail!(OP, "running_mean and running_var are required when not training");
            };
            let mean = f32_data(OP, "running_mean", rm)?.into_owned();
            let rstd =
                f32_data(OP, "running_var", rv)?.iter().map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32).collect();
            (mean, vec![0.0; d.c], rstd, None)
        };
        let w = weight.map(|w| f32_data(OP, "weight", w)).transpose()?;
        let b = bias.map(|b| f32_data(OP, "bias", b)).transpose()?;
        let coef = Coef {
            a: vec![0.0; d.c],
            b: (0..d.c).map(|c| rstd[c] * w.as_ref().map_or(1.0, |w| w[c])).collect(),
            m: mean.clone(),
            e: resid.clone(),
            d: b.as_ref().map_or_else(|| vec![0.0; d.c], |b| b.to_vec()),
        };
        let out = channel_affine(&x, Some(&x), d, &coef);
        let mean = mean.iter().zip(&resid).map(|(&m, &e)| m + e).collect();
        Ok((
            Array::from_f32_unchecked(out, self.shape()),
            NormStats { mean: Array::from_f32_unchecked(mean, &[d.c]), rstd: Array::from_f32_unchecked(rstd, &[d.c]) },
            update,
        ))
    }

    /// The backward of [`batch_norm`](Array::batch_norm): `self` is its input, `stats` the
    /// statistics it returned and `training` the mode it ran in (in evaluation mode the
    /// statistics are constants). `needs` says which of `[input, weight, bias]` to compute.
    pub fn batch_norm_backward(
        &self,
        grad: &Array,
        stats: &NormStats,
        weight: Option<&Array>,
        training: bool,
        needs: [bool; 3],
    ) -> Result<NormGrads> {
        const OP: &str = "batch_norm_backward";
        let d = ncs(OP, self)?;
        check_grad(OP, self, grad)?;
        check_param(OP, "weight", weight, &[d.c])?;
        check_param(OP, "mean", Some(&stats.mean), &[d.c])?;
        check_param(OP, "rstd", Some(&stats.rstd), &[d.c])?;
        let x = f32_data(OP, "input", self)?;
        let g = f32_data(OP, "grad", grad)?;
        let mean = f32_data(OP, "mean", &stats.mean)?;
        let rstd = f32_data(OP, "rstd", &stats.rstd)?;
        let w = weight.map(|w| f32_data(OP, "weight", w)).transpose()?;
        let wc = |c: usize| w.as_ref().map_or(1.0, |w| w[c]);
        let [need_x, need_w, need_b] = needs;
        let sums =
            (need_w || need_b || (need_x && training)).then(|| channel_sums(&x, d, ChannelSum::GradPair(&g, &mean)));
        let mut grads = NormGrads::default();
        if let Some((sg, sgd)) = &sums {
            if need_w {
                let dw = sgd.iter().zip(rstd.iter()).map(|(&s, &r)| (s * r as f64) as f32).collect();
                grads.weight = Some(Array::from_f32_unchecked(dw, &[d.c]));
            }
            if need_b {
                grads.bias = Some(Array::from_f32_unchecked(sg.iter().map(|&s| s as f32).collect(), &[d.c]));
            }
        }
        if need_x {
            let a: Vec<f32> = (0..d.c).map(|c| rstd[c] * wc(c)).collect();
            let dx = match &sums {
                Some((sg, sgd)) if training => {
                    // dx = a·(g − Σg/M − (x − mean)·rstd²·Σg(x − mean)/M)
                    let mf = (d.n * d.s) as f64;
                    let coef = Coef {
                        b: (0..d.c).map(|c| -a[c] * rstd[c] * rstd[c] * (sgd[c] / mf) as f32).collect(),
                        d: (0..d.c).map(|c| -a[c] * (sg[c] / mf) as f32).collect(),
                        m: mean.to_vec(),
                        e: Vec::new(),
                        a,
                    };
                    channel_affine(&g, Some(&x), d, &coef)
                }
                _ => {
                    let coef = Coef { a, b: Vec::new(), m: Vec::new(), e: Vec::new(), d: vec![0.0; d.c] };
                    channel_affine(&g, None, d, &coef)
                }
            };
            grads.input = Some(Array::from_f32_unchecked(dx, self.shape()));
        }
        Ok(grads)
    }
}
