//! [`Batches`]: what [`fit`](crate::Trainer::fit), [`evaluate`](crate::evaluate) and
//! [`predict`](crate::predict) read, implemented for kiln-data's [`DataLoader`].

use kiln_autograd::{Result, Tensor};
use kiln_data::{Collate, DataLoader, Dataset};

/// The iterator of one epoch's batches: `(inputs, targets)`, the targets absent for
/// unlabelled data.
pub type BatchIter<'a> = Box<dyn Iterator<Item = Result<(Tensor, Option<Tensor>)>> + 'a>;

/// A loader's batch as `(inputs, targets)`: `(Tensor, Tensor)` pairs and bare input tensors.
pub trait IntoBatch {
    /// The inputs and, when the batch has them, the targets.
    fn into_batch(self) -> (Tensor, Option<Tensor>);
}

impl IntoBatch for (Tensor, Tensor) {
    fn into_batch(self) -> (Tensor, Option<Tensor>) {
        (self.0, Some(self.1))
    }
}

impl IntoBatch for Tensor {
    fn into_batch(self) -> (Tensor, Option<Tensor>) {
        (self, None)
    }
}

/// A source of batches, epoch by epoch.
pub trait Batches {
    /// The batches of epoch `epoch` (0-based; a shuffling loader reorders per epoch).
    fn batches(&self, epoch: u64) -> BatchIter<'_>;
    /// Batches per epoch.
    fn num_batches(&self) -> usize;
    /// Samples per epoch.
    fn num_samples(&self) -> usize;
}

impl<D> Batches for DataLoader<D>
where
    D: Dataset + 'static,
    D::Item: Collate,
    <D::Item as Collate>::Batch: IntoBatch,
{
    fn batches(&self, epoch: u64) -> BatchIter<'_> {
        Box::new(self.epoch(epoch).map(|b| b.map(IntoBatch::into_batch)))
    }
    fn num_batches(&self) -> usize {
        self.len()
    }
    fn num_samples(&self) -> usize {
        let n = self.dataset().len();
        n.min(self.len() * self.batch_size())
    }
}

/// Fixed, ready-made `(inputs, targets)` batches (the same every epoch): handy for tests and
/// for data already in memory as batches.
impl Batches for [(Tensor, Tensor)] {
    fn batches(&self, _epoch: u64) -> BatchIter<'_> {
        Box::new(self.iter().map(|(x, y)| Ok((x.clone(), Some(y.clone())))))
    }
    fn num_batches(&self) -> usize {
        self.len()
    }
    fn num_samples(&self) -> usize {
        self.iter().map(|(x, _)| x.shape().first().copied().unwrap_or(1)).sum()
    }
}

impl Batches for Vec<(Tensor, Tensor)> {
    fn batches(&self, epoch: u64) -> BatchIter<'_> {
        self.as_slice().batches(epoch)
    }
    fn num_batches(&self) -> usize {
        self.len()
    }
    fn num_samples(&self) -> usize {
        self.as_slice().num_samples()
    }
}
