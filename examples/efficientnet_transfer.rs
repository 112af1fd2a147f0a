//! Transfer learning with a frozen, pretrained EfficientNet-Lite0 on MNIST: the mission's E5
//! configuration, matching PyTorch's `shared/bench/mission/e5_effnet_transfer.py`.
//!
//! The first 2000 MNIST training images and the first 1000 test images are resized 28 -> 112
//! (bilinear, `align_corners=False`), repeated to 3 channels and normalised with ImageNet's mean
//! and std. The backbone runs once per image in evaluation mode (BatchNorm running statistics,
//! no graph recorded) and its pooled 1280-d features are kept; a `Linear(1280, 10)` head
//! (PyTorch's default initialisation, seed 0) is then trained on them with Adam lr 1e-3,
//! batch 64, 10 epochs, cross-entropy. PyTorch reaches 89.20% test accuracy after 10 epochs.
//!
//! ```text
//! cargo run --release --example efficientnet_transfer -- [--model DIR] [--data DIR]
//!     [--train 2000] [--test 1000] [--epochs 10] [--threads N] [--seed 0]
//! ```
//!
//! The weights folder (holding `model.safetensors`) is `--model DIR`, else
//! `$KILN_EFFICIENTNET_DIR`, else `../shared/assets/efficientnet-lite0`; the MNIST folder is
//! found as in the other MNIST examples (`--data`, `$KILN_MNIST_DIR`, `../shared/assets/mnist`).
//! Prints one line per epoch, then a JSON line with the feature and head timings.

#[path = "common/mnist.rs"]
#[allow(dead_code)] // print_json: this example prints its own JSON line
mod mnist;

use kiln::data::{transforms, ArrayDataset, DataLoader, Dataset, Resize};
use kiln::models::EfficientNet;
use kiln::nn::{init, Linear};
use kiln::optim::Adam;
use kiln::prelude::*;
use kiln::train::Trainer;
use std::path::PathBuf;
use std::time::Instant;

const USAGE: &str = "efficientnet_transfer [--model DIR] [--data DIR] [--train 2000] [--test 1000] \
                     [--epochs 10] [--threads N] [--seed 0]";

/// ImageNet's per-channel mean and std, which the backbone was trained with.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// The side the 28x28 digits are resized to.
const SIDE: usize = 112;
/// Images per backbone forward pass (as the PyTorch script).
const FEATURE_BATCH: usize = 50;

fn main() {
    if let Err(e) = run() {
        eprintln!("efficientnet_transfer: {e}");
        std::process::exit(1);
    }
}

/// The weights folder: `--model`, else `$KILN_EFFICIENTNET_DIR`, else the shared assets.
fn model_dir(args: &mnist::Args) -> Result<PathBuf> {
    let dir = args
        .get::<String>("model")?
        .or_else(|| std::env::var("KILN_EFFICIENTNET_DIR").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/assets/efficientnet-lite0"));
    if !dir.join("model.safetensors").is_file() {
        return Err(Error::Msg(format!(
            "no model.safetensors in {} (pass --model DIR or set KILN_EFFICIENTNET_DIR; the README says how \
             to obtain EfficientNet-Lite0's weights)",
            dir.display()
        )));
    }
    Ok(dir)
}

/// Pooled backbone features `[n, 1280]` of the first `n` images of `data` (`[N, 1, 28, 28]`,
/// pixels/255), computed `FEATURE_BATCH` images at a time without recording a graph.
fn features(model: &EfficientNet, data: &ArrayDataset, n: usize, resize: &Resize) -> Result<Array> {
    let images = data.features();
    let mut parts = Vec::new();
    for start in (0..n).step_by(FEATURE_BATCH) {
        let len = FEATURE_BATCH.min(n - start);
        let gray = resize.apply(&images.narrow(0, start, len)?)?;
        let rgb = transforms::normalize(&Array::cat(&[&gray, &gray, &gray], 1)?, &MEAN, &STD)?;
        let f = no_grad(|| model.features(&Tensor::from_array(rgb)))?;
        parts.push(f.data());
    }
    Array::cat(&parts.iter().collect::<Vec<_>>(), 0)
}

fn run() -> Result<()> {
    let args =
        mnist::Args::parse(&["model", "data", "train", "test", "epochs", "threads", "seed", "batch-size"], USAGE)?;
    let threads = mnist::set_threads(&args)?;
    let (n_train, n_test) = (args.get_or("train", 2000usize)?, args.get_or("test", 1000usize)?);
    let (epochs, batch, seed) =
        (args.get_or("epochs", 10)?, args.get_or("batch-size", 64)?, args.get_or("seed", 0u64)?);
    let (train, test) = mnist::load(&args)?;
    if n_train > train.len() || n_test > test.len() || n_train == 0 || n_test == 0 {
        return Err(Error::Msg(format!(
            "--train {n_train} / --test {n_test}: MNIST has {} / {} images",
            train.len(),
            test.len()
        )));
    }

    let dir = model_dir(&args)?;
    let mut backbone = EfficientNet::from_pretrained(&dir)?;
    backbone.eval();
    backbone.freeze("*")?;
    println!(
        "efficientnet_transfer: backbone {} ({} parameters, frozen, eval mode), {n_train} train / {n_test} test \
         images at {SIDE}x{SIDE}, {threads} threads",
        dir.display(),
        backbone.num_parameters().total
    );

    let resize = Resize::new((28, 28), (SIDE, SIDE))?;
    let t0 = Instant::now();
    let train_features = features(&backbone, &train, n_train, &resize)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let test_features = features(&backbone, &test, n_test, &resize)?;
    let test_seconds = t1.elapsed().as_secs_f64();
    let per_second = (n_train + n_test) as f64 / (train_seconds + test_seconds);
    println!(
        "features: {n_train} in {train_seconds:.2} s + {n_test} in {test_seconds:.2} s ({per_second:.1} images/s)"
    );
    drop(backbone);

    let labels = |d: &ArrayDataset, n: usize| d.label_slice()[..n].to_vec();
    let train = ArrayDataset::from_labels(train_features, labels(&train, n_train))?;
    let test = ArrayDataset::from_labels(test_features, labels(&test, n_test))?;
    let train = DataLoader::new(train, batch)?.shuffle(true).seed(seed);
    let test = DataLoader::new(test, n_test)?;

    let mut head = Linear::new(1280, 10, true, &mut init::rng(seed));
    let mut opt = Adam::new(head.parameters(), 1e-3);
    let t2 = Instant::now();
    let history = Trainer::new(&mut head, &mut opt).epochs(epochs).validation(&test).fit(&train)?;
    let head_seconds = t2.elapsed().as_secs_f64();
    let accs: Vec<String> =
        history.epochs.iter().map(|e| format!("{:.2}", 100.0 * e.val_accuracy().unwrap_or(f64::NAN))).collect();
    println!(
        r#"{{"example": "efficientnet_transfer", "threads": {threads}, "train_images": {n_train}, "test_images": {n_test}, "feature_seconds_train": {train_seconds:.3}, "feature_seconds_test": {test_seconds:.3}, "images_per_second": {per_second:.2}, "head_train_seconds": {head_seconds:.3}, "test_acc": [{}], "final_test_acc": {:.2}}}"#,
        accs.join(", "),
        100.0 * history.last().and_then(|e| e.val_accuracy()).unwrap_or(f64::NAN),
    );
    Ok(())
}
