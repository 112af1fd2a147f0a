//! The [`Dataset`] trait, its combinators and the in-memory datasets.

use crate::rng::{derive_seed, Rng};
use kiln_tensor::{bail, Array, DType, Result};
use std::sync::Arc;

/// A finite, indexable collection of samples (PyTorch's map-style `Dataset`).
///
/// `Send + Sync`: a [`DataLoader`](crate::DataLoader)'s worker threads share one dataset and
/// call [`get`](Dataset::get) concurrently. Indices are `0..len()`; a bad index is an error.
pub trait Dataset: Send + Sync {
    /// One sample, e.g. `(Array, i64)` for an image and its class.
    type Item: Send + 'static;

    /// Number of samples.
    fn len(&self) -> usize;

    /// Sample `index`.
    fn get(&self, index: usize) -> Result<Self::Item>;

    /// Sample `index` given a per-sample seed: the loader passes one derived from its seed, the
    /// epoch and the index, so random transforms ([`Dataset::map_random`]) differ per epoch yet
    /// reproduce. Datasets without randomness ignore the seed (the default).
    fn get_seeded(&self, index: usize, seed: u64) -> Result<Self::Item> {
        let _ = seed;
        self.get(index)
    }

    /// True when there is no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `f` to every sample as it is read (a transform).
    fn map<T, F>(self, f: F) -> Map<Self, F>
    where
        Self: Sized,
        T: Send + 'static,
        F: Fn(Self::Item) -> Result<T> + Send + Sync,
    {
        Map { inner: self, f }
    }

    /// Applies a random transform `f(item, rng)`; `rng` is seeded from the per-sample seed
    /// (see [`Dataset::get_seeded`]), so augmentations are reproducible and differ per epoch.
    fn map_random<T, F>(self, f: F) -> MapRandom<Self, F>
    where
        Self: Sized,
        T: Send + 'static,
        F: Fn(Self::Item, &mut Rng) -> Result<T> + Send + Sync,
    {
        MapRandom { inner: self, f }
    }

    /// The samples at `indices` (in that order; repeats allowed). Errors on an index `>= len()`.
    fn subset(self, indices: Vec<usize>) -> Result<Subset<Self>>
    where
        Self: Sized,
    {
        Subset::new(Arc::new(self), indices)
    }

    /// The samples for which `keep(&item)` holds, found by reading every sample once.
    /// For a label filter use [`Labeled::filter_labels`], which reads no features.
    fn filter<P>(self, keep: P) -> Result<Subset<Self>>
    where
        Self: Sized,
        P: Fn(&Self::Item) -> bool,
    {
        let mut indices = Vec::new();
        for i in 0..self.len() {
            if keep(&self.get(i)?) {
                indices.push(i);
            }
        }
        Subset::new(Arc::new(self), indices)
    }

    /// Splits into disjoint random subsets of the given `lengths` (which must sum to `len()`),
    /// like `torch.utils.data.random_split`. The permutation is a pure function of `seed`.
    fn random_split(self, lengths: &[usize], seed: u64) -> Result<Vec<Subset<Self>>>
    where
        Self: Sized,
    {
        let n = self.len();
        let total: usize = lengths.iter().sum();
        if total != n {
            bail!("random_split", "lengths {lengths:?} sum to {total}, but the dataset has {n} samples");
        }
        let perm = Rng::new(derive_seed(seed, &[SPLIT_STREAM])).permutation(n);
        let inner = Arc::new(self);
        let mut at = 0;
        lengths
            .iter()
            .map(|&k| {
                let s = Subset { inner: inner.clone(), indices: perm[at..at + k].into() };
                at += k;
                Ok(s)
            })
            .collect()
    }

    /// A seeded random (train, validation) split with `round(val_fraction * len())`
    /// validation samples. Errors unless `0 <= val_fraction <= 1`.
    fn train_val_split(self, val_fraction: f64, seed: u64) -> Result<(Subset<Self>, Subset<Self>)>
    where
        Self: Sized,
    {
        if !(0.0..=1.0).contains(&val_fraction) {
            bail!("train_val_split", "val_fraction must be in [0, 1], got {val_fraction}");
        }
        let n = self.len();
        let n_val = ((val_fraction * n as f64).round() as usize).min(n);
        let mut parts = self.random_split(&[n - n_val, n_val], seed)?.into_iter();
        let train = parts.next().expect("two parts");
        let val = parts.next().expect("two parts");
        Ok((train, val))
    }
}

/// The stream tag of [`Dataset::random_split`]'s permutation.
const SPLIT_STREAM: u64 = 0x0053_504c_4954;

