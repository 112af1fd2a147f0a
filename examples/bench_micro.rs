//! kiln's side of `shared/bench/torch_micro.py` and of W0/W1 in `torch_bench.py`: the same
//! workloads, the same timing protocol, the same JSON lines. See docs/performance.md.
//!
//! `cargo run --release --example bench_micro -- --threads 2 [--only matmul,elementwise,...]`

#[path = "common/timing.rs"]
mod timing;

use kiln::nn::init;
use kiln::prelude::*;
use timing::{bench, emit, wanted};

fn rand_array(shape: &[usize], seed: u64) -> Array {
    init::uniform(shape, -1.0, 1.0, &mut init::rng(seed))
}

fn main() -> Result<()> {
    let t = timing::threads_from_args();
    if wanted("matmul") {
        for n in [128, 256, 512, 1024, 2048] {
            let (a, b) = (Tensor::from_array(rand_array(&[n, n], 1)), Tensor::from_array(rand_array(&[n, n], 2)));
            let s = bench(|| drop(a.matmul(&b)));
            emit("matmul", t, "GFLOP/s", 2.0 * (n as f64).powi(3) / s / 1e9, &format!(r#", "n": {n}"#));
        }
    }
    if wanted("elementwise") {
        let (x, y) = (Tensor::from_array(rand_array(&[1 << 20], 3)), Tensor::from_array(rand_array(&[1 << 20], 4)));
        type Op<'a> = Box<dyn Fn() -> Tensor + 'a>;
        let cases: [(&str, Op, f64); 3] = [
            ("add", Box::new(|| &x + &y), 3.0),
            ("mul", Box::new(|| &x * &y), 3.0),
            ("exp", Box::new(|| x.exp()), 2.0),
        ];
        for (name, f, streams) in cases {
            let s = bench(|| drop(f()));
            let gbs = streams * 4.0 * (1u64 << 20) as f64 / s / 1e9;
            emit(&format!("elementwise_{name}_1M"), t, "GB/s", gbs, &format!(r#", "us": {:.2}"#, s * 1e6));
        }
    }
    if wanted("softmax") {
        let x = Tensor::from_array(rand_array(&[256, 1024], 5));
        let s = bench(|| drop(x.softmax(-1)));
        emit("softmax_256x1024", t, "us", s * 1e6, "");
    }
    if wanted("sum") {
        let x = Tensor::from_array(rand_array(&[1024, 1024], 6));
        let s = bench(|| drop(x.sum(Some(&[-1]), false)));
        emit("sum_last_1024x1024", t, "us", s * 1e6, "");
    }
    if wanted("overhead") {
        let w = Tensor::from_array(rand_array(&[8], 7)).requires_grad_(true);
        let s = bench(|| {
            let mut h = w.clone();
            for i in 0..100 {
                h = if i % 2 == 1 { (&h * 1.01 + 0.01).tanh() } else { &h * &w };
            }
            h.sum_all().backward().expect("backward");
            w.zero_grad();
        });
        emit("overhead_chain100_fwd_bwd", t, "us/op", s * 1e6 / 101.0, "");
    }
    if wanted("w0") {
        let (a, b) = (Tensor::from_array(rand_array(&[32], 8)), Tensor::from_array(rand_array(&[32], 9)));
        let s = bench(|| drop(&a + &b));
        emit("W0-add32", t, "us/op", s * 1e6, "");
        let (m, m2) = (Tensor::from_array(rand_array(&[16, 16], 10)), Tensor::from_array(rand_array(&[16, 16], 11)));
        let s = bench(|| drop(m.matmul(&m2)));
        emit("W0-matmul16", t, "us/op", s * 1e6, "");
    }
    Ok(())
}
