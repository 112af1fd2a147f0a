//! The timing protocol of the PyTorch peer scripts (`shared/bench/torch_micro.py`,
//! `torch_bench.py`), so kiln's figures and PyTorch's are measured the same way: a warm-up of
//! at least 0.3 s and 2 calls, then samples of `inner` calls lasting at least 2 ms each, until
//! at least 7 samples and 1.5 s; the figure is the median time per call.

use std::time::Instant;

/// Median seconds per call of `f`.
pub fn bench(mut f: impl FnMut()) -> f64 {
    let (warmup, min_time, min_samples) = (0.3, 1.5, 7);
    let t0 = Instant::now();
    let (mut calls, mut one) = (0, f64::INFINITY);
    while calls < 2 || t0.elapsed().as_secs_f64() < warmup {
        let t = Instant::now();
        f();
        one = one.min(t.elapsed().as_secs_f64());
        calls += 1;
    }
    let inner = if one < 2e-3 { (2e-3 / one.max(1e-9)) as usize + 1 } else { 1 };
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < min_samples || start.elapsed().as_secs_f64() < min_time {
        let t = Instant::now();
        for _ in 0..inner {
            f();
        }
        samples.push(t.elapsed().as_secs_f64() / inner as f64);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Prints one JSON line in the peer scripts' format.
pub fn emit(workload: &str, threads: usize, metric: &str, value: f64, extra: &str) {
    println!(
        r#"{{"impl": "kiln", "workload": "{workload}", "threads": {threads}, "metric": "{metric}", "value": {value:.4}{extra}}}"#
    );
}

/// `--threads N` from the command line (default 2), applied to kiln's pool.
pub fn threads_from_args() -> usize {
    let args: Vec<String> = std::env::args().collect();
    let t = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    kiln::set_num_threads(t).expect("thread pool not started yet");
    t
}

/// `--only a,b` from the command line: which workloads to run (all when absent).
pub fn wanted(name: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)) {
        Some(list) => list.split(',').any(|w| w == name),
        None => true,
    }
}
