//! Image transforms on f32 arrays `[C, H, W]` (one image) or `[N, C, H, W]` (a batch), with
//! torchvision's semantics. Random ones draw from an [`Rng`]: one draw set per image.

use crate::rng::Rng;
use kiln_tensor::{bail, Array, Result};
use rayon::prelude::*;

/// `(images, channels, height, width)` of a `[C, H, W]` or `[N, C, H, W]` f32 array.
fn image_dims(op: &'static str, x: &Array) -> Result<(usize, usize, usize, usize)> {
    x.expect_dtype(op, kiln_tensor::DType::F32)?;
    match *x.shape() {
        [c, h, w] => Ok((1, c, h, w)),
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => bail!(op, "expected an image [C, H, W] or a batch [N, C, H, W], got shape {:?}", x.shape()),
    }
}

/// `(x - mean[c]) / std[c]` per channel, like torchvision's `Normalize`. `mean` and `std` hold
/// one value per channel (or one for all).
pub fn normalize(x: &Array, mean: &[f32], std: &[f32]) -> Result<Array> {
    let (n, c, h, w) = image_dims("normalize", x)?;
    for (name, v) in [("mean", mean), ("std", std)] {
        if v.len() != c && v.len() != 1 {
            bail!("normalize", "{name} has {} values for {c} channels (shape {:?})", v.len(), x.shape());
        }
    }
    if let Some(s) = std.iter().find(|&&s| s == 0.0 || !s.is_finite()) {
        bail!("normalize", "std {s} would divide by zero or a non-finite value");
    }
    let src = x.f32_cow()?;
    let plane = h * w;
    let mut out: Vec<f32> = Vec::with_capacity(src.len());
    for (p, chunk) in src.chunks_exact(plane.max(1)).enumerate().take(n * c) {
        let k = p % c;
        let (m, s) = (mean[k.min(mean.len() - 1)], std[k.min(std.len() - 1)]);
        out.extend(chunk.iter().map(|&v| (v - m) / s));
    }
    Array::from_vec(out, x.shape())
}

/// Reverses the last dim (a horizontal flip of images), copying.
pub fn hflip(x: &Array) -> Result<Array> {
    x.expect_dtype("hflip", kiln_tensor::DType::F32)?;
    if x.rank() == 0 {
        bail!("hflip", "expected at least one dim, got a scalar");
    }
    let w = x.shape()[x.rank() - 1];
    let src = x.f32_cow()?;
    let mut out: Vec<f32> = Vec::with_capacity(src.len());
    for row in src.chunks_exact(w.max(1)) {
        out.extend(row.iter().rev());
    }
    Array::from_vec(out, x.shape())
}

/// Flips each image horizontally with probability `p` (torchvision's `RandomHorizontalFlip`);
/// a batch draws once per image. An unflipped single image is returned without copying.
pub fn random_hflip(x: &Array, p: f64, rng: &mut Rng) -> Result<Array> {
    let (n, c, h, w) = image_dims("random_hflip", x)?;
    if x.rank() == 3 {
        return if rng.bernoulli(p) { hflip(x) } else { Ok(x.clone()) };
    }
    let src = x.f32_cow()?;
    let img = c * h * w;
    let mut out: Vec<f32> = Vec::with_capacity(src.len());
    for k in 0..n {
        let s = &src[k * img..(k + 1) * img];
        if rng.bernoulli(p) {
            for row in s.chunks_exact(w.max(1)) {
                out.extend(row.iter().rev());
            }
        } else {
            out.extend_from_slice(s);
        }
    }
    Array::from_vec(out, x.shape())
}

/// A random `size = (height, width)` crop of each image after zero padding of `padding` pixels
/// on every side, like torchvision's `RandomCrop(size, padding)`: the top-left corner is
/// uniform over the valid positions of the padded image (row first, then column, per image).
pub fn random_crop(x: &Array, size: (usize, usize), padding: usize, rng: &mut Rng) -> Result<Array> {
    let (n, c, h, w) = image_dims("random_crop", x)?;
    let (th, tw) = size;
    let (ph, pw) = (h + 2 * padding, w + 2 * padding);
    if th > ph || tw > pw || th == 0 || tw == 0 {
        bail!(
            "random_crop",
            "crop size {size:?} does not fit the padded image {ph}x{pw} (shape {:?}, padding {padding})",
            x.shape()
        );
    }
    let src = x.f32_cow()?;
    let mut out = vec![0f32; n * c * th * tw];
    for k in 0..n {
        let i = rng.below(ph - th + 1);
        let j = rng.below(pw - tw + 1);
        // Output column q reads input column j + q - padding when that is inside the image.
        let q0 = padding.saturating_sub(j).min(tw);
        let q1 = (w + padding).saturating_sub(j).min(tw).max(q0);
        for ch in 0..c {
            let plane = &src[(k * c + ch) * h * w..][..h * w];
            let dst = &mut out[(k * c + ch) * th * tw..][..th * tw];
            for r in 0..th {
                let sr = (i + r) as isize - padding as isize;
                if sr < 0 || sr >= h as isize || q0 == q1 {
                    continue;
                }
                let s0 = (j + q0 - padding) + sr as usize * w;
                dst[r * tw + q0..r * tw + q1].copy_from_slice(&plane[s0..s0 + (q1 - q0)]);
            }
        }
    }
    let shape: Vec<usize> = if x.rank() == 3 { vec![c, th, tw] } else { vec![n, c, th, tw] };
    Array::from_vec(out, &shape)
}

