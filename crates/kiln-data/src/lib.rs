//! # kiln-data
//!
//! Datasets, a batching [`DataLoader`], readers for real data formats and image transforms.
//!
//! - [`Dataset`]: `len` + `get(i)`, shareable across threads; combinators [`Dataset::map`],
//!   [`Dataset::map_random`], [`Dataset::subset`], [`Dataset::filter`],
//!   [`Dataset::random_split`], [`Dataset::train_val_split`] and, for labelled data,
//!   [`Labeled::filter_labels`]. In memory: [`ArrayDataset`] (features + classes),
//!   [`PairDataset`] and an [`Array`](kiln_tensor::Array) (its rows).
//! - [`DataLoader`]: batches collated into tensors ([`Collate`]), seeded per-epoch shuffling,
//!   `drop_last`, and worker threads that prepare batches ahead of the training loop.
//! - Readers: MNIST's IDX ([`Idx`], [`load_mnist`]), numeric CSV ([`read_csv`]), character
//!   text ([`CharCorpus`], [`RandomWindows`], [`Windows`]) and the sklearn digits ([`Digits`]).
//! - [`transforms`]: normalize, random crop, random horizontal flip, bilinear [`Resize`].
//!
//! ```
//! use kiln_data::{DataLoader, Dataset, Digits, Labeled};
//! // Digits 0-4 of the built-in sklearn digits, 80/20 split, shuffled batches of 32.
//! let digits = Digits::embedded()?.to_dataset()?; // images [1, 8, 8] in [0, 1]
//! let (train, val) = digits.filter_labels(|l| l < 5)?.train_val_split(0.2, 0)?;
//! let loader = DataLoader::new(train, 32)?.shuffle(true).seed(1).num_workers(2);
//! for epoch in 0..2 {
//!     for batch in loader.epoch(epoch) {
//!         let (x, y) = batch?; // x: Tensor [B, 1, 8, 8] f32, y: Tensor [B] i64
//!         assert_eq!(x.shape()[1..], [1, 8, 8]);
//!         assert!(y.data().to_vec::<i64>()?.iter().all(|&l| l < 5));
//!     }
//! }
//! assert!(val.labels()?.iter().all(|&l| l < 5));
//! # Ok::<(), kiln_tensor::Error>(())
//! ```

#![warn(missing_docs)]

pub mod csv;
pub mod dataset;
pub mod digits;
pub mod idx;
pub mod loader;
pub mod rng;
pub mod text;
pub mod transforms;

pub use csv::{parse_csv, read_csv, CsvOptions, CsvTable, Header, LabelColumn};
pub use dataset::{ArrayDataset, Dataset, Labeled, Map, MapRandom, PairDataset, Subset};
pub use digits::Digits;
pub use idx::{
    load_mnist, mnist_from_files, parse_idx_images, parse_idx_labels, read_idx_images, read_idx_labels, Idx, IdxData,
    MnistSplit,
};
pub use loader::{stack, Collate, DataLoader, Epoch};
pub use rng::{derive_seed, Rng};
pub use text::{CharCorpus, CharVocab, RandomWindows, Windows};
pub use transforms::{hflip, normalize, random_crop, random_hflip, resize_bilinear, Resize};

use kiln_tensor::{Error, Result};
use std::path::Path;

/// An [`Error::Format`] naming the input `what`.
pub(crate) fn format_err(what: &str, msg: impl Into<String>) -> Error {
    Error::Format { what: what.to_string(), msg: msg.into() }
}

/// The bytes of a file, or an [`Error::Io`] naming it.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })
}
