//! Mission E4: a character-level GPT pretrained from scratch on Jane Austen's novels.
//!
//! `cargo run --release --example gpt_austen -- [--data FILE] [--steps N] [--eval-every N]
//! [--threads N] [--max-val-windows N]`
//!
//! The text (`--data`, else `$KILN_AUSTEN`, else `../shared/assets/text/austen-all.txt`) is
//! encoded with its sorted characters as the vocabulary; train = the first `int(0.9 n)`
//! characters, val = the rest. The model is GPT-2 style: 4 pre-LN blocks, 4 heads, width 128,
//! context 128, learned positions, exact-erf GELU, LayerNorm eps 1e-5, no dropout, an untied
//! LM head without bias, every weight `N(0, 0.02)` and biases zero. Training: AdamW (betas
//! (0.9, 0.999), eps 1e-8, weight decay 0.01 on all parameters, no clipping) for `--steps`
//! (1000) steps of 32 random 129-char windows from a seeded generator, the learning rate
//! warming up linearly to 3e-3 over 100 steps and then following a cosine down to 3e-4.
//! The validation loss is the mean cross-entropy (nats/char) over all non-overlapping
//! 128-char windows of val (or the first `--max-val-windows`), evaluated without a graph in
//! batches of 64, at step 0, every `--eval-every` steps (default: at 250, 500 and the last
//! step) and at the end. Then 200 characters are sampled from the prompt "\n" at temperature
//! 0.8 (kiln's seeded sampler, with the key/value cache) and printed, followed by a JSON line.
//!
//! PyTorch's reference (`bench/mission/e4_char_gpt.py`): val loss 4.4101 (step 0), 2.0751
//! (250), 1.6953 (500), 1.4647 (1000).

use kiln::data::{CharCorpus, RandomWindows, Rng};
use kiln::models::{Gpt, GptActivation, GptConfig, Sampling};
use kiln::optim::AdamW;
use kiln::prelude::*;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: gpt_austen [--data FILE] [--steps N] [--eval-every N] [--threads N] [--max-val-windows N]";
const DEFAULT_DATA: &str = "../shared/assets/text/austen-all.txt";
const CTX: usize = 128;
const BATCH: usize = 32;
const EVAL_BATCH: usize = 64;
const WARMUP: usize = 100;
const LR_MAX: f64 = 3e-3;
const LR_MIN: f64 = 3e-4;
const SAMPLE_CHARS: usize = 200;

