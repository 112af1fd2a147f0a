//! Convolutions: `conv1d`, `conv2d` and `conv_transpose2d` (PyTorch's cross-correlation with
//! zero padding, stride, dilation and groups), with their gradients.
//!
//! Everything is built from three kernels over one geometry ([`Geom`], the orientation of a
//! conv2d: input `[N, Cin, H, W]`, weight `[Cout, Cin/G, kH, kW]`, output `[N, Cout, oH, oW]`):
//!
//! * the **forward** `out = W · im2col(x)` per sample and group (`[Cout/G, K] · [K, oH·oW]`,
//!   `K = Cin/G·kH·kW`), the bias preloaded into the output so the GEMM adds onto it;
//! * the **data gradient** `dx = col2im(Wᵀ · g)` (the adjoint of the forward), optionally
//!   starting from a per-channel bias (the forward of `conv_transpose2d`);
//! * the **weight gradient** `dW = Σ_n g · im2col(x)ᵀ`.
//!
//! A 1x1 convolution with stride 1 and no padding skips im2col: the input itself is the
//! `[K, H·W]` matrix. Depthwise convolutions (one input channel per group, at most
//! `DEPTHWISE_MAX_MULT` output channels per group) skip it too: their three kernels work on
//! each plane directly (see `DwPlan`). The padding may differ before and after
//! ([`Conv2dOptions::padding_end`]): the geometry keeps the padding before, and positions
//! past the input are zeros wherever they fall. `conv1d` is `conv2d` with `H = 1`; `conv_transpose2d` is the data
//! gradient of a conv2d (forward), whose backward is that conv2d's forward (input gradient)
//! and weight gradient with the roles of input and output gradient swapped.
//!
//! Every product goes through [`gemm`]. The (sample, group) units are independent: with
//! enough of them (or when each product is too small to split), runs of units go to rayon's
//! pool with single-threaded GEMMs; otherwise the units run in turn and each GEMM uses the
//! pool. The im2col buffer is a per-thread scratch reused across units and calls. Weight
//! gradients are summed per task (fixed runs of samples) and then added in task order, so
//! repeated runs give identical results.

use super::gemm::{gemm, MatMut, MatRef, Par, PAR_MNK, SMALL_MNK};
use super::reduce::{simd_kernel, sum_slice};
use crate::{bail, Array, DType, Result};
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Stride, padding, dilation and groups of a [`conv2d`](Array::conv2d) (`[h, w]` each).
/// `Default`: stride 1, padding 0, dilation 1, groups 1.
///
/// The padding may differ between the two ends of a dim ([`padding_end`](Self::padding_end)),
/// as TensorFlow's "SAME" padding needs (one more zero at the bottom/right when the total is
/// odd): the kernel reads the zeros in place, with no padded copy of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOptions {
    /// Step of the window, `[sh, sw]`.
    pub stride: [usize; 2],
    /// Zeros added before (top, left) and, unless `padding_end` is set, also after, `[ph, pw]`.
    pub padding: [usize; 2],
    /// Zeros added after (bottom, right) when they differ from `padding`, `[ph_end, pw_end]`;
    /// `None` (the default) pads `padding` on both sides, as PyTorch's conv2d does.
    pub padding_end: Option<[usize; 2]>,
    /// Spacing of the kernel taps, `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Number of channel groups (`Cin` and `Cout` must be divisible by it).
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions { stride: [1, 1], padding: [0, 0], padding_end: None, dilation: [1, 1], groups: 1 }
    }
}

impl Conv2dOptions {
    /// Sets the stride.
    pub fn stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    /// Sets the padding (on both sides unless [`padding_end`](Self::padding_end) is set too).
    pub fn padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }
    /// Sets the padding after (bottom, right), leaving `padding` as the padding before.
    pub fn padding_end(mut self, padding_end: [usize; 2]) -> Self {
        self.padding_end = Some(padding_end);
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }
    /// Sets the number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// The padding after (bottom, right): `padding_end`, or `padding` when unset.
    pub fn end_padding(&self) -> [usize; 2] {
        self.padding_end.unwrap_or(self.padding)
    }
}

/// Stride, padding, dilation and groups of a [`conv1d`](Array::conv1d).
/// `Default`: stride 1, padding 0, dilation 1, groups 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dOptions {
    /// Step of the window.
    pub stride: usize,
    /// Zeros added on both sides.
    pub padding: usize,
    /// Spacing of the kernel taps.
    pub dilation: usize,
    /// Number of channel groups.
    pub groups: usize,
}

impl Default for Conv1dOptions {
    fn default() -> Self {
        Conv1dOptions { stride: 1, padding: 0, dilation: 1, groups: 1 }
    }
}

impl Conv1dOptions {
    /// Sets the stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }
    /// Sets the number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    fn to_2d(self) -> Conv2dOptions {
        Conv2dOptions {
            stride: [1, self.stride],
            padding: [0, self.padding],
            padding_end: None,
            dilation: [1, self.dilation],
            groups: self.groups,
        }
    }
}

/// Options of a [`conv_transpose2d`](Array::conv_transpose2d) (`[h, w]` each).
/// `Default`: stride 1, padding 0, output padding 0, dilation 1, groups 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dOptions {
    /// Stride of the conv2d this is the adjoint of.
    pub stride: [usize; 2],
    /// Padding of that conv2d (removed from the output).
    pub padding: [usize; 2],
    /// Extra rows/columns added at the bottom/right of the output (less than the stride or
    /// the dilation).
    pub output_padding: [usize; 2],
    /// Spacing of the kernel taps.
    pub dilation: [usize; 2],
    /// Number of channel groups.
    pub groups: usize,
}

impl Default for ConvTranspose2dOptions {
    fn default() -> Self {
        ConvTranspose2dOptions { stride: [1, 1], padding: [0, 0], output_padding: [0, 0], dilation: [1, 1], groups: 1 }
    }
}

impl ConvTranspose2dOptions {
    /// Sets the stride.
    pub fn stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }
    /// Sets the output padding.
    pub fn output_padding(mut self, output_padding: [usize; 2]) -> Self {
        self.output_padding = output_padding;
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }
    /// Sets the number of groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
}

// ------------------------------------------------------------------------------- geometry

/// One conv2d in forward orientation: input `[n, cin, h, w]`, weight `[cout, cin/groups, kh,
/// kw]`, output `[n, cout, oh, ow]`. `oh`/`ow` are normally PyTorch's output sizes; the
/// adjoint of a transposed conv with output padding may use fewer (the rest of the input is
/// then never read).
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    groups: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    dh: usize,
    dw: usize,
}

impl Geom {
    fn cin_g(&self) -> usize {
        self.cin / self.groups
    }
    fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
    /// Rows of im2col: `cin/groups·kh·kw`.
    fn k(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }
    /// Output positions per sample: `oh·ow`.
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// A 1x1 kernel with stride 1 and no padding (the output covers the input exactly): the
    /// input is its own im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.ph == 0
            && self.pw == 0
            && self.oh == self.h
            && self.ow == self.w
    }
    fn units(&self) -> usize {
        self.n * self.groups
    }
    fn input_shape(&self) -> [usize; 4] {
        [self.n, self.cin, self.h, self.w]
    }
    fn output_shape(&self) -> [usize; 4] {
        [self.n, self.cout, self.oh, self.ow]
    }
    fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.cin_g(), self.kh, self.kw]
    }
}

/// Errors unless every entry of `v` is positive.
fn check_positive(op: &'static str, name: &str, v: &[usize]) -> Result<()> {
    if v.contains(&0) {
        bail!(op, "{name} must be positive, got {v:?}");
    }
    Ok(())
}

/// The geometry of a conv2d from the input and weight shapes. Errors name `op` and the shapes.
fn geom2d(op: &'static str, x: &[usize], wt: &[usize], o: &Conv2dOptions) -> Result<Geom> {
    conv_geom(op, x, wt, &o.stride, &o.padding, &o.end_padding(), &o.dilation, o.groups)
}

/// The geometry of a conv1d (a conv2d with `h = 1`) from the input and weight shapes.
fn geom1d(op: &'static str, x: &[usize], wt: &[usize], o: &Conv1dOptions) -> Result<Geom> {
    conv_geom(op, x, wt, &[o.stride], &[o.padding], &[o.padding], &[o.dilation], o.groups)
}

