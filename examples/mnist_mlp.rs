//! MNIST with a multi-layer perceptron, trained with kiln-train's `Trainer`: the mission's E1
//! configuration, matching PyTorch's `shared/bench/mission/e1_mnist_mlp.py`.
//!
//! Model 784-512-512-10 with ReLU and PyTorch's default initialisation; inputs are pixels/255
//! (no normalisation); Adam lr 1e-3, batch 128 reshuffled every epoch (last partial batch
//! kept), cross-entropy, 3 epochs (469 steps each). PyTorch reaches 96.51% / 97.41% / 97.31%
//! test accuracy after epochs 1 / 2 / 3.
//!
//! ```text
//! cargo run --release --example mnist_mlp -- [--data DIR] [--epochs 3] [--batch-size 128]
//!     [--lr 1e-3] [--max-steps N] [--threads N] [--csv FILE] [--plot FILE.svg]
//! ```
//!
//! `--seed` (default 0) seeds the initialisation and the shuffling. The data folder is `--data DIR`, else `$KILN_MNIST_DIR`, else `../shared/assets/mnist`. Each
//! epoch prints one `epoch=E/N step=S train_loss=.. train_acc=.. val_loss=.. val_acc=..
//! seconds=..` line (val = the 10000 test images; seconds = training only), then a JSON line.

#[path = "common/mnist.rs"]
mod mnist;

use kiln::data::{DataLoader, Dataset};
use kiln::nn::{init, Flatten, Linear, ReLU, Sequential};
use kiln::optim::Adam;
use kiln::prelude::*;
use kiln::train::Trainer;

const USAGE: &str = "mnist_mlp [--data DIR] [--epochs 3] [--batch-size 128] [--lr 1e-3] [--max-steps N] \
                     [--threads N] [--csv FILE] [--plot FILE.svg] [--seed 0]";

fn main() {
    if let Err(e) = run() {
        eprintln!("mnist_mlp: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = mnist::Args::parse(
        &["data", "epochs", "batch-size", "lr", "max-steps", "threads", "csv", "plot", "seed"],
        USAGE,
    )?;
    let threads = mnist::set_threads(&args)?;
    let (epochs, batch) = (args.get_or("epochs", 3)?, args.get_or("batch-size", 128)?);
    let seed = args.get_or("seed", 0u64)?;
    let (train, test) = mnist::load(&args)?;
    println!("mnist_mlp: {} train / {} test images, {threads} threads", train.len(), test.len());

    // One worker thread collates the next batches while the model trains.
    let train = DataLoader::new(train, batch)?.shuffle(true).seed(seed).num_workers(1);
    let test = DataLoader::new(test, 1000)?.num_workers(1);

    let mut rng = init::rng(seed);
    let mut model = Sequential::new()
        .with(Flatten::default())
        .with(Linear::new(784, 512, true, &mut rng))
        .with(ReLU)
        .with(Linear::new(512, 512, true, &mut rng))
        .with(ReLU)
        .with(Linear::new(512, 10, true, &mut rng));
    let mut opt = Adam::new(model.parameters(), args.get_or("lr", 1e-3)?);

    let mut trainer = Trainer::new(&mut model, &mut opt).epochs(epochs).validation(&test);
    if let Some(n) = args.get::<usize>("max-steps")? {
        trainer = trainer.max_steps(n);
    }
    if let Some(p) = args.get::<String>("csv")? {
        trainer = trainer.csv_log(p);
    }
    if let Some(p) = args.get::<String>("plot")? {
        trainer = trainer.plot(p);
    }
    let history = trainer.fit(&train)?;
    mnist::print_json("mnist_mlp", "e1", threads, batch, &history);
    Ok(())
}
