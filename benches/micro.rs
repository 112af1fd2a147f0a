//! criterion benches of the foundation workloads (shared/bench/README.md): matmul (W1),
//! elementwise on 1M floats, softmax, sum over the last dim, the per-op overhead of a
//! 100-op autograd chain, W0, and W6 (loading the MiniLM safetensors file, zero-copy, and
//! loading plus summing every tensor; the file is `$W6_WEIGHTS`, else
//! `../shared/assets/minilm/model.safetensors`, and W6 is skipped when it is missing). Threads: set `RAYON_NUM_THREADS`.
//!
//! `RAYON_NUM_THREADS=2 cargo bench --bench micro`
//! The side-by-side table with PyTorch comes from `examples/bench_micro.rs` (docs/performance.md).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln::nn::init;
use kiln::prelude::*;

fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_array(init::uniform(shape, -1.0, 1.0, &mut init::rng(seed)))
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    for n in [128usize, 256, 512, 1024, 2048] {
        let (a, b) = (rand_tensor(&[n, n], 1), rand_tensor(&[n, n], 2));
        // Throughput in "elements" = flops, so criterion reports GFLOP/s as Gelem/s.
        g.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        if n >= 1024 {
            g.sample_size(10);
        }
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |bch, _| bch.iter(|| a.matmul(&b)));
    }
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise_1M");
    let (x, y) = (rand_tensor(&[1 << 20], 3), rand_tensor(&[1 << 20], 4));
    g.throughput(Throughput::Bytes((3 * 4) << 20));
    g.bench_function("add", |b| b.iter(|| &x + &y));
    g.bench_function("mul", |b| b.iter(|| &x * &y));
    g.throughput(Throughput::Bytes((2 * 4) << 20));
    g.bench_function("exp", |b| b.iter(|| x.exp()));
}

fn softmax_and_sum(c: &mut Criterion) {
    let x = rand_tensor(&[256, 1024], 5);
    c.bench_function("softmax_256x1024", |b| b.iter(|| x.softmax(-1)));
    let x = rand_tensor(&[1024, 1024], 6);
    c.bench_function("sum_last_1024x1024", |b| b.iter(|| x.sum(Some(&[-1]), false)));
}

fn overhead(c: &mut Criterion) {
    let w = rand_tensor(&[8], 7).requires_grad_(true);
    let mut g = c.benchmark_group("overhead");
    g.throughput(Throughput::Elements(101)); // ops per iteration
    g.bench_function("chain100_fwd_bwd", |b| {
        b.iter(|| {
            let mut h = w.clone();
            for i in 0..100 {
                h = if i % 2 == 1 { (&h * 1.01 + 0.01).tanh() } else { &h * &w };
            }
            h.sum_all().backward().unwrap();
            w.zero_grad();
        })
    });
    g.finish();
    let (a, b) = (rand_tensor(&[32], 8), rand_tensor(&[32], 9));
    c.bench_function("w0_add32", |bch| bch.iter(|| &a + &b));
    let (m, m2) = (rand_tensor(&[16, 16], 10), rand_tensor(&[16, 16], 11));
    c.bench_function("w0_matmul16", |bch| bch.iter(|| m.matmul(&m2)));
}

fn w6(c: &mut Criterion) {
    let path = std::env::var("W6_WEIGHTS").unwrap_or_else(|_| "../shared/assets/minilm/model.safetensors".into());
    if !std::path::Path::new(&path).exists() {
        eprintln!("w6: {path} not found; skipped");
        return;
    }
    let mut g = c.benchmark_group("w6");
    g.bench_function("load_mmap", |b| b.iter(|| kiln::io::load_safetensors(&path).unwrap()));
    g.bench_function("load_mmap_touch", |b| {
        b.iter(|| {
            let t = kiln::io::load_safetensors(&path).unwrap();
            t.values()
                .filter(|a| a.dtype() == DType::F32)
                .map(|a| a.sum(None, false).unwrap().item().unwrap())
                .sum::<f32>()
        })
    });
    g.finish();
}

criterion_group!(benches, matmul, elementwise, softmax_and_sum, overhead, w6);
criterion_main!(benches);
