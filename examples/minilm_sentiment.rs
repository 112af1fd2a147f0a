//! Mission E3: 3-class tweet sentiment with all-MiniLM-L6-v2 (kiln's side of
//! `shared/bench/mission/e3_minilm_sentiment.py`, same split, tokens, pooling, head and optimizer).
//!
//! `cargo run --release --example minilm_sentiment -- --model DIR --data DIR --mode frozen|finetune|lora
//!  [--max-steps N] [--threads N] [--save FILE] [--grad-checkpoint]` (`--save`: lora mode writes the merged encoder
//!  as safetensors; `--grad-checkpoint`: finetune and lora modes recompute each encoder layer's activations in
//!  backward instead of keeping them, `BertModel::set_gradient_checkpointing`)
//!
//! `--data` is `text/sentiment` (`twitter_sentiment.tsv` and `split.json`: train = its 4000
//! `train` rows, test = its 2000 `test` rows, 0-based data rows). Tokens: truncate 64, pad to 64.
//! Classifier: masked mean pooling of `last_hidden_state` (no L2 norm) -> `Linear(384, 3)` ->
//! cross-entropy; AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0.01 on all parameters).
//!
//! - `frozen`: encoder in eval mode under `no_grad`; pooled features computed once (64 per
//!   forward) for train and test; head trained 3 epochs, lr 1e-3, batch 32, reshuffled each epoch.
//! - `finetune`: every parameter trained, train mode (dropout 0.1), 1 epoch = 125 steps of 32,
//!   lr 5e-5 · (s/12 if s < 12 else (125 − s)/113), s the 0-based step (lr 0 at step 0).
//! - `lora`: rank-8 adapters (alpha 16, so scaling 2; adapter dropout 0.1, seed 0) on every
//!   `*.query` and `*.value` Linear, the rest of the encoder frozen (it still runs in train
//!   mode: dropout 0.1 as in `finetune`), head trained too; same schedule as `finetune` but a
//!   peak lr of 5e-4 (adapters start at ΔW = 0 and need a ~10x larger rate than full
//!   fine-tuning; 5e-4 is the usual LoRA choice for BERT-sized encoders). After training the
//!   adapters are merged into the base weights (`merge_lora`), so the evaluated encoder has the
//!   original Hugging Face names and shapes.
//!
//! The head is initialised by kiln's default `Linear` init (seed 0) and the shuffles come from
//! kiln's generator, so the numbers match PyTorch's statistically, not bit for bit.

use kiln::autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
use kiln::data::Rng as DataRng;
use kiln::models::{mean_pooling, BertModel, Padding, Tokenizer};
use kiln::nn::lora::{inject_lora, lora_parameters, merge_lora, LoraConfig};
use kiln::nn::{init, Linear};
use kiln::optim::Params;
use kiln::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

const USAGE: &str =
    "usage: minilm_sentiment --model DIR --data DIR --mode frozen|finetune|lora [--max-steps N] [--threads N] \
     [--save FILE] [--grad-checkpoint]";
const MAX_LEN: usize = 64;
const BATCH: usize = 32;
const EVAL_BATCH: usize = 64;
const HIDDEN: usize = 384;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Frozen,
    Finetune,
    Lora,
}

struct Args {
    model: PathBuf,
    data: PathBuf,
    mode: Mode,
    max_steps: Option<usize>,
    save: Option<PathBuf>,
    grad_checkpoint: bool,
}

