//! kiln's side of the single-layer comparison with `benches/torch_layers.py` (same timing
//! protocol and JSON lines): conv2d 3x3 64->64 on [8,64,56,56] (forward; forward + backward),
//! layer_norm over 384 features of [1024,384] and cross-entropy over [128,10] and [256,1000]
//! (forward + backward). The criterion versions are in `benches/layers.rs`.
//!
//! `cargo run --release --example bench_layers -- --threads 2 [--only conv2d_3x3_64,layer_norm,cross_entropy]`

#[path = "common/timing.rs"]
mod timing;

use kiln::autograd::ops::conv::conv2d;
use kiln::autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
use kiln::autograd::ops::norm::layer_norm;
use kiln::nn::init;
use kiln::prelude::*;
use kiln::tensor::ops::conv::Conv2dOptions;
use timing::{bench, emit, wanted};

fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_array(init::uniform(shape, -1.0, 1.0, &mut init::rng(seed))).requires_grad_(true)
}

fn ms(workload: &str, threads: usize, f: impl FnMut()) {
    if !wanted(workload.split(' ').next().unwrap_or(workload)) {
        return;
    }
    emit(workload, threads, "ms", bench(f) * 1e3, "");
}

fn main() -> Result<()> {
    let t = timing::threads_from_args();
    let (x, w) = (rand_tensor(&[8, 64, 56, 56], 1), rand_tensor(&[64, 64, 3, 3], 2));
    let opts = Conv2dOptions::default().padding([1, 1]);
    ms("conv2d_3x3_64 fwd", t, || {
        no_grad(|| conv2d(&x, &w, None, &opts).unwrap());
    });
    ms("conv2d_3x3_64 fwd+bwd", t, || {
        conv2d(&x, &w, None, &opts).unwrap().mean_all().backward().unwrap();
        x.zero_grad();
        w.zero_grad();
    });

    let x = rand_tensor(&[1024, 384], 3);
    let (lw, lb) = (Tensor::ones(&[384]).requires_grad_(true), Tensor::zeros(&[384]).requires_grad_(true));
    ms("layer_norm 1024x384 fwd+bwd", t, || {
        layer_norm(&x, &[384], Some(&lw), Some(&lb), 1e-5).unwrap().mean_all().backward().unwrap();
        for p in [&x, &lw, &lb] {
            p.zero_grad();
        }
    });

    let ce = CrossEntropyOptions::default();
    for (n, c) in [(128usize, 10usize), (256, 1000)] {
        let logits = rand_tensor(&[n, c], 4);
        let target = Tensor::from_vec_i64((0..n as i64).map(|i| i % c as i64).collect(), &[n])?;
        ms(&format!("cross_entropy {n}x{c} fwd+bwd"), t, || {
            cross_entropy(&logits, &target, &ce).unwrap().backward().unwrap();
            logits.zero_grad();
        });
    }
    Ok(())
}
