//! EfficientNet-Lite0 with pretrained weights: loads `DIR/model.safetensors`, classifies the
//! `input` images of a reference file and compares the pooled features and logits with the
//! reference's (made by PyTorch), then prints the top-5 classes of each image.
//!
//! `cargo run --release --example efficientnet -- --model DIR --check REF.safetensors [--threads N]`
//!
//! Without `--check`, runs two random images of 224x224. Exits with status 1 when an error
//! exceeds 1e-4.

use kiln::io::load_safetensors;
use kiln::models::EfficientNet;
use kiln::prelude::*;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

/// Largest error accepted on the features and logits.
const TOLERANCE: f32 = 1e-4;

struct Args {
    model: String,
    check: Option<String>,
    threads: Option<usize>,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args { model: String::new(), check: None, threads: None };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--model" => args.model = value()?,
            "--check" => args.check = Some(value()?),
            "--threads" => args.threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.model.is_empty() {
        return Err("--model DIR is required".into());
    }
    Ok(args)
}

/// Largest absolute difference between `got` and the reference `want` (same shape).
fn max_abs_err(got: &Tensor, want: &Array, what: &str) -> Result<f32> {
    if got.shape() != want.shape() {
        return Err(Error::Msg(format!("{what}: shape {:?}, reference {:?}", got.shape(), want.shape())));
    }
    let (g, w) = (got.to_vec_f32()?, want.to_vec_f32()?);
    Ok(g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max))
}

fn reference(path: &str) -> Result<BTreeMap<String, Array>> {
    let r = load_safetensors(path)?;
    for k in ["input", "pooled_features", "logits"] {
        if !r.contains_key(k) {
            return Err(Error::Msg(format!("{path} has no tensor {k}")));
        }
    }
    Ok(r)
}

fn run(args: &Args) -> Result<bool> {
    if let Some(n) = args.threads {
        kiln::set_num_threads(n)?;
    }
    let t0 = Instant::now();
    let model = EfficientNet::from_pretrained(&args.model)?;
    println!(
        "loaded {} ({} parameters, {} classes) in {:.2?}",
        args.model,
        model.num_parameters().total,
        model.num_classes(),
        t0.elapsed()
    );
    let refs = args.check.as_deref().map(reference).transpose()?;
    let input = match &refs {
        Some(r) => Tensor::from_array(r["input"].clone()),
        None => Tensor::from_array(kiln::nn::init::normal(&[2, 3, 224, 224], 0.0, 1.0, &mut kiln::nn::init::rng(0))),
    };
    println!("input {:?}", input.shape());
    let t1 = Instant::now();
    let (features, logits) = no_grad(|| -> Result<_> {
        let features = model.features(&input)?;
        let logits = model.fc.forward(&features)?;
        Ok((features, logits))
    })?;
    println!("forward in {:.2?} ({} threads)", t1.elapsed(), kiln::num_threads());

    let mut ok = true;
    if let Some(r) = &refs {
        let ef = max_abs_err(&features, &r["pooled_features"], "pooled_features")?;
        let el = max_abs_err(&logits, &r["logits"], "logits")?;
        println!("pooled_features max abs error: {ef:.3e}");
        println!("logits          max abs error: {el:.3e}");
        if let Some(l64) = r.get("logits_f64") {
            println!("logits vs f64   max abs error: {:.3e}", max_abs_err(&logits, l64, "logits_f64")?);
        }
        ok = ef <= TOLERANCE && el <= TOLERANCE;
        println!("{} (tolerance {TOLERANCE:e})", if ok { "PASS" } else { "FAIL" });
    }

    let probs = logits.try_softmax(-1)?.to_vec_f32()?;
    let classes = model.num_classes();
    for (i, p) in probs.chunks(classes).enumerate() {
        let mut idx: Vec<usize> = (0..classes).collect();
        idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let top: Vec<String> = idx[..5.min(classes)].iter().map(|&c| format!("{c} ({:.3})", p[c])).collect();
        println!("image {i}: top-5 classes {}", top.join(", "));
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\nusage: efficientnet --model DIR [--check REF.safetensors] [--threads N]");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