/// The geometry of a conv over 1 or 2 spatial dims (`stride.len()`), from the input and
/// weight shapes, with `padding` zeros before and `padding_end` after in each dim; 1-d convs
/// become 2-d ones with `h = 1`. Errors name `op` and the shapes.
#[allow(clippy::too_many_arguments)]
fn conv_geom(
    op: &'static str,
    x: &[usize],
    wt: &[usize],
    stride: &[usize],
    padding: &[usize],
    padding_end: &[usize],
    dilation: &[usize],
    groups: usize,
) -> Result<Geom> {
    let s = stride.len();
    let (xdesc, wdesc) = if s == 1 {
        ("[N, C_in, L]", "[C_out, C_in/groups, K]")
    } else {
        ("[N, C_in, H, W]", "[C_out, C_in/groups, kH, kW]")
    };
    if x.len() != s + 2 {
        bail!(op, "input must be {}-d {xdesc}, got shape {x:?}", s + 2);
    }
    if wt.len() != s + 2 {
        bail!(op, "weight must be {}-d {wdesc}, got shape {wt:?} (input {x:?})", s + 2);
    }
    check_positive(op, "stride", stride)?;
    check_positive(op, "dilation", dilation)?;
    if groups == 0 {
        bail!(op, "groups must be positive, got 0");
    }
    let (cin, cout) = (x[1], wt[0]);
    if !cin.is_multiple_of(groups) {
        bail!(op, "input {x:?} has {cin} channels, which is not divisible by groups ({groups})");
    }
    if !cout.is_multiple_of(groups) {
        bail!(op, "weight {wt:?} has {cout} output channels, which is not divisible by groups ({groups})");
    }
    if wt[1] * groups != cin {
        bail!(
            op,
            "weight {wt:?} expects {} input channels ({} per group x {groups} groups), but input {x:?} has {cin}",
            wt[1] * groups,
            wt[1]
        );
    }
    let mut out = [1usize; 2];
    for i in 0..s {
        let (len, k) = (x[2 + i], wt[2 + i]);
        let span = dilation[i] * k.saturating_sub(1) + 1;
        let padded = len + padding[i] + padding_end[i];
        if k == 0 || span > padded {
            let pads = if padding == padding_end {
                format!("padding {padding:?}")
            } else {
                format!("padding {padding:?} before and {padding_end:?} after")
            };
            bail!(
                op,
                "kernel size {k} (dilated: {span}) in dim {} is larger than the padded input size {padded} (input {x:?}, weight {wt:?}, {pads}, dilation {dilation:?})",
                2 + i
            );
        }
        out[2 - s + i] = (padded - span) / stride[i] + 1;
    }
    let sp = |v: &[usize], d: usize| if s == 1 { [d, v[0]] } else { [v[0], v[1]] };
    let (st, pd, dl) = (sp(stride, 1), sp(padding, 0), sp(dilation, 1));
    let (h, w) = if s == 1 { (1, x[2]) } else { (x[2], x[3]) };
    let (kh, kw) = if s == 1 { (1, wt[2]) } else { (wt[2], wt[3]) };
    Ok(Geom {
        n: x[0],
        groups,
        cin,
        h,
        w,
        cout,
        oh: out[0],
        ow: out[1],
        kh,
        kw,
        sh: st[0],
        sw: st[1],
        ph: pd[0],
        pw: pd[1],
        dh: dl[0],
        dw: dl[1],
    })
}

/// The conv2d geometry whose data gradient is the transposed conv of `x` `[N, Cin, H, W]` by
/// `weight` `[Cin, Cout/groups, kH, kW]`: that conv2d maps the transposed conv's output
/// `[N, Cout, Hout, Wout]` to `[N, Cin, H, W]` with the same weight.
fn transposed_geom(op: &'static str, x: &[usize], wt: &[usize], o: &ConvTranspose2dOptions) -> Result<Geom> {
    if x.len() != 4 {
        bail!(op, "input must be 4-d [N, C_in, H, W], got shape {x:?}");
    }
    if wt.len() != 4 {
        bail!(op, "weight must be 4-d [C_in, C_out/groups, kH, kW], got shape {wt:?} (input {x:?})");
    }
    check_positive(op, "stride", &o.stride)?;
    check_positive(op, "dilation", &o.dilation)?;
    let groups = o.groups;
    if groups == 0 {
        bail!(op, "groups must be positive, got 0");
    }
    let cin = x[1];
    if wt[0] != cin {
        bail!(op, "weight {wt:?} expects {} input channels (dim 0), but input {x:?} has {cin}", wt[0]);
    }
    if !cin.is_multiple_of(groups) {
        bail!(op, "input {x:?} has {cin} channels, which is not divisible by groups ({groups})");
    }
    let mut out = [0usize; 2];
    for i in 0..2 {
        let (s, p, d, op_, k, len) =
            (o.stride[i], o.padding[i], o.dilation[i], o.output_padding[i], wt[2 + i], x[2 + i]);
        if op_ >= s && op_ >= d {
            bail!(
                op,
                "output_padding {:?} must be smaller than either the stride {:?} or the dilation {:?}",
                o.output_padding,
                o.stride,
                o.dilation
            );
        }
        if k == 0 || len == 0 {
            bail!(op, "input {x:?} and weight {wt:?} must have non-empty spatial dims");
        }
        let full = (len - 1) * s + d * (k - 1) + op_ + 1;
        if full <= 2 * p {
            bail!(
                op,
                "output size in dim {} is not positive: ({len} - 1)·{s} - 2·{p} + {d}·({k} - 1) + {op_} + 1 (input {x:?}, weight {wt:?})",
                2 + i
            );
        }
        out[i] = full - 2 * p;
    }
    Ok(Geom {
        n: x[0],
        groups,
        cin: wt[1] * groups,
        h: out[0],
        w: out[1],
        cout: cin,
        oh: x[2],
        ow: x[3],
        kh: wt[2],
        kw: wt[3],
        sh: o.stride[0],
        sw: o.stride[1],
        ph: o.padding[0],
        pw: o.padding[1],
        dh: o.dilation[0],
        dw: o.dilation[1],
    })
}

/// Errors unless `a` has exactly `shape`.
fn check_shape(op: &'static str, what: &str, a: &Array, shape: &[usize]) -> Result<()> {
    a.expect_dtype(op, DType::F32)?;
    if a.shape() != shape {
        bail!(op, "{what} must have shape {shape:?}, got {:?}", a.shape());
    }
    Ok(())
}

