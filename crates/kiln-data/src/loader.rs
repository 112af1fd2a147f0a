//! [`DataLoader`]: batching, seeded per-epoch shuffling, collation and parallel prefetch.

use crate::dataset::Dataset;
use crate::rng::{derive_seed, Rng};
use kiln_autograd::Tensor;
use kiln_tensor::{bail, Array, Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Sample types that can be batched: the items of one batch become tensors with a new
/// leading batch dim. Batches are plain tensors (no grad).
pub trait Collate: Send + Sized + 'static {
    /// The batched form.
    type Batch: Send + 'static;
    /// Combines the items of one batch (at least one), copying each item once.
    fn collate(items: Vec<Self>) -> Result<Self::Batch>;
}

/// Stacks same-shape, same-dtype arrays along a new dim 0 (one copy of each).
pub fn stack(items: &[Array]) -> Result<Array> {
    let Some(first) = items.first() else {
        bail!("collate", "cannot collate an empty batch");
    };
    if let Some((i, a)) = items.iter().enumerate().find(|(_, a)| a.dtype() != first.dtype()) {
        bail!("collate", "item 0 is {} but item {i} is {}", first.dtype(), a.dtype());
    }
    let refs: Vec<&Array> = items.iter().collect();
    Array::stack(&refs, 0).map_err(|e| match e {
        Error::Op { msg, .. } => Error::op("collate", msg),
        e => e,
    })
}

/// Arrays of one shape: one tensor `[B, ...]`.
impl Collate for Array {
    type Batch = Tensor;
    fn collate(items: Vec<Array>) -> Result<Tensor> {
        Ok(Tensor::from_array(stack(&items)?))
    }
}

/// `(input, class)`: inputs `[B, ...]` and an i64 tensor of classes `[B]`.
impl Collate for (Array, i64) {
    type Batch = (Tensor, Tensor);
    fn collate(items: Vec<(Array, i64)>) -> Result<(Tensor, Tensor)> {
        let (xs, ys): (Vec<Array>, Vec<i64>) = items.into_iter().unzip();
        let n = ys.len();
        Ok((Tensor::from_array(stack(&xs)?), Tensor::from_vec_i64(ys, &[n])?))
    }
}

/// `(input, target)` arrays: inputs `[B, ...]` and targets `[B, ...]`.
impl Collate for (Array, Array) {
    type Batch = (Tensor, Tensor);
    fn collate(items: Vec<(Array, Array)>) -> Result<(Tensor, Tensor)> {
        let (xs, ys): (Vec<Array>, Vec<Array>) = items.into_iter().unzip();
        Ok((Tensor::from_array(stack(&xs)?), Tensor::from_array(stack(&ys)?)))
    }
}

/// The stream tag of the epoch permutation.
const SHUFFLE_STREAM: u64 = 0x5348_5546;
/// The stream tag of the per-sample seeds.
const SAMPLE_STREAM: u64 = 0x5341_4d50;

/// Iterates a [`Dataset`] in batches, like PyTorch's `DataLoader`.
///
/// With `shuffle(true)`, the order of epoch `e` is a pure function of `(seed, e)`
/// ([`DataLoader::order`]), and each sample's random transforms get the seed
/// `f(seed, e, index)`, so a run resumed at epoch `e` sees exactly the batches it would have
/// seen. With `num_workers(n)`, `n > 0` plain threads (not the kernels' rayon pool) prepare
/// batches ahead of the consumer, in order, each holding at most `prefetch` finished batches.
///
/// ```
/// use kiln_data::{ArrayDataset, DataLoader, Dataset};
/// use kiln_tensor::Array;
/// let x = Array::from_vec((0..20).map(|v| v as f32).collect(), &[10, 2])?;
/// let ds = ArrayDataset::from_labels(x, (0..10).collect())?;
/// let loader = DataLoader::new(ds, 4)?.shuffle(true).seed(7).num_workers(2);
/// assert_eq!(loader.len(), 3); // 4 + 4 + 2
/// for epoch in 0..2 {
///     for batch in loader.epoch(epoch) {
///         let (x, y) = batch?; // x: [B, 2] f32, y: [B] i64
///         assert_eq!(x.shape()[0], y.shape()[0]);
///     }
/// }
/// # Ok::<(), kiln_tensor::Error>(())
/// ```
pub struct DataLoader<D: Dataset> {
    dataset: Arc<D>,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    drop_last: bool,
    num_workers: usize,
    prefetch: usize,
    next_epoch: AtomicU64,
}

