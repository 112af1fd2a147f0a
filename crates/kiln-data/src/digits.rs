//! The sklearn 8x8 handwritten digits (1797 images, 64 pixels 0-16, labels 0-9).

use crate::dataset::{out_of_range, ArrayDataset, Dataset, Labeled};
use flate2::read::GzDecoder;
use kiln_tensor::{Array, Error, Result};
use std::io::Read;
use std::path::Path;

/// The copy committed in the repository (`data/digits/digits.csv.gz`, 57 KB), built in.
const EMBEDDED: &[u8] = include_bytes!("../../../data/digits/digits.csv.gz");

/// The digits data set: `images` `[N, 64]` f32 in `[0, 16]` and `labels` `[N]` i64.
///
/// It is a [`Dataset`] of `(pixels [64], label)` (raw values 0-16; see
/// [`Digits::to_dataset`] for scaled 8x8 images).
#[derive(Debug, Clone)]
pub struct Digits {
    /// Pixel values, `[N, 64]`.
    pub images: Array,
    /// Class labels 0-9, `[N]`.
    pub labels: Array,
}

impl Digits {
    /// Reads sklearn's `digits.csv.gz` (gzipped or plain CSV: 64 pixel columns, then the label).
    pub fn load(path: impl AsRef<Path>) -> Result<Digits> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        Digits::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses the CSV from memory (gzipped or not); `what` names the input in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Digits> {
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut s = String::new();
            GzDecoder::new(bytes)
                .read_to_string(&mut s)
                .map_err(|e| Error::Format { what: what.to_string(), msg: format!("gzip: {e}") })?;
            s
        } else {
            String::from_utf8(bytes.to_vec())
                .map_err(|_| Error::Format { what: what.to_string(), msg: "not UTF-8 text".into() })?
        };
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |msg: String| Error::Format { what: what.to_string(), msg: format!("line {}: {msg}", i + 1) };
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != 65 {
                return Err(bad(format!("expected 65 comma-separated values, found {}", fields.len())));
            }
            for f in &fields[..64] {
                let v: f32 = f.parse().map_err(|_| bad(format!("pixel {f:?} is not a number")))?;
                if !(0.0..=16.0).contains(&v) {
                    return Err(bad(format!("pixel {v} is outside 0..=16")));
                }
                pixels.push(v);
            }
            let label: i64 =
                fields[64].parse().map_err(|_| bad(format!("label {:?} is not an integer", fields[64])))?;
            if !(0..10).contains(&label) {
                return Err(bad(format!("label {label} is outside 0..=9")));
            }
            labels.push(label);
        }
        let n = labels.len();
        Ok(Digits { images: Array::from_vec(pixels, &[n, 64])?, labels: Array::from_vec(labels, &[n])? })
    }

    /// The 1797 digits committed in the repository (`data/digits/digits.csv.gz`), built into
    /// the crate: no file access.
    pub fn embedded() -> Result<Digits> {
        Digits::from_bytes(EMBEDDED, "data/digits/digits.csv.gz")
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.numel()
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An [`ArrayDataset`] of images `[1, 8, 8]` with pixels divided by 16 (to `[0, 1]`).
    pub fn to_dataset(&self) -> Result<ArrayDataset> {
        let n = self.len();
        ArrayDataset::new(self.images.mul_scalar(1.0 / 16.0)?.reshape_to(&[n, 1, 8, 8])?, &self.labels)
    }
}

impl Dataset for Digits {
    type Item = (Array, i64);
    fn len(&self) -> usize {
        self.labels.numel()
    }
    fn get(&self, index: usize) -> Result<(Array, i64)> {
        let label = self.label(index)?;
        Ok((self.images.narrow(0, index, 1)?.squeeze(0)?, label))
    }
}

impl Labeled for Digits {
    fn label(&self, index: usize) -> Result<i64> {
        if index >= self.len() {
            return Err(out_of_range(index, self.len()));
        }
        match self.labels.as_slice::<i64>() {
            Some(s) => Ok(s[index]),
            None => Ok(self.labels.narrow(0, index, 1)?.to_vec::<i64>()?[0]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_rejects_bad_ones() {
        let row = |label: &str| format!("{}{}\n", "1,".repeat(64), label);
        let d = Digits::from_bytes(format!("{}{}", row("3"), row("9")).as_bytes(), "t").unwrap();
        assert_eq!(d.images.shape(), &[2, 64]);
        assert_eq!(d.labels.to_vec::<i64>().unwrap(), vec![3, 9]);
        let e = Digits::from_bytes(row("12").as_bytes(), "t").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("label 12"), "{e}");
        let e = Digits::from_bytes(b"1,2,3\n", "t").unwrap_err().to_string();
        assert!(e.contains("expected 65"), "{e}");
    }

    #[test]
    fn the_committed_copy_has_1797_images_of_every_class() {
        let d = Digits::embedded().unwrap();
        assert_eq!(d.len(), 1797);
        let labels = d.labels.to_vec::<i64>().unwrap();
        for c in 0..10 {
            let n = labels.iter().filter(|&&l| l == c).count();
            assert!((170..=190).contains(&n), "class {c}: {n}");
        }
    }
}