/// Errors unless `bias` is f32 of shape `[channels]`.
fn check_bias(op: &'static str, bias: Option<&Array>, channels: usize, weight: &[usize]) -> Result<()> {
    if let Some(b) = bias {
        b.expect_dtype(op, DType::F32)?;
        if b.shape() != [channels] {
            bail!(
                op,
                "bias must have shape [{channels}] (one per output channel of weight {weight:?}), got {:?}",
                b.shape()
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------- scheduling

/// How to spread `units` independent products of `unit_mnk` multiply-adds each: the number
/// of tasks (contiguous runs of units) to run on rayon's pool with single-threaded GEMMs, or 1
/// to run the units in turn with GEMMs that may use the pool themselves. Units are split when
/// there are enough of them to keep the threads even, or when each product is too small to
/// split well by itself.
fn tasks_for(units: usize, unit_mnk: usize, max_per_thread: usize) -> usize {
    let threads = rayon::current_num_threads();
    if threads <= 1 || units <= 1 || units.saturating_mul(unit_mnk) < PAR_MNK {
        return 1;
    }
    if unit_mnk < PAR_MNK || units >= 2 * threads || units.is_multiple_of(threads) {
        units.min(max_per_thread * threads)
    } else {
        1
    }
}

/// Per-thread scratch kept across calls when no larger than this (32 MiB of f32).
const SCRATCH_KEEP: usize = 1 << 23;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of `len` elements (contents unspecified). The
/// buffer is taken out while `f` runs, so a nested call gets a fresh one.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < len {
        buf.clear();
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    if buf.capacity() <= SCRATCH_KEEP {
        SCRATCH.with(|s| *s.borrow_mut() = buf);
    }
    r
}

/// Fills `chunk` with `v` and returns it as initialized.
fn fill_uninit(chunk: &mut [MaybeUninit<f32>], v: f32) -> &mut [f32] {
    chunk.fill(MaybeUninit::new(v));
    // SAFETY: every element was just written.
    unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Runs `run(first_unit, chunk, par)` over `out` (`units` chunks of `unit_len` elements), in
/// `tasks` parallel runs (single-threaded GEMMs) or in one run (GEMMs may use the pool).
/// Returns the filled vector; `run` must initialize every element of its chunk.
fn per_unit_output(
    units: usize,
    unit_len: usize,
    tasks: usize,
    run: impl Fn(usize, &mut [MaybeUninit<f32>], Par) + Sync,
) -> Vec<f32> {
    let total = units * unit_len;
    let mut out = Vec::<f32>::with_capacity(total);
    if total > 0 {
        let spare = &mut out.spare_capacity_mut()[..total];
        if tasks > 1 {
            let per = units.div_ceil(tasks);
            spare.par_chunks_mut(per * unit_len).enumerate().for_each(|(t, c)| run(t * per, c, Par::Seq));
        } else {
            run(0, spare, Par::Auto);
        }
    }
    // SAFETY: the chunks tile `0..total` and `run` initialized each one.
    unsafe { out.set_len(total) };
    out
}

// ------------------------------------------------------------------------------- im2col

/// The output positions `lo..hi` (of `out`) whose input position `o·s + off` lies in `0..len`.
fn valid_range(out: usize, s: usize, off: isize, len: usize) -> (usize, usize) {
    let lo = if off >= 0 { 0 } else { (off.unsigned_abs()).div_ceil(s) };
    let lim = len as isize - off;
    let hi = if lim <= 0 { 0 } else { (lim as usize).div_ceil(s) }.min(out);
    (lo.min(hi), hi)
}

/// A block of output rows `o0..o1` of one (sample, group): the columns
/// `o0·ow .. o1·ow` of its im2col matrix.
#[derive(Clone, Copy, Debug)]
struct Rows {
    o0: usize,
    o1: usize,
}

impl Rows {
    /// Output positions in the block.
    fn len(&self, g: &Geom) -> usize {
        (self.o1 - self.o0) * g.ow
    }
}

/// The row blocks of an `oh`-row output, `rows` output rows each (the last may be shorter).
fn row_blocks(g: &Geom, rows: usize) -> impl Iterator<Item = Rows> + '_ {
    (0..g.oh).step_by(rows.max(1)).map(move |o0| Rows { o0, o1: (o0 + rows).min(g.oh) })
}

/// im2col blocks keep this many elements at most (512 KiB: they stay in L2 between the im2col
/// and the product), unless one output row is already larger.
const BLOCK_ELEMS: usize = 1 << 17;

/// From this many im2col rows on, the weight gradient is accumulated transposed (see
/// [`grad_weight`]).
const TRANSPOSED_DW_K: usize = 96;

/// Output rows per block when each (sample, group) runs on one thread: blocks small enough to
/// stay in L2 and to make products that kiln's unpacked GEMM kernel takes (see
/// [`SMALL_MNK`]), evened out over the output. All rows at once otherwise (the products then
/// split over the pool themselves).
fn block_rows(g: &Geom, blocked: bool) -> usize {
    if !blocked || g.oh == 0 {
        return g.oh.max(1);
    }
    let (k, m, ow) = (g.k().max(1), g.cout_g().max(1), g.ow.max(1));
    let cols = (BLOCK_ELEMS / k).min(SMALL_MNK / (k * m).max(1)).max(1);
    let rows = (cols / ow).clamp(1, g.oh);
    let blocks = g.oh.div_ceil(rows);
    g.oh.div_ceil(blocks)
}

/// Walks the rows of the im2col block `b` of one (sample, group): for row `r` (input channel
/// `c`, one kernel tap) calls `row(r, c, (hlo, hhi), hoff, (wlo, whi), woff)`, where output rows
/// `hlo..hhi` (within the block) read input row `o·sh + hoff` and output columns `wlo..whi`
/// read input column `o·sw + woff`; the other output positions fall into the padding.
#[inline(always)]
fn walk(g: &Geom, b: Rows, mut row: impl FnMut(usize, usize, (usize, usize), isize, (usize, usize), isize)) {
    let mut r = 0;
    for c in 0..g.cin_g() {
        for ki in 0..g.kh {
            let hoff = (ki * g.dh) as isize - g.ph as isize;
            let (hlo, hhi) = valid_range(g.oh, g.sh, hoff, g.h);
            let hr = (hlo.clamp(b.o0, b.o1), hhi.clamp(b.o0, b.o1));
            for kj in 0..g.kw {
                let woff = (kj * g.dw) as isize - g.pw as isize;
                let wr = valid_range(g.ow, g.sw, woff, g.w);
                row(r, c, hr, hoff, wr, woff);
                r += 1;
            }
        }
    }
}

/// Stride 1 with as many output columns as input columns (a "same" width, `2·pw = dw·(kw − 1)`):
/// the valid part of an im2col row is then one contiguous run of the input plane (the input
/// offset is the same for every output position), apart from the columns that wrap around
/// into the neighbouring input row, which fall into the padding.
fn contiguous_rows(g: &Geom) -> bool {
    g.sh == 1 && g.sw == 1 && g.ow == g.w
}

/// For a [`contiguous_rows`] geometry: the run `dst..dst + len` of an im2col block row (block
/// starting at output row `o0`) that maps to `src..src + len` of the input plane (None if the
/// row is all padding).
fn contiguous_run(
    g: &Geom,
    o0: usize,
    (hlo, hhi): (usize, usize),
    hoff: isize,
    (wlo, whi): (usize, usize),
    woff: isize,
) -> Option<(usize, usize, usize)> {
    if hhi <= hlo || whi <= wlo {
        return None;
    }
    let ow = g.ow;
    let dst = (hlo - o0) * ow + wlo;
    let len = (hhi - 1 - o0) * ow + whi - dst;
    let src = ((hlo as isize + hoff) * g.w as isize + wlo as isize + woff) as usize;
    Some((dst, src, len))
}

/// `s.fill(0.0)` for the few wrapped columns of an im2col row (0 to `kw − 1` of them):
/// fixed-size stores instead of a call to `memset` per output row, which cost as much as the
/// rest of the im2col.
#[inline(always)]
fn zero_short(s: &mut [f32]) {
    let n = s.len();
    match n {
        0 => {}
        1 => s[0] = 0.0,
        2..4 => {
            s[..2].copy_from_slice(&[0.0; 2]);
            s[n - 2..].copy_from_slice(&[0.0; 2]);
        }
        4..8 => {
            s[..4].copy_from_slice(&[0.0; 4]);
            s[n - 4..].copy_from_slice(&[0.0; 4]);
        }
        _ => s.fill(0.0),
    }
}

/// Writes the im2col block `b` (`[k, b.len()]`) of one (sample, group) input `x` into `cols`.
fn im2col(x: &[f32], cols: &mut [f32], g: &Geom, b: Rows) {
    let (bp, ow, hw, w) = (b.len(g), g.ow, g.hw(), g.w);
    let contiguous = contiguous_rows(g);
    walk(g, b, |r, c, (hlo, hhi), hoff, (wlo, whi), woff| {
        let plane = &x[c * hw..][..hw];
        let row = &mut cols[r * bp..][..bp];
        let (zlo, zhi) = ((hlo - b.o0) * ow, (hhi - b.o0) * ow);
        row[..zlo].fill(0.0);
        row[zhi..].fill(0.0);
        if contiguous {
            match contiguous_run(g, b.o0, (hlo, hhi), hoff, (wlo, whi), woff) {
                Some((dst, src, len)) => {
                    row[dst..dst + len].copy_from_slice(&plane[src..src + len]);
                    // The wrapped columns of every output row are padding.
                    for o in (zlo..zhi).step_by(ow) {
                        zero_short(&mut row[o..o + wlo]);
                        zero_short(&mut row[o + whi..o + ow]);
                    }
                }
                None => row[zlo..zhi].fill(0.0),
            }
            return;
        }
        for o in hlo..hhi {
            let ih = ((o * g.sh) as isize + hoff) as usize;
            let src = &plane[ih * w..][..w];
            let dst = &mut row[(o - b.o0) * ow..][..ow];
            dst[..wlo].fill(0.0);
            dst[whi..].fill(0.0);
            if whi > wlo {
                let s0 = ((wlo * g.sw) as isize + woff) as usize;
                if g.sw == 1 {
                    dst[wlo..whi].copy_from_slice(&src[s0..s0 + (whi - wlo)]);
                } else {
                    for (d, s) in dst[wlo..whi].iter_mut().zip(src[s0..].iter().step_by(g.sw)) {
                        *d = *s;
                    }
                }
            }
        }
    });
}

/// Adds the im2col block `b` held in `cols` (`[k, b.len()]`) back into one (sample, group)
/// input gradient `dx` (the adjoint of [`im2col`]). `cols` is scratch: its padding positions
/// may be zeroed.
fn col2im(cols: &mut [f32], dx: &mut [f32], g: &Geom, b: Rows) {
    let (bp, ow, hw, w) = (b.len(g), g.ow, g.hw(), g.w);
    let contiguous = contiguous_rows(g);
    walk(g, b, |r, c, (hlo, hhi), hoff, (wlo, whi), woff| {
        if whi <= wlo {
            return;
        }
        let plane = &mut dx[c * hw..][..hw];
        let row = &mut cols[r * bp..][..bp];
        if contiguous {
            if let Some((dst, src, len)) = contiguous_run(g, b.o0, (hlo, hhi), hoff, (wlo, whi), woff) {
                // Zero the wrapped columns so that one contiguous add skips them.
                for o in ((hlo - b.o0) * ow..(hhi - b.o0) * ow).step_by(ow) {
                    zero_short(&mut row[o..o + wlo]);
                    zero_short(&mut row[o + whi..o + ow]);
                }
                for (d, s) in plane[src..src + len].iter_mut().zip(&row[dst..dst + len]) {
                    *d += *s;
                }
            }
            return;
        }
        for o in hlo..hhi {
            let ih = ((o * g.sh) as isize + hoff) as usize;
            let dst = &mut plane[ih * w..][..w];
            let o_ = (o - b.o0) * ow;
            let src = &row[o_ + wlo..o_ + whi];
            let s0 = ((wlo * g.sw) as isize + woff) as usize;
            if g.sw == 1 {
                for (d, s) in dst[s0..s0 + src.len()].iter_mut().zip(src) {
                    *d += *s;
                }
            } else {
                for (d, s) in dst[s0..].iter_mut().step_by(g.sw).zip(src) {
                    *d += *s;
                }
            }
        }
    });
}

/// Writes the transpose of the `rows x cols` matrix `src` (row stride `rs`) into `dst`
/// (`cols x rows`, row-major): 8x8 blocks through AVX registers where the CPU has them,
/// element by element for the edges.
fn transpose_into(src: &[f32], rs: usize, rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(rows == 0 || cols == 0 || ((rows - 1) * rs + cols <= src.len() && rows * cols <= dst.len()));
    let (mut r8, mut c8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        // SAFETY: AVX is present; the blocks stay inside the bounds asserted above.
        unsafe { transpose_blocks_avx(src.as_ptr(), rs, rows, r8, c8, dst.as_mut_ptr()) };
    }
    // The edges (everything when the blocks did not run): rows past r8, columns past c8.
    for i in 0..rows {
        let j0 = if i < r8 { c8 } else { 0 };
        for (j, &v) in src[i * rs..][..cols].iter().enumerate().skip(j0) {
            dst[j * rows + i] = v;
        }
    }
}

/// The `r8 x c8` corner of [`transpose_into`], in 8x8 blocks: 8 row loads, the textbook
/// unpack / shuffle / lane-permute transpose, 8 row stores.
///
/// # Safety
/// AVX must be available; `src` must hold `r8` rows of stride `rs` with `c8` elements each and
/// `dst` `c8` rows of stride `rows` with `r8` elements each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_blocks_avx(src: *const f32, rs: usize, rows: usize, r8: usize, c8: usize, dst: *mut f32) {
    use std::arch::x86_64::*;
    for i0 in (0..r8).step_by(8) {
        for j0 in (0..c8).step_by(8) {
            let r: [__m256; 8] = std::array::from_fn(|k| _mm256_loadu_ps(src.add((i0 + k) * rs + j0)));
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0b01_00_01_00>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0b11_10_11_10>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0b01_00_01_00>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0b11_10_11_10>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0b01_00_01_00>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0b11_10_11_10>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0b01_00_01_00>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0b11_10_11_10>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (k, v) in out.into_iter().enumerate() {
                _mm256_storeu_ps(dst.add((j0 + k) * rows + i0), v);
            }
        }
    }
}

// ------------------------------------------------------------------------------- kernels

/// The conv2d forward, `[n, cout, oh, ow]`: the direct kernels for depthwise convs, im2col
/// and GEMMs otherwise.
fn forward(x: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    if g.depthwise() {
        dw_forward(x, wt, bias, g)
    } else {
        im2col_forward(x, wt, bias, g)
    }
}

/// The conv2d forward through im2col: `out[n, g] = W_g · im2col(x[n, g]) (+ bias)`, block of
/// output rows by block.
fn im2col_forward(x: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    let (cin_g, cout_g, k, p, hw) = (g.cin_g(), g.cout_g(), g.k(), g.p(), g.hw());
    let (unit_in, unit_out) = (cin_g * hw, cout_g * p);
    let pointwise = g.pointwise();
    let tasks = tasks_for(g.units(), cout_g * k * p, 4);
    let rows = block_rows(g, tasks > 1 || rayon::current_num_threads() == 1);
    per_unit_output(g.units(), unit_out, tasks, |u0, chunk, par| {
        with_scratch(if pointwise { 0 } else { k * rows * g.ow }, |cols| {
            for (i, o) in chunk.chunks_mut(unit_out).enumerate() {
                let u = u0 + i;
                let gi = u % g.groups;
                let xin = &x[u * unit_in..][..unit_in];
                let a = MatRef::new(wt, gi * cout_g * k, cout_g, k, k, 1);
                if let Some(bv) = bias {
                    for (row, &v) in o.chunks_mut(p).zip(&bv[gi * cout_g..][..cout_g]) {
                        fill_uninit(row, v);
                    }
                }
                for b in row_blocks(g, rows) {
                    let (c0, bp) = (b.o0 * g.ow, b.len(g));
                    let bm = if pointwise {
                        MatRef::new(xin, c0, k, bp, hw, 1)
                    } else {
                        im2col(xin, cols, g, b);
                        MatRef::row_major(&cols[..k * bp], k, bp)
                    };
                    if bias.is_some() {
                        // SAFETY: the whole unit was filled with the bias above.
                        let o = unsafe { &mut *(o as *mut [MaybeUninit<f32>] as *mut [f32]) };
                        gemm(MatMut::new(o, c0, cout_g, bp, p, 1), a, bm, 1.0, true, par);
                    } else {
                        gemm(MatMut::uninit(o, c0, cout_g, bp, p, 1), a, bm, 1.0, false, par);
                    }
                }
            }
        })
    })
}

/// The conv2d data gradient, `[n, cin, h, w]`, each channel starting from `bias[c]` (or
/// zero): the direct kernels for depthwise convs, im2col and GEMMs otherwise.
fn grad_data(gout: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    if g.depthwise() {
        dw_grad_data(gout, wt, bias, g)
    } else {
        im2col_grad_data(gout, wt, bias, g)
    }
}

/// The conv2d data gradient through col2im: `dx[n, g] = col2im(W_gᵀ · gout[n, g])`, block of
/// output rows by block.
fn im2col_grad_data(gout: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    let (cin_g, cout_g, k, p, hw) = (g.cin_g(), g.cout_g(), g.k(), g.p(), g.hw());
    let (unit_in, unit_out) = (cin_g * hw, cout_g * p);
    let pointwise = g.pointwise();
    let tasks = tasks_for(g.units(), cout_g * k * p, 4);
    let rows = block_rows(g, tasks > 1 || rayon::current_num_threads() == 1);
    per_unit_output(g.units(), unit_in, tasks, |u0, chunk, par| {
        with_scratch(if pointwise { 0 } else { k * rows * g.ow }, |cols| {
            for (i, dxu) in chunk.chunks_mut(unit_in).enumerate() {
                let u = u0 + i;
                let gi = u % g.groups;
                let a = MatRef::new(wt, gi * cout_g * k, k, cout_g, 1, k);
                let gu = &gout[u * unit_out..][..unit_out];
                if pointwise && bias.is_none() {
                    // Each block overwrites its own columns of dx.
                    for b in row_blocks(g, rows) {
                        let (c0, bp) = (b.o0 * g.ow, b.len(g));
                        let bm = MatRef::new(gu, c0, cout_g, bp, p, 1);
                        gemm(MatMut::uninit(dxu, c0, k, bp, hw, 1), a, bm, 1.0, false, par);
                    }
                    continue;
                }
                for (c, plane) in dxu.chunks_mut(hw.max(1)).enumerate() {
                    fill_uninit(plane, bias.map_or(0.0, |b| b[gi * cin_g + c]));
                }
                // SAFETY: every plane was just filled.
                let dxu = unsafe { &mut *(dxu as *mut [MaybeUninit<f32>] as *mut [f32]) };
                for b in row_blocks(g, rows) {
                    let (c0, bp) = (b.o0 * g.ow, b.len(g));
                    let bm = MatRef::new(gu, c0, cout_g, bp, p, 1);
                    if pointwise {
                        gemm(MatMut::new(dxu, c0, k, bp, hw, 1), a, bm, 1.0, true, par);
                    } else {
                        gemm(MatMut::row_major(&mut cols[..k * bp], k, bp), a, bm, 1.0, false, par);
                        col2im(cols, dxu, g, b);
                    }
                }
            }
        })
    })
}

/// The conv2d weight gradient `[cout, cin/groups, kh, kw]`: the direct kernels for depthwise
/// convs, im2col and GEMMs otherwise.
fn grad_weight(x: &[f32], gout: &[f32], g: &Geom) -> Vec<f32> {
    if g.depthwise() {
        dw_grad_weight(x, gout, g)
    } else {
        im2col_grad_weight(x, gout, g)
    }
}

/// The conv2d weight gradient `dW_g = Σ_n gout[n, g] · im2col(x[n, g])ᵀ`, `[cout, k]`. With
/// many im2col rows it is accumulated transposed (`dW_gᵀ += im2col block · gout blockᵀ`, B a
/// small transposed copy of the output gradient block: the layout kiln's unpacked kernel takes,
/// worth the copy once each copied element feeds enough multiply-adds) and transposed once at
/// the end; with few rows directly (dot products of output gradient and im2col rows).
fn im2col_grad_weight(x: &[f32], gout: &[f32], g: &Geom) -> Vec<f32> {
    let (cin_g, cout_g, k, p, hw) = (g.cin_g(), g.cout_g(), g.k(), g.p(), g.hw());
    let (unit_in, unit_out) = (cin_g * hw, cout_g * p);
    let pointwise = g.pointwise();
    let units = g.units();
    // One partial sum per task: at most one task per thread keeps the partials few.
    let tasks = tasks_for(units, cout_g * k * p, 1);
    let rows = block_rows(g, tasks > 1 || rayon::current_num_threads() == 1);
    let bmax = rows * g.ow;
    let transposed = k >= TRANSPOSED_DW_K;
    // Partial sums of dWᵀ (`[groups][k, cout_g]`) or dW (`[cout, k]`).
    let run = |u0: usize, u1: usize, acc: &mut [f32], par: Par| {
        let cols_len = if pointwise { 0 } else { k * bmax };
        with_scratch(cols_len + if transposed { bmax * cout_g } else { 0 }, |scratch| {
            let (cols, gt) = scratch.split_at_mut(cols_len);
            for u in u0..u1 {
                let gi = u % g.groups;
                let xin = &x[u * unit_in..][..unit_in];
                let gu = &gout[u * unit_out..][..unit_out];
                for b in row_blocks(g, rows) {
                    let (c0, bp) = (b.o0 * g.ow, b.len(g));
                    let cm = if pointwise {
                        MatRef::new(xin, c0, k, bp, hw, 1)
                    } else {
                        im2col(xin, cols, g, b);
                        MatRef::row_major(&cols[..k * bp], k, bp)
                    };
                    if transposed {
                        transpose_into(&gu[c0..], p, cout_g, bp, gt);
                        let bm = MatRef::row_major(&gt[..bp * cout_g], bp, cout_g);
                        gemm(MatMut::new(acc, gi * k * cout_g, k, cout_g, cout_g, 1), cm, bm, 1.0, true, par);
                    } else {
                        let am = MatRef::new(gu, c0, cout_g, bp, p, 1);
                        gemm(MatMut::new(acc, gi * cout_g * k, cout_g, k, k, 1), am, cm.t(), 1.0, true, par);
                    }
                }
            }
        })
    };
    let len = g.cout * k;
    let dwt = if tasks <= 1 {
        let mut dwt = vec![0f32; len];
        run(0, units, &mut dwt, Par::Auto);
        dwt
    } else {
        let per = units.div_ceil(tasks);
        let partials: Vec<Vec<f32>> = (0..units.div_ceil(per))
            .into_par_iter()
            .map(|t| {
                let mut dwt = vec![0f32; len];
                run(t * per, ((t + 1) * per).min(units), &mut dwt, Par::Seq);
                dwt
            })
            .collect();
        let mut it = partials.into_iter();
        let mut dwt = it.next().unwrap_or_else(|| vec![0f32; len]);
        for part in it {
            for (d, s) in dwt.iter_mut().zip(&part) {
                *d += *s;
            }
        }
        dwt
    };
    if !transposed {
        return dwt;
    }
    let mut dw = vec![0f32; len];
    for gi in 0..g.groups {
        let base = gi * k * cout_g;
        transpose_into(&dwt[base..], cout_g, k, cout_g, &mut dw[base..base + k * cout_g]);
    }
    dw
}

/// Per-channel sums of `g` `[n, c, s]` (the bias gradient), blocked sums added in f64.
fn channel_sums(g: &[f32], n: usize, c: usize, s: usize) -> Vec<f32> {
    let mut acc = vec![0f64; c];
    if s > 0 {
        for (i, plane) in g.chunks_exact(s).enumerate().take(n * c) {
            acc[i % c] += sum_slice(plane) as f64;
        }
    }
    acc.into_iter().map(|v| v as f32).collect()
}

// ------------------------------------------------------------------------------- depthwise

/// Depthwise convs (one input channel per group) with at most this many output channels per
/// group run the direct kernels below: im2col + GEMM would multiply a `[cout/groups, kh·kw]`
/// weight by an im2col matrix copied for every (sample, group), products far too small to pay
/// for the copy.
const DEPTHWISE_MAX_MULT: usize = 4;

/// Below this many multiply-adds a direct depthwise kernel runs on the calling thread.
const DW_PAR_WORK: usize = 1 << 16;

impl Geom {
    /// One input channel per group and few output channels per group: the direct kernels.
    fn depthwise(&self) -> bool {
        self.cin_g() == 1 && self.cout_g() <= DEPTHWISE_MAX_MULT
    }
    /// Multiply-adds of one output plane (at most; taps in the padding are skipped).
    fn plane_work(&self) -> usize {
        (self.kh * self.kw * self.p()).max(1)
    }
}

/// How the direct depthwise kernels lay out one input plane: zero-padded and split into its
/// `sh·sw` stride phases (phase `(r, c)` holds the padded positions `(i·sh + r, j·sw + c)`),
/// each `hq x wq`. Through kernel tap `(ki, kj)` every output position `(o, j)` then reads the
/// element `(o + ro, j + co)` of one phase, so over a "wide" output of `oh` rows of `wq`
/// columns (the columns past `ow` are scratch) each tap is ONE contiguous multiply-add of
/// `oh·wq` elements, whatever the stride, dilation and padding: long vectorized loops even
/// for the 7x7 and 4x4 maps at the end of a network.
struct DwPlan {
    wq: usize,
    /// Elements of one phase: `hq·wq`, plus slack read by the scratch columns of the last rows.
    phase_len: usize,
    /// Per tap `(ki, kj)`, row-major: where its run starts in the phased plane.
    taps: Vec<usize>,
    /// The runs of input elements inside the phases, `(dst, src, len)`: the phased elements
    /// `dst..dst + len` are the input elements `src, src + sw, ...` (of a `[h, w]` plane). The
    /// same for every plane of a geometry; the rest of the phased plane is padding.
    runs: Vec<(usize, usize, usize)>,
}

/// Output positions computed together by [`dw_taps_forward`], in registers across the taps.
const DW_BLOCK: usize = 32;

impl DwPlan {
    fn new(g: &Geom) -> DwPlan {
        let (rmax, cmax) = ((g.kh - 1) * g.dh / g.sh, (g.kw - 1) * g.dw / g.sw);
        let (hq, wq) = (g.oh + rmax, g.ow + cmax);
        let phase_len = hq * wq + cmax;
        let taps = (0..g.kh * g.kw)
            .map(|t| {
                let (r, c) = ((t / g.kw) * g.dh, (t % g.kw) * g.dw);
                let phase = (r % g.sh) * g.sw + c % g.sw;
                phase * phase_len + (r / g.sh) * wq + c / g.sw
            })
            .collect();
        let mut runs = Vec::new();
        for rp in 0..g.sh {
            let hoff = rp as isize - g.ph as isize;
            let (ilo, ihi) = valid_range(hq, g.sh, hoff, g.h);
            for cp in 0..g.sw {
                let woff = cp as isize - g.pw as isize;
                let (jlo, jhi) = valid_range(wq, g.sw, woff, g.w);
                if jhi <= jlo {
                    continue;
                }
                let base = (rp * g.sw + cp) * phase_len;
                let iw = ((jlo * g.sw) as isize + woff) as usize;
                for i in ilo..ihi {
                    let ih = ((i * g.sh) as isize + hoff) as usize;
                    runs.push((base + i * wq + jlo, ih * g.w + iw, jhi - jlo));
                }
            }
        }
        DwPlan { wq, phase_len, taps, runs }
    }

    /// Elements of the phased plane, plus slack for the blocks of [`dw_taps_forward`] that
    /// run past the wide output.
    fn len(&self, g: &Geom) -> usize {
        g.sh * g.sw * self.phase_len + DW_BLOCK
    }

    /// Elements of the wide output.
    fn wide(&self, g: &Geom) -> usize {
        g.oh * self.wq
    }

    /// Copies the input plane `x` into the phased plane `dst`, whose padding must already be
    /// zero (it is never written, so zeroing a buffer once serves every plane).
    fn phase_pad(&self, g: &Geom, x: &[f32], dst: &mut [f32]) {
        match g.sw {
            1 => {
                for &(d, s, n) in &self.runs {
                    copy_row(&mut dst[d..d + n], &x[s..s + n]);
                }
            }
            2 => {
                for &(d, s, n) in &self.runs {
                    // Pairs while they fit (a constant group size vectorizes), then the last.
                    let whole = n.min((x.len() - s) / 2);
                    let dst = &mut dst[d..d + n];
                    for (o, pair) in dst[..whole].iter_mut().zip(x[s..s + 2 * whole].chunks_exact(2)) {
                        *o = pair[0];
                    }
                    if whole < n {
                        dst[n - 1] = x[s + 2 * (n - 1)];
                    }
                }
            }
            sw => {
                for &(d, s, n) in &self.runs {
                    for (k, o) in dst[d..d + n].iter_mut().enumerate() {
                        *o = x[s + k * sw];
                    }
                }
            }
        }
    }

    /// Adds the phased plane `src` (its input positions; the padding is dropped) into `dx`.
    fn unphase_add(&self, g: &Geom, src: &[f32], dx: &mut [f32]) {
        for &(d, s, n) in &self.runs {
            let dst = &mut dx[s..s + g.sw * (n - 1) + 1];
            for (k, &v) in src[d..d + n].iter().enumerate() {
                dst[k * g.sw] += v;
            }
        }
    }

    /// Writes the output gradient plane `gout` (`[oh, ow]`) into the wide plane `wide`, whose
    /// scratch columns must be zero (they are never written).
    fn widen(&self, g: &Geom, gout: &[f32], wide: &mut [f32]) {
        for (w, s) in wide.chunks_exact_mut(self.wq).zip(gout.chunks_exact(g.ow)) {
            w[..g.ow].copy_from_slice(s);
        }
    }
}

/// `dst.copy_from_slice(src)`, inlined for the short rows of small feature maps (where a call
/// to `memcpy` costs more than the copy): two overlapping fixed-size copies.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = src.len();
    match n {
        0..4 => dst[..n].copy_from_slice(src),
        4..8 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..n].copy_from_slice(&src[n - 4..]);
        }
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..n].copy_from_slice(&src[n - 8..]);
        }
        17..=32 => {
            dst[..16].copy_from_slice(&src[..16]);
            dst[n - 16..n].copy_from_slice(&src[n - 16..]);
        }
        _ => dst[..n].copy_from_slice(src),
    }
}

