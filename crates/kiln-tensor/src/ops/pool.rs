//! 2-d pooling over the last two dims of `[N, C, H, W]` (or unbatched `[C, H, W]`) inputs:
//! `max_pool2d` (implicit −inf padding, floor mode; the gradient goes to the argmax of each
//! window), `avg_pool2d` (zero padding, floor mode, `count_include_pad`) and
//! `adaptive_avg_pool2d` (PyTorch's overlapping windows `⌊i·H/oh⌋ … ⌈(i+1)·H/oh⌉ − 1`).
//!
//! Every kernel works plane by plane (one `H x W` image of one channel); the window bounds of
//! each output row and column are computed once per call. Large inputs are split over
//! rayon's pool by runs of planes.

use crate::parallel::PAR_ELEMS;
use crate::{bail, Array, DType, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Kernel size, stride and padding of a 2-d pooling (`[h, w]` each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dOptions {
    /// Window size, `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// Step of the window, `[sh, sw]`.
    pub stride: [usize; 2],
    /// Padding on both sides, `[ph, pw]` (at most half the kernel size).
    pub padding: [usize; 2],
}

impl Pool2dOptions {
    /// A `kernel_size` window with PyTorch's defaults: stride = kernel size, no padding.
    pub fn new(kernel_size: [usize; 2]) -> Self {
        Pool2dOptions { kernel_size, stride: kernel_size, padding: [0, 0] }
    }
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
}

/// One window along one dim: input positions `lo..hi` (clipped to the input) and the length
/// of the window clipped to the padded input (the `count_include_pad` divisor).
#[derive(Clone, Copy, Debug)]
struct Win {
    lo: usize,
    hi: usize,
    padded: usize,
}

/// The planes and sizes of a pooling: `planes` images of `h x w` → `oh x ow`.
#[derive(Clone, Copy, Debug)]
struct Planes {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

/// Splits the input shape into planes; errors unless it is 3-d or 4-d.
fn planes_of(op: &'static str, shape: &[usize]) -> Result<(usize, usize, usize)> {
    if shape.len() != 3 && shape.len() != 4 {
        bail!(op, "input must be 3-d [C, H, W] or 4-d [N, C, H, W], got shape {shape:?}");
    }
    let r = shape.len();
    Ok((shape[..r - 2].iter().product(), shape[r - 2], shape[r - 1]))
}

/// The output shape: `shape` with the last two dims replaced.
fn out_shape(shape: &[usize], oh: usize, ow: usize) -> Vec<usize> {
    let mut s = shape[..shape.len() - 2].to_vec();
    s.extend_from_slice(&[oh, ow]);
    s
}

/// The windows of a strided pooling along one dim of length `len`.
fn strided_windows(len: usize, k: usize, s: usize, p: usize) -> Vec<Win> {
    let out = (len + 2 * p - k) / s + 1;
    (0..out)
        .map(|o| {
            let start = (o * s) as isize - p as isize;
            let end = (start + k as isize).min((len + p) as isize);
            let padded = (end - start) as usize;
            Win { lo: start.max(0) as usize, hi: end.min(len as isize) as usize, padded }
        })
        .collect()
}

/// Checks a strided pooling's options against the input shape and returns its planes and
/// windows.
fn strided_geom(op: &'static str, shape: &[usize], o: &Pool2dOptions) -> Result<(Planes, Vec<Win>, Vec<Win>)> {
    let (planes, h, w) = planes_of(op, shape)?;
    if o.kernel_size.contains(&0) {
        bail!(op, "kernel_size must be positive, got {:?}", o.kernel_size);
    }
    if o.stride.contains(&0) {
        bail!(op, "stride must be positive, got {:?}", o.stride);
    }
    if o.padding[0] > o.kernel_size[0] / 2 || o.padding[1] > o.kernel_size[1] / 2 {
        bail!(op, "padding {:?} must be at most half the kernel size {:?}", o.padding, o.kernel_size);
    }
    for (i, len) in [h, w].into_iter().enumerate() {
        if len + 2 * o.padding[i] < o.kernel_size[i] {
            bail!(
                op,
                "kernel size {:?} is larger than the padded input (input {shape:?}, padding {:?})",
                o.kernel_size,
                o.padding
            );
        }
    }
    let hr = strided_windows(h, o.kernel_size[0], o.stride[0], o.padding[0]);
    let wr = strided_windows(w, o.kernel_size[1], o.stride[1], o.padding[1]);
    Ok((Planes { planes, h, w, oh: hr.len(), ow: wr.len() }, hr, wr))
}

/// Planes per parallel task: all of them (one task on the calling thread) when the work is
/// small, else enough runs to balance the pool.
fn planes_per_task(planes: usize, per_plane: usize) -> usize {
    let threads = rayon::current_num_threads();
    if threads <= 1 || planes <= 1 || planes.saturating_mul(per_plane) < PAR_ELEMS {
        planes.max(1)
    } else {
        planes.div_ceil(4 * threads)
    }
}

/// Runs `f(first_plane, out_chunk)` over runs of planes of `out` (`out_plane` elements each).
fn for_planes<T: Send>(
    out: &mut [T],
    out_plane: usize,
    planes: usize,
    per_plane: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if out.is_empty() || out_plane == 0 {
        return;
    }
    let per = planes_per_task(planes, per_plane);
    if per >= planes {
        f(0, out);
    } else {
        out.par_chunks_mut(per * out_plane).enumerate().for_each(|(t, c)| f(t * per, c));
    }
}

/// The argmax of every window of a [`max_pool2d`](Array::max_pool2d): for each output
/// element, the flat position `h·W + w` of its maximum in its input plane.
#[derive(Clone, Debug)]
pub struct MaxPoolIndices {
    idx: Vec<u32>,
    input_shape: Vec<usize>,
    output_shape: Vec<usize>,
}

impl MaxPoolIndices {
    /// The shape of the pooled input.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The indices as an i64 array of the output's shape (PyTorch's `return_indices`).
    pub fn to_array(&self) -> Array {
        let v: Vec<i64> = self.idx.iter().map(|&i| i as i64).collect();
        Array::from_vec(v, &self.output_shape).expect("one index per output element")
    }
}

/// One output row of a 2x2, stride-2 max pooling: input rows `r0`, `r1` (`2·ow` elements
/// each), the window maxima into `out` and their positions (`base` + offset in the plane,
/// whose rows are `w` long) into `idx`. The windows are scanned in row-major order and a later
/// element wins only when greater, or NaN (PyTorch's rule). 16 windows at a time with AVX-512.
fn max2x2_row(r0: &[f32], r1: &[f32], out: &mut [MaybeUninit<f32>], idx: &mut [MaybeUninit<u32>], base: u32, w: u32) {
    let ow = out.len();
    assert!(r0.len() >= 2 * ow && r1.len() >= 2 * ow && idx.len() == ow);
    #[allow(unused_mut)]
    let mut j0 = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present and the lengths were checked above.
        j0 = unsafe { max2x2_avx512(r0, r1, out, idx, base, w) };
    }
    for j in j0..ow {
        let c = 2 * j;
        let (mut best, mut bi) = (r0[c], 0u32);
        for (v, off) in [(r0[c + 1], 1u32), (r1[c], w), (r1[c + 1], w + 1)] {
            if v > best || v.is_nan() {
                best = v;
                bi = off;
            }
        }
        out[j].write(best);
        idx[j].write(base + c as u32 + bi);
    }
}

/// The AVX-512 part of [`max2x2_row`]: blocks of 16 windows, the last one masked; returns how
/// many windows it did (all).
///
/// # Safety
/// AVX-512F must be available; `r0`, `r1` hold `2·out.len()` elements and `idx` as many as `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max2x2_avx512(
    r0: &[f32],
    r1: &[f32],
    out: &mut [MaybeUninit<f32>],
    idx: &mut [MaybeUninit<u32>],
    base: u32,
    w: u32,
) -> usize {
    use std::arch::x86_64::*;
    let ow = out.len();
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    let offs = [_mm512_set1_epi32(1), _mm512_set1_epi32(w as i32), _mm512_set1_epi32(w as i32 + 1)];
    let mut j = 0;
    while j < ow {
        // A last, partial block uses masked loads and stores.
        let r = (ow - j).min(16);
        let (m, lo, hi) = if r == 16 {
            (0xFFFF, 0xFFFF, 0xFFFF)
        } else {
            let m = ((1u32 << r) - 1) as __mmask16;
            let two = 2 * r;
            let lo = if two >= 16 { 0xFFFF } else { ((1u32 << two) - 1) as __mmask16 };
            let hi = if two > 16 { ((1u32 << (two - 16)) - 1) as __mmask16 } else { 0 };
            (m, lo, hi)
        };
        let (p0, p1) = (r0.as_ptr().add(2 * j), r1.as_ptr().add(2 * j));
        let (a0, a1) = (_mm512_maskz_loadu_ps(lo, p0), _mm512_maskz_loadu_ps(hi, p0.add(16)));
        let (b0, b1) = (_mm512_maskz_loadu_ps(lo, p1), _mm512_maskz_loadu_ps(hi, p1.add(16)));
        let cand = [
            _mm512_permutex2var_ps(a0, odd, a1),
            _mm512_permutex2var_ps(b0, even, b1),
            _mm512_permutex2var_ps(b0, odd, b1),
        ];
        let mut best = _mm512_permutex2var_ps(a0, even, a1);
        let mut bi = _mm512_setzero_si512();
        for (v, off) in cand.into_iter().zip(offs) {
            let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            best = _mm512_mask_blend_ps(take, best, v);
            bi = _mm512_mask_blend_epi32(take, bi, off);
        }
        let pos = _mm512_add_epi32(_mm512_add_epi32(_mm512_set1_epi32((base as usize + 2 * j) as i32), even), bi);
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(j).cast(), m, best);
        _mm512_mask_storeu_epi32(idx.as_mut_ptr().add(j).cast(), m, pos);
        j += r;
    }
    j
}

