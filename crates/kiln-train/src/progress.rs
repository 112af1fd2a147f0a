//! How fit reports progress: an `indicatif` bar on a terminal, one plain line per epoch in
//! logs.

use crate::history::EpochLog;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How [`fit`](crate::Trainer::fit) reports progress. Every mode but `Silent` prints one
/// [`EpochLog::summary`] line per epoch on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// `Bar` when stdout and stderr are terminals and the `CI` variable is unset, else `Plain`.
    #[default]
    Auto,
    /// A progress bar on stderr (running loss, accuracy, samples/s), plus the epoch lines.
    Bar,
    /// The epoch lines only.
    Plain,
    /// Nothing.
    Silent,
}

impl Progress {
    /// `Auto` resolved for this process.
    pub fn resolve(self) -> Progress {
        match self {
            Progress::Auto => {
                let tty = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
                if tty && std::env::var_os("CI").is_none() {
                    Progress::Bar
                } else {
                    Progress::Plain
                }
            }
            p => p,
        }
    }
}

/// The bar's message is rebuilt at most this often (formatting allocates).
const MESSAGE_EVERY: Duration = Duration::from_millis(150);

pub(crate) struct Reporter {
    mode: Progress,
    bar: Option<ProgressBar>,
    last_message: Instant,
}

impl Reporter {
    pub fn new(mode: Progress) -> Reporter {
        Reporter { mode: mode.resolve(), bar: None, last_message: Instant::now() }
    }

    pub fn epoch_begin(&mut self, epoch: usize, epochs: usize, steps: usize) {
        if self.mode != Progress::Bar {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix} [{bar:30.cyan/blue}] {pos}/{len} {elapsed}<{eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
        self.bar = Some(bar);
        self.last_message = Instant::now();
    }

    /// After a step: the epoch's running mean loss and accuracy so far.
    pub fn step(&mut self, loss: f64, accuracy: Option<f64>, samples: usize, seconds: f64) {
        let Some(bar) = &self.bar else { return };
        bar.inc(1);
        if self.last_message.elapsed() >= MESSAGE_EVERY {
            self.last_message = Instant::now();
            let acc = accuracy.map_or(String::new(), |a| format!(" acc {:.2}%", 100.0 * a));
            bar.set_message(format!("loss {loss:.4}{acc} {:.0} samples/s", samples as f64 / seconds.max(1e-9)));
        }
    }

    pub fn validating(&mut self) {
        if let Some(bar) = &self.bar {
            bar.set_message("validating");
        }
    }

    pub fn epoch_end(&mut self, log: &EpochLog, epochs: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.mode != Progress::Silent {
            println!("{}", log.summary(epochs));
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