/// Datasets whose samples carry an integer class that can be read without the features.
pub trait Labeled: Dataset {
    /// The class of sample `index`.
    fn label(&self, index: usize) -> Result<i64>;

    /// The samples whose label satisfies `keep` (in their original order), e.g. digits 0-4:
    /// `ds.filter_labels(|l| l < 5)`.
    fn filter_labels<P>(self, keep: P) -> Result<Subset<Self>>
    where
        Self: Sized,
        P: Fn(i64) -> bool,
    {
        let mut indices = Vec::new();
        for i in 0..self.len() {
            if keep(self.label(i)?) {
                indices.push(i);
            }
        }
        Subset::new(Arc::new(self), indices)
    }

    /// Every label, in order.
    fn labels(&self) -> Result<Vec<i64>> {
        (0..self.len()).map(|i| self.label(i)).collect()
    }
}

/// The error for an index past the end.
pub(crate) fn out_of_range(index: usize, len: usize) -> kiln_tensor::Error {
    kiln_tensor::Error::op("dataset", format!("index {index} is out of range for a dataset of {len} samples"))
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    type Item = D::Item;
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Result<D::Item> {
        (**self).get(index)
    }
    fn get_seeded(&self, index: usize, seed: u64) -> Result<D::Item> {
        (**self).get_seeded(index, seed)
    }
}

impl<D: Labeled + ?Sized> Labeled for Arc<D> {
    fn label(&self, index: usize) -> Result<i64> {
        (**self).label(index)
    }
}

impl<D: Dataset + ?Sized> Dataset for Box<D> {
    type Item = D::Item;
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Result<D::Item> {
        (**self).get(index)
    }
    fn get_seeded(&self, index: usize, seed: u64) -> Result<D::Item> {
        (**self).get_seeded(index, seed)
    }
}

/// An array `[N, ...]` is a dataset of its `N` rows (views, no copy).
impl Dataset for Array {
    type Item = Array;
    fn len(&self) -> usize {
        self.shape().first().copied().unwrap_or(0)
    }
    fn get(&self, index: usize) -> Result<Array> {
        row(self, index)
    }
}

/// Row `index` of `a` (`[N, ...]` -> `[...]`) as a view.
fn row(a: &Array, index: usize) -> Result<Array> {
    let n = a.shape().first().copied().unwrap_or(0);
    if index >= n {
        return Err(out_of_range(index, n));
    }
    a.narrow(0, index, 1)?.squeeze(0)
}

/// [`Dataset::map`]'s result.
#[derive(Debug, Clone)]
pub struct Map<D, F> {
    inner: D,
    f: F,
}

impl<D, F, T> Dataset for Map<D, F>
where
    D: Dataset,
    T: Send + 'static,
    F: Fn(D::Item) -> Result<T> + Send + Sync,
{
    type Item = T;
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn get(&self, index: usize) -> Result<T> {
        (self.f)(self.inner.get(index)?)
    }
    fn get_seeded(&self, index: usize, seed: u64) -> Result<T> {
        (self.f)(self.inner.get_seeded(index, seed)?)
    }
}

/// [`Dataset::map_random`]'s result.
#[derive(Debug, Clone)]
pub struct MapRandom<D, F> {
    inner: D,
    f: F,
}

/// The stream tag of [`MapRandom`]'s generator (kept apart from the inner dataset's).
const MAP_STREAM: u64 = 0x004d_4150;

impl<D, F, T> Dataset for MapRandom<D, F>
where
    D: Dataset,
    T: Send + 'static,
    F: Fn(D::Item, &mut Rng) -> Result<T> + Send + Sync,
{
    type Item = T;
    fn len(&self) -> usize {
        self.inner.len()
    }
    /// Without a loader's seed, sample `index` uses seed 0.
    fn get(&self, index: usize) -> Result<T> {
        self.get_seeded(index, 0)
    }
    fn get_seeded(&self, index: usize, seed: u64) -> Result<T> {
        let item = self.inner.get_seeded(index, seed)?;
        let mut rng = Rng::new(derive_seed(seed, &[MAP_STREAM, index as u64]));
        (self.f)(item, &mut rng)
    }
}

/// The samples of a shared dataset at a list of indices ([`Dataset::subset`], splits, filters).
#[derive(Debug)]
pub struct Subset<D: ?Sized> {
    inner: Arc<D>,
    indices: Arc<[usize]>,
}

impl<D: ?Sized> Clone for Subset<D> {
    fn clone(&self) -> Self {
        Subset { inner: self.inner.clone(), indices: self.indices.clone() }
    }
}

