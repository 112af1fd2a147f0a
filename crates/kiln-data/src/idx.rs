//! The IDX format of MNIST (and Fashion-MNIST, EMNIST), gzipped or raw, and MNIST itself.
//!
//! An IDX file is a 4-byte magic `0 0 type ndims`, `ndims` big-endian u32 sizes, then the
//! elements in row-major order, big-endian. The parser never trusts the header for an
//! allocation: it reads only the bytes present and checks their count against the header.

use crate::dataset::ArrayDataset;
use crate::{format_err, read_file};
use flate2::read::MultiGzDecoder;
use kiln_tensor::{Array, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The elements of an IDX file, in the file's type.
#[derive(Debug, Clone, PartialEq)]
pub enum IdxData {
    /// Type `0x08`.
    U8(Vec<u8>),
    /// Type `0x09`.
    I8(Vec<i8>),
    /// Type `0x0B`.
    I16(Vec<i16>),
    /// Type `0x0C`.
    I32(Vec<i32>),
    /// Type `0x0D`.
    F32(Vec<f32>),
    /// Type `0x0E`.
    F64(Vec<f64>),
}

impl IdxData {
    /// Bytes per element of a type code, or `None` for an unknown code.
    fn elem_size(code: u8) -> Option<usize> {
        Some(match code {
            0x08 | 0x09 => 1,
            0x0B => 2,
            0x0C | 0x0D => 4,
            0x0E => 8,
            _ => return None,
        })
    }

    /// Decodes big-endian elements of type `code` (whose size divides `bytes.len()`).
    fn decode(code: u8, bytes: &[u8]) -> IdxData {
        fn be<const K: usize, T>(b: &[u8], f: fn([u8; K]) -> T) -> Vec<T> {
            b.chunks_exact(K).map(|c| f(c.try_into().expect("chunk of K bytes"))).collect()
        }
        match code {
            0x08 => IdxData::U8(bytes.to_vec()),
            0x09 => IdxData::I8(bytes.iter().map(|&b| b as i8).collect()),
            0x0B => IdxData::I16(be(bytes, i16::from_be_bytes)),
            0x0C => IdxData::I32(be(bytes, i32::from_be_bytes)),
            0x0D => IdxData::F32(be(bytes, f32::from_be_bytes)),
            _ => IdxData::F64(be(bytes, f64::from_be_bytes)),
        }
    }

    /// The type's name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            IdxData::U8(_) => "u8",
            IdxData::I8(_) => "i8",
            IdxData::I16(_) => "i16",
            IdxData::I32(_) => "i32",
            IdxData::F32(_) => "f32",
            IdxData::F64(_) => "f64",
        }
    }
}

/// A parsed IDX file: its sizes and elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    /// The sizes from the header (`[N, 28, 28]` for MNIST images, `[N]` for labels).
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: IdxData,
}

impl Idx {
    /// Reads an IDX file, gzipped or raw (told apart by the gzip magic `1f 8b`).
    pub fn read(path: impl AsRef<Path>) -> Result<Idx> {
        let path = path.as_ref();
        Idx::parse(&read_file(path)?, &path.display().to_string())
    }

    /// Parses IDX bytes, gzipped or raw; `what` names the input in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Idx> {
        with_data(bytes, what, |code, dims, data| Ok(Idx { dims, data: IdxData::decode(code, data) }))
    }
    /// The elements as an f32 array of shape `dims`, each divided by `divisor` (`255.0` maps
    /// u8 pixels to `[0, 1]` exactly as torchvision's `ToTensor`, `x.float() / 255`).
    pub fn to_f32(&self, divisor: f32) -> Array {
        let v: Vec<f32> = match &self.data {
            IdxData::U8(v) => u8_to_f32(v, divisor),
            IdxData::I8(v) => v.iter().map(|&x| x as f32 / divisor).collect(),
            IdxData::I16(v) => v.iter().map(|&x| x as f32 / divisor).collect(),
            IdxData::I32(v) => v.iter().map(|&x| x as f32 / divisor).collect(),
            IdxData::F32(v) => v.iter().map(|&x| x / divisor).collect(),
            IdxData::F64(v) => v.iter().map(|&x| (x / divisor as f64) as f32).collect(),
        };
        Array::from_f32_unchecked(v, &self.dims)
    }

    /// The elements as an i64 array of shape `dims`; errors for float types.
    pub fn to_i64(&self, what: &str) -> Result<Array> {
        let v: Vec<i64> = match &self.data {
            IdxData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            IdxData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            IdxData::I16(v) => v.iter().map(|&x| x as i64).collect(),
            IdxData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            d => return Err(format_err(what, format!("IDX: expected integer elements, found {}", d.type_name()))),
        };
        Array::from_vec(v, &self.dims)
    }
}

