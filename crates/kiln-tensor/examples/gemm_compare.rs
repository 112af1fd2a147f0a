//! Compares the GEMM kernels kiln can put behind `ops::gemm::gemm` on square f32 products
//! C = A·B (or, with `--bt`, C = A·Bᵀ with B stored row-major: the layout of `x @ Wᵀ` in
//! linear and of `q @ kᵀ` in attention), at 1 and 2 rayon threads, and measures what `Array::matmul` adds on top (output
//! allocation, shape handling). The figures in docs/performance.md come from this program:
//!
//! ```text
//! cargo run --release -p kiln-tensor --example gemm_compare [-- --sizes 16,128,256 --threads 1,2 --bt]
//! ```
//!
//! Each figure is the best and the median of up to 7 samples of at least 50 ms each during which
//! no other process used the CPUs (the machine is shared; see `time`). GFLOP/s = 2n³ / time.

use kiln_tensor::ops::gemm::{gemm, set_kernel, Kernel, MatMut, MatRef, Par};
use kiln_tensor::Array;
use std::hint::black_box;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// FMA peak of one core of the reference machine (AMD EPYC Zen 4, AVX-512), GFLOP/s.
const PEAK_PER_CORE: f64 = 117.0;

/// CPU time in clock ticks: (all CPUs busy, this process), from /proc (None elsewhere).
fn cpu_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let busy = v.iter().sum::<u64>() - v.get(3)? - v.get(4).copied().unwrap_or(0);
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f: Vec<&str> = me.rsplit(')').next()?.split_whitespace().collect();
    Some((busy, f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?))
}

/// Seconds per call: (best, median) over up to 7 undisturbed samples of at least 50 ms each.
/// The machine is shared: a sample during which other processes used more than a tenth of a
/// CPU beyond the CPUs this measurement leaves free is dropped (up to 40 tries, then the
/// disturbed samples are used too, flagged with `*`).
fn time(mut f: impl FnMut()) -> (f64, f64, bool) {
    let free_cpus =
        std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(rayon::current_num_threads());
    f();
    let start = Instant::now();
    let mut iters = 0u64;
    while start.elapsed() < Duration::from_millis(50) {
        f();
        iters += 1;
    }
    let iters = iters.max(1);
    let (mut clean, mut all) = (vec![], vec![]);
    for _ in 0..40 {
        let c0 = cpu_ticks();
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let dt = t.elapsed().as_secs_f64();
        let per = dt / iters as f64;
        all.push(per);
        let others = match (c0, cpu_ticks()) {
            (Some((b0, m0)), Some((b1, m1))) => (b1 - b0).saturating_sub(m1 - m0) as f64 / 100.0,
            _ => 0.0,
        };
        if others <= (free_cpus as f64 + 0.1) * dt {
            clean.push(per);
            if clean.len() == 7 {
                break;
            }
        }
    }
    let disturbed = clean.len() < 3;
    let mut v = if disturbed { all } else { clean };
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], disturbed)
}

fn main() {
    let mut sizes = vec![16usize, 128, 256, 512, 1024, 2048];
    let mut threads = vec![1usize, 2];
    let mut bt = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let list = |s: Option<String>| -> Vec<usize> {
            s.unwrap_or_default().split(',').filter_map(|x| x.parse().ok()).collect()
        };
        match a.as_str() {
            "--sizes" => sizes = list(args.next()),
            "--threads" => threads = list(args.next()),
            "--bt" => bt = true,
            _ => {
                eprintln!("usage: gemm_compare [--sizes 16,128,...] [--threads 1,2] [--bt]");
                std::process::exit(2);
            }
        }
    }
    println!("| kernel | n | threads | best GFLOP/s | median GFLOP/s | best, share of FMA peak |");
    println!("|---|---|---|---|---|---|");
    for &t in &threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("rayon pool");
        pool.install(|| {
            for &n in &sizes {
                let flop = 2.0 * (n as f64).powi(3);
                let a =
                    Array::from_vec((0..n * n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect(), &[n, n]).unwrap();
                let b =
                    Array::from_vec((0..n * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect(), &[n, n]).unwrap();
                let (ad, bd) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
                let mut c = vec![0f32; n * n];
                let report = |name: &str, (best, med, disturbed): (f64, f64, bool)| {
                    let (gb, gm) = (flop / best / 1e9, flop / med / 1e9);
                    let name = if disturbed { format!("{name} *") } else { name.to_string() };
                    let extra = if n <= 64 { format!(" ({:.3} µs/call)", best * 1e6) } else { String::new() };
                    println!(
                        "| {name} | {n} | {t} | {gb:.1}{extra} | {gm:.1} | {:.0}% |",
                        100.0 * gb / (PEAK_PER_CORE * t as f64)
                    );
                };
                // The `gemm` crate called directly: its own choice of threading at t > 1.
                let par = if t == 1 { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(t) };
                report(
                    "gemm crate 0.19 (x86-v4), direct",
                    time(|| unsafe {
                        gemm::gemm(
                            n,
                            n,
                            n,
                            c.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            ad.as_ptr(),
                            1,
                            n as isize,
                            bd.as_ptr(),
                            if bt { n as isize } else { 1 },
                            if bt { 1 } else { n as isize },
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            par,
                        );
                        black_box(&c);
                    }),
                );
                let bm = if bt { MatRef::row_major(bd, n, n).t() } else { MatRef::row_major(bd, n, n) };
                let bt_arr = b.t().unwrap();
                let b_op = if bt { &bt_arr } else { &b };
                let mut through = |name: &str, kern: Kernel| {
                    set_kernel(kern);
                    report(
                        name,
                        time(|| {
                            gemm(
                                MatMut::row_major(&mut c, n, n),
                                MatRef::row_major(ad, n, n),
                                bm,
                                1.0,
                                false,
                                Par::Auto,
                            );
                            black_box(&c);
                        }),
                    );
                };
                through("gemm crate via kiln gemm()", Kernel::GemmCrate);
                through("matrixmultiply 0.3 (row blocks on rayon)", Kernel::MatrixMultiply);
                if n <= 1024 {
                    through("kiln small AVX-512 kernel", Kernel::Small);
                }
                through("kiln gemm() Auto (the chosen one)", Kernel::Auto);
                set_kernel(Kernel::Auto);
                report(
                    "Array::matmul end to end (allocates C)",
                    time(|| {
                        black_box(a.matmul(b_op).unwrap());
                    }),
                );
            }
        });
    }
}