impl<D: Dataset + ?Sized> Subset<D> {
    /// The samples of `inner` at `indices`; errors on an index `>= inner.len()`.
    pub fn new(inner: Arc<D>, indices: Vec<usize>) -> Result<Subset<D>> {
        let n = inner.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            bail!("subset", "index {bad} is out of range for a dataset of {n} samples");
        }
        Ok(Subset { inner, indices: indices.into() })
    }

    /// Indices into the underlying dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The underlying dataset.
    pub fn inner(&self) -> &Arc<D> {
        &self.inner
    }

    fn map_index(&self, index: usize) -> Result<usize> {
        self.indices.get(index).copied().ok_or_else(|| out_of_range(index, self.indices.len()))
    }
}

impl<D: Dataset + ?Sized> Dataset for Subset<D> {
    type Item = D::Item;
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, index: usize) -> Result<D::Item> {
        self.inner.get(self.map_index(index)?)
    }
    fn get_seeded(&self, index: usize, seed: u64) -> Result<D::Item> {
        self.inner.get_seeded(self.map_index(index)?, seed)
    }
}

impl<D: Labeled + ?Sized> Labeled for Subset<D> {
    fn label(&self, index: usize) -> Result<i64> {
        self.inner.label(self.map_index(index)?)
    }
}

/// Features `[N, ...]` (any dtype) with one integer class per sample; items are
/// `(features[i], label)`, the features a view (no copy until collation).
#[derive(Debug, Clone)]
pub struct ArrayDataset {
    features: Array,
    labels: Arc<[i64]>,
}

impl ArrayDataset {
    /// From features `[N, ...]` and labels: an i64 array `[N]`.
    pub fn new(features: Array, labels: &Array) -> Result<ArrayDataset> {
        if labels.dtype() != DType::I64 || labels.rank() != 1 {
            bail!("ArrayDataset", "labels must be an i64 array [N], got {} {:?}", labels.dtype(), labels.shape());
        }
        ArrayDataset::from_labels(features, labels.to_vec::<i64>()?)
    }

    /// From features `[N, ...]` and `N` labels.
    pub fn from_labels(features: Array, labels: Vec<i64>) -> Result<ArrayDataset> {
        if features.rank() == 0 || features.shape()[0] != labels.len() {
            bail!(
                "ArrayDataset",
                "features {:?} need a leading dim equal to the number of labels ({})",
                features.shape(),
                labels.len()
            );
        }
        Ok(ArrayDataset { features, labels: labels.into() })
    }

    /// All features, `[N, ...]`.
    pub fn features(&self) -> &Array {
        &self.features
    }

    /// All labels.
    pub fn label_slice(&self) -> &[i64] {
        &self.labels
    }

    /// The labels as an i64 array `[N]`.
    pub fn labels_array(&self) -> Array {
        Array::from_vec(self.labels.to_vec(), &[self.labels.len()]).expect("length matches")
    }
}

impl Dataset for ArrayDataset {
    type Item = (Array, i64);
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn get(&self, index: usize) -> Result<(Array, i64)> {
        Ok((row(&self.features, index)?, self.labels[index]))
    }
}

impl Labeled for ArrayDataset {
    fn label(&self, index: usize) -> Result<i64> {
        self.labels.get(index).copied().ok_or_else(|| out_of_range(index, self.labels.len()))
    }
}

/// Inputs `[N, ...]` and targets `[N, ...]` (any dtypes); items are `(inputs[i], targets[i])`
/// as views: regression targets, token sequences, masks.
#[derive(Debug, Clone)]
pub struct PairDataset {
    inputs: Array,
    targets: Array,
}

impl PairDataset {
    /// Pairs the rows of `inputs` and `targets`; their leading dims must agree.
    pub fn new(inputs: Array, targets: Array) -> Result<PairDataset> {
        if inputs.rank() == 0 || targets.rank() == 0 || inputs.shape()[0] != targets.shape()[0] {
            bail!(
                "PairDataset",
                "inputs {:?} and targets {:?} need the same leading dim",
                inputs.shape(),
                targets.shape()
            );
        }
        Ok(PairDataset { inputs, targets })
    }

    /// All inputs.
    pub fn inputs(&self) -> &Array {
        &self.inputs
    }

    /// All targets.
    pub fn targets(&self) -> &Array {
        &self.targets
    }
}

impl Dataset for PairDataset {
    type Item = (Array, Array);
    fn len(&self) -> usize {
        self.inputs.shape()[0]
    }
    fn get(&self, index: usize) -> Result<(Array, Array)> {
        Ok((row(&self.inputs, index)?, row(&self.targets, index)?))
    }
}