simd_kernel! {
    /// `acc = bias + Σ_t wts[t]·phased[taps[t]..]`: one output plane of a direct depthwise conv,
    /// wide (`acc` a whole number of [`DW_BLOCK`]s, `phased` readable that far past every
    /// tap). Each block of outputs stays in registers across all the taps.
    fn dw_taps_forward(acc: &mut [f32], phased: &[f32], taps: &[usize], wts: &[f32], bias: f32) {
        for (q, blk) in acc.chunks_exact_mut(DW_BLOCK).enumerate() {
            let mut a = [bias; DW_BLOCK];
            for (&t, &w) in taps.iter().zip(wts) {
                let src: &[f32; DW_BLOCK] = phased[t + q * DW_BLOCK..][..DW_BLOCK].try_into().expect("a block");
                for i in 0..DW_BLOCK {
                    a[i] += w * src[i];
                }
            }
            blk.copy_from_slice(&a);
        }
    }
}

simd_kernel! {
    /// `phased[taps[t]..] += wts[t]·gwide` for every tap: the adjoint of [`dw_taps_forward`].
    fn dw_taps_adjoint(phased: &mut [f32], gwide: &[f32], taps: &[usize], wts: &[f32]) {
        let n = gwide.len();
        for (&t, &w) in taps.iter().zip(wts) {
            for (a, &v) in phased[t..t + n].iter_mut().zip(gwide) {
                *a += w * v;
            }
        }
    }
}