fn parse_args() -> std::result::Result<Args, String> {
    let (mut model, mut data, mut mode, mut max_steps, mut save) = (None, None, None, None, None);
    let mut grad_checkpoint = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--data" => data = Some(PathBuf::from(value()?)),
            "--mode" => {
                mode = Some(match value()?.as_str() {
                    "frozen" => Mode::Frozen,
                    "finetune" => Mode::Finetune,
                    "lora" => Mode::Lora,
                    m => return Err(format!("unknown mode {m:?}\n{USAGE}")),
                })
            }
            "--save" => save = Some(PathBuf::from(value()?)),
            "--grad-checkpoint" => grad_checkpoint = true,
            "--max-steps" => {
                let v = value()?;
                max_steps = Some(v.parse().map_err(|_| format!("--max-steps {v:?} is not a number"))?);
            }
            "--threads" => {
                let v = value()?;
                let n: usize = v.parse().map_err(|_| format!("--threads {v:?} is not a number"))?;
                kiln::set_num_threads(n).map_err(|e| e.to_string())?;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        model: model.ok_or_else(|| format!("--model is required\n{USAGE}"))?,
        data: data.ok_or_else(|| format!("--data is required\n{USAGE}"))?,
        mode: mode.ok_or_else(|| format!("--mode is required\n{USAGE}"))?,
        max_steps,
        save,
        grad_checkpoint,
    })
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })
}

/// The integer list under `"key": [..]` of split.json (a flat list of non-negative integers).
fn json_indices(json: &str, key: &str) -> Result<Vec<usize>> {
    let bad = || Error::Msg(format!("split.json: no integer list {key:?}"));
    let at = json.find(&format!("\"{key}\"")).ok_or_else(bad)?;
    let open = at + json[at..].find('[').ok_or_else(bad)?;
    let close = open + json[open..].find(']').ok_or_else(bad)?;
    json[open + 1..close].split(',').map(|s| s.trim().parse::<usize>().map_err(|_| bad())).collect()
}

/// (label, text) rows of the TSV (header skipped), labels negative=0, neutral=1, positive=2.
fn load_rows(data: &Path) -> Result<Vec<(i64, String)>> {
    let path = data.join("twitter_sentiment.tsv");
    let text = read(&path)?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let mut parts = line.splitn(3, '\t');
        let (lab, _conf, txt) = (parts.next(), parts.next(), parts.next());
        let label = match lab {
            Some("negative") => 0,
            Some("neutral") => 1,
            Some("positive") => 2,
            _ => return Err(Error::Msg(format!("{}: line {}: bad label", path.display(), i + 1))),
        };
        let txt = txt.ok_or_else(|| Error::Msg(format!("{}: line {}: no text", path.display(), i + 1)))?;
        rows.push((label, txt.to_string()));
    }
    Ok(rows)
}

/// Tokenized split: ids and mask `[n, 64]` (i64), labels `[n]`.
struct Split {
    ids: Tensor,
    mask: Tensor,
    y: Tensor,
    labels: Vec<i64>,
}

impl Split {
    fn len(&self) -> usize {
        self.labels.len()
    }

    /// Rows `idx` of ids, mask and labels.
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor, Tensor)> {
        let i = Tensor::from_vec_i64(idx.iter().map(|&v| v as i64).collect(), &[idx.len()])?;
        Ok((self.ids.try_index_select(0, &i)?, self.mask.try_index_select(0, &i)?, self.y.try_index_select(0, &i)?))
    }
}

fn tokenize(tok: &Tokenizer, rows: &[(i64, String)], idx: &[usize]) -> Result<Split> {
    let texts: Vec<&str> = idx.iter().map(|&i| rows[i].1.as_str()).collect();
    let enc = tok.encode_batch(&texts)?;
    let labels: Vec<i64> = idx.iter().map(|&i| rows[i].0).collect();
    let y = Tensor::from_vec_i64(labels.clone(), &[labels.len()])?;
    Ok(Split { ids: enc.input_ids, mask: enc.attention_mask, y, labels })
}

fn pooled(bert: &BertModel, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let h = bert.forward(ids, Some(mask), None)?.last_hidden_state;
    mean_pooling(&h, mask)
}

fn accuracy(logits: &Tensor, labels: &[i64]) -> Result<f64> {
    let pred = logits.try_argmax(Some(-1), false)?.data().to_vec::<i64>()?;
    let hits = pred.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok(hits as f64 / labels.len() as f64)
}

/// Pooled features of every row of `split`, `EVAL_BATCH` rows per forward (eval mode, no grad).
fn features(bert: &BertModel, split: &Split) -> Result<Tensor> {
    no_grad(|| {
        let mut parts = Vec::new();
        for start in (0..split.len()).step_by(EVAL_BATCH) {
            let n = EVAL_BATCH.min(split.len() - start);
            let ids = split.ids.try_narrow(0, start as isize, n)?;
            let mask = split.mask.try_narrow(0, start as isize, n)?;
            parts.push(pooled(bert, &ids, &mask)?);
        }
        Tensor::try_cat(&parts.iter().collect::<Vec<_>>(), 0)
    })
}

