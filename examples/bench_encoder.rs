//! kiln's side of W4 of `shared/bench/torch_bench.py` (definitions in `shared/bench/README.md`):
//! a randomly initialised BERT encoder of all-MiniLM-L6-v2's shape (6 layers, hidden 384,
//! 12 heads, FFN 1536, GELU, vocab 30522, with pooler, dropout 0.1), batch 8, sequence 128,
//! token types 0, attention mask all ones. Same timing protocol and JSON lines as `bench_train`.
//!
//! - W4a: inference (eval mode, `no_grad`), tokens/s.
//! - W4b: full fine-tune step (train mode, AdamW lr 1e-4 wd 0.01 over encoder + head, loss =
//!   cross-entropy of `Linear(384, 2)` on `last_hidden_state[:, 0]`), steps/s and peak RSS.
//! - W4c: frozen encoder (eval, `no_grad`) + the same head trained with AdamW lr 1e-3, steps/s.
//!
//! `cargo run --release --example bench_encoder -- --threads 2 [--only w4a,w4b,w4c] [--iters N]`
//!
//! `--iters N` skips the timing protocol and runs each workload N times (for profilers such as
//! `valgrind --tool=callgrind`), printing nothing but the loss.

#[path = "common/timing.rs"]
mod timing;

use kiln::autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
use kiln::models::{BertConfig, BertModel};
use kiln::nn::{init, Linear};
use kiln::optim::Params;
use kiln::prelude::*;
use timing::{bench, emit, wanted};

const BATCH: usize = 8;
const SEQ: usize = 128;

fn lcg_ints(n: usize, below: i64, seed: u64) -> Vec<i64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as i64) % below
        })
        .collect()
}

fn rss_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn minilm_config() -> BertConfig {
    BertConfig {
        vocab_size: 30522,
        hidden_size: 384,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        intermediate_size: 1536,
        hidden_act: "gelu".into(),
        max_position_embeddings: 512,
        type_vocab_size: 2,
        ..BertConfig::default()
    }
}

/// `f` timed by the peer protocol, or run `iters` times when `--iters` is given (`None` then).
fn measure(iters: Option<usize>, mut f: impl FnMut()) -> Option<f64> {
    match iters {
        Some(n) => {
            for _ in 0..n {
                f();
            }
            None
        }
        None => Some(bench(f)),
    }
}

fn main() -> Result<()> {
    let t = timing::threads_from_args();
    let args: Vec<String> = std::env::args().collect();
    let iters = args.iter().position(|a| a == "--iters").and_then(|i| args.get(i + 1)?.parse().ok());
    let ce = CrossEntropyOptions::default();
    let config = minilm_config();
    let ids = Tensor::from_vec_i64(lcg_ints(BATCH * SEQ, config.vocab_size as i64, 4), &[BATCH, SEQ])?;
    let types = Tensor::from_vec_i64(vec![0; BATCH * SEQ], &[BATCH, SEQ])?;
    let mask = Tensor::from_vec_i64(vec![1; BATCH * SEQ], &[BATCH, SEQ])?;
    let y = Tensor::from_vec_i64(lcg_ints(BATCH, 2, 5), &[BATCH])?;
    let cls = |h: &Tensor| h.try_narrow(1, 0, 1)?.try_squeeze(1);
    if wanted("w4a") {
        let mut model = BertModel::new(&config, true, &mut init::rng(0))?;
        model.eval();
        let s = measure(iters, || {
            no_grad(|| model.forward(&ids, Some(&mask), Some(&types)).unwrap());
        });
        if let Some(s) = s {
            emit("W4a", t, "tokens/s", (BATCH * SEQ) as f64 / s, "");
        }
    }
    if wanted("w4b") {
        let mut model = BertModel::new(&config, true, &mut init::rng(0))?;
        model.train();
        let head = Linear::new(384, 2, true, &mut init::rng(1));
        let mut params = model.named_parameters();
        params.extend(head.named_parameters().into_iter().map(|(n, p)| (format!("head.{n}"), p)));
        let mut opt = AdamW::new(Params::named(params), 1e-4).weight_decay(0.01);
        let rss_before = rss_mib("VmRSS:");
        let s = measure(iters, || {
            opt.zero_grad();
            let h = model.forward(&ids, Some(&mask), Some(&types)).unwrap().last_hidden_state;
            let loss = cross_entropy(&head.forward(&cls(&h).unwrap()).unwrap(), &y, &ce).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
        });
        if let Some(s) = s {
            let extra =
                format!(r#", "peak_rss_mib": {:.1}, "rss_before_train_mib": {rss_before:.1}"#, rss_mib("VmHWM:"));
            emit("W4b", t, "steps/s", 1.0 / s, &extra);
        }
    }
    if wanted("w4c") {
        let mut model = BertModel::new(&config, true, &mut init::rng(0))?;
        model.eval();
        model.freeze("*")?;
        let head = Linear::new(384, 2, true, &mut init::rng(1));
        let mut opt = AdamW::new(Params::named(head.named_parameters()), 1e-3).weight_decay(0.01);
        let s = measure(iters, || {
            opt.zero_grad();
            let feats = no_grad(|| {
                let h = model.forward(&ids, Some(&mask), Some(&types)).unwrap().last_hidden_state;
                cls(&h).unwrap()
            });
            let loss = cross_entropy(&head.forward(&feats).unwrap(), &y, &ce).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
        });
        if let Some(s) = s {
            emit("W4c", t, "steps/s", 1.0 / s, "");
        }
    }
    Ok(())
}
