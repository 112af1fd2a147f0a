//! kiln's side of W6 in `shared/bench/torch_bench.py`: loading a safetensors file (MiniLM,
//! 90 MB of F32) with the same timing protocol and the same JSON lines.
//!
//! * `load_file(mmap)`: `load_safetensors` (F32 tensors borrow the mapping, no copy);
//! * `load_file(mmap)+touch`: the same, then the sum of every tensor (kiln's sum kernel), which
//!   reads every page;
//! * `load_file(pread)`: PyTorch's eager copy into process memory; kiln's counterpart is
//!   `load_safetensors_copied`.
//!
//! `cargo run --release --example bench_io -- --threads 2 [--weights FILE]`; without
//! `--weights`, `$W6_WEIGHTS`, else `../shared/assets/minilm/model.safetensors`.

#[path = "common/timing.rs"]
mod timing;

use kiln::io::{load_safetensors, load_safetensors_copied};
use kiln::prelude::*;
use std::collections::BTreeMap;
use timing::{bench, emit, wanted};

fn weights_path() -> String {
    let args: Vec<String> = std::env::args().collect();
    if let Some(p) = args.iter().position(|a| a == "--weights").and_then(|i| args.get(i + 1)) {
        return p.clone();
    }
    std::env::var("W6_WEIGHTS").unwrap_or_else(|_| "../shared/assets/minilm/model.safetensors".to_string())
}

/// The sum of every element of every tensor, read through kiln's kernels.
fn touch(tensors: &BTreeMap<String, Array>) -> f64 {
    let mut s = 0.0f64;
    for a in tensors.values() {
        s += match a.dtype() {
            DType::F32 => f64::from(a.sum(None, false).and_then(|x| x.item()).expect("f32 sum")),
            // Integer buffers (position ids) are summed as PyTorch does, exactly.
            DType::I64 => a.to_vec::<i64>().expect("i64").iter().sum::<i64>() as f64,
            DType::U8 => a.to_vec::<u8>().expect("u8").iter().map(|&x| f64::from(x)).sum::<f64>(),
        };
    }
    s
}

fn main() -> Result<()> {
    let t = timing::threads_from_args();
    if !wanted("w6") {
        return Ok(());
    }
    let path = weights_path();
    let Ok(meta) = std::fs::metadata(&path) else {
        eprintln!("bench_io: {path} not found (give --weights FILE or W6_WEIGHTS); W6 skipped");
        return Ok(());
    };
    let params: usize = load_safetensors(&path)?.values().map(|a| a.numel()).sum();
    let extra = format!(r#", "file_mb": {:.1}, "params": {params}"#, meta.len() as f64 / 1e6);
    let s = bench(|| drop(load_safetensors(&path).expect("load")));
    emit("W6", t, "ms", s * 1e3, &format!(r#", "variant2": "load_file(mmap)"{extra}"#));
    let s = bench(|| {
        std::hint::black_box(touch(&load_safetensors(&path).expect("load")));
    });
    emit("W6", t, "ms", s * 1e3, &format!(r#", "variant2": "load_file(mmap)+touch"{extra}"#));
    let s = bench(|| drop(load_safetensors_copied(&path).expect("load")));
    let extra = format!(r#", "variant2": "load_file(pread)", "kiln_fn": "load_safetensors_copied"{extra}"#);
    emit("W6", t, "ms", s * 1e3, &extra);
    Ok(())
}