/// Max pooling of one plane into `out` and `idx`.
fn max_plane(
    x: &[f32],
    out: &mut [MaybeUninit<f32>],
    idx: &mut [MaybeUninit<u32>],
    p: &Planes,
    hr: &[Win],
    wr: &[Win],
    fast2x2: bool,
) {
    let (w, ow) = (p.w, p.ow);
    if fast2x2 {
        for o in 0..p.oh {
            let (r0, r1) = (&x[2 * o * w..][..2 * ow], &x[(2 * o + 1) * w..][..2 * ow]);
            max2x2_row(r0, r1, &mut out[o * ow..][..ow], &mut idx[o * ow..][..ow], (2 * o * w) as u32, w as u32);
        }
        return;
    }
    for (o, hw) in hr.iter().enumerate() {
        for (j, ww) in wr.iter().enumerate() {
            let (mut best, mut bi) = (f32::NEG_INFINITY, hw.lo * w + ww.lo);
            for ih in hw.lo..hw.hi {
                let row = &x[ih * w..][..w];
                for (iw, &v) in row.iter().enumerate().take(ww.hi).skip(ww.lo) {
                    if v > best || v.is_nan() {
                        best = v;
                        bi = ih * w + iw;
                    }
                }
            }
            out[o * ow + j].write(best);
            idx[o * ow + j].write(bi as u32);
        }
    }
}

