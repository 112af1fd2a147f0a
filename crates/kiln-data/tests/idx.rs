//! The IDX reader on hand-made bytes (every malformation we can think of) and on real MNIST.

mod common;

use flate2::write::GzEncoder;
use flate2::Compression;
use kiln_data::{load_mnist, parse_idx_images, parse_idx_labels, Dataset, Idx, IdxData, Labeled, MnistSplit};
use std::io::Write;

/// An IDX header: magic `0 0 code ndims`, then the sizes big-endian.
fn header(code: u8, dims: &[u32]) -> Vec<u8> {
    let mut b = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b
}

/// Two 2x3 images: pixels 0, 51, ..., 255, then 255, 204, ..., 0 (multiples of 51 are
/// exact after /255).
fn two_images() -> Vec<u8> {
    let mut b = header(0x08, &[2, 2, 3]);
    b.extend((0u8..6).map(|k| k * 51));
    b.extend((0u8..6).map(|k| 255 - k * 51));
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn reads_a_two_image_file_raw_and_gzipped() {
    for bytes in [two_images(), gzip(&two_images())] {
        let x = parse_idx_images(&bytes, "two.idx", false).unwrap();
        assert_eq!(x.shape(), &[2, 2, 3]);
        assert_eq!(x.to_vec_f32().unwrap(), vec![0., 51., 102., 153., 204., 255., 255., 204., 153., 102., 51., 0.]);
        let x = parse_idx_images(&bytes, "two.idx", true).unwrap();
        let v = x.to_vec_f32().unwrap();
        assert_eq!(&v[..6], &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    }
    let mut labels = header(0x08, &[3]);
    labels.extend([7, 0, 9]);
    assert_eq!(parse_idx_labels(&labels, "l").unwrap().to_vec::<i64>().unwrap(), vec![7, 0, 9]);
    assert_eq!(parse_idx_labels(&gzip(&labels), "l").unwrap().shape(), &[3]);
}

#[test]
fn decodes_every_element_type_big_endian() {
    let mut b = header(0x0B, &[2]);
    b.extend([0x01, 0x02, 0xFF, 0xFE]); // 258, -2
    assert_eq!(Idx::parse(&b, "t").unwrap().data, IdxData::I16(vec![258, -2]));
    let mut b = header(0x0C, &[1]);
    b.extend([0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(Idx::parse(&b, "t").unwrap().data, IdxData::I32(vec![-1]));
    let mut b = header(0x0D, &[1, 1]);
    b.extend(1.5f32.to_be_bytes());
    let idx = Idx::parse(&b, "t").unwrap();
    assert_eq!((idx.dims.clone(), idx.to_f32(0.5).to_vec_f32().unwrap()), (vec![1, 1], vec![3.0]));
    assert!(idx.to_i64("t").unwrap_err().to_string().contains("integer"));
    let mut b = header(0x0E, &[1]);
    b.extend((-0.25f64).to_be_bytes());
    assert_eq!(Idx::parse(&b, "t").unwrap().data, IdxData::F64(vec![-0.25]));
    let mut b = header(0x09, &[2]);
    b.extend([0x80, 0x7F]);
    assert_eq!(Idx::parse(&b, "t").unwrap().to_i64("t").unwrap().to_vec::<i64>().unwrap(), vec![-128, 127]);
    // Zero-size dims are a valid, empty file.
    assert_eq!(Idx::parse(&header(0x08, &[0, 28, 28]), "t").unwrap().to_f32(1.0).shape(), &[0, 28, 28]);
}

/// The error for `bytes`, which must name the input and contain `want`.
fn error(bytes: &[u8], want: &str) {
    let e = Idx::parse(bytes, "bad.idx").unwrap_err().to_string();
    assert!(e.starts_with("bad.idx: IDX") && e.contains(want), "{e:?} lacks {want:?}");
}

#[test]
fn rejects_malformed_files_with_clear_errors() {
    let good = two_images();
    error(&[], "truncated header");
    error(&good[..3], "truncated header");
    error(&good[..9], "truncated header (size of dim 1 of 3)");
    error(&good[..20], "truncated data: sizes [2, 2, 3] of 1-byte elements need 12 bytes, found 4");
    let mut trailing = good.clone();
    trailing.push(0);
    error(&trailing, "trailing bytes");
    let mut magic = good.clone();
    magic[0] = 0x50;
    error(&magic, "bad magic 50 00 08 03");
    let mut code = good.clone();
    code[2] = 0x0A;
    error(&code, "unknown element type 0x0a");
    error(&[0, 0, 8, 0], "0 dimensions");
    // Truncated gzip streams: both the gzip and the IDX layer may notice.
    let gz = gzip(&good);
    let e = Idx::parse(&gz[..gz.len() / 2], "bad.idx").unwrap_err().to_string();
    assert!(e.contains("bad.idx") && e.contains("gzip"), "{e}");
    // Images must be u8 [N, H, W]; labels u8 [N].
    let e = parse_idx_images(&header(0x08, &[0]), "l", false).unwrap_err().to_string();
    assert!(e.contains("[N, H, W]"), "{e}");
    let e = parse_idx_labels(&good, "i").unwrap_err().to_string();
    assert!(e.contains("[N]") && e.contains("[2, 2, 3]"), "{e}");
}

#[test]
fn huge_headers_are_refused_without_allocating() {
    // 4G x 4G x 4G u8 elements overflow; 4G x 1M x 2 does not overflow 64 bits but is absent.
    error(&header(0x08, &[u32::MAX, u32::MAX, u32::MAX]), "overflow");
    error(&header(0x0E, &[u32::MAX, u32::MAX]), "overflow");
    let mut b = header(0x08, &[u32::MAX, 1 << 20, 2]);
    b.extend([1, 2, 3]);
    error(&b, "found 3");
    error(&gzip(&header(0x08, &[1 << 30, 1 << 30])), "found 0");
    // A zero size makes the element count 0, but the other sizes must still not overflow
    // (the array's strides are their products). Found by fuzzing (docs/fuzzing-idx.md):
    error(&header(0x08, &[0, u32::MAX, u32::MAX, u32::MAX]), "overflow");
    let crash = [
        0x00, 0x00, 0x09, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x81, 0xcb, 0x06, 0x47, 0x29, 0x86, 0x59, 0xa5, 0x86, 0xd9, 0x07, 0xf8, 0x85, 0xf4, 0xe4, 0x4b, 0x0e, 0xa3,
        0xc6, 0x00, 0x00, 0x00,
    ];
    error(&crash, "overflow");
    // Zero sizes with small others are still a valid empty file.
    assert_eq!(Idx::parse(&header(0x0C, &[3, 0, 5]), "t").unwrap().to_f32(1.0).shape(), &[3, 0, 5]);
}

#[test]
fn real_mnist() {
    let Some(assets) = common::assets("real_mnist") else { return };
    let dir = assets.join("mnist");
    let t = std::time::Instant::now();
    let train = load_mnist(&dir, MnistSplit::Train, true).unwrap();
    eprintln!("MNIST train (gzipped) loaded in {:?}", t.elapsed());
    assert_eq!(train.features().shape(), &[60000, 1, 28, 28]);
    // Reference values from Python's gzip + struct on the same files.
    assert_eq!(&train.label_slice()[..10], &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    let mut counts = [0usize; 10];
    train.labels().unwrap().iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    let (img0, _) = train.get(0).unwrap();
    let v = img0.to_vec_f32().unwrap();
    let sum: f32 = v.iter().map(|p| p * 255.0).sum();
    assert!((sum - 27525.0).abs() < 0.5, "{sum}");
    let row14: Vec<u8> = v[14 * 28..15 * 28].iter().map(|p| (p * 255.0).round() as u8).collect();
    assert_eq!(&row14[13..19], &[81, 240, 253, 253, 119, 25]);

    let test = load_mnist(&dir, MnistSplit::Test, false).unwrap();
    assert_eq!(test.len(), 10000);
    assert_eq!(&test.label_slice()[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    let total: f64 = test.features().to_vec_f32().unwrap().iter().map(|&p| p as f64).sum();
    assert_eq!(total, 264923200.0);
    let e = load_mnist(assets.join("tabular"), MnistSplit::Test, true).unwrap_err().to_string();
    assert!(e.contains("t10k-images-idx3-ubyte.gz"), "{e}");
}
