//! Reductions: sum, mean, amax, var, logsumexp, argmax, and `sum_to` (the gradient of a
//! broadcast), plus the backward kernels of the differentiable ones.
//!
//! Every reduction reads its input through a [`Plan`], chosen without copying when the layout
//! allows it:
//! * reduced dims innermost and contiguous: each output element reduces one contiguous row
//!   (a slice kernel such as [`sum_slice`]);
//! * a contiguous block of reduced dims with kept dims on both sides (`[outer, red, inner]`,
//!   e.g. a bias gradient over leading dims): whole rows of `inner` elements are accumulated
//!   into the output;
//! * anything else: the kept dims are permuted first and the reduced dims last, then copied
//!   into contiguous rows (no copy when that permutation is already contiguous).
//!
//! A transposed or permuted view whose elements fill a contiguous block is first read in
//! memory order (no copy), and only the output is reordered.
//!
//! Large inputs are split over rayon's pool by output rows (or column bands); small ones stay
//! on the calling thread. Sums are blocked (64 lanes, f64 across blocks) so long reductions
//! stay accurate.

use crate::layout::normalize_dim;
use crate::ops::binary::zip_map;
use crate::ops::vmath::exp_inplace;
use crate::parallel::PAR_ELEMS;
use crate::{bail, Array, DType, Element, Result};
use rayon::prelude::*;
use smallvec::SmallVec;

/// Compiles the function it wraps for AVX-512 and AVX2 as well as the baseline, picking the
/// best one the CPU supports at run time (the loops are written so LLVM vectorizes them).
macro_rules! simd_kernel {
    ($($item:tt)*) => {
        #[multiversion::multiversion(targets(
            "x86_64+avx+avx2+fma+avx512f+avx512vl+avx512bw+avx512dq",
            "x86_64+avx+avx2+fma",
        ))]
        $($item)*
    };
}
pub(crate) use simd_kernel;

/// Below this many elements a slice kernel runs its plain (inlined) version: the run-time
/// dispatch of [`simd_kernel!`] would cost more than the wider vectors save.
pub(crate) const SMALL: usize = 64;

