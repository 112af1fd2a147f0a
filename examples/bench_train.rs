//! kiln's side of the training workloads of `shared/bench/torch_bench.py` (definitions in
//! `shared/bench/README.md`), with the same timing protocol and JSON lines:
//! W2 (MLP 784-512-512-10 train step, SGD momentum, batch 128), W3 (small CNN train step on
//! [64,1,28,28], Adam), all built from kiln-nn's modules and W5 (ResNet basic block forward + backward on [8,64,56,56]).
//!
//! `cargo run --release --example bench_train -- --threads 2 [--only w2,w3,w5]`

#[path = "common/timing.rs"]
mod timing;

use kiln::autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
use kiln::nn::{init, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential};
use kiln::optim::{Adam, Optimizer, Sgd};
use kiln::prelude::*;
use timing::{bench, emit, wanted};

fn randn_like(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_array(init::normal(shape, 0.0, 1.0, &mut init::rng(seed)))
}

fn labels(n: usize, classes: i64, seed: u64) -> Tensor {
    let mut s = seed;
    let v = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as i64) % classes
        })
        .collect();
    Tensor::from_vec_i64(v, &[n]).expect("length matches")
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
    };
    kb("VmHWM:").unwrap_or(0.0) / 1024.0
}

fn main() -> Result<()> {
    let t = timing::threads_from_args();
    let ce = CrossEntropyOptions::default();
    if wanted("w2") {
        let mut rng = init::rng(0);
        let model = Sequential::new()
            .with(Linear::new(784, 512, true, &mut rng))
            .with(ReLU)
            .with(Linear::new(512, 512, true, &mut rng))
            .with(ReLU)
            .with(Linear::new(512, 10, true, &mut rng));
        let mut opt = Sgd::new(model.parameters(), 0.01).momentum(0.9);
        let (x, y) = (randn_like(&[128, 784], 1), labels(128, 10, 2));
        let s = bench(|| {
            opt.zero_grad();
            let loss = cross_entropy(&model.forward(&x).unwrap(), &y, &ce).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
        });
        emit("W2", t, "steps/s", 1.0 / s, &format!(r#", "peak_rss_mib": {:.1}"#, rss_mib()));
    }
    if wanted("w3") {
        let mut rng = init::rng(0);
        let model = Sequential::new()
            .with(Conv2d::builder(1, 32, [3, 3]).padding([1, 1]).build(&mut rng)?)
            .with(ReLU)
            .with(MaxPool2d::new([2, 2]))
            .with(Conv2d::builder(32, 64, [3, 3]).padding([1, 1]).build(&mut rng)?)
            .with(ReLU)
            .with(MaxPool2d::new([2, 2]))
            .with(Flatten::default())
            .with(Linear::new(3136, 128, true, &mut rng))
            .with(ReLU)
            .with(Linear::new(128, 10, true, &mut rng));
        let mut opt = Adam::new(model.parameters(), 1e-3);
        let (x, y) = (randn_like(&[64, 1, 28, 28], 3), labels(64, 10, 4));
        let forward = || model.forward(&x);
        let s = bench(|| {
            opt.zero_grad();
            let loss = cross_entropy(&forward().unwrap(), &y, &ce).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
        });
        emit("W3", t, "steps/s", 1.0 / s, &format!(r#", "peak_rss_mib": {:.1}"#, rss_mib()));
    }
    if wanted("w5") {
        let mut rng = init::rng(0);
        let mut conv = || Conv2d::builder(64, 64, [3, 3]).padding([1, 1]).bias(false).build(&mut rng);
        let (conv1, conv2) = (conv()?, conv()?);
        let (bn1, bn2) = (BatchNorm2d::new(64), BatchNorm2d::new(64));
        let x = randn_like(&[8, 64, 56, 56], 5).requires_grad_(true);
        let params = [conv1.parameters(), conv2.parameters(), bn1.parameters(), bn2.parameters()].concat();
        let s = bench(|| {
            let h = bn1.forward(&conv1.forward(&x).unwrap()).unwrap().relu();
            let h = bn2.forward(&conv2.forward(&h).unwrap()).unwrap();
            let out = (&h + &x).relu();
            out.mean_all().backward().unwrap();
            x.zero_grad();
            for p in &params {
                p.zero_grad();
            }
        });
        emit("W5", t, "ms/step", s * 1e3, &format!(r#", "peak_rss_mib": {:.1}"#, rss_mib()));
    }
    Ok(())
}
