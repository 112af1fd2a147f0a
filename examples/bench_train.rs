//! kiln's side of the training workloads of `shared/bench/torch_bench.py` (definitions in
//! `shared/bench/README.md`), with the same timing protocol and JSON lines:
//! W2 (MLP 784-512-512-10 train step, SGD momentum, batch 128), W3 (small CNN train step on
//! [64,1,28,28], Adam) and W5 (ResNet basic block forward + backward on [8,64,56,56]).
//!
//! `cargo run --release --example bench_train -- --threads 2 [--only w2,w3,w5]`

#[path = "common/timing.rs"]
mod timing;

use kiln::autograd::ops::conv::conv2d;
use kiln::autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
use kiln::autograd::ops::pool::max_pool2d;
use kiln::nn::{init, BatchNorm2d, Linear, ReLU, Sequential};
use kiln::optim::{Adam, Optimizer, Sgd};
use kiln::prelude::*;
use kiln::tensor::ops::conv::Conv2dOptions;
use kiln::tensor::ops::pool::Pool2dOptions;
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
        // The CNN of W3, written with the functional ops over parameters in PyTorch's layouts.
        let mut rng = init::rng(0);
        let (c1w, c1b) = (init::default_weight(&[32, 1, 3, 3], &mut rng), init::default_bias(32, 9, &mut rng));
        let (c2w, c2b) = (init::default_weight(&[64, 32, 3, 3], &mut rng), init::default_bias(64, 288, &mut rng));
        let fc1 = Linear::new(3136, 128, true, &mut rng);
        let fc2 = Linear::new(128, 10, true, &mut rng);
        let mut params = vec![c1w.clone(), c1b.clone(), c2w.clone(), c2b.clone()];
        params.extend(fc1.parameters());
        params.extend(fc2.parameters());
        let mut opt = Adam::new(params, 1e-3);
        let conv = Conv2dOptions::default().padding([1, 1]);
        let pool = Pool2dOptions::new([2, 2]);
        let (x, y) = (randn_like(&[64, 1, 28, 28], 3), labels(64, 10, 4));
        let forward = || -> Result<Tensor> {
            let h = max_pool2d(&conv2d(&x, &c1w, Some(&c1b), &conv)?.relu(), &pool)?;
            let h = max_pool2d(&conv2d(&h, &c2w, Some(&c2b), &conv)?.relu(), &pool)?;
            let h = fc1.forward(&h.try_flatten(1, -1)?)?.relu();
            fc2.forward(&h)
        };
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
        let conv1 = init::default_weight(&[64, 64, 3, 3], &mut rng);
        let bn1 = BatchNorm2d::new(64);
        let conv2 = init::default_weight(&[64, 64, 3, 3], &mut rng);
        let bn2 = BatchNorm2d::new(64);
        let opts = Conv2dOptions::default().padding([1, 1]);
        let x = randn_like(&[8, 64, 56, 56], 5).requires_grad_(true);
        let s = bench(|| {
            let h = bn1.forward(&conv2d(&x, &conv1, None, &opts).unwrap()).unwrap().relu();
            let h = bn2.forward(&conv2d(&h, &conv2, None, &opts).unwrap()).unwrap();
            let out = (&h + &x).relu();
            out.mean_all().backward().unwrap();
            x.zero_grad();
            for p in [vec![conv1.clone(), conv2.clone()], bn1.parameters(), bn2.parameters()].concat() {
                p.zero_grad();
            }
        });
        emit("W5", t, "ms/step", s * 1e3, &format!(r#", "peak_rss_mib": {:.1}"#, rss_mib()));
    }
    Ok(())
}