impl<D: Dataset> std::fmt::Debug for DataLoader<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("samples", &self.dataset.len())
            .field("batch_size", &self.batch_size)
            .field("shuffle", &self.shuffle)
            .field("seed", &self.seed)
            .field("drop_last", &self.drop_last)
            .field("num_workers", &self.num_workers)
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl<D> DataLoader<D>
where
    D: Dataset + 'static,
    D::Item: Collate,
{
    /// A loader of `batch_size` samples per batch, in order, inline (no worker), seed 0.
    pub fn new(dataset: D, batch_size: usize) -> Result<DataLoader<D>> {
        DataLoader::from_arc(Arc::new(dataset), batch_size)
    }

    /// Like [`DataLoader::new`] over a shared dataset.
    pub fn from_arc(dataset: Arc<D>, batch_size: usize) -> Result<DataLoader<D>> {
        if batch_size == 0 {
            bail!("DataLoader", "batch_size must be at least 1");
        }
        Ok(DataLoader {
            dataset,
            batch_size,
            shuffle: false,
            seed: 0,
            drop_last: false,
            num_workers: 0,
            prefetch: 2,
            next_epoch: AtomicU64::new(0),
        })
    }

    /// Reshuffles the samples every epoch (seeded; see [`DataLoader::seed`]).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// The seed of the epoch permutations and of the per-sample seeds (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Drops the last batch when it is smaller than `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Prepares batches on `n` worker threads; `0` (the default) prepares them inline.
    pub fn num_workers(mut self, n: usize) -> Self {
        self.num_workers = n;
        self
    }

    /// Finished batches each worker may hold ahead of the consumer (at least 1; default 2).
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches.max(1);
        self
    }

    /// The epoch that [`DataLoader::iter`] runs next (to resume a run: `set_epoch`).
    pub fn set_epoch(&self, epoch: u64) {
        self.next_epoch.store(epoch, Ordering::Relaxed);
    }

    /// The epoch that [`DataLoader::iter`] runs next.
    pub fn current_epoch(&self) -> u64 {
        self.next_epoch.load(Ordering::Relaxed)
    }

    /// Number of batches per epoch.
    pub fn len(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// True when an epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<D> {
        &self.dataset
    }

    /// Samples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The sample order of `epoch`: `0..N` without shuffling, else a permutation that depends
    /// only on `(seed, epoch)`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        if self.shuffle {
            Rng::new(derive_seed(self.seed, &[SHUFFLE_STREAM, epoch])).permutation(n)
        } else {
            (0..n).collect()
        }
    }

    /// The batches of `epoch`.
    pub fn epoch(&self, epoch: u64) -> Epoch<D> {
        let plan = Arc::new(Plan {
            dataset: self.dataset.clone(),
            order: self.order(epoch),
            batch_size: self.batch_size,
            batches: self.len(),
            sample_seed: derive_seed(self.seed, &[SAMPLE_STREAM, epoch]),
        });
        let state = if self.num_workers == 0 || plan.batches == 0 {
            State::Inline
        } else {
            State::spawn(&plan, self.num_workers.min(plan.batches), self.prefetch)
        };
        Epoch { plan, epoch, next: 0, state, done: false }
    }

    /// The batches of the next epoch ([`DataLoader::current_epoch`]), then advances it.
    pub fn iter(&self) -> Epoch<D> {
        let e = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        self.epoch(e)
    }
}

impl<D> IntoIterator for &DataLoader<D>
where
    D: Dataset + 'static,
    D::Item: Collate,
{
    type Item = Result<<D::Item as Collate>::Batch>;
    type IntoIter = Epoch<D>;
    /// [`DataLoader::iter`]: the next epoch.
    fn into_iter(self) -> Epoch<D> {
        self.iter()
    }
}

