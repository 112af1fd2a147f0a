//! conv1d, conv2d, conv_transpose2d and the 2-d poolings against naive direct loops in f64,
//! over many configurations (stride, padding, dilation, groups, depthwise with a channel
//! multiplier, 1x1 kernels, odd sizes, batches large enough for the parallel paths), plus
//! their gradients against the naive adjoint loops, and the shape errors.

use kiln_tensor::ops::conv::{Conv1dOptions, Conv2dOptions, ConvTranspose2dOptions};
use kiln_tensor::ops::pool::Pool2dOptions;
use kiln_tensor::Array;

mod common;
use common::vals;

fn arr(shape: &[usize], seed: u64) -> Array {
    Array::from_vec(vals(shape.iter().product(), seed), shape).unwrap()
}

fn close(got: &Array, want: &[f64], shape: &[usize], k: usize, what: &str) {
    assert_eq!(got.shape(), shape, "{what}: shape");
    let got = got.to_vec_f32().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol = 2e-6 * (k as f64).sqrt().max(1.0) * 4.0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= tol * (1.0 + w.abs()), "{what}: element {i}: got {g}, want {w}");
    }
}

/// A 2-d conv configuration: input [n, cin, h, w], weight [cout, cin/g, kh, kw], padding `p`
/// before (top, left) and `pe` after (bottom, right).
#[derive(Clone, Copy, Debug)]
struct Cfg {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
    pe: [usize; 2],
    d: [usize; 2],
    g: usize,
}

impl Cfg {
    fn out(&self) -> [usize; 2] {
        let o = |len: usize, i: usize| (len + self.p[i] + self.pe[i] - self.d[i] * (self.k[i] - 1) - 1) / self.s[i] + 1;
        [o(self.h, 0), o(self.w, 1)]
    }
    fn opts(&self) -> Conv2dOptions {
        let o = Conv2dOptions::default().stride(self.s).padding(self.p).dilation(self.d).groups(self.g);
        if self.pe == self.p {
            o
        } else {
            o.padding_end(self.pe)
        }
    }
    fn wshape(&self) -> [usize; 4] {
        [self.cout, self.cin / self.g, self.k[0], self.k[1]]
    }
}