struct Args {
    data: PathBuf,
    steps: usize,
    eval_every: Option<usize>,
    threads: usize,
    max_val_windows: Option<usize>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        data: std::env::var_os("KILN_AUSTEN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA)),
        steps: 1000,
        eval_every: None,
        threads: 2,
        max_val_windows: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        let mut number = || -> std::result::Result<usize, String> {
            let v = value()?;
            v.parse().map_err(|_| format!("{a} {v:?} is not a number\n{USAGE}"))
        };
        match a.as_str() {
            "--data" => args.data = PathBuf::from(value()?),
            "--steps" => args.steps = number()?,
            "--eval-every" => args.eval_every = Some(number()?.max(1)),
            "--threads" => args.threads = number()?.max(1),
            "--max-val-windows" => args.max_val_windows = Some(number()?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The learning rate of 0-based step `s` of `total`: linear warmup to `LR_MAX` over
/// `WARMUP` steps, then a cosine from `LR_MAX` down to `LR_MIN` at step `total`.
fn lr_at(s: usize, total: usize) -> f64 {
    if s < WARMUP {
        return LR_MAX * (s + 1) as f64 / WARMUP as f64;
    }
    let span = total.saturating_sub(WARMUP).max(1) as f64;
    LR_MIN + 0.5 * (LR_MAX - LR_MIN) * (1.0 + (std::f64::consts::PI * (s - WARMUP) as f64 / span).cos())
}

/// The steps after which the validation loss is measured (besides step 0).
fn eval_steps(steps: usize, every: Option<usize>) -> Vec<usize> {
    let mut at: Vec<usize> = match every {
        Some(k) => (k..=steps).step_by(k).collect(),
        None => [250, 500].into_iter().filter(|&s| s < steps).collect(),
    };
    if steps > 0 && at.last() != Some(&steps) {
        at.push(steps);
    }
    at
}

/// Mean next-char cross-entropy over the first `n` non-overlapping `CTX`-char windows of
/// `val`, in eval mode without a graph, `EVAL_BATCH` windows at a time.
fn val_loss(model: &mut Gpt, val: &[i64], n: usize) -> Result<f64> {
    model.eval();
    let total = no_grad(|| -> Result<f64> {
        let mut sum = 0.0f64;
        for first in (0..n).step_by(EVAL_BATCH) {
            let b = EVAL_BATCH.min(n - first);
            let span = first * CTX..(first + b) * CTX;
            let x = Tensor::from_vec_i64(val[span.clone()].to_vec(), &[b, CTX])?;
            let y = Tensor::from_vec_i64(val[span.start + 1..span.end + 1].to_vec(), &[b, CTX])?;
            sum += model.loss(&x, &y)?.item()? as f64 * (b * CTX) as f64;
        }
        Ok(sum)
    })?;
    model.train();
    Ok(total / (n * CTX).max(1) as f64)
}

fn run(args: &Args) -> Result<()> {
    kiln::set_num_threads(args.threads)?;
    let corpus = CharCorpus::load(&args.data)?;
    let vocab = corpus.vocab.len();
    let (train, val) = corpus.split(0.9)?;
    let val_ids = val.to_vec::<i64>()?;
    let all_windows = (val_ids.len().saturating_sub(1)) / CTX;
    let n_val = args.max_val_windows.map_or(all_windows, |m| m.min(all_windows));
    println!(
        "data {}: {} chars, vocab {vocab}, train {}, val {} ({n_val} of {all_windows} windows of {CTX})",
        args.data.display(),
        corpus.len(),
        train.numel(),
        val.numel()
    );

    let config = GptConfig {
        vocab_size: vocab,
        n_positions: CTX,
        n_embd: 128,
        n_layer: 4,
        n_head: 4,
        n_inner: Some(512),
        activation_function: GptActivation::Gelu,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        layer_norm_epsilon: 1e-5,
        initializer_range: 0.02,
        tie_word_embeddings: false,
        ..GptConfig::default()
    };
    let mut model = Gpt::new(config, 0)?;
    let n_params = model.num_parameters().total;
    println!("model: {n_params} parameters, {} threads", args.threads);
    let mut opt = AdamW::new(model.named_parameters(), LR_MAX as f32).betas(0.9, 0.999).eps(1e-8).weight_decay(0.01);

    let windows = RandomWindows::new(&train, CTX, 0, 0)?;
    let mut rng = Rng::new(0);
    let evals_at = eval_steps(args.steps, args.eval_every);
    let mut evals: Vec<(usize, f64)> = Vec::new();
    let mut eval_secs: Vec<f64> = Vec::new();

    let t0 = Instant::now();
    let v = val_loss(&mut model, &val_ids, n_val)?;
    eval_secs.push(t0.elapsed().as_secs_f64());
    println!("step 0 val {v:.4} (eval {:.1} s)", eval_secs[0]);
    evals.push((0, v));

    let mut train_secs = 0.0f64;
    let mut last_loss = f32::NAN;
    for s in 0..args.steps {
        let t = Instant::now();
        opt.set_lr(lr_at(s, args.steps) as f32);
        let (x, y) = windows.sample_batch(BATCH, &mut rng)?;
        let loss = model.loss(&Tensor::from_array(x), &Tensor::from_array(y))?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        last_loss = loss.item()?;
        train_secs += t.elapsed().as_secs_f64();
        if (s + 1) % 50 == 0 || s + 1 == args.steps {
            println!(
                "step {} loss {last_loss:.4} lr {:.3e} train {train_secs:.1} s ({:.3} s/step)",
                s + 1,
                lr_at(s, args.steps),
                train_secs / (s + 1) as f64
            );
        }
        if evals_at.contains(&(s + 1)) {
            let t = Instant::now();
            let v = val_loss(&mut model, &val_ids, n_val)?;
            eval_secs.push(t.elapsed().as_secs_f64());
            println!("step {} val {v:.4} (eval {:.1} s)", s + 1, eval_secs[eval_secs.len() - 1]);
            evals.push((s + 1, v));
        }
    }

    model.eval();
    let newline = corpus.vocab.token('\n').ok_or_else(|| Error::Msg("the text has no newline".into()))?;
    let prompt = Tensor::from_vec_i64(vec![newline], &[1, 1])?;
    let t = Instant::now();
    let out = model.generate(&prompt, SAMPLE_CHARS, Sampling::new(0.8, None, 0))?;
    let sample_secs = t.elapsed().as_secs_f64();
    let ids = out.data().to_vec::<i64>()?;
    let sample = corpus.vocab.decode(&ids[1..])?;
    println!("SAMPLE ({sample_secs:.2} s):\n{sample}");

    let per_step = if args.steps > 0 { train_secs / args.steps as f64 } else { 0.0 };
    println!("train {train_secs:.1} s, {per_step:.4} s/step; eval s {eval_secs:.2?}");
    let evals_json: Vec<String> = evals.iter().map(|(s, v)| format!("\"{s}\": {v:.4}")).collect();
    let secs_json: Vec<String> = eval_secs.iter().map(|s| format!("{s:.2}")).collect();
    println!(
        "{{\"impl\": \"kiln\", \"task\": \"E4 char GPT\", \"threads\": {}, \"vocab\": {vocab}, \"n_params\": {n_params}, \
         \"steps\": {}, \"val_windows\": {n_val}, \"val_loss_nats_per_char\": {{{}}}, \"last_train_loss\": {last_loss:.4}, \
         \"train_seconds_total\": {train_secs:.2}, \"seconds_per_step\": {per_step:.4}, \"eval_seconds_each\": [{}], \
         \"sample_seconds\": {sample_secs:.3}, \"sample\": {}}}",
        args.threads,
        args.steps,
        evals_json.join(", "),
        secs_json.join(", "),
        json_string(&sample)
    );
    Ok(())
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
