//! DataLoader: batching, seeded shuffling, collation, workers and clean shutdown.

use kiln_data::{stack, ArrayDataset, Collate, DataLoader, Dataset, PairDataset, Rng};
use kiln_tensor::{Array, DType, Error, Result};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `n` samples: features `[i, i + 0.5]`, label `i`.
fn numbered(n: usize) -> ArrayDataset {
    let x: Vec<f32> = (0..n).flat_map(|i| [i as f32, i as f32 + 0.5]).collect();
    ArrayDataset::from_labels(Array::from_vec(x, &[n, 2]).unwrap(), (0..n as i64).collect()).unwrap()
}

/// The labels of every batch of an epoch.
fn epoch_labels<D>(loader: &DataLoader<D>, e: u64) -> Vec<Vec<i64>>
where
    D: Dataset<Item = (Array, i64)> + 'static,
{
    loader
        .epoch(e)
        .map(|b| {
            let (x, y) = b.unwrap();
            let y = y.data().to_vec::<i64>().unwrap();
            // The features belong to the same samples as the labels.
            let x = x.data().to_vec_f32().unwrap();
            for (k, &l) in y.iter().enumerate() {
                assert_eq!((x[2 * k], x[2 * k + 1]), (l as f32, l as f32 + 0.5));
            }
            y
        })
        .collect()
}