/// Sums of the windows of one plane (`hr` x `wr`), each divided by `div(h window, w window)`.
fn avg_plane(x: &[f32], out: &mut [f32], w: usize, hr: &[Win], wr: &[Win], div: impl Fn(&Win, &Win) -> f32) {
    let ow = wr.len();
    for (o, hw) in hr.iter().enumerate() {
        for (j, ww) in wr.iter().enumerate() {
            let mut s = 0f32;
            for ih in hw.lo..hw.hi {
                s += x[ih * w + ww.lo..ih * w + ww.hi].iter().sum::<f32>();
            }
            out[o * ow + j] = s / div(hw, ww);
        }
    }
}

/// Spreads the output gradient of one plane evenly over its windows (the adjoint of
/// [`avg_plane`]).
fn avg_plane_backward(g: &[f32], dx: &mut [f32], w: usize, hr: &[Win], wr: &[Win], div: impl Fn(&Win, &Win) -> f32) {
    let ow = wr.len();
    for (o, hw) in hr.iter().enumerate() {
        for (j, ww) in wr.iter().enumerate() {
            let v = g[o * ow + j] / div(hw, ww);
            for ih in hw.lo..hw.hi {
                for d in &mut dx[ih * w + ww.lo..ih * w + ww.hi] {
                    *d += v;
                }
            }
        }
    }
}

