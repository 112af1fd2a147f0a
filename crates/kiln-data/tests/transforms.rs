//! Image transforms against hand computations and PyTorch reference outputs.

// The PyTorch references are printed as the f64 values of f32 results: exact, if long.
#![allow(clippy::excessive_precision)]

use kiln_data::{hflip, normalize, random_crop, random_hflip, resize_bilinear, Resize, Rng};
use kiln_tensor::Array;

fn arr(v: Vec<f32>, shape: &[usize]) -> Array {
    Array::from_vec(v, shape).unwrap()
}

/// `((k * 37) % 17) / 4` for k = 0.. (exact in f32): the inputs of the PyTorch references.
fn pattern(shape: &[usize]) -> Array {
    let n = shape.iter().product::<usize>();
    arr((0..n).map(|k| ((k * 37) % 17) as f32 / 4.0).collect(), shape)
}

#[test]
fn normalize_per_channel() {
    let x = arr(vec![1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0], &[2, 2, 2]);
    let y = normalize(&x, &[1.0, 10.0], &[2.0, 5.0]).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), vec![0.0, 0.5, 1.0, 1.5, 0.0, 2.0, 4.0, 6.0]);
    // A batch of two such images: the channel pattern repeats per image.
    let b = Array::stack(&[&x, &x], 0).unwrap();
    let yb = normalize(&b, &[1.0, 10.0], &[2.0, 5.0]).unwrap().to_vec_f32().unwrap();
    assert_eq!(&yb[8..], &y.to_vec_f32().unwrap()[..]);
    assert_eq!(normalize(&x, &[1.0], &[1.0]).unwrap().to_vec_f32().unwrap()[4], 9.0);
    assert!(normalize(&x, &[0.0; 3], &[1.0; 3]).unwrap_err().to_string().contains("3 values for 2 channels"));
    assert!(normalize(&x, &[0.0], &[0.0]).is_err());
    assert!(normalize(&arr(vec![1.0], &[1]), &[0.0], &[1.0]).unwrap_err().to_string().contains("[C, H, W]"));
}