simd_kernel! {
    /// `part[t][i] += gwide[b + i]·phased[taps[t] + b + i]` over the blocks `b` of `gwide` (a
    /// whole number of [`DW_BLOCK`]s, zero past the wide output): lane sums of the weight
    /// gradient of every tap, `part` being `[taps, DW_BLOCK]`.
    fn dw_taps_weight(part: &mut [f32], gwide: &[f32], phased: &[f32], taps: &[usize]) {
        for (q, gb) in gwide.chunks_exact(DW_BLOCK).enumerate() {
            for (pt, &t) in part.chunks_exact_mut(DW_BLOCK).zip(taps) {
                let src = &phased[t + q * DW_BLOCK..][..DW_BLOCK];
                for i in 0..DW_BLOCK {
                    pt[i] += gb[i] * src[i];
                }
            }
        }
    }
}

/// Runs `run(first, chunk)` over the `units` chunks of `unit_len` elements of `out`, in
/// parallel runs of units when the work (`unit_work` multiply-adds each) is large enough.
fn dw_par_units<T: Send>(
    out: &mut [T],
    units: usize,
    unit_len: usize,
    unit_work: usize,
    run: impl Fn(usize, &mut [T]) + Sync,
) {
    let threads = rayon::current_num_threads();
    if threads <= 1 || units <= 1 || unit_len == 0 || units.saturating_mul(unit_work) < DW_PAR_WORK {
        run(0, out);
        return;
    }
    let per = units.div_ceil(units.min(4 * threads));
    out.par_chunks_mut(per * unit_len).enumerate().for_each(|(t, c)| run(t * per, c));
}