/// The divisor of an average pooling window.
fn avg_div(count_include_pad: bool) -> impl Fn(&Win, &Win) -> f32 + Sync + Copy {
    move |a: &Win, b: &Win| {
        if count_include_pad {
            (a.padded * b.padded) as f32
        } else {
            ((a.hi - a.lo) * (b.hi - b.lo)) as f32
        }
    }
}

/// PyTorch's adaptive windows: output `i` of `out` covers `⌊i·len/out⌋ .. ⌈(i+1)·len/out⌉`.
fn adaptive_windows(len: usize, out: usize) -> Vec<Win> {
    (0..out)
        .map(|i| {
            let (lo, hi) = (i * len / out, ((i + 1) * len).div_ceil(out));
            Win { lo, hi, padded: hi - lo }
        })
        .collect()
}

/// Checks an adaptive pooling's input shape and output size, and returns its planes and
/// windows.
fn adaptive_geom(op: &'static str, shape: &[usize], size: [usize; 2]) -> Result<(Planes, Vec<Win>, Vec<Win>)> {
    let (planes, h, w) = planes_of(op, shape)?;
    if (h == 0 || w == 0) && planes > 0 && size[0] * size[1] > 0 {
        bail!(op, "input {shape:?} has an empty spatial dim");
    }
    let (hr, wr) = (adaptive_windows(h, size[0]), adaptive_windows(w, size[1]));
    Ok((Planes { planes, h, w, oh: size[0], ow: size[1] }, hr, wr))
}

/// Runs an average-style pooling (`div` per window) over all planes of `x`.
fn avg_forward(
    x: &Array,
    p: &Planes,
    hr: &[Win],
    wr: &[Win],
    div: impl Fn(&Win, &Win) -> f32 + Sync + Copy,
) -> Result<Vec<f32>> {
    let xd = x.f32_cow()?;
    let (hw, ohw) = (p.h * p.w, p.oh * p.ow);
    let mut out = vec![0f32; p.planes * ohw];
    for_planes(&mut out, ohw, p.planes, hw.max(ohw), |q0, chunk| {
        for (i, o) in chunk.chunks_mut(ohw).enumerate() {
            avg_plane(&xd[(q0 + i) * hw..][..hw], o, p.w, hr, wr, div);
        }
    });
    Ok(out)
}

/// The input gradient of an average-style pooling.
fn avg_backward(
    g: &Array,
    p: &Planes,
    hr: &[Win],
    wr: &[Win],
    div: impl Fn(&Win, &Win) -> f32 + Sync + Copy,
) -> Result<Vec<f32>> {
    let gd = g.f32_cow()?;
    let (hw, ohw) = (p.h * p.w, p.oh * p.ow);
    let mut dx = vec![0f32; p.planes * hw];
    for_planes(&mut dx, hw, p.planes, hw.max(ohw), |q0, chunk| {
        for (i, d) in chunk.chunks_mut(hw).enumerate() {
            avg_plane_backward(&gd[(q0 + i) * ohw..][..ohw], d, p.w, hr, wr, div);
        }
    });
    Ok(dx)
}