/// What one epoch reads: shared by the consumer and the workers.
struct Plan<D> {
    dataset: Arc<D>,
    order: Vec<usize>,
    batch_size: usize,
    batches: usize,
    sample_seed: u64,
}

impl<D> Plan<D>
where
    D: Dataset,
    D::Item: Collate,
{
    /// Reads and collates batch `b`.
    fn batch(&self, b: usize) -> Result<<D::Item as Collate>::Batch> {
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let items = self.order[start..end]
            .iter()
            .map(|&i| self.dataset.get_seeded(i, derive_seed(self.sample_seed, &[i as u64])))
            .collect::<Result<Vec<_>>>()?;
        D::Item::collate(items)
    }
}

type BatchResult<D> = Result<<<D as Dataset>::Item as Collate>::Batch>;

enum State<D: Dataset>
where
    D::Item: Collate,
{
    Inline,
    Workers {
        /// Worker `k` sends batches `k, k + W, k + 2W, ...` on `receivers[k]`.
        receivers: Vec<Receiver<BatchResult<D>>>,
        handles: Vec<JoinHandle<()>>,
        stop: Arc<AtomicBool>,
    },
}

impl<D> State<D>
where
    D: Dataset + 'static,
    D::Item: Collate,
{
    fn spawn(plan: &Arc<Plan<D>>, workers: usize, prefetch: usize) -> State<D> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for k in 0..workers {
            let (tx, rx) = sync_channel(prefetch);
            let (plan, worker_stop) = (plan.clone(), stop.clone());
            let spawned = std::thread::Builder::new().name(format!("kiln-data-{k}")).spawn(move || {
                for b in (k..plan.batches).step_by(workers) {
                    if worker_stop.load(Ordering::Relaxed) {
                        return;
                    }
                    // A send fails once the consumer is gone: stop.
                    if tx.send(plan.batch(b)).is_err() {
                        return;
                    }
                }
            });
            match spawned {
                Ok(h) => {
                    receivers.push(rx);
                    handles.push(h);
                }
                Err(_) => {
                    // The OS refused a thread: stop those that started and load inline.
                    stop.store(true, Ordering::Relaxed);
                    drop(receivers);
                    for h in handles {
                        let _ = h.join();
                    }
                    return State::Inline;
                }
            }
        }
        State::Workers { receivers, handles, stop }
    }
}

/// The batches of one epoch, in order: `Result<batch>` items. Dropping it mid-epoch stops
/// and joins the workers.
pub struct Epoch<D: Dataset>
where
    D::Item: Collate,
{
    plan: Arc<Plan<D>>,
    epoch: u64,
    next: usize,
    state: State<D>,
    done: bool,
}

impl<D: Dataset> Epoch<D>
where
    D::Item: Collate,
{
    /// The epoch number.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl<D> Iterator for Epoch<D>
where
    D: Dataset,
    D::Item: Collate,
{
    type Item = Result<<D::Item as Collate>::Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next >= self.plan.batches {
            return None;
        }
        let b = self.next;
        self.next += 1;
        match &self.state {
            State::Inline => Some(self.plan.batch(b)),
            State::Workers { receivers, .. } => {
                let k = b % receivers.len();
                match receivers[k].recv() {
                    Ok(batch) => Some(batch),
                    Err(_) => {
                        // The worker's sender is gone before its batch: it panicked.
                        self.done = true;
                        Some(Err(Error::Msg(format!(
                            "DataLoader: worker {k} stopped (panicked) before batch {b} of epoch {}",
                            self.epoch
                        ))))
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.done { 0 } else { self.plan.batches - self.next };
        (left, Some(left))
    }
}

impl<D> ExactSizeIterator for Epoch<D>
where
    D: Dataset,
    D::Item: Collate,
{
}

impl<D: Dataset> Drop for Epoch<D>
where
    D::Item: Collate,
{
    fn drop(&mut self) {
        if let State::Workers { receivers, handles, stop } = &mut self.state {
            stop.store(true, Ordering::Relaxed);
            // Closing the channels wakes workers blocked on a full one; they then exit.
            receivers.clear();
            for h in handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}
