//! What the MNIST examples share: command-line flags, finding and loading the data, and the
//! final JSON line.

use kiln::data::{load_mnist, ArrayDataset, MnistSplit};
use kiln::train::History;
use kiln::{Error, Result};
use std::path::PathBuf;

/// The four files the examples read.
const FILES: &str = "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, \
                     t10k-labels-idx1-ubyte.gz";

/// Command-line flags: `--name value` pairs.
pub struct Args {
    pairs: Vec<(String, String)>,
}

impl Args {
    /// Parses `std::env::args()`; `known` lists the accepted flag names (without `--`).
    pub fn parse(known: &[&str], usage: &str) -> Result<Args> {
        let mut pairs = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if a == "--help" || a == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            let name = a.strip_prefix("--").filter(|n| known.contains(n));
            let (Some(name), Some(value)) = (name, it.next()) else {
                return Err(Error::Msg(format!("bad argument {a:?} (or a missing value)\n{usage}")));
            };
            pairs.push((name.to_string(), value));
        }
        Ok(Args { pairs })
    }

    /// The value of `--name`, parsed.
    pub fn get<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>> {
        match self.pairs.iter().rev().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, v)) => v.parse().map(Some).map_err(|_| Error::Msg(format!("--{name}: cannot parse {v:?}"))),
        }
    }

    /// The value of `--name`, or `default`.
    pub fn get_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        Ok(self.get(name)?.unwrap_or(default))
    }
}

/// Applies `--threads N` (kiln's kernel threads; default: rayon's, one per core).
pub fn set_threads(args: &Args) -> Result<usize> {
    if let Some(t) = args.get::<usize>("threads")? {
        kiln::set_num_threads(t)?;
    }
    Ok(kiln::num_threads())
}

/// The MNIST folder: `--data DIR`, else `$KILN_MNIST_DIR`, else `../shared/assets/mnist` (from
/// the working directory or beside the repository) when it exists.
pub fn data_dir(args: &Args) -> Result<PathBuf> {
    let given = args.get::<String>("data")?.or_else(|| std::env::var("KILN_MNIST_DIR").ok());
    let candidates: Vec<PathBuf> = match given {
        Some(d) => vec![PathBuf::from(d)],
        None => vec![
            PathBuf::from("../shared/assets/mnist"),
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/assets/mnist")),
        ],
    };
    candidates.iter().find(|d| d.join("train-images-idx3-ubyte.gz").is_file() || d.is_dir()).cloned().ok_or_else(|| {
        Error::Msg(format!(
            "MNIST not found (looked in {}). Download the four IDX files {FILES} from the standard MNIST \
             mirror (e.g. https://ossci-datasets.s3.amazonaws.com/mnist/) into a folder and pass --data DIR \
             or set KILN_MNIST_DIR=DIR.",
            candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// MNIST's train and test splits: images `[N, 1, 28, 28]` as pixels/255, labels 0-9.
pub fn load(args: &Args) -> Result<(ArrayDataset, ArrayDataset)> {
    let dir = data_dir(args)?;
    let hint = |e: Error| Error::Msg(format!("{e}\n(MNIST folder {}: it needs {FILES})", dir.display()));
    let train = load_mnist(&dir, MnistSplit::Train, true).map_err(hint)?;
    let test = load_mnist(&dir, MnistSplit::Test, true).map_err(hint)?;
    Ok((train, test))
}

/// The final JSON line: config, steps and per-epoch train loss, test accuracy and seconds.
pub fn print_json(example: &str, config: &str, threads: usize, batch: usize, h: &History) {
    let list = |f: &dyn Fn(&kiln::train::EpochLog) -> f64, digits: usize| {
        h.epochs.iter().map(|e| format!("{:.*}", digits, f(e))).collect::<Vec<_>>().join(", ")
    };
    let steps: usize = h.epochs.iter().map(|e| e.steps).sum();
    println!(
        r#"{{"example": "{example}", "config": "{config}", "threads": {threads}, "batch_size": {batch}, "epochs": {}, "steps": {steps}, "train_loss": [{}], "test_acc": [{}], "train_seconds": [{}], "final_test_acc": {:.4}}}"#,
        h.epochs.len(),
        list(&|e| e.train_loss, 4),
        list(&|e| 100.0 * e.val_accuracy().unwrap_or(f64::NAN), 2),
        list(&|e| e.seconds, 3),
        100.0 * h.last().and_then(|e| e.val_accuracy()).unwrap_or(f64::NAN),
    );
}