/// Calls `f(n, co, oy, ox, ci, y, x, ki, kj)` for every (output, tap) pair whose input position
/// lies inside the input: the definition of the cross-correlation.
fn taps(c: &Cfg, mut f: impl FnMut([usize; 9])) {
    let [oh, ow] = c.out();
    let (cin_g, cout_g) = (c.cin / c.g, c.cout / c.g);
    for n in 0..c.n {
        for co in 0..c.cout {
            let grp = co / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    for cig in 0..cin_g {
                        for ki in 0..c.k[0] {
                            for kj in 0..c.k[1] {
                                let y = (oy * c.s[0] + ki * c.d[0]) as isize - c.p[0] as isize;
                                let x = (ox * c.s[1] + kj * c.d[1]) as isize - c.p[1] as isize;
                                if y >= 0 && x >= 0 && (y as usize) < c.h && (x as usize) < c.w {
                                    f([n, co, oy, ox, grp * cin_g + cig, y as usize, x as usize, ki, kj]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Naive conv2d forward, input gradient and weight gradient in f64.
fn naive(c: &Cfg, x: &[f32], w: &[f32], b: Option<&[f32]>, g: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [oh, ow] = c.out();
    let cin_g = c.cin / c.g;
    let oi = |n: usize, co: usize, oy: usize, ox: usize| ((n * c.cout + co) * oh + oy) * ow + ox;
    let xi = |n: usize, ci: usize, y: usize, xx: usize| ((n * c.cin + ci) * c.h + y) * c.w + xx;
    let wi = |co: usize, ci: usize, ki: usize, kj: usize| ((co * cin_g + ci % cin_g) * c.k[0] + ki) * c.k[1] + kj;
    let mut out = vec![0f64; c.n * c.cout * oh * ow];
    if let Some(b) = b {
        for (i, o) in out.iter_mut().enumerate() {
            *o = b[(i / (oh * ow)) % c.cout] as f64;
        }
    }
    let mut dx = vec![0f64; x.len()];
    let mut dw = vec![0f64; w.len()];
    taps(c, |[n, co, oy, ox, ci, y, xx, ki, kj]| {
        let (o, xj, wj) = (oi(n, co, oy, ox), xi(n, ci, y, xx), wi(co, ci, ki, kj));
        out[o] += x[xj] as f64 * w[wj] as f64;
        dx[xj] += g[o] as f64 * w[wj] as f64;
        dw[wj] += g[o] as f64 * x[xj] as f64;
    });
    (out, dx, dw)
}

fn configs() -> Vec<Cfg> {
    let c = |n, cin, h, w, cout, k, s, p, d, g| Cfg { n, cin, h, w, cout, k, s, p, pe: p, d, g };
    // With other padding after than before.
    let ca = |n, cin, h, w, cout, k, s, p, pe, d, g| Cfg { n, cin, h, w, cout, k, s, p, pe, d, g };
    vec![
        // Depthwise (the direct kernels): TF "SAME" strides 1 and 2, 3x3 and 5x5, odd and
        // even sizes, channel multipliers, dilation, a stride wider than the input.
        ca(2, 6, 8, 8, 6, [3, 3], [2, 2], [0, 0], [1, 1], [1, 1], 6),
        ca(2, 4, 9, 10, 4, [5, 5], [2, 2], [2, 1], [2, 2], [1, 1], 4),
        ca(1, 5, 7, 7, 5, [5, 5], [2, 2], [1, 1], [2, 2], [1, 1], 5),
        c(2, 5, 6, 7, 5, [5, 5], [1, 1], [2, 2], [1, 1], 5),
        ca(1, 3, 11, 13, 6, [3, 3], [3, 3], [1, 2], [2, 0], [2, 2], 3),
        ca(2, 2, 6, 5, 8, [3, 2], [1, 2], [1, 0], [0, 1], [1, 1], 2),
        ca(1, 2, 3, 1, 2, [1, 1], [2, 2], [0, 0], [0, 1], [1, 1], 2),
        c(1, 3, 4, 4, 3, [3, 3], [1, 1], [0, 0], [1, 1], 3),
        c(4, 32, 20, 20, 32, [3, 3], [1, 1], [1, 1], [1, 1], 32),
        ca(3, 24, 15, 17, 48, [5, 5], [2, 2], [2, 1], [2, 2], [1, 1], 24),
        // A multiplier too large for the direct kernels (im2col), with other padding after.
        ca(1, 2, 7, 7, 10, [3, 3], [2, 2], [0, 1], [1, 0], [1, 1], 2),
        // Other padding after for the im2col path: TF "SAME", less after than before, and a
        // 1x1 kernel with padding only after (not the pointwise shortcut).
        ca(2, 3, 8, 7, 4, [3, 3], [2, 2], [0, 0], [1, 1], [1, 1], 1),
        ca(2, 3, 8, 9, 4, [3, 3], [1, 2], [2, 1], [0, 1], [1, 1], 1),
        ca(1, 2, 4, 5, 3, [1, 1], [1, 1], [0, 0], [1, 2], [1, 1], 1),
        ca(2, 16, 14, 14, 24, [3, 3], [2, 2], [0, 0], [1, 1], [1, 1], 1),
        c(1, 1, 5, 5, 1, [3, 3], [1, 1], [0, 0], [1, 1], 1),
        c(2, 3, 7, 6, 4, [3, 3], [1, 1], [1, 1], [1, 1], 1),
        c(2, 3, 9, 8, 5, [3, 2], [2, 1], [1, 0], [1, 1], 1),
        c(1, 2, 9, 9, 3, [3, 3], [1, 1], [2, 2], [2, 2], 1),
        c(3, 4, 7, 9, 6, [3, 3], [1, 1], [1, 1], [1, 1], 2),
        c(2, 3, 6, 5, 3, [3, 3], [1, 1], [1, 1], [1, 1], 3),
        c(2, 3, 6, 5, 6, [3, 3], [2, 2], [1, 1], [1, 1], 3),
        c(2, 4, 11, 10, 6, [3, 2], [2, 3], [2, 1], [2, 1], 2),
        c(2, 6, 5, 4, 4, [1, 1], [1, 1], [0, 0], [1, 1], 1),
        c(2, 6, 5, 4, 9, [1, 1], [1, 1], [0, 0], [1, 1], 3),
        c(1, 2, 6, 7, 3, [1, 1], [2, 2], [0, 0], [1, 1], 1),
        c(1, 2, 5, 5, 2, [1, 1], [1, 1], [1, 1], [1, 1], 1),
        c(1, 1, 1, 1, 2, [1, 1], [1, 1], [0, 0], [1, 1], 1),
        c(2, 2, 3, 3, 2, [3, 3], [3, 3], [1, 1], [1, 1], 1),
        c(1, 3, 4, 4, 2, [5, 5], [1, 1], [2, 2], [1, 1], 1),
        c(1, 1, 2, 9, 2, [2, 4], [1, 2], [0, 3], [1, 2], 1),
        // Large enough for the batch-parallel path (many units) ...
        c(6, 16, 20, 18, 32, [3, 3], [1, 1], [1, 1], [1, 1], 1),
        c(4, 8, 17, 15, 8, [3, 3], [1, 1], [1, 1], [1, 1], 8),
        // ... and for parallel GEMMs on one sample.
        c(1, 32, 24, 24, 48, [3, 3], [1, 1], [1, 1], [1, 1], 1),
        c(3, 32, 24, 24, 48, [3, 3], [1, 1], [1, 1], [1, 1], 1),
        c(1, 64, 20, 20, 96, [1, 1], [1, 1], [0, 0], [1, 1], 1),
    ]
}

#[test]
fn conv2d_matches_direct_loops() {
    for (i, c) in configs().into_iter().enumerate() {
        let s = i as u64 * 10;
        let x = arr(&[c.n, c.cin, c.h, c.w], s + 1);
        let w = arr(&c.wshape(), s + 2);
        let b = arr(&[c.cout], s + 3);
        let [oh, ow] = c.out();
        let oshape = [c.n, c.cout, oh, ow];
        let g = arr(&oshape, s + 4);
        let (xv, wv, bv, gv) =
            (x.to_vec_f32().unwrap(), w.to_vec_f32().unwrap(), b.to_vec_f32().unwrap(), g.to_vec_f32().unwrap());
        let kdim = c.cin / c.g * c.k[0] * c.k[1];
        let (want, _, _) = naive(&c, &xv, &wv, Some(&bv), &gv);
        let got = x.conv2d(&w, Some(&b), &c.opts()).unwrap();
        close(&got, &want, &oshape, kdim, &format!("conv2d {c:?}"));
        let (want, dx, dw) = naive(&c, &xv, &wv, None, &gv);
        close(&x.conv2d(&w, None, &c.opts()).unwrap(), &want, &oshape, kdim, &format!("conv2d no bias {c:?}"));
        let gx = Array::conv2d_grad_input(&g, &w, x.shape(), &c.opts()).unwrap();
        close(&gx, &dx, x.shape(), c.cout, &format!("conv2d grad input {c:?}"));
        let gw = Array::conv2d_grad_weight(&g, &x, w.shape(), &c.opts()).unwrap();
        close(&gw, &dw, w.shape(), c.n * oh * ow, &format!("conv2d grad weight {c:?}"));
        let gb = Array::conv_grad_bias(&g).unwrap();
        let want_b: Vec<f64> = (0..c.cout)
            .map(|co| {
                gv.iter().enumerate().filter(|(j, _)| (j / (oh * ow)) % c.cout == co).map(|(_, &v)| v as f64).sum()
            })
            .collect();
        close(&gb, &want_b, &[c.cout], c.n * oh * ow, "bias grad");
    }
}

#[test]
fn conv2d_reads_strided_inputs() {
    let c = Cfg { n: 2, cin: 3, h: 5, w: 6, cout: 4, k: [3, 3], s: [1, 1], p: [1, 1], pe: [1, 1], d: [1, 1], g: 1 };
    // A transposed view of [n, cin, w, h] is a non-contiguous [n, cin, h, w].
    let xt = arr(&[2, 3, 6, 5], 7);
    let x = xt.transpose(2, 3).unwrap();
    let w = arr(&c.wshape(), 8);
    let xv = x.contiguous().to_vec_f32().unwrap();
    let (want, _, _) = naive(&c, &xv, &w.to_vec_f32().unwrap(), None, &vec![0.0; 2 * 4 * 5 * 6]);
    close(&x.conv2d(&w, None, &c.opts()).unwrap(), &want, &[2, 4, 5, 6], 27, "strided conv2d");
}

#[test]
fn conv1d_matches_direct_loops() {
    // (n, cin, l, cout, k, stride, padding, dilation, groups)
    let cases = [
        (2, 3, 10, 4, 3, 1, 0, 1, 1),
        (2, 4, 11, 6, 3, 2, 1, 2, 1),
        (1, 4, 9, 4, 3, 1, 1, 1, 2),
        (3, 4, 8, 8, 5, 1, 2, 1, 4),
        (2, 5, 7, 3, 1, 1, 0, 1, 1),
        (1, 1, 1, 2, 1, 1, 0, 1, 1),
    ];
    for (i, &(n, cin, l, cout, k, s, p, d, g)) in cases.iter().enumerate() {
        let c = Cfg { n, cin, h: 1, w: l, cout, k: [1, k], s: [1, s], p: [0, p], pe: [0, p], d: [1, d], g };
        let seed = 500 + i as u64 * 10;
        let x = arr(&[n, cin, l], seed + 1);
        let w = arr(&[cout, cin / g, k], seed + 2);
        let b = arr(&[cout], seed + 3);
        let lo = c.out()[1];
        let g_ = arr(&[n, cout, lo], seed + 4);
        let (xv, wv, gv) = (x.to_vec_f32().unwrap(), w.to_vec_f32().unwrap(), g_.to_vec_f32().unwrap());
        let (want, dx, dw) = naive(&c, &xv, &wv, Some(&b.to_vec_f32().unwrap()), &gv);
        let o = Conv1dOptions::default().stride(s).padding(p).dilation(d).groups(g);
        close(&x.conv1d(&w, Some(&b), &o).unwrap(), &want, &[n, cout, lo], k * cin, "conv1d");
        close(&Array::conv1d_grad_input(&g_, &w, x.shape(), &o).unwrap(), &dx, x.shape(), cout, "conv1d dx");
        close(&Array::conv1d_grad_weight(&g_, &x, w.shape(), &o).unwrap(), &dw, w.shape(), n * lo, "conv1d dw");
    }
}

/// Naive transposed conv: every input element scatters `x·w` into the output.
#[allow(clippy::too_many_arguments)]
fn naive_transposed(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    b: Option<&[f32]>,
    o: &ConvTranspose2dOptions,
    out_hw: [usize; 2],
) -> Vec<f64> {
    let [n, cin, h, wd] = xs;
    let [_, cout_g, kh, kw] = ws;
    let g = o.groups;
    let (cin_g, cout) = (cin / g, cout_g * g);
    let [oh, ow] = out_hw;
    let mut out = vec![0f64; n * cout * oh * ow];
    if let Some(b) = b {
        for (i, v) in out.iter_mut().enumerate() {
            *v = b[(i / (oh * ow)) % cout] as f64;
        }
    }
    for s in 0..n {
        for ci in 0..cin {
            let grp = ci / cin_g;
            for y in 0..h {
                for xx in 0..wd {
                    let xv = x[((s * cin + ci) * h + y) * wd + xx] as f64;
                    for cog in 0..cout_g {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let oy = (y * o.stride[0] + ki * o.dilation[0]) as isize - o.padding[0] as isize;
                                let ox = (xx * o.stride[1] + kj * o.dilation[1]) as isize - o.padding[1] as isize;
                                if oy < 0 || ox < 0 || oy as usize >= oh || ox as usize >= ow {
                                    continue;
                                }
                                let co = grp * cout_g + cog;
                                let wv = w[((ci * cout_g + cog) * kh + ki) * kw + kj] as f64;
                                out[((s * cout + co) * oh + oy as usize) * ow + ox as usize] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn conv_transpose2d_matches_scatter_loops_and_its_adjoint() {
    // (x shape, weight shape, stride, padding, output_padding, dilation, groups)
    type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 2], [usize; 2], usize);
    let cases: [Case; 10] = [
        ([2, 3, 4, 5], [3, 2, 3, 3], [1, 1], [0, 0], [0, 0], [1, 1], 1),
        // A 1x1 kernel whose output padding makes the output larger than the input.
        ([1, 3, 4, 5], [3, 2, 1, 1], [1, 1], [0, 0], [1, 1], [2, 2], 1),
        // Depthwise (the direct kernels) with output padding.
        ([2, 4, 3, 4], [4, 1, 3, 3], [2, 2], [1, 0], [1, 1], [1, 1], 4),
        ([2, 3, 4, 5], [3, 2, 3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 1),
        ([1, 4, 3, 4], [4, 3, 3, 2], [2, 3], [0, 1], [1, 2], [1, 1], 2),
        ([2, 2, 4, 3], [2, 3, 3, 3], [2, 2], [1, 1], [1, 1], [2, 2], 1),
        ([1, 3, 5, 5], [3, 1, 1, 1], [1, 1], [0, 0], [0, 0], [1, 1], 1),
        ([1, 2, 3, 3], [2, 2, 2, 2], [1, 1], [0, 0], [1, 1], [2, 2], 1),
        ([2, 6, 4, 4], [6, 1, 3, 3], [2, 2], [1, 1], [0, 1], [1, 1], 6),
        ([4, 16, 12, 12], [16, 8, 4, 4], [2, 2], [1, 1], [0, 0], [1, 1], 2),
    ];
    for (i, &(xs, ws, s, p, op, d, g)) in cases.iter().enumerate() {
        let o = ConvTranspose2dOptions { stride: s, padding: p, output_padding: op, dilation: d, groups: g };
        let seed = 900 + i as u64 * 10;
        let (x, w) = (arr(&xs, seed + 1), arr(&ws, seed + 2));
        let cout = ws[1] * g;
        let b = arr(&[cout], seed + 3);
        let oh = |j: usize| (xs[2 + j] - 1) * s[j] - 2 * p[j] + d[j] * (ws[2 + j] - 1) + op[j] + 1;
        let out_hw = [oh(0), oh(1)];
        let oshape = [xs[0], cout, out_hw[0], out_hw[1]];
        let (xv, wv) = (x.to_vec_f32().unwrap(), w.to_vec_f32().unwrap());
        let want = naive_transposed(&xv, xs, &wv, ws, Some(&b.to_vec_f32().unwrap()), &o, out_hw);
        let got = x.conv_transpose2d(&w, Some(&b), &o).unwrap();
        close(&got, &want, &oshape, ws[1] * ws[2] * ws[3], &format!("conv_transpose2d case {i}"));
        // Gradients through the adjoint identity <T(x), gy> = <x, T*(gy)> and the weight
        // gradient from the scatter loop's derivative (finite in w: the map is linear in w).
        let gy = arr(&oshape, seed + 4);
        let gyv = gy.to_vec_f32().unwrap();
        let gx = Array::conv_transpose2d_grad_input(&gy, &w, &xs, &o).unwrap().to_vec_f32().unwrap();
        for j in (0..xv.len()).step_by((xv.len() / 60).max(3)) {
            let mut e = vec![0f32; xv.len()];
            e[j] = 1.0;
            let col = naive_transposed(&e, xs, &wv, ws, None, &o, out_hw);
            let want: f64 = col.iter().zip(&gyv).map(|(a, &b)| a * b as f64).sum();
            assert!((gx[j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "case {i} dx[{j}]: {} vs {want}", gx[j]);
        }
        let gw = Array::conv_transpose2d_grad_weight(&gy, &x, &ws, &o).unwrap().to_vec_f32().unwrap();
        for j in (0..wv.len()).step_by((wv.len() / 60).max(2)) {
            let mut e = vec![0f32; wv.len()];
            e[j] = 1.0;
            let col = naive_transposed(&xv, xs, &e, ws, None, &o, out_hw);
            let want: f64 = col.iter().zip(&gyv).map(|(a, &b)| a * b as f64).sum();
            assert!((gw[j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "case {i} dw[{j}]: {} vs {want}", gw[j]);
        }
    }
}

#[test]
fn conv_shape_errors_name_the_op_and_shapes() {
    let err = |r: kiln_tensor::Result<Array>| r.unwrap_err().to_string();
    let o = Conv2dOptions::default();
    let e = err(arr(&[1, 3, 5, 5], 1).conv2d(&arr(&[4, 2, 3, 3], 2), None, &o.groups(2)));
    assert!(e.contains("conv2d") && e.contains("[1, 3, 5, 5]") && e.contains("groups"), "{e}");
    let e = err(arr(&[1, 4, 5, 5], 1).conv2d(&arr(&[3, 2, 3, 3], 2), None, &o.groups(2)));
    assert!(e.contains("conv2d") && e.contains("[3, 2, 3, 3]") && e.contains("divisible"), "{e}");
    let e = err(arr(&[1, 4, 5, 5], 1).conv2d(&arr(&[4, 3, 3, 3], 2), None, &o));
    assert!(e.contains("conv2d") && e.contains("[4, 3, 3, 3]") && e.contains("[1, 4, 5, 5]"), "{e}");
    let e = err(arr(&[1, 1, 3, 3], 1).conv2d(&arr(&[1, 1, 5, 5], 2), None, &o));
    assert!(e.contains("conv2d") && e.contains("larger than the padded input"), "{e}");
    assert!(arr(&[1, 1, 3, 3], 1).conv2d(&arr(&[1, 1, 5, 5], 2), None, &o.padding([1, 1])).is_ok());
    let e = err(arr(&[1, 1, 3, 3], 1).conv2d(&arr(&[1, 1, 3], 2), None, &o));
    assert!(e.contains("conv2d") && e.contains("weight must be 4-d") && e.contains("[1, 1, 3]"), "{e}");
    let e = err(arr(&[1, 3, 3], 1).conv2d(&arr(&[1, 1, 3, 3], 2), None, &o));
    assert!(e.contains("input must be 4-d"), "{e}");
    let e = err(arr(&[1, 1, 3, 3], 1).conv2d(&arr(&[2, 1, 3, 3], 2), Some(&arr(&[3], 3)), &o));
    assert!(e.contains("bias must have shape [2]"), "{e}");
    let e = err(arr(&[1, 1, 3, 3], 1).conv2d(&arr(&[2, 1, 3, 3], 2), None, &o.stride([0, 1])));
    assert!(e.contains("stride must be positive"), "{e}");
    let e = err(arr(&[1, 2, 7], 1).conv1d(&arr(&[2, 2, 3, 3], 2), None, &Conv1dOptions::default()));
    assert!(e.contains("conv1d") && e.contains("weight must be 3-d"), "{e}");
    let t = ConvTranspose2dOptions::default();
    let e = err(arr(&[1, 2, 3, 3], 1).conv_transpose2d(&arr(&[3, 1, 3, 3], 2), None, &t));
    assert!(e.contains("conv_transpose2d") && e.contains("[3, 1, 3, 3]"), "{e}");
    let e = err(arr(&[1, 2, 3, 3], 1).conv_transpose2d(
        &arr(&[2, 1, 3, 3], 2),
        None,
        &t.stride([2, 2]).output_padding([2, 0]),
    ));
    assert!(e.contains("output_padding"), "{e}");
    let e = err(Array::conv2d_grad_input(&arr(&[1, 2, 2, 2], 1), &arr(&[2, 1, 3, 3], 2), &[1, 1, 5, 5], &o));
    assert!(e.contains("output gradient must have shape [1, 2, 3, 3]"), "{e}");
}

// ------------------------------------------------------------------------------- pooling

/// Naive pooling windows along one dim: (clipped start, clipped end, padded length).
fn wins(len: usize, k: usize, s: usize, p: usize) -> Vec<(usize, usize, usize)> {
    let out = (len + 2 * p - k) / s + 1;
    (0..out)
        .map(|o| {
            let st = (o * s) as isize - p as isize;
            let en = (st + k as isize).min((len + p) as isize);
            (st.max(0) as usize, en.min(len as isize) as usize, (en - st) as usize)
        })
        .collect()
}

fn pool_cases() -> Vec<([usize; 4], Pool2dOptions)> {
    let o = |k: [usize; 2], s: [usize; 2], p: [usize; 2]| Pool2dOptions::new(k).stride(s).padding(p);
    vec![
        ([2, 3, 6, 6], o([2, 2], [2, 2], [0, 0])),
        ([2, 3, 7, 5], o([2, 2], [2, 2], [0, 0])),
        ([2, 3, 5, 70], o([2, 2], [2, 2], [0, 0])),
        ([1, 2, 4, 33], o([2, 2], [2, 2], [0, 0])),
        ([1, 2, 7, 7], o([3, 3], [2, 2], [1, 1])),
        ([2, 2, 6, 5], o([3, 2], [2, 1], [1, 0])),
        ([1, 1, 5, 6], o([2, 3], [1, 2], [1, 1])),
        ([1, 2, 4, 4], o([1, 1], [1, 1], [0, 0])),
        ([1, 1, 3, 3], o([3, 3], [1, 1], [1, 1])),
        ([16, 32, 28, 28], o([2, 2], [2, 2], [0, 0])),
        ([8, 16, 15, 13], o([3, 3], [2, 2], [1, 1])),
    ]
}

#[test]
fn max_pool2d_matches_direct_loops() {
    for (i, (shape, o)) in pool_cases().into_iter().enumerate() {
        let x = arr(&shape, 40 + i as u64);
        let xv = x.to_vec_f32().unwrap();
        let (hr, wr) = (
            wins(shape[2], o.kernel_size[0], o.stride[0], o.padding[0]),
            wins(shape[3], o.kernel_size[1], o.stride[1], o.padding[1]),
        );
        let (oh, ow) = (hr.len(), wr.len());
        let oshape = [shape[0], shape[1], oh, ow];
        let g = arr(&oshape, 80 + i as u64);
        let gv = g.to_vec_f32().unwrap();
        let mut want = vec![0f64; oshape.iter().product()];
        let mut dx = vec![0f64; xv.len()];
        let hw = shape[2] * shape[3];
        for q in 0..shape[0] * shape[1] {
            for (a, &(h0, h1, _)) in hr.iter().enumerate() {
                for (b, &(w0, w1, _)) in wr.iter().enumerate() {
                    let mut best = (f32::NEG_INFINITY, 0);
                    for y in h0..h1 {
                        for xx in w0..w1 {
                            let v = xv[q * hw + y * shape[3] + xx];
                            if v > best.0 {
                                best = (v, q * hw + y * shape[3] + xx);
                            }
                        }
                    }
                    let j = (q * oh + a) * ow + b;
                    want[j] = best.0 as f64;
                    dx[best.1] += gv[j] as f64;
                }
            }
        }
        let (y, idx) = x.max_pool2d(&o).unwrap();
        close(&y, &want, &oshape, 1, &format!("max_pool2d {shape:?} {o:?}"));
        close(&Array::max_pool2d_backward(&g, &idx).unwrap(), &dx, &shape, 1, "max_pool2d backward");
        assert_eq!(idx.to_array().shape(), &oshape);
        // The unbatched form pools the same planes.
        let x3 = x.reshape_to(&[shape[0] * shape[1], shape[2], shape[3]]).unwrap();
        assert_eq!(x3.max_pool2d(&o).unwrap().0.to_vec_f32().unwrap(), y.to_vec_f32().unwrap());
    }
}

#[test]
fn avg_pool2d_matches_direct_loops() {
    for include in [true, false] {
        for (i, (shape, o)) in pool_cases().into_iter().enumerate() {
            let x = arr(&shape, 140 + i as u64);
            let xv = x.to_vec_f32().unwrap();
            let hr = wins(shape[2], o.kernel_size[0], o.stride[0], o.padding[0]);
            let wr = wins(shape[3], o.kernel_size[1], o.stride[1], o.padding[1]);
            let (oh, ow) = (hr.len(), wr.len());
            let oshape = [shape[0], shape[1], oh, ow];
            let g = arr(&oshape, 180 + i as u64);
            let gv = g.to_vec_f32().unwrap();
            let mut want = vec![0f64; oshape.iter().product()];
            let mut dx = vec![0f64; xv.len()];
            let hw = shape[2] * shape[3];
            for q in 0..shape[0] * shape[1] {
                for (a, &(h0, h1, hp)) in hr.iter().enumerate() {
                    for (b, &(w0, w1, wp)) in wr.iter().enumerate() {
                        let div = if include { (hp * wp) as f64 } else { ((h1 - h0) * (w1 - w0)) as f64 };
                        let j = (q * oh + a) * ow + b;
                        for y in h0..h1 {
                            for xx in w0..w1 {
                                want[j] += xv[q * hw + y * shape[3] + xx] as f64 / div;
                                dx[q * hw + y * shape[3] + xx] += gv[j] as f64 / div;
                            }
                        }
                    }
                }
            }
            let what = format!("avg_pool2d {shape:?} {o:?} include {include}");
            close(&x.avg_pool2d(&o, include).unwrap(), &want, &oshape, 9, &what);
            close(&Array::avg_pool2d_backward(&g, &shape, &o, include).unwrap(), &dx, &shape, 9, &what);
        }
    }
}

#[test]
fn adaptive_avg_pool2d_matches_direct_loops() {
    let cases: [([usize; 4], [usize; 2]); 7] = [
        ([2, 3, 6, 6], [3, 3]),
        ([1, 2, 7, 5], [3, 2]),
        ([2, 2, 5, 7], [1, 1]),
        ([1, 2, 3, 2], [4, 3]),
        ([1, 1, 1, 1], [2, 3]),
        ([2, 3, 10, 9], [4, 4]),
        ([8, 32, 14, 14], [5, 3]),
    ];
    for (i, &(shape, [oh, ow])) in cases.iter().enumerate() {
        let x = arr(&shape, 240 + i as u64);
        let xv = x.to_vec_f32().unwrap();
        let oshape = [shape[0], shape[1], oh, ow];
        let g = arr(&oshape, 280 + i as u64);
        let gv = g.to_vec_f32().unwrap();
        let (h, w) = (shape[2], shape[3]);
        let mut want = vec![0f64; oshape.iter().product()];
        let mut dx = vec![0f64; xv.len()];
        for q in 0..shape[0] * shape[1] {
            for a in 0..oh {
                let (h0, h1) = ((a * h) / oh, ((a + 1) * h).div_ceil(oh));
                for b in 0..ow {
                    let (w0, w1) = ((b * w) / ow, ((b + 1) * w).div_ceil(ow));
                    let div = ((h1 - h0) * (w1 - w0)) as f64;
                    let j = (q * oh + a) * ow + b;
                    for y in h0..h1 {
                        for xx in w0..w1 {
                            want[j] += xv[q * h * w + y * w + xx] as f64 / div;
                            dx[q * h * w + y * w + xx] += gv[j] as f64 / div;
                        }
                    }
                }
            }
        }
        let what = format!("adaptive_avg_pool2d {shape:?} -> {oh}x{ow}");
        close(&x.adaptive_avg_pool2d([oh, ow]).unwrap(), &want, &oshape, 16, &what);
        close(&Array::adaptive_avg_pool2d_backward(&g, &shape).unwrap(), &dx, &shape, 16, &what);
    }
}

#[test]
fn pool_shape_errors() {
    let x = arr(&[1, 1, 4, 4], 1);
    let e = x.max_pool2d(&Pool2dOptions::new([2, 2]).padding([2, 0])).unwrap_err().to_string();
    assert!(e.contains("max_pool2d") && e.contains("at most half"), "{e}");
    let e = x.avg_pool2d(&Pool2dOptions::new([5, 5]), true).unwrap_err().to_string();
    assert!(e.contains("avg_pool2d") && e.contains("larger than the padded input"), "{e}");
    let e = arr(&[4, 4], 1).adaptive_avg_pool2d([2, 2]).unwrap_err().to_string();
    assert!(e.contains("adaptive_avg_pool2d") && e.contains("[4, 4]"), "{e}");
    let e = x.max_pool2d(&Pool2dOptions::new([2, 2]).stride([0, 1])).unwrap_err().to_string();
    assert!(e.contains("stride must be positive"), "{e}");
}

#[test]
fn max_pool2d_propagates_nan_like_pytorch() {
    // A NaN wins its window; a later larger number does not replace it.
    for w in [4usize, 40] {
        let mut v = vec![0f32; 2 * w];
        v[1] = f32::NAN;
        v[w] = 5.0;
        v[w + 1] = 7.0;
        let x = Array::from_vec(v, &[1, 1, 2, w]).unwrap();
        for o in [Pool2dOptions::new([2, 2]), Pool2dOptions::new([2, 3]).stride([2, 2])] {
            let (y, idx) = x.max_pool2d(&o).unwrap();
            let y = y.to_vec_f32().unwrap();
            assert!(y[0].is_nan(), "{o:?}: {y:?}");
            assert_eq!(idx.to_array().to_vec::<i64>().unwrap()[0], 1, "{o:?}");
        }
    }
}