/// Defines a slice kernel whose first argument is a slice: inputs shorter than [`SMALL`] run
/// the body inlined into the caller, longer ones the widest clone the CPU supports.
/// Every clone computes the same result (same operations in the same order).
macro_rules! dispatched {
    ($(#[$m:meta])* $vis:vis fn $name:ident($first:ident: $ft:ty $(, $arg:ident: $ty:ty)*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[inline]
        $vis fn $name($first: $ft $(, $arg: $ty)*) $(-> $ret)? {
            #[inline(always)]
            fn imp($first: $ft $(, $arg: $ty)*) $(-> $ret)? $body
            $crate::ops::reduce::simd_kernel! {
                fn wide($first: $ft $(, $arg: $ty)*) $(-> $ret)? { imp($first $(, $arg)*) }
            }
            if $first.len() < $crate::ops::reduce::SMALL { imp($first $(, $arg)*) } else { wide($first $(, $arg)*) }
        }
    };
}
pub(crate) use dispatched;

/// Normalizes a list of reduction dims into a mask over the `rank` dims. `None` and an empty
/// list mean all dims (as in PyTorch); negative dims count from the end; a 0-d input accepts
/// dim 0 or -1. A repeated dim is an error.
pub fn reduce_mask(op: &'static str, rank: usize, dims: Option<&[isize]>) -> Result<Vec<bool>> {
    let all = dims.is_none_or(|d| d.is_empty());
    // A 0-d input is treated as having one dim of size 1, which leaves no mask entry.
    let mut mask = vec![all; rank.max(1)];
    if let Some(dims) = dims.filter(|_| !all) {
        for &d in dims {
            let d = normalize_dim(op, d, rank.max(1))?;
            if std::mem::replace(&mut mask[d], true) {
                bail!(op, "dim {d} appears more than once in {dims:?}");
            }
        }
    }
    mask.truncate(rank);
    Ok(mask)
}

/// The output shape of a reduction over `mask`: reduced dims become 1 with `keepdim`, and are
/// removed otherwise.
pub fn reduced_shape(shape: &[usize], mask: &[bool], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .zip(mask)
        .filter_map(|(&s, &m)| match (m, keepdim) {
            (false, _) => Some(s),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

/// Broadcasts `g`, the gradient of a reduction's output (with or without `keepdim`), back to
/// the input shape `in_shape` as a view (no copy).
pub fn expand_reduced(g: &Array, in_shape: &[usize], mask: &[bool]) -> Result<Array> {
    let kept = reduced_shape(in_shape, mask, true);
    g.reshape_to(&kept)?.broadcast_to(in_shape)
}

// ------------------------------------------------------------------------------- plans

/// How a reduction walks its contiguous input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// `outer` rows of `len` contiguous elements; each row reduces to one output element.
    Rows { outer: usize, len: usize },
    /// `outer` slabs of `[red, inner]`; each slab reduces over its `red` rows into `inner`
    /// output elements.
    Cols { outer: usize, red: usize, inner: usize },
}

/// A planned reduction: the contiguous array the kernels read, how they walk it, and how to
/// put their outputs back in row-major order of the kept dims.
struct Planned {
    data: Array,
    plan: Plan,
    /// When the kernels produce the kept dims in another order: the kept sizes in that order
    /// and the permutation that restores the logical order.
    reorder: Option<(Vec<usize>, Vec<isize>)>,
}

impl Planned {
    /// Puts the kernels' outputs in row-major order of the kept dims.
    fn finish<T: Element>(&self, out: Vec<T>) -> Vec<T> {
        match &self.reorder {
            None => out,
            Some((shape, perm)) => Array::from_vec(out, shape)
                .and_then(|a| a.permute(perm))
                .and_then(|a| a.to_vec::<T>())
                .expect("a valid permutation of the outputs"),
        }
    }
}

/// Plans the reduction of `x` over `mask`. A non-contiguous `x` whose elements still fill a
/// contiguous block (a transpose or permutation) is read in memory order without a copy; the
/// (smaller) output is reordered instead.
fn plan(x: &Array, mask: &[bool]) -> Planned {
    if !x.is_contiguous() {
        let st = x.layout().strides();
        let mut order: Vec<usize> = (0..x.rank()).collect();
        order.sort_by_key(|&d| std::cmp::Reverse(st[d]));
        let view = x.with_layout(x.layout().permute(&order).expect("a valid permutation"));
        if view.is_contiguous() {
            let vmask: Vec<bool> = order.iter().map(|&d| mask[d]).collect();
            let (data, plan) = plan_contiguous(&view, &vmask);
            // Kept dims of `x`, in the order the kernels produce them.
            let kept: Vec<usize> = order.iter().copied().filter(|&d| !mask[d]).collect();
            let reorder = (!kept.is_sorted()).then(|| {
                let mut sorted = kept.clone();
                sorted.sort_unstable();
                let perm = sorted.iter().map(|d| kept.iter().position(|k| k == d).unwrap() as isize).collect();
                (kept.iter().map(|&d| x.shape()[d]).collect(), perm)
            });
            return Planned { data, plan, reorder };
        }
    }
    let (data, plan) = plan_contiguous(x, mask);
    Planned { data, plan, reorder: None }
}

/// Picks the plan for reducing `x` over `mask`, returning the (contiguous) array it reads.
/// Copies only when the reduced dims cannot be reached as rows or columns of `x` itself.
fn plan_contiguous(x: &Array, mask: &[bool]) -> (Array, Plan) {
    let shape = x.shape();
    if x.is_contiguous() {
        // Merge neighbouring dims of the same kind, ignoring size-1 dims.
        let mut groups: SmallVec<[(usize, bool); 6]> = SmallVec::new();
        for (&s, &m) in shape.iter().zip(mask) {
            if s == 1 {
                continue;
            }
            match groups.last_mut() {
                Some((n, r)) if *r == m => *n *= s,
                _ => groups.push((s, m)),
            }
        }
        let p = match groups.as_slice() {
            [] => Some(Plan::Rows { outer: 1, len: 1 }),
            &[(n, true)] => Some(Plan::Rows { outer: 1, len: n }),
            &[(n, false)] => Some(Plan::Rows { outer: n, len: 1 }),
            &[(outer, false), (len, true)] => Some(Plan::Rows { outer, len }),
            &[(red, true), (inner, false)] => Some(Plan::Cols { outer: 1, red, inner }),
            &[(outer, false), (red, true), (inner, false)] => Some(Plan::Cols { outer, red, inner }),
            _ => None,
        };
        if let Some(p) = p {
            return (x.clone(), p);
        }
    }
    let keep = (0..shape.len()).filter(|&d| !mask[d]);
    let red = (0..shape.len()).filter(|&d| mask[d]);
    let perm: Vec<usize> = keep.chain(red).collect();
    let outer: usize = shape.iter().zip(mask).filter(|(_, &m)| !m).map(|(&s, _)| s).product();
    let len: usize = shape.iter().zip(mask).filter(|(_, &m)| m).map(|(&s, _)| s).product();
    let permuted = x.with_layout(x.layout().permute(&perm).expect("a valid permutation")).contiguous();
    (permuted, Plan::Rows { outer, len })
}

/// A band of columns `j0..j0 + w` of a `[red, stride]` row-major slab.
#[derive(Clone, Copy)]
pub struct ColBand<'a> {
    x: &'a [f32],
    red: usize,
    stride: usize,
    j0: usize,
    w: usize,
}

impl<'a> ColBand<'a> {
    /// Number of rows reduced over.
    pub fn red(&self) -> usize {
        self.red
    }
    /// Row `i` of the band (`w` contiguous elements).
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.x[i * self.stride + self.j0..][..self.w]
    }
    /// The band's rows in order.
    pub fn rows(&self) -> impl Iterator<Item = &'a [f32]> + '_ {
        (0..self.red).map(|i| self.row(i))
    }
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f(inputs_row, out_row)` for each of the `out.len() / orow` rows, where input `k`'s
/// row `r` is `ins[k][r * irow..][..irow]`. Splits whole rows over rayon's pool when the
/// input is large.
pub fn par_rows<T: Send, const N: usize>(
    ins: [&[f32]; N],
    irow: usize,
    out: &mut [T],
    orow: usize,
    f: impl Fn([&[f32]; N], &mut [T]) + Sync + Send,
) {
    if orow == 0 {
        return;
    }
    let rows = out.len() / orow;
    let run = |first: usize, chunk: &mut [T]| {
        for (k, o) in chunk.chunks_exact_mut(orow).enumerate() {
            let r = first + k;
            f(ins.map(|s| &s[r * irow..(r + 1) * irow]), o);
        }
    };
    let work = rows * irow.max(orow);
    if work < PAR_ELEMS || rows < 2 || threads() == 1 {
        run(0, out);
        return;
    }
    let per = rows.div_ceil(threads() * 4).max((PAR_ELEMS / 8).div_ceil(irow.max(orow)));
    out.par_chunks_mut(per * orow).enumerate().for_each(|(i, c)| run(i * per, c));
}

/// Runs a column kernel `f(band, out_band)` over every slab of a `Cols` plan. Splits slabs
/// over the pool when there are enough of them, else bands of columns of each slab.
fn par_cols<T: Send>(
    x: &[f32],
    (outer, red, inner): (usize, usize, usize),
    out: &mut [T],
    f: impl Fn(ColBand<'_>, &mut [T]) + Sync + Send,
) {
    let slab = red * inner;
    let whole = |o: usize, ob: &mut [T]| {
        f(ColBand { x: &x[o * slab..(o + 1) * slab], red, stride: inner, j0: 0, w: inner }, ob)
    };
    let n = outer * slab;
    if n < PAR_ELEMS || threads() == 1 {
        out.chunks_exact_mut(inner).enumerate().for_each(|(o, ob)| whole(o, ob));
    } else if outer >= threads() {
        out.par_chunks_mut(inner).enumerate().for_each(|(o, ob)| whole(o, ob));
    } else if inner >= 64 {
        let band = inner.div_ceil(threads() * 2).next_multiple_of(16);
        for (o, ob) in out.chunks_exact_mut(inner).enumerate() {
            let xs = &x[o * slab..(o + 1) * slab];
            ob.par_chunks_mut(band).enumerate().for_each(|(b, c)| {
                f(ColBand { x: xs, red, stride: inner, j0: b * band, w: c.len() }, c);
            });
        }
    } else {
        out.par_chunks_mut(inner).enumerate().for_each(|(o, ob)| whole(o, ob));
    }
}

/// Reduces `x` over `mask` with a row kernel (one contiguous row to one value) and the
/// matching column kernel (a band of rows accumulated into a band of outputs). Returns the
/// output elements in row-major order of the kept dims. `x` must be non-empty.
fn reduce_with<T: Element + Default>(
    x: &Array,
    mask: &[bool],
    row: impl Fn(&[f32]) -> T + Sync + Send,
    cols: impl Fn(ColBand<'_>, &mut [T]) + Sync + Send,
) -> Vec<T> {
    let p = plan(x, mask);
    p.finish(reduce_planned(&p.data, p.plan, row, cols))
}

/// The kernels of [`reduce_with`] on an input planned by [`plan`] (outputs in the plan's order).
fn reduce_planned<T: Element + Default>(
    data: &Array,
    p: Plan,
    row: impl Fn(&[f32]) -> T + Sync + Send,
    cols: impl Fn(ColBand<'_>, &mut [T]) + Sync + Send,
) -> Vec<T> {
    let xs = data.as_slice::<f32>().expect("plan gives a contiguous f32 array");
    match p {
        Plan::Rows { outer, len } => {
            let mut out = vec![T::default(); outer];
            par_rows([xs], len, &mut out, 1, |[r], o| o[0] = row(r));
            out
        }
        Plan::Cols { outer, red, inner } => {
            let mut out = vec![T::default(); outer * inner];
            par_cols(xs, (outer, red, inner), &mut out, cols);
            out
        }
    }
}

/// Rows per block of a column accumulation: partial sums over this many rows are kept in f32,
/// and the partial sums are added in f64.
const COL_BLOCK: usize = 64;

/// `out[j] = Σ_i term(row_i)[j]` over the rows of `band`, where `acc_row(acc, row)` adds one
/// row's terms into `acc`. Blocked: f32 within blocks of [`COL_BLOCK`] rows, f64 across them.
fn cols_accumulate(band: ColBand<'_>, out: &mut [f32], mut acc_row: impl FnMut(&mut [f32], &[f32])) {
    out.fill(0.0);
    if band.red <= COL_BLOCK {
        band.rows().for_each(|r| acc_row(out, r));
        return;
    }
    let mut total = vec![0f64; out.len()];
    for start in (0..band.red).step_by(COL_BLOCK) {
        out.fill(0.0);
        (start..(start + COL_BLOCK).min(band.red)).for_each(|i| acc_row(out, band.row(i)));
        total.iter_mut().zip(out.iter()).for_each(|(t, &a)| *t += a as f64);
    }
    out.iter_mut().zip(&total).for_each(|(o, &t)| *o = t as f32);
}

dispatched! {
    /// `acc += row` elementwise.
    fn add_row(acc: &mut [f32], row: &[f32]) {
        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
    }
}

dispatched! {
    /// `acc = max(acc, row)` elementwise, NaN-propagating.
    fn max_row(acc: &mut [f32], row: &[f32]) {
        acc.iter_mut().zip(row).for_each(|(a, &v)| *a = nan_max(*a, v));
    }
}

#[inline(always)]
fn nan_max(a: f32, v: f32) -> f32 {
    if v > a || v.is_nan() {
        v
    } else {
        a
    }
}

// ------------------------------------------------------------------------------- slice kernels

/// Lanes of the summing kernels: independent accumulators that LLVM keeps in vector
/// registers (4 AVX-512 registers, enough to hide the latency of the adds).
const LANES: usize = 64;
/// Lanes of [`max_slice`], which also tracks NaNs per lane.
const MAX_LANES: usize = 32;
/// Elements per block of [`sum_slice`]: blocks are summed in f32 lanes, blocks in f64.
const SUM_BLOCK: usize = 2048;

/// Folds `x` into `L` accumulators with `f`, returning them and the leftover tail.
#[inline(always)]
fn fold_lanes<const L: usize>(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> ([f32; L], &[f32]) {
    let mut acc = [init; L];
    let chunks = x.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            acc[i] = f(acc[i], c[i]);
        }
    }
    (acc, rest)
}

/// Pairwise sum of the lanes (a fixed tree, so the result does not depend on the machine).
#[inline(always)]
fn sum_lanes<const L: usize>(mut acc: [f32; L]) -> f32 {
    let mut w = L / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0]
}

dispatched! {
    /// Sum of at most a few thousand elements in [`LANES`] f32 accumulators.
    fn sum_block(x: &[f32]) -> f32 {
        let (acc, rest) = fold_lanes::<LANES>(x, 0.0, |a, v| a + v);
        sum_lanes(acc) + rest.iter().sum::<f32>()
    }
}

/// Sum of a slice: 64 independent f32 accumulators (vectorized) within blocks of 2048
/// elements, blocks added in f64, so a sum of n elements has an error of about
/// `32·ε` relative rather than `n·ε`.
pub fn sum_slice(x: &[f32]) -> f32 {
    if x.len() <= SUM_BLOCK {
        return sum_block(x);
    }
    x.chunks(SUM_BLOCK).map(|b| sum_block(b) as f64).sum::<f64>() as f32
}

dispatched! {
    /// [`sum_sq_dev`] of one block.
    fn sq_dev_block(x: &[f32], m: f32) -> f32 {
        let (acc, rest) = fold_lanes::<LANES>(x, 0.0, |a, v| a + (v - m) * (v - m));
        sum_lanes(acc) + rest.iter().map(|&v| (v - m) * (v - m)).sum::<f32>()
    }
}

/// `Σ (x_i − m)²`, blocked like [`sum_slice`].
pub fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
    if x.len() <= SUM_BLOCK {
        return sq_dev_block(x, m);
    }
    x.chunks(SUM_BLOCK).map(|b| sq_dev_block(b, m) as f64).sum::<f64>() as f32
}

dispatched! {
    /// [`dot_slice`] of one block.
    fn dot_block(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&p, &q)| p * q).sum();
        for (p, q) in ca.zip(cb) {
            for i in 0..LANES {
                acc[i] += p[i] * q[i];
            }
        }
        sum_lanes(acc) + tail
    }
}

/// `Σ a_i·b_i`, blocked like [`sum_slice`]. The slices must have the same length.
pub fn dot_slice(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    if a.len() <= SUM_BLOCK {
        return dot_block(a, b);
    }
    a.chunks(SUM_BLOCK).zip(b.chunks(SUM_BLOCK)).map(|(p, q)| dot_block(p, q) as f64).sum::<f64>() as f32
}

dispatched! {
    /// The maximum of a slice; NaN if any element is NaN, `-inf` for an empty slice.
    pub fn max_slice(x: &[f32]) -> f32 {
        // Plain maxima in the lanes (vectorizes to max instructions), NaNs tracked apart.
        let mut acc = [f32::NEG_INFINITY; MAX_LANES];
        let mut nan = [0u32; MAX_LANES];
        let chunks = x.chunks_exact(MAX_LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..MAX_LANES {
                acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
                nan[i] |= c[i].is_nan() as u32;
            }
        }
        if nan.iter().any(|&n| n != 0) {
            return f32::NAN;
        }
        acc.into_iter().chain(rest.iter().copied()).fold(f32::NEG_INFINITY, nan_max)
    }
}

/// Index of the first maximum of a non-empty slice (a NaN counts as the maximum, as in PyTorch).
pub fn argmax_slice(x: &[f32]) -> usize {
    let m = max_slice(x);
    let pos = if m.is_nan() { x.iter().position(|v| v.is_nan()) } else { x.iter().position(|&v| v == m) };
    pos.unwrap_or(0)
}

/// `log Σ exp(x_i)`, stable for large magnitudes: the maximum is subtracted first (unless it
/// is infinite, as PyTorch does). `-inf` for an empty slice or one of `-inf` only.
pub fn logsumexp_slice(x: &[f32]) -> f32 {
    let m = max_slice(x);
    if m.is_nan() {
        return m;
    }
    let c = if m.is_infinite() { 0.0 } else { m };
    let mut buf = [0f32; 256];
    let mut s = 0f64;
    for chunk in x.chunks(buf.len()) {
        let b = &mut buf[..chunk.len()];
        b.iter_mut().zip(chunk).for_each(|(o, &v)| *o = v - c);
        exp_inplace(b);
        s += sum_slice(b) as f64;
    }
    c + s.ln() as f32
}

// ------------------------------------------------------------------------------- ops

/// Number of elements each output element of a reduction over `mask` reduces.
fn reduced_count(shape: &[usize], mask: &[bool]) -> usize {
    shape.iter().zip(mask).filter(|(_, &m)| m).map(|(&s, _)| s).product()
}

impl Array {
    fn reduction_input(&self, op: &'static str, dims: Option<&[isize]>) -> Result<Vec<bool>> {
        self.expect_dtype(op, DType::F32)?;
        reduce_mask(op, self.rank(), dims)
    }

    /// True when some output element of a reduction over `mask` reduces no element.
    fn has_empty_reduction(&self, mask: &[bool]) -> bool {
        self.numel() == 0 && self.shape().iter().zip(mask).all(|(&s, &m)| m || s != 0)
    }

    /// Sum over `dims` (`None` or empty = all dims; negative dims count from the end). Reduced
    /// dims are kept as size 1 with `keepdim`, removed otherwise (a full reduction gives shape `[]`).
    pub fn sum(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Array> {
        let mask = self.reduction_input("sum", dims)?;
        let out = self.sum_mask(&mask);
        Ok(Array::from_f32_unchecked(out, &reduced_shape(self.shape(), &mask, keepdim)))
    }

    /// Mean over `dims` (as [`Array::sum`]). NaN where nothing is reduced.
    pub fn mean(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Array> {
        let mask = self.reduction_input("mean", dims)?;
        let n = reduced_count(self.shape(), &mask) as f32;
        let mut out = self.sum_mask(&mask);
        out.iter_mut().for_each(|v| *v /= n);
        Ok(Array::from_f32_unchecked(out, &reduced_shape(self.shape(), &mask, keepdim)))
    }

    /// The sums over the dims where `mask` is true, in row-major order of the kept dims.
    fn sum_mask(&self, mask: &[bool]) -> Vec<f32> {
        let out_n: usize = self.shape().iter().zip(mask).filter(|(_, &m)| !m).map(|(&s, _)| s).product();
        if self.numel() == 0 {
            return vec![0.0; out_n];
        }
        let p = plan(self, mask);
        // A large full reduction: split the one row over the pool.
        if let (Plan::Rows { outer: 1, len }, true) = (p.plan, threads() > 1) {
            if len >= 4 * PAR_ELEMS {
                let xs = p.data.as_slice::<f32>().expect("contiguous");
                let chunk = len.div_ceil(threads() * 4).next_multiple_of(SUM_BLOCK);
                let s: f64 =
                    xs.par_chunks(chunk).map(|c| c.chunks(SUM_BLOCK).map(|b| sum_block(b) as f64).sum::<f64>()).sum();
                return vec![s as f32];
            }
        }
        p.finish(reduce_planned(&p.data, p.plan, sum_slice, |band, o| cols_accumulate(band, o, add_row)))
    }

    /// Maximum over `dims` (as [`Array::sum`]); NaN propagates. Errors when some output
    /// element would reduce no element.
    pub fn amax(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Array> {
        let mask = self.reduction_input("amax", dims)?;
        let shape = reduced_shape(self.shape(), &mask, keepdim);
        if self.has_empty_reduction(&mask) {
            bail!(
                "amax",
                "cannot reduce shape {:?} over dims {dims:?}: the reduced dims are empty and amax has no identity",
                self.shape()
            );
        }
        if self.numel() == 0 {
            return Ok(Array::zeros(&shape));
        }
        let out = reduce_with(self, &mask, max_slice, |band, o| {
            o.copy_from_slice(band.row(0));
            (1..band.red()).for_each(|i| max_row(o, band.row(i)));
        });
        Ok(Array::from_f32_unchecked(out, &shape))
    }

    /// Variance over `dims` (as [`Array::sum`]): `Σ(x − mean)² / max(0, N − correction)` with N
    /// the number of reduced elements (`correction` 1 is the unbiased estimate, 0 the biased one).
    pub fn var(&self, dims: Option<&[isize]>, keepdim: bool, correction: i64) -> Result<Array> {
        let mask = self.reduction_input("var", dims)?;
        let shape = reduced_shape(self.shape(), &mask, keepdim);
        let n = reduced_count(self.shape(), &mask);
        let div = (n as f64 - correction as f64).max(0.0) as f32;
        if self.numel() == 0 {
            return Ok(Array::full(&shape, f32::NAN));
        }
        let nf = n as f32;
        let out = reduce_with(
            self,
            &mask,
            |r| sum_sq_dev(r, sum_slice(r) / nf) / div,
            |band, o| {
                let mut mean = vec![0f32; o.len()];
                cols_accumulate(band, &mut mean, add_row);
                mean.iter_mut().for_each(|m| *m /= nf);
                cols_accumulate(band, o, |acc, row| {
                    for ((a, &v), &m) in acc.iter_mut().zip(row).zip(&mean) {
                        *a += (v - m) * (v - m);
                    }
                });
                o.iter_mut().for_each(|v| *v /= div);
            },
        );
        Ok(Array::from_f32_unchecked(out, &shape))
    }

    /// `log Σ exp(x)` over `dims` (as [`Array::sum`]), computed stably (the maximum is
    /// subtracted first). `-inf` where nothing is reduced or every element is `-inf`.
    pub fn logsumexp(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Array> {
        let mask = self.reduction_input("logsumexp", dims)?;
        let shape = reduced_shape(self.shape(), &mask, keepdim);
        if self.numel() == 0 {
            return Ok(Array::full(&shape, f32::NEG_INFINITY));
        }
        let out = reduce_with(self, &mask, logsumexp_slice, |band, o| {
            let mut m = band.row(0).to_vec();
            (1..band.red()).for_each(|i| max_row(&mut m, band.row(i)));
            // Subtract the maximum unless it is infinite (then the result is ±inf anyway).
            m.iter_mut().for_each(|v| *v = if v.is_infinite() { 0.0 } else { *v });
            let mut t = vec![0f32; o.len()];
            cols_accumulate(band, o, |acc, row| {
                t.iter_mut().zip(row).zip(&m).for_each(|((t, &v), &c)| *t = v - c);
                exp_inplace(&mut t);
                add_row(acc, &t);
            });
            o.iter_mut().zip(&m).for_each(|(o, &c)| *o = c + o.ln());
        });
        Ok(Array::from_f32_unchecked(out, &shape))
    }

    /// Index (i64) of the first maximum along `dim`, or into the row-major flattened array when
    /// `dim` is `None` (shape `[]`, or all ones with `keepdim`). A NaN counts as the maximum.
    pub fn argmax(&self, dim: Option<isize>, keepdim: bool) -> Result<Array> {
        self.expect_dtype("argmax", DType::F32)?;
        let mask = match dim {
            Some(d) => reduce_mask("argmax", self.rank(), Some(&[d]))?,
            None => vec![true; self.rank()],
        };
        let shape = if dim.is_none() && !keepdim { vec![] } else { reduced_shape(self.shape(), &mask, keepdim) };
        if self.has_empty_reduction(&mask) {
            bail!(
                "argmax",
                "cannot take the argmax of shape {:?} along dim {dim:?}: the reduced dim is empty",
                self.shape()
            );
        }
        if self.numel() == 0 {
            return Array::from_vec(Vec::<i64>::new(), &shape);
        }
        let out = if dim.is_none() {
            vec![argmax_slice(&self.f32_cow()?) as i64]
        } else {
            reduce_with(
                self,
                &mask,
                |r| argmax_slice(r) as i64,
                |band, o| {
                    let mut best = band.row(0).to_vec();
                    o.fill(0);
                    for i in 1..band.red() {
                        for ((b, k), &v) in best.iter_mut().zip(o.iter_mut()).zip(band.row(i)) {
                            if v > *b || (v.is_nan() && !b.is_nan()) {
                                *b = v;
                                *k = i as i64;
                            }
                        }
                    }
                },
            )
        };
        Array::from_vec(out, &shape)
    }

    /// Sums a broadcast gradient back to `shape` (the shape of an operand before
    /// broadcasting): leading extra dims and dims where `shape` has size 1 are summed.
    pub fn sum_to(&self, shape: &[usize]) -> Result<Array> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        self.expect_dtype("sum_to", DType::F32)?;
        let r = self.rank();
        if shape.len() > r {
            bail!("sum_to", "cannot reduce shape {:?} to the larger rank shape {shape:?}", self.shape());
        }
        let lead = r - shape.len();
        let mut mask = vec![false; r];
        for d in 0..r {
            if d < lead || (shape[d - lead] == 1 && self.shape()[d] != 1) {
                mask[d] = true;
            } else if shape[d - lead] != self.shape()[d] {
                bail!("sum_to", "cannot reduce shape {:?} to {shape:?}: dim {d} differs", self.shape());
            }
        }
        Ok(Array::from_f32_unchecked(self.sum_mask(&mask), shape))
    }
}

// ------------------------------------------------------------------------------- backward

/// Gradient of [`Array::mean`]: `g / N` broadcast to `in_shape`.
pub fn mean_backward(g: &Array, in_shape: &[usize], dims: Option<&[isize]>) -> Result<Array> {
    let mask = reduce_mask("mean", in_shape.len(), dims)?;
    let n = reduced_count(in_shape, &mask) as f32;
    // Divide the (small) reduced gradient first, then broadcast it in one pass.
    let scaled = g.map("mean_backward", move |v| v / n)?;
    Ok(expand_reduced(&scaled, in_shape, &mask)?.contiguous())
}

/// Gradient of [`Array::amax`] for input `x`, output `out` and output gradient `g`: each
/// slice's gradient is split equally among the elements equal to its maximum.
pub fn amax_backward(x: &Array, out: &Array, g: &Array, dims: Option<&[isize]>) -> Result<Array> {
    let mask = reduce_mask("amax", x.rank(), dims)?;
    let is_max = zip_map("amax", x, &expand_reduced(out, x.shape(), &mask)?, |v, m| {
        (v == m || (v.is_nan() && m.is_nan())) as u8 as f32
    })?;
    let count = Array::from_f32_unchecked(is_max.sum_mask(&mask), &reduced_shape(x.shape(), &mask, true));
    let share = zip_map("amax", &g.reshape_to(count.shape())?, &count, |g, c| g / c)?;
    zip_map("amax", &is_max, &expand_reduced(&share, x.shape(), &mask)?, |w, s| w * s)
}

/// Gradient of [`Array::var`]: `g · 2(x − mean) / max(0, N − correction)`.
pub fn var_backward(x: &Array, g: &Array, dims: Option<&[isize]>, correction: i64) -> Result<Array> {
    let mask = reduce_mask("var", x.rank(), dims)?;
    let n = reduced_count(x.shape(), &mask);
    let k = 2.0 / (n as f64 - correction as f64).max(0.0) as f32;
    let mean = x.mean(dims, true)?;
    let dev = zip_map("var", x, &mean.broadcast_to(x.shape())?, |v, m| v - m)?;
    zip_map("var", &dev, &expand_reduced(g, x.shape(), &mask)?, move |d, g| k * d * g)
}

/// Gradient of [`Array::logsumexp`] for input `x`, output `out` and output gradient `g`:
/// `g · exp(x − out)` (0 at `-inf` inputs).
pub fn logsumexp_backward(x: &Array, out: &Array, g: &Array, dims: Option<&[isize]>) -> Result<Array> {
    let mask = reduce_mask("logsumexp", x.rank(), dims)?;
    let mut p = zip_map("logsumexp", x, &expand_reduced(out, x.shape(), &mask)?, |v, l| v - l)?;
    exp_inplace(p.make_mut_f32()?);
    zip_map("logsumexp", &p, &expand_reduced(g, x.shape(), &mask)?, |p, g| p * g)
}