/// Errors unless `g` is f32 of shape `shape`.
fn check_grad(op: &'static str, g: &Array, shape: &[usize]) -> Result<()> {
    g.expect_dtype(op, DType::F32)?;
    if g.shape() != shape {
        bail!(op, "output gradient must have shape {shape:?}, got {:?}", g.shape());
    }
    Ok(())
}

impl Array {
    /// 2-d max pooling (PyTorch's `max_pool2d`, dilation 1, floor mode) of `[N, C, H, W]` or
    /// `[C, H, W]`: the maximum of each window, with implicit −inf padding. Returns the output
    /// and the position of each maximum (for the backward pass). NaN counts as the maximum.
    ///
    /// ```
    /// use kiln_tensor::{Array, ops::pool::Pool2dOptions};
    /// let x = Array::from_vec(vec![1.0, 5.0, 2.0, 3.0], &[1, 1, 2, 2])?;
    /// let (y, idx) = x.max_pool2d(&Pool2dOptions::new([2, 2]))?;
    /// assert_eq!(y.to_vec_f32()?, vec![5.0]);
    /// assert_eq!(idx.to_array().to_vec::<i64>()?, vec![1]);
    /// # Ok::<(), kiln_tensor::Error>(())
    /// ```
    pub fn max_pool2d(&self, opts: &Pool2dOptions) -> Result<(Array, MaxPoolIndices)> {
        let op = "max_pool2d";
        self.expect_dtype(op, DType::F32)?;
        let (p, hr, wr) = strided_geom(op, self.shape(), opts)?;
        if p.h * p.w > u32::MAX as usize {
            bail!(op, "input planes of {} x {} elements are too large", p.h, p.w);
        }
        let fast2x2 = opts.kernel_size == [2, 2] && opts.stride == [2, 2] && opts.padding == [0, 0];
        let xd = self.f32_cow()?;
        let (hw, ohw) = (p.h * p.w, p.oh * p.ow);
        let total = p.planes * ohw;
        let (mut out, mut idx) = (Vec::<f32>::with_capacity(total), Vec::<u32>::with_capacity(total));
        if ohw > 0 {
            let per = planes_per_task(p.planes, hw);
            let run = |q0: usize, o: &mut [MaybeUninit<f32>], ix: &mut [MaybeUninit<u32>]| {
                for (i, (o, ix)) in o.chunks_mut(ohw).zip(ix.chunks_mut(ohw)).enumerate() {
                    max_plane(&xd[(q0 + i) * hw..][..hw], o, ix, &p, &hr, &wr, fast2x2);
                }
            };
            let (o, ix) = (&mut out.spare_capacity_mut()[..total], &mut idx.spare_capacity_mut()[..total]);
            if per >= p.planes {
                run(0, o, ix);
            } else {
                o.par_chunks_mut(per * ohw)
                    .zip(ix.par_chunks_mut(per * ohw))
                    .enumerate()
                    .for_each(|(t, (o, ix))| run(t * per, o, ix));
            }
        }
        // SAFETY: every plane's windows cover its whole output, and `max_plane` wrote each one.
        unsafe {
            out.set_len(total);
            idx.set_len(total);
        }
        let shape = out_shape(self.shape(), p.oh, p.ow);
        let indices = MaxPoolIndices { idx, input_shape: self.shape().to_vec(), output_shape: shape.clone() };
        Ok((Array::from_f32_unchecked(out, &shape), indices))
    }

