//! Sentence embeddings with a sentence-transformers BERT model (e.g. all-MiniLM-L6-v2).
//!
//! `cargo run --release --example embed -- --model DIR --sentences FILE [--max-len N] [--check REF.safetensors]`
//!
//! Embeds each line of FILE (truncated to N tokens, default 128, and padded to N) and prints
//! the cosine-similarity matrix. With `--check`, compares `input_ids`, `attention_mask`
//! (and `token_type_ids`, `last_hidden_state`, `pooler_output`, `sentence_embedding` where REF
//! has them) with REF's tensors of those names: the batch is padded to REF's sequence
//! length, the max abs error of each is printed, and the exit status is 1 if the ids or the
//! mask differ or `last_hidden_state` is off by more than 1e-4.

use kiln::models::{l2_normalize, Padding, SentenceEmbedder};
use kiln::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: embed --model DIR --sentences FILE [--max-len N] [--check REF.safetensors]";
/// The tolerance on `last_hidden_state` (all positions) for `--check`.
const HIDDEN_TOL: f32 = 1e-4;

struct Args {
    model: PathBuf,
    sentences: PathBuf,
    max_len: usize,
    check: Option<PathBuf>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let (mut model, mut sentences, mut check, mut max_len) = (None, None, None, 128);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--sentences" => sentences = Some(PathBuf::from(value()?)),
            "--check" => check = Some(PathBuf::from(value()?)),
            "--max-len" => {
                let v = value()?;
                max_len = v.parse().map_err(|_| format!("--max-len {v:?} is not a number"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        model: model.ok_or_else(|| format!("--model is required\n{USAGE}"))?,
        sentences: sentences.ok_or_else(|| format!("--sentences is required\n{USAGE}"))?,
        max_len,
        check,
    })
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
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether the check (if any) passed.
fn run(args: &Args) -> Result<bool> {
    let text = std::fs::read_to_string(&args.sentences)
        .map_err(|source| Error::Io { path: args.sentences.display().to_string(), source })?;
    let sentences: Vec<&str> = text.lines().collect();
    if sentences.is_empty() {
        return Err(Error::Msg(format!("{}: no sentences", args.sentences.display())));
    }
    let reference = args.check.as_ref().map(kiln::io::load_safetensors).transpose()?;
    // Pad to the reference's sequence length when checking, else to --max-len.
    let pad_len = match &reference {
        Some(r) => {
            let ids = r.get("input_ids").ok_or_else(|| Error::Msg("the reference has no input_ids".into()))?;
            if ids.rank() != 2 || ids.shape()[0] != sentences.len() {
                return Err(Error::Msg(format!(
                    "reference input_ids {:?} do not match the {} sentences",
                    ids.shape(),
                    sentences.len()
                )));
            }
            ids.shape()[1]
        }
        None => args.max_len,
    };
    let embedder = SentenceEmbedder::from_pretrained(&args.model)?
        .with_max_seq_length(args.max_len.min(pad_len))?
        .with_padding(Padding::Fixed(pad_len))?;
    let out = embedder.encode(&sentences)?;

    let e = l2_normalize(&out.sentence_embedding)?;
    let sim = e.try_matmul(&e.try_t()?)?.to_vec_f32()?;
    let n = sentences.len();
    println!("embeddings: {:?}; cosine similarity:", out.sentence_embedding.shape());
    for i in 0..n {
        let row: Vec<String> = (0..n).map(|j| format!("{:7.4}", sim[i * n + j])).collect();
        println!("  {}", row.join(" "));
    }

    let Some(reference) = reference else { return Ok(true) };
    let ours: BTreeMap<&str, Option<Array>> = BTreeMap::from([
        ("input_ids", Some(out.encoding.input_ids.data())),
        ("attention_mask", Some(out.encoding.attention_mask.data())),
        ("token_type_ids", Some(out.encoding.token_type_ids.data())),
        ("last_hidden_state", Some(out.last_hidden_state.data())),
        ("pooler_output", pooler_output(&embedder, &out)?),
        ("sentence_embedding", Some(out.sentence_embedding.data())),
    ]);
    let mut ok = true;
    for (name, mine) in &ours {
        let (Some(want), Some(mine)) = (reference.get(*name), mine) else { continue };
        if want.shape() != mine.shape() {
            println!("{name}: shape {:?}, reference {:?}", mine.shape(), want.shape());
            ok = false;
            continue;
        }
        let err = max_abs_diff(mine, want)?;
        let integer = want.dtype() == DType::I64;
        let pass = if integer { err == 0.0 } else { *name != "last_hidden_state" || err <= HIDDEN_TOL };
        let kind = if integer { "mismatches" } else { "max abs error" };
        let shown = if integer { format!("{}", count_diff(mine, want)?) } else { format!("{err:.3e}") };
        println!("{name:<20} {kind} {shown}{}", if pass { "" } else { "  FAIL" });
        // token_type_ids and pooler_output are informative only.
        if !pass && ["input_ids", "attention_mask", "last_hidden_state"].contains(name) {
            ok = false;
        }
    }
    println!("{}", if ok { "check passed" } else { "check FAILED" });
    Ok(ok)
}

/// The pooler output of the same batch, when the model has a pooler.
fn pooler_output(embedder: &SentenceEmbedder, out: &kiln::models::pooling::Embeddings) -> Result<Option<Array>> {
    let Some(pooler) = &embedder.model.pooler else { return Ok(None) };
    let _guard = NoGradGuard::new();
    Ok(Some(pooler.forward(&out.last_hidden_state)?.data()))
}

fn max_abs_diff(a: &Array, b: &Array) -> Result<f32> {
    let (a, b) = (a.to_dtype(DType::F32)?.to_vec_f32()?, b.to_dtype(DType::F32)?.to_vec_f32()?);
    Ok(a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max))
}

fn count_diff(a: &Array, b: &Array) -> Result<usize> {
    let (a, b) = (a.to_vec::<i64>()?, b.to_vec::<i64>()?);
    Ok(a.iter().zip(&b).filter(|(x, y)| x != y).count())
}
