//! MNIST with a small convolutional network, trained with kiln-train's `Trainer`.
//!
//! `--config e2` (the default) is the mission's E2 configuration, matching PyTorch's
//! `shared/bench/mission/e2_mnist_cnn.py`: conv 1->32 3x3 pad 1, ReLU, max-pool 2,
//! conv 32->64 3x3 pad 1, ReLU, max-pool 2, flatten (C, H, W order: 3136), linear 3136->128,
//! ReLU, linear 128->10; PyTorch's default initialisation; pixels/255 (no normalisation);
//! Adam lr 1e-3, batch 64 reshuffled every epoch (last partial batch kept), 1 epoch (938
//! steps). PyTorch reaches 98.10% test accuracy.
//!
//! `--config best` is kiln's own recipe, aiming at >= 99.0% test accuracy in a few minutes on
//! two cores:
//! - the E2 network with a BatchNorm2d after each convolution (before the ReLU);
//! - augmentation: a random 28x28 crop of the image zero-padded by 2 pixels, drawn per sample
//!   and per epoch (kiln-data's `random_crop` through `Dataset::map_random`);
//! - batch 128, Adam with a one-cycle schedule stepped per batch (peak lr 3e-3, 30% warm-up,
//!   cosine annealing; PyTorch's OneCycleLR defaults otherwise), 4 epochs (1876 steps).
//!
//! ```text
//! cargo run --release --example mnist_cnn -- [--config e2|best] [--data DIR] [--epochs N]
//!     [--batch-size N] [--lr LR] [--max-steps N] [--threads N] [--csv FILE] [--plot FILE.svg]
//! ```
//!
//! `--seed` (default 0) seeds the initialisation and the shuffling. `--lr` is Adam's rate for e2 and the one-cycle peak for best. The data folder is
//! `--data DIR`, else `$KILN_MNIST_DIR`, else `../shared/assets/mnist`. Each epoch prints one
//! `epoch=E/N step=S train_loss=.. train_acc=.. val_loss=.. val_acc=.. seconds=..` line (val =
//! the 10000 test images; seconds = training only), then a JSON line.

#[path = "common/mnist.rs"]
mod mnist;

use kiln::data::{random_crop, DataLoader, Dataset};
use kiln::nn::{init, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential};
use kiln::optim::{Adam, OneCycle, OneCycleLR};
use kiln::prelude::*;
use kiln::train::{LrSchedule, Trainer};

const USAGE: &str = "mnist_cnn [--config e2|best] [--data DIR] [--epochs N] [--batch-size N] [--lr LR] \
                     [--max-steps N] [--threads N] [--csv FILE] [--plot FILE.svg] [--seed 0]";

/// The E2 network; with `batch_norm`, a BatchNorm2d after each convolution.
fn network(batch_norm: bool, seed: u64) -> Result<Sequential> {
    let mut rng = init::rng(seed);
    let mut net = Sequential::new();
    for (cin, cout) in [(1, 32), (32, 64)] {
        net.push(Conv2d::builder(cin, cout, [3, 3]).padding([1, 1]).build(&mut rng)?);
        if batch_norm {
            net.push(BatchNorm2d::new(cout));
        }
        net.push(ReLU);
        net.push(MaxPool2d::new([2, 2]));
    }
    Ok(net
        .with(Flatten::default())
        .with(Linear::new(3136, 128, true, &mut rng))
        .with(ReLU)
        .with(Linear::new(128, 10, true, &mut rng)))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("mnist_cnn: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let known = ["config", "data", "epochs", "batch-size", "lr", "max-steps", "threads", "csv", "plot", "seed"];
    let args = mnist::Args::parse(&known, USAGE)?;
    let config: String = args.get_or("config", "e2".to_string())?;
    let best = match config.as_str() {
        "e2" => false,
        "best" => true,
        c => return Err(Error::Msg(format!("--config {c}: expected e2 or best\n{USAGE}"))),
    };
    let threads = mnist::set_threads(&args)?;
    let epochs = args.get_or("epochs", if best { 4 } else { 1 })?;
    let batch = args.get_or("batch-size", if best { 128 } else { 64 })?;
    let lr = args.get_or("lr", if best { 3e-3 } else { 1e-3 })?;
    let max_steps = args.get::<usize>("max-steps")?;
    let seed = args.get_or("seed", 0u64)?;
    let (train, test) = mnist::load(&args)?;
    println!("mnist_cnn --config {config}: {} train / {} test images, {threads} threads", train.len(), test.len());
    let test = DataLoader::new(test, 1000)?.num_workers(1);

    let mut model = network(best, seed)?;
    let mut opt = Adam::new(model.parameters(), lr);
    let history = if best {
        // A fresh crop per sample and epoch, prepared by the loader's worker thread.
        let augmented = train.map_random(|(x, y), rng| Ok((random_crop(&x, (28, 28), 2, rng)?, y)));
        let train = DataLoader::new(augmented, batch)?.shuffle(true).seed(seed).num_workers(1);
        let total = max_steps.unwrap_or(usize::MAX).min(epochs * train.len());
        let sched = OneCycleLR::new(&mut opt, OneCycle::new(lr as f64, total))?;
        let trainer = Trainer::new(&mut model, &mut opt).callback(LrSchedule::per_step(sched));
        configure(trainer, &args, epochs, &test)?.fit(&train)?
    } else {
        let train = DataLoader::new(train, batch)?.shuffle(true).seed(seed).num_workers(1);
        configure(Trainer::new(&mut model, &mut opt), &args, epochs, &test)?.fit(&train)?
    };
    mnist::print_json("mnist_cnn", &config, threads, batch, &history);
    Ok(())
}

/// The options both configs share: epochs, test set, `--max-steps`, `--csv`, `--plot`.
fn configure<'a>(
    mut t: Trainer<'a, Sequential>,
    args: &mnist::Args,
    epochs: usize,
    test: &'a dyn kiln::train::Batches,
) -> Result<Trainer<'a, Sequential>> {
    t = t.epochs(epochs).validation(test);
    if let Some(n) = args.get::<usize>("max-steps")? {
        t = t.max_steps(n);
    }
    if let Some(p) = args.get::<String>("csv")? {
        t = t.csv_log(p);
    }
    if let Some(p) = args.get::<String>("plot")? {
        t = t.plot(p);
    }
    Ok(t)
}