/// The direct depthwise forward: every output plane `(n, oc)` from input plane
/// `(n, oc / cout_g)`.
fn dw_forward(x: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    let (cout_g, hw, p, kk) = (g.cout_g(), g.hw(), g.p(), g.kh * g.kw);
    let plan = DwPlan::new(g);
    let (plen, wide) = (plan.len(g), plan.wide(g));
    let units = g.n * g.cout;
    let mut out = Vec::<f32>::with_capacity(units * p);
    let spare = &mut out.spare_capacity_mut()[..units * p];
    let wide_blocks = wide.next_multiple_of(DW_BLOCK);
    dw_par_units(spare, units, p, g.plane_work(), |u0, chunk| {
        with_scratch(plen + wide_blocks, |scratch| {
            let (phased, acc) = scratch.split_at_mut(plen);
            phased.fill(0.0);
            let mut last_in = usize::MAX;
            for (i, o) in chunk.chunks_exact_mut(p.max(1)).enumerate() {
                let u = u0 + i;
                let oc = u % g.cout;
                let xi = (u / g.cout) * g.cin + oc / cout_g;
                if xi != last_in {
                    plan.phase_pad(g, &x[xi * hw..][..hw], phased);
                    last_in = xi;
                }
                dw_taps_forward(acc, phased, &plan.taps, &wt[oc * kk..][..kk], bias.map_or(0.0, |b| b[oc]));
                // SAFETY: f32 and MaybeUninit<f32> have the same layout.
                let acc = unsafe { &*(&acc[..] as *const [f32] as *const [MaybeUninit<f32>]) };
                for (orow, arow) in o.chunks_exact_mut(g.ow).zip(acc.chunks_exact(plan.wq)) {
                    orow.copy_from_slice(&arow[..g.ow]);
                }
            }
        })
    });
    // SAFETY: the chunks tile the output and every plane was written row by row.
    unsafe { out.set_len(units * p) };
    out
}