/// Linear interpolation taps along one axis: output `o` is `l0[o] * in[i0[o]] + l1[o] * in[i1[o]]`.
#[derive(Debug, Clone)]
struct Taps {
    i0: Vec<usize>,
    i1: Vec<usize>,
    l0: Vec<f32>,
    l1: Vec<f32>,
}

impl Taps {
    /// PyTorch's `align_corners=False` source positions: `src = (in/out) * (o + 0.5) - 0.5`,
    /// clamped at 0; `i0 = floor(src)`, `i1 = min(i0 + 1, in - 1)`, `l1 = src - i0`.
    fn new(input: usize, output: usize) -> Taps {
        let scale = input as f32 / output as f32;
        let mut t = Taps {
            i0: Vec::with_capacity(output),
            i1: Vec::with_capacity(output),
            l0: Vec::with_capacity(output),
            l1: Vec::with_capacity(output),
        };
        for o in 0..output {
            let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            t.i0.push(i0);
            t.i1.push(i1);
            t.l0.push(1.0 - l1);
            t.l1.push(l1);
        }
        t
    }
}

/// Bilinear resizing from one fixed `(H, W)` to another, with PyTorch's
/// `F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=False)` semantics.
/// The index and weight tables are computed once in [`Resize::new`]; [`Resize::apply`] then
/// costs two multiply-adds per output pixel (a horizontal, then a vertical pass).
#[derive(Debug, Clone)]
pub struct Resize {
    input: (usize, usize),
    output: (usize, usize),
    rows: Taps,
    cols: Taps,
    /// Input rows that some output row reads (only those get the horizontal pass).
    used_rows: Vec<usize>,
}

impl Resize {
    /// A resize from `input = (H, W)` to `output = (height, width)`; all sizes must be positive.
    pub fn new(input: (usize, usize), output: (usize, usize)) -> Result<Resize> {
        if input.0 == 0 || input.1 == 0 || output.0 == 0 || output.1 == 0 {
            bail!("resize", "sizes must be positive: from {input:?} to {output:?}");
        }
        let rows = Taps::new(input.0, output.0);
        let mut used = vec![false; input.0];
        for (&a, &b) in rows.i0.iter().zip(&rows.i1) {
            used[a] = true;
            used[b] = true;
        }
        let used_rows = (0..input.0).filter(|&r| used[r]).collect();
        Ok(Resize { input, output, rows, cols: Taps::new(input.1, output.1), used_rows })
    }

    /// The output size `(height, width)`.
    pub fn output_size(&self) -> (usize, usize) {
        self.output
    }

    /// Resizes the last two dims of `x` (`[..., H, W]` f32, `(H, W)` as given to `new`).
    pub fn apply(&self, x: &Array) -> Result<Array> {
        x.expect_dtype("resize", kiln_tensor::DType::F32)?;
        let r = x.rank();
        if r < 2 || (x.shape()[r - 2], x.shape()[r - 1]) != self.input {
            bail!("resize", "expected [..., {}, {}], got shape {:?}", self.input.0, self.input.1, x.shape());
        }
        let (ih, iw) = self.input;
        let (oh, ow) = self.output;
        let src = x.f32_cow()?;
        let planes = x.numel() / (ih * iw);
        let mut out = vec![0f32; planes * oh * ow];
        let run = |first: usize, dst: &mut [f32]| {
            let mut tmp = vec![0f32; ih * ow];
            for (p, d) in dst.chunks_exact_mut(oh * ow).enumerate() {
                self.plane(&src[(first + p) * ih * iw..][..ih * iw], &mut tmp, d);
            }
        };
        // Whole planes per task; the kernels' pool only when there is enough work.
        let per_plane = oh * ow + ih * ow;
        let threads = rayon::current_num_threads();
        if planes * per_plane < (1 << 16) || threads == 1 || planes == 1 {
            run(0, &mut out);
        } else {
            let chunk = planes.div_ceil(threads * 4).max(1);
            out.par_chunks_mut(chunk * oh * ow).enumerate().for_each(|(t, d)| run(t * chunk, d));
        }
        let mut shape = x.shape().to_vec();
        shape[r - 2] = oh;
        shape[r - 1] = ow;
        Array::from_vec(out, &shape)
    }

    /// One plane: rows of `src` resized horizontally into `tmp`, then blended vertically.
    fn plane(&self, src: &[f32], tmp: &mut [f32], dst: &mut [f32]) {
        let (_, iw) = self.input;
        let (_, ow) = self.output;
        let c = &self.cols;
        for &r in &self.used_rows {
            let s = &src[r * iw..(r + 1) * iw];
            let t = &mut tmp[r * ow..(r + 1) * ow];
            for (o, t) in t.iter_mut().enumerate() {
                *t = s[c.i0[o]] * c.l0[o] + s[c.i1[o]] * c.l1[o];
            }
        }
        let rw = &self.rows;
        for (o, d) in dst.chunks_exact_mut(ow).enumerate() {
            let a = &tmp[rw.i0[o] * ow..][..ow];
            let b = &tmp[rw.i1[o] * ow..][..ow];
            let (l0, l1) = (rw.l0[o], rw.l1[o]);
            for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
                *d = a * l0 + b * l1;
            }
        }
    }
}

/// Resizes the last two dims of `x` to `size = (height, width)` bilinearly (see [`Resize`];
/// build a `Resize` once when resizing many arrays of one size).
pub fn resize_bilinear(x: &Array, size: (usize, usize)) -> Result<Array> {
    let r = x.rank();
    if r < 2 {
        bail!("resize", "expected [..., H, W], got shape {:?}", x.shape());
    }
    Resize::new((x.shape()[r - 2], x.shape()[r - 1]), size)?.apply(x)
}