#[test]
fn batches_in_order_with_and_without_drop_last() {
    let loader = DataLoader::new(numbered(10), 4).unwrap();
    assert_eq!(loader.len(), 3);
    assert_eq!(epoch_labels(&loader, 0), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    let loader = DataLoader::new(numbered(10), 4).unwrap().drop_last(true);
    assert_eq!(loader.len(), 2);
    assert_eq!(epoch_labels(&loader, 0), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    let it = loader.epoch(0);
    assert_eq!(it.len(), 2);
    assert!(DataLoader::new(numbered(3), 0).is_err());
    let empty = DataLoader::new(numbered(3), 4).unwrap().drop_last(true);
    assert!(empty.is_empty() && empty.epoch(0).next().is_none());
}

#[test]
fn batches_are_tensors_of_the_documented_shapes_and_dtypes() {
    let loader = DataLoader::new(numbered(5), 2).unwrap();
    let (x, y) = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!((x.shape(), x.dtype()), (&[2, 2][..], DType::F32));
    assert_eq!((y.shape(), y.dtype()), (&[2][..], DType::I64));
    assert!(!x.requires_grad() && !y.requires_grad());

    // (Array, Array) pairs: both stacked, any dtype.
    let tokens = Array::from_vec((0..12i64).collect(), &[4, 3]).unwrap();
    let pairs = PairDataset::new(tokens.clone(), tokens).unwrap();
    let (a, b) = DataLoader::new(pairs, 3).unwrap().epoch(0).next().unwrap().unwrap();
    assert_eq!((a.shape(), b.dtype()), (&[3, 3][..], DType::I64));
    assert_eq!(a.data().to_vec::<i64>().unwrap(), (0..9).collect::<Vec<_>>());

    // Plain arrays: images [1, 2, 2] -> [B, 1, 2, 2].
    let imgs = Array::from_vec((0..12).map(|v| v as f32).collect(), &[3, 1, 2, 2]).unwrap();
    let batches: Vec<_> = DataLoader::new(imgs, 2).unwrap().epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches[0].shape(), &[2, 1, 2, 2]);
    assert_eq!(batches[1].data().to_vec_f32().unwrap(), vec![8.0, 9.0, 10.0, 11.0]);
}

#[test]
fn collation_copies_strided_items_and_rejects_mixed_shapes() {
    // Transposed (non-contiguous) items are gathered into the batch.
    let a = Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap().t().unwrap();
    let b = Array::from_vec(vec![5.0f32, 6.0, 7.0, 8.0], &[2, 2]).unwrap();
    let s = stack(&[a, b.clone()]).unwrap();
    assert_eq!(s.shape(), &[2, 2, 2]);
    assert_eq!(s.to_vec_f32().unwrap(), vec![1.0, 3.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let e = <Array as Collate>::collate(vec![b.clone(), Array::zeros(&[3])]).unwrap_err().to_string();
    assert!(e.contains("collate") && e.contains("[3]"), "{e}");
    let i = Array::from_vec(vec![1i64, 2, 3, 4], &[2, 2]).unwrap();
    let e = stack(&[b, i]).unwrap_err().to_string();
    assert!(e.contains("i64"), "{e}");
    assert!(stack(&[]).is_err());
}

#[test]
fn shuffled_epochs_are_permutations_fixed_by_seed_and_epoch() {
    let make = || DataLoader::new(numbered(23), 5).unwrap().shuffle(true).seed(99);
    let loader = make();
    let e0 = epoch_labels(&loader, 0);
    let e1 = epoch_labels(&loader, 1);
    let flat = |e: &Vec<Vec<i64>>| e.iter().flatten().copied().collect::<Vec<_>>();
    let mut sorted = flat(&e0);
    sorted.sort_unstable();
    assert_eq!(sorted, (0..23).collect::<Vec<_>>());
    assert_ne!(flat(&e0), flat(&e1), "epochs reshuffle");
    assert_eq!(flat(&e1), loader.order(1).iter().map(|&i| i as i64).collect::<Vec<_>>());
    // A fresh loader (a resumed run) reproduces epoch 1 without running epoch 0.
    assert_eq!(epoch_labels(&make(), 1), e1);
    // iter() walks the epochs in turn; set_epoch resumes.
    let l = make();
    let labels = |it: kiln_data::Epoch<ArrayDataset>| {
        it.map(|b| b.unwrap().1.data().to_vec::<i64>().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(labels(l.iter()), e0);
    assert_eq!(labels(l.iter()), e1);
    l.set_epoch(1);
    assert_eq!(l.current_epoch(), 1);
    assert_eq!(labels((&l).into_iter()), e1);
    // Another seed, another order.
    let other = DataLoader::new(numbered(23), 5).unwrap().shuffle(true).seed(100);
    assert_ne!(other.order(0), loader.order(0));
}

#[test]
fn workers_give_the_same_batches_as_inline_loading() {
    for workers in [1, 2, 3, 7] {
        let base = DataLoader::new(numbered(50), 4).unwrap().shuffle(true).seed(5);
        let par = DataLoader::new(numbered(50), 4).unwrap().shuffle(true).seed(5).num_workers(workers).prefetch(1);
        for e in 0..3 {
            assert_eq!(epoch_labels(&par, e), epoch_labels(&base, e), "{workers} workers, epoch {e}");
        }
    }
}

#[test]
fn random_transforms_get_per_epoch_seeds_independent_of_workers() {
    let ds = || numbered(12).map_random(|(x, y), rng: &mut Rng| Ok((x, y + 1000 * rng.below(1000) as i64)));
    let draws = |loader: &DataLoader<_>, e| -> Vec<i64> {
        loader
            .epoch(e)
            .flat_map(|b: Result<(_, kiln_autograd::Tensor)>| b.unwrap().1.data().to_vec::<i64>().unwrap())
            .collect()
    };
    let inline = DataLoader::new(ds(), 5).unwrap().seed(3);
    let workers = DataLoader::new(ds(), 5).unwrap().seed(3).num_workers(3);
    assert_eq!(draws(&inline, 0), draws(&workers, 0));
    assert_ne!(draws(&inline, 0), draws(&inline, 1), "augmentation differs per epoch");
    assert_eq!(draws(&inline, 1), draws(&workers, 1));
}

/// A dataset that counts reads, records the reading threads and can be slow or fail.
struct Probe {
    n: usize,
    reads: Arc<AtomicUsize>,
    threads: Arc<Mutex<HashSet<String>>>,
    delay: Duration,
    fail_at: Option<usize>,
    panic_at: Option<usize>,
}

impl Probe {
    fn new(n: usize) -> Probe {
        Probe {
            n,
            reads: Arc::default(),
            threads: Arc::default(),
            delay: Duration::ZERO,
            fail_at: None,
            panic_at: None,
        }
    }
}

impl Dataset for Probe {
    type Item = Array;
    fn len(&self) -> usize {
        self.n
    }
    fn get(&self, i: usize) -> Result<Array> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let name = std::thread::current().name().unwrap_or("?").to_string();
        self.threads.lock().unwrap().insert(name);
        std::thread::sleep(self.delay);
        if self.fail_at == Some(i) {
            return Err(Error::Msg(format!("sample {i} is broken")));
        }
        if self.panic_at == Some(i) {
            panic!("sample {i} panics");
        }
        Array::from_vec(vec![i as f32], &[1])
    }
}

#[test]
fn workers_run_on_their_own_threads_and_prefetch() {
    let mut p = Probe::new(40);
    p.delay = Duration::from_millis(2);
    let (reads, threads) = (p.reads.clone(), p.threads.clone());
    let loader = DataLoader::new(p, 4).unwrap().num_workers(2).prefetch(2);
    let mut it = loader.epoch(0);
    // Before the first batch is asked for, the workers are already reading.
    let t = Instant::now();
    while reads.load(Ordering::SeqCst) < 8 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(reads.load(Ordering::SeqCst) >= 8);
    let first = it.next().unwrap().unwrap();
    assert_eq!(first.data().to_vec_f32().unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
    let rest: Vec<f32> = it.flat_map(|b| b.unwrap().data().to_vec_f32().unwrap()).collect();
    assert_eq!(rest, (4..40).map(|v| v as f32).collect::<Vec<_>>());
    let names = threads.lock().unwrap().clone();
    assert_eq!(names, ["kiln-data-0", "kiln-data-1"].iter().map(|s| s.to_string()).collect::<HashSet<_>>());
}

#[test]
fn dropping_an_epoch_midway_stops_the_workers() {
    let mut p = Probe::new(10_000);
    p.delay = Duration::from_micros(200);
    let reads = p.reads.clone();
    let loader = DataLoader::new(p, 8).unwrap().num_workers(3).prefetch(2);
    let mut it = loader.epoch(0);
    it.next().unwrap().unwrap();
    drop(it); // joins the workers
    let after_drop = reads.load(Ordering::SeqCst);
    // At most: the batch taken, each worker's full queue and the one it was building.
    assert!(after_drop <= 8 * (1 + 3 * (2 + 1)), "{after_drop} reads");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(reads.load(Ordering::SeqCst), after_drop, "no worker still reads");
    // The loader still works afterwards.
    assert_eq!(loader.epoch(1).next().unwrap().unwrap().shape(), &[8, 1]);
}

#[test]
fn read_errors_and_worker_panics_surface_as_errors() {
    for workers in [0, 2] {
        let mut p = Probe::new(12);
        p.fail_at = Some(6);
        let out: Vec<_> = DataLoader::new(p, 4).unwrap().num_workers(workers).epoch(0).collect();
        assert_eq!(out.len(), 3);
        assert!(out[0].is_ok() && out[2].is_ok());
        let e = out[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("sample 6 is broken"), "{e}");
    }
    let mut p = Probe::new(12);
    p.panic_at = Some(5);
    let out: Vec<_> = DataLoader::new(p, 4).unwrap().num_workers(2).epoch(0).collect();
    assert!(out[0].is_ok());
    let e = out.last().unwrap().as_ref().unwrap_err().to_string();
    assert!(e.contains("worker 1") && e.contains("batch 1"), "{e}");
}
