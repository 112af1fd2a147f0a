//! `kiln-conformance DIR [--filter SUBSTRING] [--verbose]`: runs every case of a conformance
//! directory (the format of PyTorch-generated suites, see the README there) against kiln and
//! prints `PASS name`, `FAIL name: ...` or `SKIP name: reason` per case, then
//! `N passed, M failed, K skipped`. Exits 1 if any case failed.

mod case;
mod compare;
mod ops;

use case::{Case, Manifest};
use kiln::{Array, DType, Error, Result, Tensor};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

fn main() -> ExitCode {
    let mut dir: Option<PathBuf> = None;
    let mut filter: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--filter" => filter = args.next(),
            "-h" | "--help" => {
                println!("usage: kiln-conformance DIR [--filter SUBSTRING]");
                return ExitCode::SUCCESS;
            }
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => {
                eprintln!("unexpected argument {a:?}; usage: kiln-conformance DIR [--filter SUBSTRING]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: kiln-conformance DIR [--filter SUBSTRING]");
        return ExitCode::from(2);
    };
    let manifest = match read_manifest(&dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for spec in manifest.cases {
        if filter.as_ref().is_some_and(|f| !spec.name.contains(f.as_str())) {
            continue;
        }
        let name = spec.name.clone();
        let verdict = run_case(&dir, spec);
        match verdict {
            Verdict::Pass => {
                passed += 1;
                println!("PASS {name}");
            }
            Verdict::Fail(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
            Verdict::Skip(why) => {
                skipped += 1;
                println!("SKIP {name}: {why}");
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text =
        std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| Error::Format { what: path.display().to_string(), msg: e.to_string() })?;
    if m.format != 1 {
        return Err(Error::Format {
            what: path.display().to_string(),
            msg: format!("unsupported format {}", m.format),
        });
    }
    Ok(m)
}

fn run_case(dir: &Path, spec: case::CaseSpec) -> Verdict {
    let stored = match kiln::io::load_safetensors(dir.join(&spec.file)) {
        Ok(s) => s,
        Err(e) => return Verdict::Fail(format!("cannot read case file: {e}")),
    };
    let case = match Case::new(spec, stored) {
        Ok(c) => c,
        Err(e) => return Verdict::Fail(e.to_string()),
    };
    // An op that panics is a failure of that case, not of the runner.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_case(&case))) {
        Ok(v) => v,
        Err(p) => {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Verdict::Fail(format!("panicked: {}", msg.unwrap_or_default()))
        }
    }
}

fn check_case(case: &Case) -> Verdict {
    let outputs = match ops::run(case) {
        None => return Verdict::Skip(format!("op {} is not implemented", case.spec.op)),
        Some(Err(e)) => return Verdict::Fail(format!("error: {e}")),
        Some(Ok(o)) => o,
    };
    match compare_all(case, &outputs) {
        Ok(None) => Verdict::Pass,
        Ok(Some(why)) => Verdict::Fail(why),
        Err(e) => Verdict::Fail(format!("error: {e}")),
    }
}

/// Compares outputs, then seeds `Σ_o sum(o · grad_out.o)` and compares the gradients.
fn compare_all(case: &Case, outputs: &[Tensor]) -> Result<Option<String>> {
    let spec = &case.spec;
    if outputs.len() != spec.outputs.len() {
        return Ok(Some(format!("op returned {} outputs, the case expects {}", outputs.len(), spec.outputs.len())));
    }
    let mut failures = Vec::new();
    for (name, out) in spec.outputs.iter().zip(outputs) {
        if let Some(why) = compare::compare(case.stored(name)?, &out.data(), spec.rtol, spec.atol) {
            failures.push(format!("{name} {why}"));
        }
    }
    if !spec.grad_wrt.is_empty() {
        let mut loss: Option<Tensor> = None;
        for (name, out) in spec.outputs.iter().zip(outputs) {
            let Some(g) = case.stored.get(&format!("grad_out.{name}")) else { continue };
            if !out.requires_grad() {
                continue;
            }
            let term = out.try_mul(&Tensor::from_array(g.clone()))?.sum_all();
            loss = Some(match loss {
                None => term,
                Some(l) => l.try_add(&term)?,
            });
        }
        if let Some(loss) = loss {
            loss.backward()?;
        }
        for name in &spec.grad_wrt {
            let expected = case.stored(&format!("grad.{name}"))?;
            let input = case.input(name)?;
            let actual = input.grad().unwrap_or_else(|| Array::zeros(input.shape()));
            if let Some(why) = compare::compare(expected, &actual, spec.rtol, spec.atol) {
                failures.push(format!("grad.{name} {why}"));
            }
        }
    }
    let _ = DType::F32;
    Ok((!failures.is_empty()).then(|| failures.join("; ")))
}
