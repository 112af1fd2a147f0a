//! Quickstart: transfer learning on the sklearn 8x8 digits committed in the repository
//! (`data/digits`; no download).
//!
//! 1. Pretrain a small CNN on digits 0-4 with `kiln::train::Trainer`.
//! 2. Save it as safetensors (`kiln::io::save_module`) and reload it into a freshly built
//!    model (`kiln::io::load_module`).
//! 3. Freeze the feature layers, replace the head with a new 5-class one and fine-tune only
//!    the head on digits 5-9.
//!
//! It prints the test accuracies before and after fine-tuning and the trainable parameter
//! count. A few seconds on two cores.
//!
//! `cargo run --release --example quickstart`

use kiln::data::{Collate, DataLoader, Dataset, Digits, Labeled};
use kiln::io::{load_module, save_module, LoadOptions};
use kiln::nn::{init, Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential};
use kiln::prelude::*;
use kiln::train::{evaluate, Progress, Trainer};

/// Size of the feature vector: 32 channels of 4x4.
const FEATURES: usize = 32 * 4 * 4;

/// Feature layers (conv 1->16, conv 16->32, max-pool, flatten) and a linear classifier head.
#[derive(Module)]
struct Net {
    features: Sequential,
    head: Linear,
}

impl Net {
    fn new(classes: usize, seed: u64) -> Result<Net> {
        let mut rng = init::rng(seed);
        let features = Sequential::new()
            .with(Conv2d::builder(1, 16, [3, 3]).padding([1, 1]).build(&mut rng)?)
            .with(ReLU)
            .with(Conv2d::builder(16, 32, [3, 3]).padding([1, 1]).build(&mut rng)?)
            .with(ReLU)
            .with(MaxPool2d::new([2, 2])) // [32, 4, 4]
            .with(Flatten::default());
        Ok(Net { features, head: Linear::new(FEATURES, classes, true, &mut rng) })
    }
}

impl Forward for Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.features.forward(x)?)
    }
}

/// Batches of `batch` samples, reshuffled every epoch when `shuffle`.
fn loader<D: Dataset + 'static>(ds: D, batch: usize, shuffle: bool) -> Result<DataLoader<D>>
where
    D::Item: Collate,
{
    Ok(DataLoader::new(ds, batch)?.shuffle(shuffle).seed(0))
}

fn main() -> Result<()> {
    let start = std::time::Instant::now();
    // Images [1, 8, 8] in [0, 1]; a seeded 75/25 split; digits 0-4 and 5-9 (relabelled 0-4).
    let (train, test) = Digits::embedded()?.to_dataset()?.train_val_split(0.25, 0)?;
    let low = |l: i64| l < 5;
    let high_relabelled = |(x, y): (Array, i64)| Ok((x, y - 5));
    let train_a = loader(train.clone().filter_labels(low)?, 32, true)?;
    let test_a = loader(test.clone().filter_labels(low)?, 256, false)?;
    let train_b = loader(train.filter_labels(|l| l >= 5)?.map(high_relabelled), 32, true)?;
    let test_b = loader(test.filter_labels(|l| l >= 5)?.map(high_relabelled), 256, false)?;
    println!(
        "digits 0-4: {} train / {} test; digits 5-9: {} train / {} test",
        train_a.dataset().len(),
        test_a.dataset().len(),
        train_b.dataset().len(),
        test_b.dataset().len()
    );

    // 1. Pretrain on digits 0-4.
    let mut model = Net::new(5, 0)?;
    let mut opt = Adam::new(model.parameters(), 3e-3);
    Trainer::new(&mut model, &mut opt).epochs(8).progress(Progress::Silent).fit(&train_a)?;
    let pretrained = evaluate(&mut model, &test_a)?.accuracy.unwrap_or(0.0);
    println!("pretrained on 0-4: test accuracy {:.1}%", 100.0 * pretrained);

    // 2. Save as safetensors, reload into a freshly initialised model.
    let dir = std::env::temp_dir().join("kiln-quickstart");
    std::fs::create_dir_all(&dir).map_err(|e| Error::Msg(format!("{}: {e}", dir.display())))?;
    let path = dir.join("pretrained.safetensors");
    save_module(&model, &path)?;
    let mut model = Net::new(5, 1)?;
    load_module(&mut model, &path, &LoadOptions::default())?;
    let reloaded = evaluate(&mut model, &test_a)?.accuracy.unwrap_or(0.0);
    println!("reloaded from {}: test accuracy on 0-4 {:.1}%", path.display(), 100.0 * reloaded);

    // 3. Freeze the features, put on a new head, fine-tune the head on digits 5-9.
    model.freeze("features.*")?;
    model.head = Linear::new(FEATURES, 5, true, &mut init::rng(2));
    let count = model.num_parameters();
    println!("trainable parameters: {} of {}", count.trainable, count.total);
    let before = evaluate(&mut model, &test_b)?.accuracy.unwrap_or(0.0);
    println!("digits 5-9 before fine-tuning: test accuracy {:.1}%", 100.0 * before);
    let trainable: Vec<Tensor> = model.parameters().into_iter().filter(Tensor::requires_grad).collect();
    let mut opt = Adam::new(trainable, 1e-2);
    Trainer::new(&mut model, &mut opt).epochs(10).progress(Progress::Silent).fit(&train_b)?;
    let after = evaluate(&mut model, &test_b)?.accuracy.unwrap_or(0.0);
    println!("digits 5-9 after fine-tuning the head: test accuracy {:.1}%", 100.0 * after);
    println!("done in {:.1} s", start.elapsed().as_secs_f32());
    Ok(())
}