/// `v / divisor` as f32 (a loop the compiler vectorizes).
fn u8_to_f32(v: &[u8], divisor: f32) -> Vec<f32> {
    v.iter().map(|&b| b as f32 / divisor).collect()
}

/// Parses the header of `bytes` (gzipped or raw) and calls `f(type code, dims, data)` with
/// exactly the data bytes the header declares: borrowed from `bytes` when raw, decompressed
/// into a buffer that grows with the bytes actually present when gzipped.
fn with_data<R>(bytes: &[u8], what: &str, f: impl FnOnce(u8, Vec<usize>, &[u8]) -> Result<R>) -> Result<R> {
    let gz = bytes.starts_with(&[0x1f, 0x8b]);
    let err = |msg: String| format_err(what, format!("IDX{}: {msg}", if gz { " (gzip)" } else { "" }));
    let read_err = |e: std::io::Error, part: &str| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            err(format!("truncated {part}"))
        } else {
            err(format!("reading the {part}: {e}"))
        }
    };
    let check = |dims: &[usize], elem: usize, want: usize, found: usize| {
        if found < want {
            Err(err(format!("truncated data: sizes {dims:?} of {elem}-byte elements need {want} bytes, found {found}")))
        } else if found > want {
            Err(err(format!("trailing bytes after the {want} bytes of data for sizes {dims:?}")))
        } else {
            Ok(())
        }
    };
    if gz {
        let mut r = MultiGzDecoder::new(bytes);
        let (code, dims, elem, want) = header(&mut r, &err, &read_err)?;
        // Read what is there (at most one byte past the claim) and only then compare: a
        // header claiming terabytes costs nothing.
        let mut buf = Vec::new();
        r.take((want as u64).saturating_add(1)).read_to_end(&mut buf).map_err(|e| read_err(e, "data"))?;
        check(&dims, elem, want, buf.len())?;
        f(code, dims, &buf)
    } else {
        let mut r = bytes;
        let (code, dims, elem, want) = header(&mut r, &err, &read_err)?;
        check(&dims, elem, want, r.len())?;
        f(code, dims, r)
    }
}

/// Reads and checks the header: `(type code, dims, element size, data bytes)`.
fn header(
    r: &mut impl Read,
    err: &dyn Fn(String) -> kiln_tensor::Error,
    read_err: &dyn Fn(std::io::Error, &str) -> kiln_tensor::Error,
) -> Result<(u8, Vec<usize>, usize, usize)> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(|e| read_err(e, "header (need 4 magic bytes)"))?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(err(format!(
            "bad magic {:02x} {:02x} {:02x} {:02x}: an IDX file starts with two zero bytes",
            magic[0], magic[1], magic[2], magic[3]
        )));
    }
    let code = magic[2];
    let Some(elem) = IdxData::elem_size(code) else {
        return Err(err(format!("unknown element type 0x{code:02x} (expected 08, 09, 0b, 0c, 0d or 0e)")));
    };
    let ndims = magic[3] as usize;
    if ndims == 0 {
        return Err(err("the header declares 0 dimensions".into()));
    }
    let mut dims = Vec::with_capacity(ndims);
    for d in 0..ndims {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|e| read_err(e, &format!("header (size of dim {d} of {ndims})")))?;
        dims.push(u32::from_be_bytes(b) as usize);
    }
    // Every partial product must fit (the strides of an array of these sizes are products
    // of trailing sizes), even when a zero size makes the element count 0.
    let overflow = || err(format!("sizes {dims:?} overflow"));
    let nonzero = dims.iter().filter(|&&d| d != 0).try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let nonzero = nonzero.and_then(|n| n.checked_mul(elem)).ok_or_else(overflow)?;
    let want = if dims.contains(&0) { 0 } else { nonzero };
    Ok((code, dims, elem, want))
}