    /// The input gradient of [`max_pool2d`](Array::max_pool2d): each output gradient added at
    /// the position of its window's maximum.
    pub fn max_pool2d_backward(grad_out: &Array, indices: &MaxPoolIndices) -> Result<Array> {
        let op = "max_pool2d_backward";
        check_grad(op, grad_out, &indices.output_shape)?;
        let (planes, h, w) = planes_of(op, &indices.input_shape)?;
        let r = indices.output_shape.len();
        let (hw, ohw) = (h * w, indices.output_shape[r - 2] * indices.output_shape[r - 1]);
        let gd = grad_out.f32_cow()?;
        // Each plane is zeroed by the task that scatters into it (in parallel, and while the
        // plane is in cache) rather than by one zero-filled allocation up front.
        let mut dx = super::output_buffer(planes * hw);
        for_planes(&mut dx, hw, planes, hw, |q0, chunk| {
            for (i, d) in chunk.chunks_mut(hw).enumerate() {
                d.fill(0.0);
                if ohw > 0 {
                    let q = q0 + i;
                    for (&j, &v) in indices.idx[q * ohw..][..ohw].iter().zip(&gd[q * ohw..][..ohw]) {
                        d[j as usize] += v;
                    }
                }
            }
        });
        Ok(Array::from_f32_unchecked(dx, &indices.input_shape))
    }

    /// 2-d average pooling (PyTorch's `avg_pool2d`, floor mode) of `[N, C, H, W]` or
    /// `[C, H, W]` with zero padding: each window's sum divided by `kh·kw` when
    /// `count_include_pad`, else by the number of its elements inside the input.
    pub fn avg_pool2d(&self, opts: &Pool2dOptions, count_include_pad: bool) -> Result<Array> {
        let op = "avg_pool2d";
        self.expect_dtype(op, DType::F32)?;
        let (p, hr, wr) = strided_geom(op, self.shape(), opts)?;
        let out = avg_forward(self, &p, &hr, &wr, avg_div(count_include_pad))?;
        Ok(Array::from_f32_unchecked(out, &out_shape(self.shape(), p.oh, p.ow)))
    }

    /// The input gradient of [`avg_pool2d`](Array::avg_pool2d) for an input of `input_shape`.
    pub fn avg_pool2d_backward(
        grad_out: &Array,
        input_shape: &[usize],
        opts: &Pool2dOptions,
        count_include_pad: bool,
    ) -> Result<Array> {
        let op = "avg_pool2d_backward";
        let (p, hr, wr) = strided_geom(op, input_shape, opts)?;
        check_grad(op, grad_out, &out_shape(input_shape, p.oh, p.ow))?;
        let dx = avg_backward(grad_out, &p, &hr, &wr, avg_div(count_include_pad))?;
        Ok(Array::from_f32_unchecked(dx, input_shape))
    }

    /// Adaptive 2-d average pooling (PyTorch's `adaptive_avg_pool2d`) of `[N, C, H, W]` or
    /// `[C, H, W]` to `output_size` `[oh, ow]`: output cell `i` averages input rows
    /// `⌊i·H/oh⌋ … ⌈(i+1)·H/oh⌉ − 1` (likewise columns). Windows may overlap, and the output
    /// may be larger than the input.
    pub fn adaptive_avg_pool2d(&self, output_size: [usize; 2]) -> Result<Array> {
        let op = "adaptive_avg_pool2d";
        self.expect_dtype(op, DType::F32)?;
        let (p, hr, wr) = adaptive_geom(op, self.shape(), output_size)?;
        let out = avg_forward(self, &p, &hr, &wr, avg_div(true))?;
        Ok(Array::from_f32_unchecked(out, &out_shape(self.shape(), p.oh, p.ow)))
    }

    /// The input gradient of [`adaptive_avg_pool2d`](Array::adaptive_avg_pool2d) for an input
    /// of `input_shape`.
    pub fn adaptive_avg_pool2d_backward(grad_out: &Array, input_shape: &[usize]) -> Result<Array> {
        let op = "adaptive_avg_pool2d_backward";
        let r = grad_out.rank();
        if r < 2 {
            bail!(op, "output gradient must be at least 2-d, got shape {:?}", grad_out.shape());
        }
        let size = [grad_out.shape()[r - 2], grad_out.shape()[r - 1]];
        let (p, hr, wr) = adaptive_geom(op, input_shape, size)?;
        check_grad(op, grad_out, &out_shape(input_shape, p.oh, p.ow))?;
        let dx = avg_backward(grad_out, &p, &hr, &wr, avg_div(true))?;
        Ok(Array::from_f32_unchecked(dx, input_shape))
    }
}