#[test]
fn horizontal_flips() {
    let x = arr((0..6).map(|v| v as f32).collect(), &[1, 2, 3]);
    assert_eq!(hflip(&x).unwrap().to_vec_f32().unwrap(), vec![2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
    let mut rng = Rng::new(0);
    assert_eq!(random_hflip(&x, 1.0, &mut rng).unwrap().to_vec_f32().unwrap(), vec![2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
    let same = random_hflip(&x, 0.0, &mut rng).unwrap();
    assert!(same.shares_storage(&x));
    // A batch flips each image on its own draw: over 400 images about half flip.
    let batch = Array::stack(&vec![&x; 400], 0).unwrap();
    let out = random_hflip(&batch, 0.5, &mut rng).unwrap().to_vec_f32().unwrap();
    let flipped = out.chunks(6).filter(|c| c[0] == 2.0).count();
    assert!(out.chunks(6).all(|c| c[0] == 2.0 || c[0] == 0.0));
    assert!((150..250).contains(&flipped), "{flipped}");
}

/// The window of the zero-padded image at (i, j), computed directly.
fn padded_window(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    p: usize,
    (i, j): (usize, usize),
    (th, tw): (usize, usize),
) -> Vec<f32> {
    let mut out = Vec::new();
    for ch in 0..c {
        for r in 0..th {
            for q in 0..tw {
                let (sr, sc) = (i as isize + r as isize - p as isize, j as isize + q as isize - p as isize);
                let inside = sr >= 0 && sc >= 0 && (sr as usize) < h && (sc as usize) < w;
                out.push(if inside { x[ch * h * w + sr as usize * w + sc as usize] } else { 0.0 });
            }
        }
    }
    out
}

#[test]
fn random_crop_is_a_uniform_window_of_the_padded_image() {
    let (c, h, w, p, th, tw) = (2, 3, 4, 2, 3, 5);
    let x = arr((1..=c * h * w).map(|v| v as f32).collect(), &[c, h, w]);
    let xv = x.to_vec_f32().unwrap();
    let mut rng = Rng::new(5);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..2000 {
        let y = random_crop(&x, (th, tw), p, &mut rng).unwrap();
        assert_eq!(y.shape(), &[c, th, tw]);
        let yv = y.to_vec_f32().unwrap();
        // Exactly one offset of the padded 7x8 image gives this window (the values are distinct).
        let hits: Vec<(usize, usize)> = (0..=h + 2 * p - th)
            .flat_map(|i| (0..=w + 2 * p - tw).map(move |j| (i, j)))
            .filter(|&ij| padded_window(&xv, (c, h, w), p, ij, (th, tw)) == yv)
            .collect();
        assert_eq!(hits.len(), 1, "{yv:?}");
        *seen.entry(hits[0]).or_insert(0usize) += 1;
    }
    // 5 x 4 offsets, each about 100 times.
    assert_eq!(seen.len(), 20);
    assert!(seen.values().all(|&k| (50..160).contains(&k)), "{seen:?}");
    // Batches crop each image independently; no padding and full size is the identity.
    let b = Array::stack(&[&x, &x], 0).unwrap();
    assert_eq!(random_crop(&b, (2, 2), 0, &mut rng).unwrap().shape(), &[2, 2, 2, 2]);
    assert_eq!(random_crop(&x, (h, w), 0, &mut rng).unwrap().to_vec_f32().unwrap(), xv);
    assert!(random_crop(&x, (8, 2), 2, &mut rng).unwrap_err().to_string().contains("does not fit"));
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "element {k}: {g} vs {w}");
    }
}

// The expected values below were produced with PyTorch 2.15 (CPU) from the `pattern` inputs:
// F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)

#[test]
fn resize_matches_pytorch_upsampling_by_odd_ratios() {
    let y = resize_bilinear(&pattern(&[1, 1, 3, 4]), (5, 7)).unwrap();
    assert_eq!(y.shape(), &[1, 1, 5, 7]);
    #[rustfmt::skip]
    let want = [
        0.0, 0.267857164144516, 0.6964285969734192, 1.1250001192092896, 1.5535715818405151, 1.9821430444717407, 2.25,
        1.2000000476837158, 1.4678572416305542, 1.8964287042617798, 1.475000023841858, 1.0535714626312256,
        1.4821429252624512, 1.75, 3.0, 3.267857074737549, 3.6964285373687744, 1.9999995231628418, 0.30357158184051514,
        0.732142984867096, 1.0, 2.249999761581421, 2.5178568363189697, 2.9464285373687744, 2.5250000953674316,
        2.103571891784668, 2.5321433544158936, 2.8000001907348633, 1.75, 2.017857074737549, 2.4464282989501953, 2.875,
        3.3035714626312256, 3.732142925262451, 4.0,
    ];
    assert_close(&y.to_vec_f32().unwrap(), &want);
}

#[test]
fn resize_matches_pytorch_downsampling_and_batches() {
    let y = resize_bilinear(&pattern(&[1, 2, 5, 6]), (2, 3)).unwrap();
    let want = [0.5625, 2.0625, 3.5625, 1.1875, 2.6875, 2.0625, 1.8125, 3.3125, 0.5625, 2.4375, 1.8125, 1.1875];
    assert_close(&y.to_vec_f32().unwrap(), &want);

    let y = resize_bilinear(&pattern(&[2, 1, 4, 5]), (3, 8)).unwrap();
    #[rustfmt::skip]
    let want = [
        0.6250000596046448, 0.6432292461395264, 0.7135416865348816, 1.1822916269302368, 1.6510417461395264,
        2.1197917461395264, 2.5885417461395264, 2.9166667461395264, 3.5, 2.8984375, 2.0390625, 1.1796875, 0.984375,
        1.453125, 1.921875, 2.25, 2.8333332538604736, 3.1614582538604736, 3.3645830154418945, 1.1770832538604736,
        0.31770825386047363, 0.7864582538604736, 1.2552082538604736, 1.5833332538604736, 2.1666667461395264,
        2.4947917461395264, 2.9635417461395264, 3.432291269302368, 2.7942705154418945, 1.0494792461395264, 0.8984375,
        0.9166666269302368, 1.5, 1.828125, 2.296875, 2.765625, 3.234375, 3.703125, 1.78125, 0.25, 0.8333332538604736,
        1.1614582538604736, 1.6302082538604736, 2.0989582538604736, 2.5677082538604736, 3.0364580154418945,
        3.1067709922790527, 3.125000476837158,
    ];
    assert_close(&y.to_vec_f32().unwrap(), &want);
}

#[test]
fn resize_matches_pytorch_at_the_mnist_ratio_of_4() {
    // 3x3 -> 12x12 is the 28 -> 112 ratio: the same clamping at the borders.
    let r = Resize::new((3, 3), (12, 12)).unwrap();
    let y = r.apply(&pattern(&[3, 3])).unwrap();
    assert_eq!(y.shape(), &[12, 12]);
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, 0.09375, 0.28125, 0.46875, 0.65625, 0.84375, 1.03125, 1.21875, 1.40625, 1.5, 1.5,
        0.0, 0.0, 0.09375, 0.28125, 0.46875, 0.65625, 0.84375, 1.03125, 1.21875, 1.40625, 1.5, 1.5,
        0.28125, 0.28125, 0.375, 0.5625, 0.75, 0.9375, 1.125, 1.3125, 1.5, 1.6875, 1.78125, 1.78125,
        0.84375, 0.84375, 0.9375, 1.125, 1.3125, 1.5, 1.6875, 1.875, 2.0625, 2.25, 2.34375, 2.34375,
        1.40625, 1.40625, 1.5, 1.6875, 1.875, 2.0625, 2.25, 2.4375, 2.625, 2.8125, 2.90625, 2.90625,
        1.96875, 1.96875, 2.0625, 2.25, 2.4375, 2.625, 2.8125, 3.0, 3.1875, 3.375, 3.46875, 3.46875,
        2.0, 2.0, 2.09375, 2.28125, 2.46875, 2.65625, 2.84375, 3.03125, 3.21875, 3.40625, 3.5, 3.5,
        1.5, 1.5, 1.59375, 1.78125, 1.96875, 2.15625, 2.34375, 2.53125, 2.71875, 2.90625, 3.0, 3.0,
        1.0, 1.0, 1.09375, 1.28125, 1.46875, 1.65625, 1.84375, 2.03125, 2.21875, 2.40625, 2.5, 2.5,
        0.5, 0.5, 0.59375, 0.78125, 0.96875, 1.15625, 1.34375, 1.53125, 1.71875, 1.90625, 2.0, 2.0,
        0.25, 0.25, 0.34375, 0.53125, 0.71875, 0.90625, 1.09375, 1.28125, 1.46875, 1.65625, 1.75, 1.75,
        0.25, 0.25, 0.34375, 0.53125, 0.71875, 0.90625, 1.09375, 1.28125, 1.46875, 1.65625, 1.75, 1.75,
    ];
    assert_close(&y.to_vec_f32().unwrap(), &want);
}

#[test]
fn resize_edge_cases() {
    // Same size is the identity; a 1x1 image becomes a constant; views are read correctly.
    let x = pattern(&[2, 4, 5]);
    assert_eq!(resize_bilinear(&x, (4, 5)).unwrap().to_vec_f32().unwrap(), x.to_vec_f32().unwrap());
    let one = arr(vec![2.5], &[1, 1]);
    assert_eq!(resize_bilinear(&one, (2, 3)).unwrap().to_vec_f32().unwrap(), vec![2.5; 6]);
    let t = x.transpose(1, 2).unwrap(); // [2, 5, 4], not contiguous
    let want = resize_bilinear(&t.contiguous(), (3, 3)).unwrap().to_vec_f32().unwrap();
    assert_eq!(resize_bilinear(&t, (3, 3)).unwrap().to_vec_f32().unwrap(), want);
    // Many images at once (the parallel path) equal one at a time.
    let many = pattern(&[256, 1, 7, 9]);
    let r = Resize::new((7, 9), (20, 30)).unwrap();
    let all = r.apply(&many).unwrap().to_vec_f32().unwrap();
    for k in [0, 131, 255] {
        let one = r.apply(&many.narrow(0, k, 1).unwrap()).unwrap().to_vec_f32().unwrap();
        assert_eq!(&all[k * 600..(k + 1) * 600], &one[..]);
    }
    assert!(r.apply(&pattern(&[7, 8])).unwrap_err().to_string().contains("[..., 7, 9]"));
    assert!(Resize::new((0, 3), (2, 2)).is_err());
    assert!(resize_bilinear(&arr(vec![1.0], &[1]), (2, 2)).is_err());
}
