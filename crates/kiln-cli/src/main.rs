//! `kiln`: the kiln command-line tool.
//!
//! `kiln inspect FILE.safetensors` prints each tensor's name, dtype and shape, the file's
//! metadata and the total parameter count; a malformed file is reported on stderr (naming
//! the file and the problem) with exit status 1.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The kiln deep-learning framework's command-line tool.
#[derive(Parser, Debug)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lists the tensors of a safetensors file: name, dtype, shape; then metadata and the
    /// total parameter count. Only the header is read.
    Inspect {
        /// The safetensors file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Inspect { file } => inspect(file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn inspect(file: &PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let header = kiln_io::read_header(file)?;
    let mut tensors: Vec<&kiln_io::TensorInfo> = header.tensors.iter().collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<(String, String, String)> =
        tensors.iter().map(|t| (t.name.clone(), format!("{:?}", t.dtype), format!("{:?}", t.shape))).collect();
    let w0 = rows.iter().map(|r| r.0.len()).chain(["name".len()]).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.len()).chain(["dtype".len()]).max().unwrap_or(0);
    let total: u128 = tensors.iter().map(|t| t.numel() as u128).sum();

    let mut out = std::io::stdout().lock();
    writeln!(out, "{}: {} tensors, {} bytes of data", file.display(), tensors.len(), header.data_len)?;
    if !header.metadata.is_empty() {
        writeln!(out, "metadata:")?;
        for (k, v) in &header.metadata {
            writeln!(out, "  {k}: {v}")?;
        }
    }
    writeln!(out, "{:<w0$}  {:<w1$}  shape", "name", "dtype")?;
    for (name, dtype, shape) in &rows {
        writeln!(out, "{name:<w0$}  {dtype:<w1$}  {shape}")?;
    }
    writeln!(out, "total parameters: {total}")?;
    Ok(())
}