/// The direct depthwise data gradient: every input plane `(n, c)` gathers the output
/// gradients of its `cout_g` output channels, starting from `bias[c]` (or zero).
fn dw_grad_data(gout: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    let (cout_g, hw, p, kk) = (g.cout_g(), g.hw(), g.p(), g.kh * g.kw);
    let plan = DwPlan::new(g);
    let (plen, wide) = (plan.len(g), plan.wide(g));
    let units = g.n * g.cin;
    let mut dx = vec![0f32; units * hw];
    dw_par_units(&mut dx, units, hw, cout_g * g.plane_work(), |u0, chunk| {
        with_scratch(plen + wide, |scratch| {
            let (dphased, gwide) = scratch.split_at_mut(plen);
            gwide.fill(0.0);
            for (i, d) in chunk.chunks_exact_mut(hw.max(1)).enumerate() {
                let (n, c) = ((u0 + i) / g.cin, (u0 + i) % g.cin);
                dphased.fill(0.0);
                for oc in c * cout_g..(c + 1) * cout_g {
                    plan.widen(g, &gout[(n * g.cout + oc) * p..][..p], gwide);
                    dw_taps_adjoint(dphased, gwide, &plan.taps, &wt[oc * kk..][..kk]);
                }
                d.fill(bias.map_or(0.0, |b| b[c]));
                plan.unphase_add(g, dphased, d);
            }
        })
    });
    dx
}

/// The direct depthwise weight gradient, output channel by output channel: per tap, the dot
/// product of the wide output gradient (zero in the scratch columns) with the tap's run of
/// the phased input, in f32 lanes per sample, summed over the batch in f64.
fn dw_grad_weight(x: &[f32], gout: &[f32], g: &Geom) -> Vec<f32> {
    let (cout_g, hw, p, kk) = (g.cout_g(), g.hw(), g.p(), g.kh * g.kw);
    let plan = DwPlan::new(g);
    let (plen, wide) = (plan.len(g), plan.wide(g));
    let wide_blocks = wide.next_multiple_of(DW_BLOCK);
    let mut dw = vec![0f32; g.cout * kk];
    dw_par_units(&mut dw, g.cout, kk, g.n * g.plane_work(), |oc0, chunk| {
        with_scratch(plen + wide_blocks + kk * DW_BLOCK, |scratch| {
            let (phased, rest) = scratch.split_at_mut(plen);
            let (gwide, part) = rest.split_at_mut(wide_blocks);
            phased.fill(0.0);
            gwide.fill(0.0);
            let mut total = vec![0f64; kk];
            for (i, dwo) in chunk.chunks_exact_mut(kk).enumerate() {
                let oc = oc0 + i;
                total.fill(0.0);
                for n in 0..g.n {
                    plan.phase_pad(g, &x[(n * g.cin + oc / cout_g) * hw..][..hw], phased);
                    plan.widen(g, &gout[(n * g.cout + oc) * p..][..p], gwide);
                    part.fill(0.0);
                    dw_taps_weight(part, gwide, phased, &plan.taps);
                    for (tot, lanes) in total.iter_mut().zip(part.chunks_exact(DW_BLOCK)) {
                        *tot += sum_slice(lanes) as f64;
                    }
                }
                for (d, &v) in dwo.iter_mut().zip(&total) {
                    *d = v as f32;
                }
            }
        })
    });
    dw
}

// ------------------------------------------------------------------------------- Array API

impl Array {
    /// 2-d convolution (PyTorch's `conv2d`, a cross-correlation with zero padding):
    /// `self` `[N, Cin, H, W]`, `weight` `[Cout, Cin/groups, kH, kW]`, `bias` `[Cout]`;
    /// output `[N, Cout, oH, oW]` with `oH = ⌊(H + 2p − d(kH − 1) − 1)/s⌋ + 1` (with
    /// [`padding_end`](Conv2dOptions::padding_end), `p_before + p_end` instead of `2p`).
    /// Depthwise convs (one input channel per group) run direct kernels, the others im2col and
    /// GEMMs.
    ///
    /// ```
    /// use kiln_tensor::{Array, ops::conv::Conv2dOptions};
    /// let x = Array::from_vec((0..9).map(|v| v as f32).collect::<Vec<_>>(), &[1, 1, 3, 3])?;
    /// let w = Array::ones(&[1, 1, 2, 2]);
    /// let y = x.conv2d(&w, None, &Conv2dOptions::default())?;
    /// assert_eq!(y.to_vec_f32()?, vec![8.0, 12.0, 20.0, 24.0]);
    /// # Ok::<(), kiln_tensor::Error>(())
    /// ```
    pub fn conv2d(&self, weight: &Array, bias: Option<&Array>, opts: &Conv2dOptions) -> Result<Array> {
        let op = "conv2d";
        let g = geom2d(op, self.shape(), weight.shape(), opts)?;
        conv_forward(op, self, weight, bias, &g)
    }

    /// The gradient of [`conv2d`](Array::conv2d) with respect to its input (of shape
    /// `input_shape`), given the output gradient `grad_out` and the weight.
    pub fn conv2d_grad_input(
        grad_out: &Array,
        weight: &Array,
        input_shape: &[usize],
        opts: &Conv2dOptions,
    ) -> Result<Array> {
        let op = "conv2d_backward";
        let g = geom2d(op, input_shape, weight.shape(), opts)?;
        conv_grad_input(op, grad_out, weight, None, &g, input_shape)
    }

    /// The gradient of [`conv2d`](Array::conv2d) with respect to its weight (of shape
    /// `weight_shape`), given the output gradient `grad_out` and the input.
    pub fn conv2d_grad_weight(
        grad_out: &Array,
        input: &Array,
        weight_shape: &[usize],
        opts: &Conv2dOptions,
    ) -> Result<Array> {
        let op = "conv2d_backward";
        let g = geom2d(op, input.shape(), weight_shape, opts)?;
        conv_grad_weight(op, grad_out, input, &g, weight_shape)
    }

    /// The bias gradient of a convolution: `grad_out` `[N, C, *]` summed over every dim but 1.
    pub fn conv_grad_bias(grad_out: &Array) -> Result<Array> {
        grad_out.expect_dtype("conv_backward", DType::F32)?;
        if grad_out.rank() < 2 {
            bail!("conv_backward", "output gradient must be [N, C, *], got shape {:?}", grad_out.shape());
        }
        let (n, c) = (grad_out.shape()[0], grad_out.shape()[1]);
        let s = grad_out.shape()[2..].iter().product();
        let gd = grad_out.f32_cow()?;
        Ok(Array::from_f32_unchecked(channel_sums(&gd, n, c, s), &[c]))
    }

    /// 1-d convolution (PyTorch's `conv1d`): `self` `[N, Cin, L]`, `weight`
    /// `[Cout, Cin/groups, K]`, `bias` `[Cout]`; output `[N, Cout, Lout]` with
    /// `Lout = ⌊(L + 2p − d(K − 1) − 1)/s⌋ + 1`.
    pub fn conv1d(&self, weight: &Array, bias: Option<&Array>, opts: &Conv1dOptions) -> Result<Array> {
        let op = "conv1d";
        let g = geom1d(op, self.shape(), weight.shape(), opts)?;
        let out = conv_forward(op, self, weight, bias, &g)?;
        out.reshape_to(&[g.n, g.cout, g.ow])
    }

    /// The gradient of [`conv1d`](Array::conv1d) with respect to its input.
    pub fn conv1d_grad_input(
        grad_out: &Array,
        weight: &Array,
        input_shape: &[usize],
        opts: &Conv1dOptions,
    ) -> Result<Array> {
        let op = "conv1d_backward";
        let g = geom1d(op, input_shape, weight.shape(), opts)?;
        let o = opts.to_2d();
        let w4 = weight.reshape_to(&g.weight_shape())?;
        let go = grad_out_4d(op, grad_out, &g, &[g.n, g.cout, g.ow])?;
        Array::conv2d_grad_input(&go, &w4, &g.input_shape(), &o)?.reshape_to(input_shape)
    }

    /// The gradient of [`conv1d`](Array::conv1d) with respect to its weight.
    pub fn conv1d_grad_weight(
        grad_out: &Array,
        input: &Array,
        weight_shape: &[usize],
        opts: &Conv1dOptions,
    ) -> Result<Array> {
        let op = "conv1d_backward";
        let g = geom1d(op, input.shape(), weight_shape, opts)?;
        let o = opts.to_2d();
        let x4 = input.reshape_to(&g.input_shape())?;
        let go = grad_out_4d(op, grad_out, &g, &[g.n, g.cout, g.ow])?;
        Array::conv2d_grad_weight(&go, &x4, &g.weight_shape(), &o)?.reshape_to(weight_shape)
    }

