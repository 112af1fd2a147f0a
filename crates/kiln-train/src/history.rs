//! [`History`]: what [`fit`](crate::Trainer::fit) records, as CSV rows and an SVG plot.

use crate::metrics::Metrics;
use kiln_autograd::{Error, Result};
use std::fmt::Write as _;
use std::path::Path;

/// One epoch of training.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLog {
    /// The epoch, counted from 1.
    pub epoch: usize,
    /// Optimizer steps taken since the start of training, at the end of this epoch.
    pub step: usize,
    /// Optimizer steps in this epoch (fewer than a full epoch when `max_steps` cut it short).
    pub steps: usize,
    /// Training samples seen in this epoch.
    pub samples: usize,
    /// The mean training loss per sample over the epoch (with the weights as they were at
    /// each step).
    pub train_loss: f64,
    /// The training accuracy over the epoch, for class-index targets.
    pub train_accuracy: Option<f64>,
    /// The validation metrics after the epoch, when fit has a validation loader.
    pub val: Option<Metrics>,
    /// The learning rate of the epoch's last step (the optimizer's first group).
    pub lr: f32,
    /// Seconds spent training in this epoch (validation excluded).
    pub seconds: f64,
    /// Seconds spent on validation after this epoch.
    pub val_seconds: f64,
}

impl EpochLog {
    /// The validation loss, when there was validation.
    pub fn val_loss(&self) -> Option<f64> {
        self.val.as_ref().map(|m| m.loss)
    }

    /// The validation accuracy, when there was validation with class targets.
    pub fn val_accuracy(&self) -> Option<f64> {
        self.val.as_ref().and_then(|m| m.accuracy)
    }

    /// Training samples per second.
    pub fn samples_per_second(&self) -> f64 {
        self.samples as f64 / self.seconds.max(1e-9)
    }

    /// The row of this epoch in [`History::CSV_HEADER`]'s columns (empty fields for absent
    /// values).
    pub fn csv_row(&self) -> String {
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        format!(
            "{},{},{:.6},{},{},{},{},{:.3}",
            self.epoch,
            self.step,
            self.train_loss,
            opt(self.train_accuracy),
            opt(self.val_loss()),
            opt(self.val_accuracy()),
            self.lr,
            self.seconds
        )
    }

    /// A one-line summary in `key=value` form (greppable), e.g.
    /// `epoch=1/3 step=469 train_loss=0.2661 train_acc=0.9210 val_loss=0.1101 val_acc=0.9651 lr=0.001 seconds=2.20 samples_per_s=27000`.
    pub fn summary(&self, epochs: usize) -> String {
        let mut s = format!("epoch={}/{} step={} train_loss={:.4}", self.epoch, epochs, self.step, self.train_loss);
        if let Some(a) = self.train_accuracy {
            let _ = write!(s, " train_acc={a:.4}");
        }
        if let Some(m) = &self.val {
            let _ = write!(s, " val_loss={:.4}", m.loss);
            if let Some(a) = m.accuracy {
                let _ = write!(s, " val_acc={a:.4}");
            }
            for (k, a) in &m.top_k {
                let _ = write!(s, " val_top{k}={a:.4}");
            }
        }
        let _ =
            write!(s, " lr={:.3e} seconds={:.2} samples_per_s={:.0}", self.lr, self.seconds, self.samples_per_second());
        s
    }
}

/// Everything [`fit`](crate::Trainer::fit) recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// One entry per epoch run.
    pub epochs: Vec<EpochLog>,
    /// The loss of every optimizer step, in order.
    pub step_losses: Vec<f32>,
    /// Batches per full epoch (to place steps on an epoch axis).
    pub steps_per_epoch: usize,
    /// True when a callback stopped training before the last epoch.
    pub stopped_early: bool,
}

impl History {
    /// The CSV log's header.
    pub const CSV_HEADER: &'static str = "epoch,step,train_loss,train_acc,val_loss,val_acc,lr,seconds";

    /// The last epoch's log.
    pub fn last(&self) -> Option<&EpochLog> {
        self.epochs.last()
    }

    /// The log as CSV: [`History::CSV_HEADER`] and one row per epoch.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(Self::CSV_HEADER);
        s.push('\n');
        for e in &self.epochs {
            s.push_str(&e.csv_row());
            s.push('\n');
        }
        s
    }

    /// Writes [`History::to_csv`] to `path`.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_csv()).map_err(|e| io_err(path, e))
    }

    /// Draws the loss (per step, smoothed, and per epoch, training and validation) and the
    /// accuracy curves (per epoch) side by side into an SVG file.
    pub fn plot_svg(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::plot::plot_history(self, path.as_ref())
    }
}

/// An I/O error naming `path`.
pub(crate) fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}
