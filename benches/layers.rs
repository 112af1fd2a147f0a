//! criterion benches of single layers of the layers issue (forward + backward each):
//! conv2d 3x3 64->64 on [8, 64, 56, 56] (W5's convolution), layer_norm over 384 features of
//! [8·128, 384] (MiniLM's shape), and softmax + cross-entropy over [128, 10] and [256, 1000].
//! Threads: set `RAYON_NUM_THREADS`.
//!
//! `RAYON_NUM_THREADS=2 cargo bench --bench layers`

use criterion::{criterion_group, criterion_main, Criterion};
use kiln::autograd::ops::conv::conv2d;
use kiln::autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
use kiln::autograd::ops::norm::layer_norm;
use kiln::nn::init;
use kiln::prelude::*;
use kiln::tensor::ops::conv::Conv2dOptions;

fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_array(init::uniform(shape, -1.0, 1.0, &mut init::rng(seed)))
}

fn conv(c: &mut Criterion) {
    let x = rand_tensor(&[8, 64, 56, 56], 1).requires_grad_(true);
    let w = rand_tensor(&[64, 64, 3, 3], 2).requires_grad_(true);
    let opts = Conv2dOptions::default().padding([1, 1]);
    let mut g = c.benchmark_group("conv2d_3x3_64_64_8x56x56");
    g.sample_size(10);
    g.bench_function("forward", |b| b.iter(|| no_grad(|| conv2d(&x, &w, None, &opts).unwrap())));
    g.bench_function("forward_backward", |b| {
        b.iter(|| {
            conv2d(&x, &w, None, &opts).unwrap().mean_all().backward().unwrap();
            x.zero_grad();
            w.zero_grad();
        })
    });
}

fn norm(c: &mut Criterion) {
    let x = rand_tensor(&[1024, 384], 3).requires_grad_(true);
    let (w, b) = (Tensor::ones(&[384]).requires_grad_(true), Tensor::zeros(&[384]).requires_grad_(true));
    c.bench_function("layer_norm_1024x384_fwd_bwd", |bch| {
        bch.iter(|| {
            layer_norm(&x, &[384], Some(&w), Some(&b), 1e-5).unwrap().mean_all().backward().unwrap();
            for t in [&x, &w, &b] {
                t.zero_grad();
            }
        })
    });
}

fn softmax_cross_entropy(c: &mut Criterion) {
    let opts = CrossEntropyOptions::default();
    for (n, classes) in [(128usize, 10usize), (256, 1000)] {
        let logits = rand_tensor(&[n, classes], 4).requires_grad_(true);
        let target =
            Tensor::from_vec_i64((0..n as i64).map(|i| i % classes as i64).collect(), &[n]).expect("length matches");
        c.bench_function(&format!("cross_entropy_{n}x{classes}_fwd_bwd"), |b| {
            b.iter(|| {
                cross_entropy(&logits, &target, &opts).unwrap().backward().unwrap();
                logits.zero_grad();
            })
        });
    }
}

criterion_group!(benches, conv, norm, softmax_cross_entropy);
criterion_main!(benches);