/// HF's linear schedule of E3: warmup 12 steps (lr 0 at step 0), linear decay to 0 at 125.
fn schedule(peak: f32, s: usize, total: usize) -> f32 {
    let warm = total / 10;
    if s < warm {
        peak * s as f32 / warm as f32
    } else {
        peak * total.saturating_sub(s) as f32 / (total - warm).max(1) as f32
    }
}

fn adamw(params: Vec<(String, Tensor)>, lr: f32) -> AdamW {
    AdamW::new(Params::named(params), lr).betas(0.9, 0.999).eps(1e-8).weight_decay(0.01)
}

fn run(args: &Args) -> Result<()> {
    let t_load = Instant::now();
    let rows = load_rows(&args.data)?;
    let split = read(&args.data.join("split.json"))?;
    let (tr_idx, te_idx) = (json_indices(&split, "train")?, json_indices(&split, "test")?);
    if let Some(&bad) = tr_idx.iter().chain(&te_idx).find(|&&i| i >= rows.len()) {
        return Err(Error::Msg(format!("split.json: row {bad} out of range ({} rows)", rows.len())));
    }
    let tok = Tokenizer::from_pretrained(&args.model)?.with_max_len(MAX_LEN)?.with_padding(Padding::Fixed(MAX_LEN))?;
    let (train, test) = (tokenize(&tok, &rows, &tr_idx)?, tokenize(&tok, &rows, &te_idx)?);
    let mut bert = BertModel::from_pretrained(&args.model)?;
    if args.grad_checkpoint {
        if args.mode == Mode::Frozen {
            return Err(Error::Msg(
                "--grad-checkpoint applies to --mode finetune and lora (frozen records no graph)".into(),
            ));
        }
        bert.set_gradient_checkpointing(true);
    }
    let load_s = t_load.elapsed().as_secs_f64();
    let mut counts = [0usize; 3];
    for &l in &train.labels {
        counts[l as usize] += 1;
    }
    println!(
        "mode {:?}{}: {} train / {} test rows, train label counts {counts:?}, load {load_s:.1} s, {} threads",
        args.mode,
        if args.grad_checkpoint { " (gradient checkpointing)" } else { "" },
        train.len(),
        test.len(),
        kiln::num_threads()
    );
    let head = Linear::new(HIDDEN, 3, true, &mut init::rng(0));
    let ce = CrossEntropyOptions::default();
    let mut shuffle = DataRng::new(0);
    let mut json = format!(r#"{{"task": "E3 MiniLM sentiment {:?}", "impl": "kiln""#, args.mode).to_lowercase();
    match args.mode {
        Mode::Frozen => {
            bert.eval();
            let t = Instant::now();
            let ftr = features(&bert, &train)?;
            let feat_train_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let fte = features(&bert, &test)?;
            let feat_test_s = t.elapsed().as_secs_f64();
            println!("features: train {feat_train_s:.1} s, test {feat_test_s:.1} s");
            let mut opt = adamw(head.named_parameters(), 1e-3);
            let t = Instant::now();
            let mut acc = 0.0;
            let mut steps = 0;
            for ep in 1..=3 {
                let perm = shuffle.permutation(train.len());
                for chunk in perm.chunks(BATCH) {
                    if args.max_steps.is_some_and(|m| steps >= m) {
                        break;
                    }
                    let i = Tensor::from_vec_i64(chunk.iter().map(|&v| v as i64).collect(), &[chunk.len()])?;
                    let loss = cross_entropy(
                        &head.forward(&ftr.try_index_select(0, &i)?)?,
                        &train.y.try_index_select(0, &i)?,
                        &ce,
                    )?;
                    opt.zero_grad();
                    loss.backward()?;
                    opt.step()?;
                    steps += 1;
                }
                let (train_loss, a) = no_grad(|| -> Result<(f32, f64)> {
                    let tl = cross_entropy(&head.forward(&ftr)?, &train.y, &ce)?.item()?;
                    Ok((tl, accuracy(&head.forward(&fte)?, &test.labels)?))
                })?;
                acc = a;
                println!("epoch {ep}: train loss {train_loss:.4}, test acc {:.2}%", 100.0 * acc);
            }
            let head_s = t.elapsed().as_secs_f64();
            println!("head training {head_s:.2} s ({steps} steps); test acc {:.2}%", 100.0 * acc);
            json += &format!(
                r#", "feature_seconds_train": {feat_train_s:.3}, "feature_seconds_test": {feat_test_s:.3}, "head_train_seconds": {head_s:.3}, "steps": {steps}, "test_acc": {acc:.4}"#
            );
        }
        Mode::Finetune | Mode::Lora => {
            let peak = if args.mode == Mode::Lora { 5e-4 } else { 5e-5 };
            let mut params = if args.mode == Mode::Lora {
                let cfg = LoraConfig::new(8, 16.0).dropout(0.1).seed(0);
                let n = inject_lora(&mut bert, "*.query", &cfg)? + inject_lora(&mut bert, "*.value", &cfg)?;
                println!("LoRA: {n} adapted Linear layers, rank 8, alpha 16, dropout 0.1; {:?}", bert.num_parameters());
                lora_parameters(&bert)
            } else {
                bert.named_parameters()
            };
            params.extend(head.named_parameters().into_iter().map(|(n, p)| (format!("head.{n}"), p)));
            let mut opt = adamw(params, peak);
            bert.train();
            let total = train.len().div_ceil(BATCH);
            let steps = args.max_steps.map_or(total, |m| m.min(total));
            let perm = shuffle.permutation(train.len());
            let mut losses = Vec::new();
            let t = Instant::now();
            for (s, chunk) in perm.chunks(BATCH).take(steps).enumerate() {
                let (ids, mask, y) = train.batch(chunk)?;
                let loss = cross_entropy(&head.forward(&pooled(&bert, &ids, &mask)?)?, &y, &ce)?;
                opt.set_lr(schedule(peak, s, total));
                opt.zero_grad();
                loss.backward()?;
                opt.step()?;
                let l = loss.item()?;
                losses.push(l);
                if s % 25 == 0 || s + 1 == steps {
                    println!("step {s}: loss {l:.4} ({:.2} s/step so far)", t.elapsed().as_secs_f64() / (s + 1) as f64);
                }
            }
            let train_s = t.elapsed().as_secs_f64();
            if args.mode == Mode::Lora {
                let merged = merge_lora(&mut bert)?;
                println!("merged {merged} adapters; state dict has {} tensors", bert.state_dict().len());
                if let Some(path) = &args.save {
                    // The merged encoder under its original Hugging Face names and shapes.
                    kiln::io::save_module(&bert, path)?;
                    println!("saved the merged encoder to {}", path.display());
                }
            }
            bert.eval();
            let t = Instant::now();
            let logits = no_grad(|| head.forward(&features(&bert, &test)?))?;
            let acc = accuracy(&logits, &test.labels)?;
            let eval_s = t.elapsed().as_secs_f64();
            let last10 = &losses[losses.len().saturating_sub(10)..];
            let last10 = last10.iter().sum::<f32>() / last10.len().max(1) as f32;
            println!(
                "train {train_s:.1} s ({:.3} s/step, {steps} steps); test eval {eval_s:.1} s; test acc {:.2}%",
                train_s / steps.max(1) as f64,
                100.0 * acc
            );
            json += &format!(
                r#", "steps": {steps}, "lr": {peak}, "train_seconds": {train_s:.3}, "seconds_per_step": {:.4}, "eval_seconds_test": {eval_s:.3}, "first_loss": {:.4}, "last10_loss_mean": {last10:.4}, "test_acc": {acc:.4}"#,
                train_s / steps.max(1) as f64,
                losses.first().copied().unwrap_or(f32::NAN)
            );
        }
    }
    println!("{json}}}");
    Ok(())
}