    /// Transposed 2-d convolution (PyTorch's `conv_transpose2d`, the adjoint of `conv2d`):
    /// `self` `[N, Cin, H, W]`, `weight` `[Cin, Cout/groups, kH, kW]`, `bias` `[Cout]`;
    /// output `[N, Cout, Hout, Wout]` with `Hout = (H − 1)s − 2p + d(kH − 1) + output_padding + 1`.
    pub fn conv_transpose2d(
        &self,
        weight: &Array,
        bias: Option<&Array>,
        opts: &ConvTranspose2dOptions,
    ) -> Result<Array> {
        let op = "conv_transpose2d";
        let g = transposed_geom(op, self.shape(), weight.shape(), opts)?;
        check_bias(op, bias, g.cin, weight.shape())?;
        self.expect_dtype(op, DType::F32)?;
        weight.expect_dtype(op, DType::F32)?;
        let (x, w) = (self.f32_cow()?, weight.f32_cow()?);
        let b = bias.map(|b| b.f32_cow()).transpose()?;
        let out = grad_data(&x, &w, b.as_deref(), &g);
        Ok(Array::from_f32_unchecked(out, &g.input_shape()))
    }

    /// The gradient of [`conv_transpose2d`](Array::conv_transpose2d) with respect to its input
    /// (of shape `input_shape`): the conv2d of `grad_out` by the same weight.
    pub fn conv_transpose2d_grad_input(
        grad_out: &Array,
        weight: &Array,
        input_shape: &[usize],
        opts: &ConvTranspose2dOptions,
    ) -> Result<Array> {
        let op = "conv_transpose2d_backward";
        let g = transposed_geom(op, input_shape, weight.shape(), opts)?;
        check_shape(op, "output gradient", grad_out, &g.input_shape())?;
        weight.expect_dtype(op, DType::F32)?;
        let (go, w) = (grad_out.f32_cow()?, weight.f32_cow()?);
        Ok(Array::from_f32_unchecked(forward(&go, &w, None, &g), &g.output_shape()))
    }

    /// The gradient of [`conv_transpose2d`](Array::conv_transpose2d) with respect to its
    /// weight (of shape `weight_shape`), given the output gradient and the input.
    pub fn conv_transpose2d_grad_weight(
        grad_out: &Array,
        input: &Array,
        weight_shape: &[usize],
        opts: &ConvTranspose2dOptions,
    ) -> Result<Array> {
        let op = "conv_transpose2d_backward";
        let g = transposed_geom(op, input.shape(), weight_shape, opts)?;
        check_shape(op, "output gradient", grad_out, &g.input_shape())?;
        input.expect_dtype(op, DType::F32)?;
        let (go, x) = (grad_out.f32_cow()?, input.f32_cow()?);
        Ok(Array::from_f32_unchecked(grad_weight(&go, &x, &g), weight_shape))
    }
}

/// `grad_out` checked against the 1-d output shape and viewed as `[N, C, 1, L]`.
fn grad_out_4d(op: &'static str, grad_out: &Array, g: &Geom, shape: &[usize]) -> Result<Array> {
    check_shape(op, "output gradient", grad_out, shape)?;
    grad_out.reshape_to(&g.output_shape())
}

fn conv_forward(op: &'static str, x: &Array, weight: &Array, bias: Option<&Array>, g: &Geom) -> Result<Array> {
    x.expect_dtype(op, DType::F32)?;
    weight.expect_dtype(op, DType::F32)?;
    check_bias(op, bias, g.cout, weight.shape())?;
    let (xd, wd) = (x.f32_cow()?, weight.f32_cow()?);
    let b = bias.map(|b| b.f32_cow()).transpose()?;
    Ok(Array::from_f32_unchecked(forward(&xd, &wd, b.as_deref(), g), &g.output_shape()))
}

fn conv_grad_input(
    op: &'static str,
    grad_out: &Array,
    weight: &Array,
    bias: Option<&[f32]>,
    g: &Geom,
    input_shape: &[usize],
) -> Result<Array> {
    check_shape(op, "output gradient", grad_out, &g.output_shape())?;
    weight.expect_dtype(op, DType::F32)?;
    let (go, w) = (grad_out.f32_cow()?, weight.f32_cow()?);
    Ok(Array::from_f32_unchecked(grad_data(&go, &w, bias, g), input_shape))
}

fn conv_grad_weight(
    op: &'static str,
    grad_out: &Array,
    input: &Array,
    g: &Geom,
    weight_shape: &[usize],
) -> Result<Array> {
    check_shape(op, "output gradient", grad_out, &g.output_shape())?;
    input.expect_dtype(op, DType::F32)?;
    let (go, x) = (grad_out.f32_cow()?, input.f32_cow()?);
    Ok(Array::from_f32_unchecked(grad_weight(&x, &go, g), weight_shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The integration tests' helpers (`vals`), shared rather than copied.
    mod common {
        include!("../../tests/common/mod.rs");
    }
    use common::vals;
    #[test]
    fn transpose_into_matches_the_definition_at_every_edge() {
        for (rows, cols, rs) in [(0, 5, 5), (3, 0, 1), (7, 9, 9), (8, 8, 8), (16, 24, 30), (19, 13, 20), (64, 196, 196)]
        {
            let src: Vec<f32> = (0..rows * rs).map(|v| v as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose_into(&src, rs, rows, cols, &mut dst);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(dst[j * rows + i], src[i * rs + j], "{rows}x{cols} (rs {rs}) at ({i}, {j})");
                }
            }
        }
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{what}: element {i}: {x} vs {y}");
        }
    }

    /// The direct depthwise kernels agree with the im2col path on the same geometry: TF "SAME"
    /// paddings, strides 1 to 3, dilation, channel multipliers, maps smaller than the kernel,
    /// and batches large enough for the parallel split.
    #[test]
    fn depthwise_kernels_match_im2col() {
        // (n, channels, h, w, multiplier, kernel, stride, padding before, after, dilation)
        type Case = (usize, usize, usize, usize, usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2], [usize; 2]);
        let cases: [Case; 9] = [
            (2, 3, 8, 8, 1, [3, 3], [1, 1], [1, 1], [1, 1], [1, 1]),
            (2, 3, 8, 8, 1, [3, 3], [2, 2], [0, 0], [1, 1], [1, 1]),
            (1, 4, 7, 9, 1, [5, 5], [2, 2], [2, 1], [2, 2], [1, 1]),
            (1, 2, 4, 4, 1, [5, 5], [1, 1], [2, 2], [2, 2], [1, 1]),
            (2, 2, 9, 10, 3, [3, 2], [3, 2], [1, 0], [2, 1], [2, 1]),
            (1, 2, 1, 1, 2, [3, 3], [1, 1], [1, 1], [1, 1], [1, 1]),
            (1, 3, 5, 1, 1, [1, 1], [2, 2], [0, 0], [0, 0], [1, 1]),
            (8, 24, 14, 14, 1, [5, 5], [1, 1], [2, 2], [2, 2], [1, 1]),
            (4, 16, 15, 15, 4, [3, 3], [2, 2], [1, 1], [1, 1], [1, 1]),
        ];
        for (i, &(n, c, h, w, mult, k, s, p, pe, d)) in cases.iter().enumerate() {
            let o = Conv2dOptions::default().stride(s).padding(p).padding_end(pe).dilation(d).groups(c);
            let g = geom2d("test", &[n, c, h, w], &[c * mult, 1, k[0], k[1]], &o).unwrap();
            assert!(g.depthwise());
            let x = vals(n * c * h * w, 10 * i as u64 + 1);
            let wt = vals(c * mult * k[0] * k[1], 10 * i as u64 + 2);
            let b = vals(c * mult, 10 * i as u64 + 3);
            let gout = vals(n * c * mult * g.p(), 10 * i as u64 + 4);
            let bx = vals(c, 10 * i as u64 + 5);
            let what = format!("case {i}");
            close(&dw_forward(&x, &wt, Some(&b), &g), &im2col_forward(&x, &wt, Some(&b), &g), &what);
            close(&dw_grad_data(&gout, &wt, None, &g), &im2col_grad_data(&gout, &wt, None, &g), &what);
            close(&dw_grad_data(&gout, &wt, Some(&bx), &g), &im2col_grad_data(&gout, &wt, Some(&bx), &g), &what);
            close(&dw_grad_weight(&x, &gout, &g), &im2col_grad_weight(&x, &gout, &g), &what);
        }
    }
}
