//! A training loop written by hand, without kiln-train's `Trainer`: every step is visible.
//! Trains a small CNN on the sklearn 8x8 digits committed in the repository
//! (`data/digits`), with per-step cosine learning-rate decay and gradient clipping, and
//! evaluates on a held-out 20% after every epoch.
//!
//! With several threads and large layers, wrapping the step in
//! `kiln::autograd::on_pool(|| { ... })` hands it to kiln's worker threads once instead of once
//! per parallel kernel, as `Trainer` does; this loop's layers are too small to need it.
//!
//! `cargo run --release --example custom_loop`

use kiln::autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
use kiln::data::{DataLoader, Dataset, Digits};
use kiln::nn::{init, Conv2d, Flatten, Linear, ReLU, Sequential};
use kiln::optim::{clip_grad_norm, CosineAnnealingLR};
use kiln::prelude::*;
use kiln::train::count_top_k;

const EPOCHS: u64 = 10;

fn main() -> Result<()> {
    // Data: images [1, 8, 8] in [0, 1], a seeded 80/20 split, shuffled batches of 32.
    let (train, test) = Digits::embedded()?.to_dataset()?.train_val_split(0.2, 0)?;
    println!("digits: {} train, {} test images", train.len(), test.len());
    let train = DataLoader::new(train, 32)?.shuffle(true).seed(0);
    let test = DataLoader::new(test, 256)?;

    // Model: conv 1->16 (3x3, pad 1), ReLU, flatten, linear 1024->10.
    let mut rng = init::rng(0);
    let mut model = Sequential::new()
        .with(Conv2d::builder(1, 16, [3, 3]).padding([1, 1]).build(&mut rng)?)
        .with(ReLU)
        .with(Flatten::default())
        .with(Linear::new(16 * 8 * 8, 10, true, &mut rng));
    let params = model.parameters();
    let mut opt = Adam::new(params.clone(), 3e-3);
    let mut sched = CosineAnnealingLR::new(&mut opt, EPOCHS as usize * train.len(), 0.0)?;
    let ce = CrossEntropyOptions::default();

    for epoch in 0..EPOCHS {
        // Train: forward, loss, backward, clip, step, schedule.
        model.train();
        let (mut loss_sum, mut seen) = (0.0, 0);
        for batch in train.epoch(epoch) {
            let (x, y) = batch?;
            let loss = cross_entropy(&model.forward(&x)?, &y, &ce)?;
            opt.zero_grad();
            loss.backward()?;
            clip_grad_norm(&params, 5.0, 2.0)?;
            opt.step()?;
            sched.step(&mut opt);
            loss_sum += loss.item()? * y.numel() as f32;
            seen += y.numel();
        }

        // Evaluate: eval mode, no graph, count the correct argmaxes.
        model.eval();
        let (mut correct, mut total) = (0, 0);
        for batch in test.epoch(0) {
            let (x, y) = batch?;
            let logits = no_grad(|| model.forward(&x))?;
            let (hits, counted) = count_top_k(&logits.data(), &y.data(), 1)?;
            correct += hits;
            total += counted;
        }
        println!(
            "epoch {:>2}: train loss {:.4}, test accuracy {:.1}%, lr {:.2e}",
            epoch + 1,
            loss_sum / seen as f32,
            100.0 * correct as f32 / total as f32,
            opt.lr()
        );
    }
    Ok(())
}
