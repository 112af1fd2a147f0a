//! Quickstart: a two-layer network trained on the sklearn 8x8 digits (committed in the repo,
//! `data/digits`) with kiln's autograd alone: parameters are plain tensors, the loss is
//! written out with `log_softmax`, and SGD with momentum updates the weights in place.
//!
//! `cargo run --release --example quickstart`

use kiln::data::Digits;
use kiln::nn::init;
use kiln::prelude::*;
use rand::seq::SliceRandom;

const HIDDEN: usize = 64;
const CLASSES: usize = 10;
const EPOCHS: usize = 30;
const BATCH: usize = 32;

/// Rows `idx` of `x` (a `[N, F]` array) as one batch tensor.
fn batch(x: &Array, idx: &[i64]) -> Result<Tensor> {
    let index = Tensor::from_vec_i64(idx.to_vec(), &[idx.len()])?;
    Tensor::from_array(x.clone()).try_index_select(0, &index)
}

/// Mean cross-entropy of `logits` `[B, C]` against one-hot `targets` `[B, C]`.
fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let nll = logits.try_log_softmax(-1)?.try_mul(targets)?.sum_all();
    Ok(nll.mul_scalar(-1.0 / logits.shape()[0] as f32))
}

fn accuracy(logits: &Tensor, labels: &[i64]) -> Result<f32> {
    let pred = logits.try_argmax(Some(-1), false)?.data().to_vec::<i64>()?;
    let correct = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(correct as f32 / labels.len() as f32)
}

fn main() -> Result<()> {
    let start = std::time::Instant::now();
    let digits = Digits::from_bytes(include_bytes!("../data/digits/digits.csv.gz"), "data/digits/digits.csv.gz")?;
    let images = digits.images.mul_scalar(1.0 / 16.0)?; // pixels to [0, 1]
    let labels = digits.labels.to_vec::<i64>()?;
    let onehot: Vec<f32> =
        labels.iter().flat_map(|&l| (0..CLASSES as i64).map(move |c| (c == l) as u8 as f32)).collect();
    let onehot = Array::from_vec(onehot, &[labels.len(), CLASSES])?;

    // A fixed 80/20 split.
    let mut rng = init::rng(0);
    let mut order: Vec<i64> = (0..labels.len() as i64).collect();
    order.shuffle(&mut rng);
    let (train, test) = order.split_at(labels.len() * 4 / 5);
    println!("digits: {} train, {} test images of 8x8 pixels", train.len(), test.len());

    // Parameters: Linear layers in PyTorch's layout (weight [out, in]) and default init.
    let w1 = init::default_weight(&[HIDDEN, 64], &mut rng);
    let b1 = init::default_bias(HIDDEN, 64, &mut rng);
    let w2 = init::default_weight(&[CLASSES, HIDDEN], &mut rng);
    let b2 = init::default_bias(CLASSES, HIDDEN, &mut rng);
    let forward = |x: &Tensor| -> Result<Tensor> {
        let h = x.try_linear(&w1, Some(&b1))?.relu();
        h.try_linear(&w2, Some(&b2))
    };
    let mut opt = Sgd::new(vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()], 0.1).momentum(0.9);

    let test_x = batch(&images, test)?;
    let test_labels: Vec<i64> = test.iter().map(|&i| labels[i as usize]).collect();
    let before = no_grad(|| forward(&test_x).and_then(|l| accuracy(&l, &test_labels)))?;
    println!("test accuracy before training: {:.1}%", 100.0 * before);

    let mut shuffled = train.to_vec();
    for epoch in 1..=EPOCHS {
        shuffled.shuffle(&mut rng);
        let mut total = 0.0;
        for idx in shuffled.chunks(BATCH) {
            let loss = cross_entropy(&forward(&batch(&images, idx)?)?, &batch(&onehot, idx)?)?;
            opt.zero_grad();
            loss.backward()?;
            opt.step()?;
            total += loss.item()? * idx.len() as f32;
        }
        if epoch % 5 == 0 || epoch == 1 {
            let acc = no_grad(|| forward(&test_x).and_then(|l| accuracy(&l, &test_labels)))?;
            println!(
                "epoch {epoch:>2}: train loss {:.4}, test accuracy {:.1}%",
                total / train.len() as f32,
                100.0 * acc
            );
        }
    }
    let after = no_grad(|| forward(&test_x).and_then(|l| accuracy(&l, &test_labels)))?;
    println!("test accuracy after training: {:.1}% ({:.1} s)", 100.0 * after, start.elapsed().as_secs_f32());
    Ok(())
}
