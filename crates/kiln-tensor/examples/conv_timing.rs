//! Timing sanity check of the convolution and pooling kernels on the shapes of the W3 (small
//! CNN train step) and W5 (ResNet basic block) workloads: forward, input gradient and weight
//! gradient of each conv, and max pooling forward/backward. Prints the median of several runs.
//!
//! ```text
//! cargo run --release -p kiln-tensor --example conv_timing [-- w3|fwd2]
//! ```

use kiln_tensor::ops::conv::Conv2dOptions;
use kiln_tensor::ops::pool::Pool2dOptions;
use kiln_tensor::Array;
use std::hint::black_box;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arr(shape: &[usize], seed: u32) -> Array {
    let n: usize = shape.iter().product();
    let v =
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5);
    Array::from_vec(v.collect::<Vec<f32>>(), shape).unwrap()
}

/// Median milliseconds of `f` over `reps` runs after a warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn conv(name: &str, xs: [usize; 4], ws: [usize; 4], pad: usize, reps: usize, need_dx: bool) -> f64 {
    let (x, w, b) = (arr(&xs, 1), arr(&ws, 2), arr(&[ws[0]], 3));
    let o = Conv2dOptions::default().padding([pad, pad]);
    let y = x.conv2d(&w, Some(&b), &o).unwrap();
    let g = arr(y.shape(), 4);
    let flops = 2.0 * (y.numel() * ws[1] * ws[2] * ws[3]) as f64;
    let fwd = time(reps, || {
        black_box(x.conv2d(&w, Some(&b), &o).unwrap());
    });
    let dx = if need_dx {
        time(reps, || {
            black_box(Array::conv2d_grad_input(&g, &w, &xs, &o).unwrap());
        })
    } else {
        0.0
    };
    let dw = time(reps, || {
        black_box(Array::conv2d_grad_weight(&g, &x, &ws, &o).unwrap());
        black_box(Array::conv_grad_bias(&g).unwrap());
    });
    let gf = |ms: f64| flops / ms / 1e6;
    println!(
        "{name:<28} fwd {fwd:7.2} ms ({:5.0} GFLOP/s)  dx {dx:7.2} ms ({:5.0})  dw+db {dw:7.2} ms ({:5.0})  total {:7.2} ms",
        gf(fwd),
        if need_dx { gf(dx) } else { 0.0 },
        gf(dw),
        fwd + dx + dw
    );
    fwd + dx + dw
}

fn pool(name: &str, xs: [usize; 4], reps: usize) -> f64 {
    let x = arr(&xs, 5);
    let o = Pool2dOptions::new([2, 2]);
    let (y, idx) = x.max_pool2d(&o).unwrap();
    let g = arr(y.shape(), 6);
    let fwd = time(reps, || {
        black_box(x.max_pool2d(&o).unwrap());
    });
    let bwd = time(reps, || {
        black_box(Array::max_pool2d_backward(&g, &idx).unwrap());
    });
    println!("{name:<28} fwd {fwd:7.2} ms  bwd {bwd:7.2} ms");
    fwd + bwd
}

fn main() {
    let only = std::env::args().nth(1).unwrap_or_default();
    println!("rayon threads: {}", rayon::current_num_threads());
    if only == "fwd2" {
        // Just the forward of W3's second conv, for profiling.
        let (x, w) = (arr(&[64, 32, 14, 14], 1), arr(&[64, 32, 3, 3], 2));
        let o = Conv2dOptions::default().padding([1, 1]);
        let t = time(401, || {
            black_box(x.conv2d(&w, None, &o).unwrap());
        });
        println!("W3 conv2 forward: {t:.2} ms");
        return;
    }
    let mut w3 = conv("W3 conv1 1->32 28x28 b64", [64, 1, 28, 28], [32, 1, 3, 3], 1, 41, false);
    w3 += pool("W3 maxpool [64,32,28,28]", [64, 32, 28, 28], 41);
    w3 += conv("W3 conv2 32->64 14x14 b64", [64, 32, 14, 14], [64, 32, 3, 3], 1, 41, true);
    w3 += pool("W3 maxpool [64,64,14,14]", [64, 64, 14, 14], 41);
    println!("W3 conv+pool kernels total: {w3:.2} ms (PyTorch's whole W3 step: 25.7 ms)");
    if only == "w3" {
        return;
    }
    let w5 = conv("W5 conv 64->64 56x56 b8", [8, 64, 56, 56], [64, 64, 3, 3], 1, 9, true);
    println!("W5: two such convs: {:.1} ms (PyTorch's whole W5 block: 74.9 ms)", 2.0 * w5);
}