/// Parses IDX images: u8 of sizes `[N, H, W]`, as f32 `[N, H, W]` (divided by 255 when
/// `scale`). `what` names the input in errors.
pub fn parse_idx_images(bytes: &[u8], what: &str, scale: bool) -> Result<Array> {
    with_data(bytes, what, |code, dims, data| {
        if code != 0x08 || dims.len() != 3 {
            let ty = IdxData::decode(code, &[]).type_name(); // an empty decode, for the name
            return Err(format_err(
                what,
                format!("IDX images: expected u8 elements of sizes [N, H, W], found {ty} of {dims:?}"),
            ));
        }
        Ok(Array::from_f32_unchecked(u8_to_f32(data, if scale { 255.0 } else { 1.0 }), &dims))
    })
}

/// Parses IDX labels: u8 of sizes `[N]`, as i64 `[N]`.
pub fn parse_idx_labels(bytes: &[u8], what: &str) -> Result<Array> {
    let idx = Idx::parse(bytes, what)?;
    if !matches!(idx.data, IdxData::U8(_)) || idx.dims.len() != 1 {
        return Err(format_err(
            what,
            format!("IDX labels: expected u8 elements of sizes [N], found {} of {:?}", idx.data.type_name(), idx.dims),
        ));
    }
    idx.to_i64(what)
}

/// Reads an IDX image file (see [`parse_idx_images`]).
pub fn read_idx_images(path: impl AsRef<Path>, scale: bool) -> Result<Array> {
    let path = path.as_ref();
    parse_idx_images(&read_file(path)?, &path.display().to_string(), scale)
}

/// Reads an IDX label file (see [`parse_idx_labels`]).
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Array> {
    let path = path.as_ref();
    parse_idx_labels(&read_file(path)?, &path.display().to_string())
}

/// Which half of MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MnistSplit {
    /// The 60000 training images (`train-*`).
    Train,
    /// The 10000 test images (`t10k-*`).
    Test,
}

/// An MNIST-style image/label pair: images `[N, 1, H, W]` f32 and labels `[N]`.
pub fn mnist_from_files(images: impl AsRef<Path>, labels: impl AsRef<Path>, scale: bool) -> Result<ArrayDataset> {
    let (images, labels) = (images.as_ref(), labels.as_ref());
    let x = read_idx_images(images, scale)?;
    let y = read_idx_labels(labels)?;
    let (n, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    if y.shape()[0] != n {
        return Err(format_err(
            &labels.display().to_string(),
            format!("{} labels for {n} images in {}", y.shape()[0], images.display()),
        ));
    }
    ArrayDataset::new(x.reshape_to(&[n, 1, h, w])?, &y)
}

/// Loads MNIST from `dir` (files `train-images-idx3-ubyte[.gz]` etc., as distributed):
/// images `[N, 1, 28, 28]` f32 (in `[0, 1]` when `scale`, else `0..=255`), labels 0-9.
pub fn load_mnist(dir: impl AsRef<Path>, split: MnistSplit, scale: bool) -> Result<ArrayDataset> {
    let dir = dir.as_ref();
    let prefix = match split {
        MnistSplit::Train => "train",
        MnistSplit::Test => "t10k",
    };
    let images = find_file(dir, &format!("{prefix}-images"), "idx3-ubyte")?;
    let labels = find_file(dir, &format!("{prefix}-labels"), "idx1-ubyte")?;
    mnist_from_files(images, labels, scale)
}

/// `dir/{stem}-{kind}`, `dir/{stem}.{kind}`, each raw or `.gz`: the first that exists.
fn find_file(dir: &Path, stem: &str, kind: &str) -> Result<PathBuf> {
    let names =
        [format!("{stem}-{kind}.gz"), format!("{stem}-{kind}"), format!("{stem}.{kind}.gz"), format!("{stem}.{kind}")];
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(|| {
        format_err(&dir.display().to_string(), format!("no MNIST file: looked for {}", names.join(", ")))
    })
}
