//! [`Callback`]s: hooks into [`fit`](crate::Trainer::fit), and the stock ones (LR schedule,
//! early stopping, gradient clipping, CSV log, SVG plot, closures).

use crate::history::{io_err, EpochLog, History};
use kiln_autograd::{Error, Result, Tensor};
use kiln_nn::Module;
use kiln_optim::{clip_grad_norm, LrScheduler, Optimizer};
use std::io::Write;
use std::path::PathBuf;

/// What a callback sees of the training run.
pub struct Context<'c> {
    /// The model being trained.
    pub model: &'c dyn Module,
    /// The optimizer (to change the learning rate, or save its state).
    pub optimizer: &'c mut dyn Optimizer,
    /// The current epoch, counted from 0.
    pub epoch: usize,
    /// Epochs fit was asked to run.
    pub epochs: usize,
    /// Optimizer steps taken so far.
    pub global_step: usize,
    /// Batches per epoch.
    pub steps_per_epoch: usize,
    /// What has been recorded so far (the finished epochs and every step's loss).
    pub history: &'c History,
}

/// One training step, as [`Callback::on_batch_end`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLog {
    /// The epoch, counted from 0.
    pub epoch: usize,
    /// The batch within the epoch, counted from 0.
    pub batch: usize,
    /// Samples in the batch.
    pub size: usize,
    /// The batch's loss.
    pub loss: f32,
}

/// Hooks called by [`fit`](crate::Trainer::fit), in this order: `on_train_begin`, then per
/// epoch `on_epoch_begin`, per batch `on_before_step` (after backward, before the optimizer
/// step) and `on_batch_end`, then `on_epoch_end` (after validation), and finally
/// `on_train_end`. Fit asks [`Callback::should_stop`] after every batch and every epoch. All
/// hooks do nothing by default. Per-batch hooks run on the training thread: keep them cheap.
pub trait Callback {
    /// Before the first epoch.
    fn on_train_begin(&mut self, ctx: &mut Context) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
    /// Before each epoch.
    fn on_epoch_begin(&mut self, ctx: &mut Context) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
    /// After `backward`, before `optimizer.step()`: the gradients are there (to clip them).
    fn on_before_step(&mut self, ctx: &mut Context) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
    /// After each optimizer step (`ctx.global_step` already counts it).
    fn on_batch_end(&mut self, batch: &BatchLog, ctx: &mut Context) -> Result<()> {
        let _ = (batch, ctx);
        Ok(())
    }
    /// After each epoch and its validation; `log` is also the last entry of `ctx.history`.
    fn on_epoch_end(&mut self, log: &EpochLog, ctx: &mut Context) -> Result<()> {
        let _ = (log, ctx);
        Ok(())
    }
    /// After the last epoch (or an early stop).
    fn on_train_end(&mut self, ctx: &mut Context) -> Result<()> {
        let _ = ctx;
        Ok(())
    }
    /// True to end training after the current batch or epoch.
    fn should_stop(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------- LR schedule

/// When [`LrSchedule`] advances its scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// After every optimizer step.
    Step,
    /// After every epoch.
    Epoch,
}

/// Steps a kiln-optim [`LrScheduler`] after every optimizer step or every epoch. Create the
/// scheduler on the optimizer first (it sets the step-0 rate), then hand it over:
/// `LrSchedule::per_step(OneCycleLR::new(&mut opt, schedule)?)`.
#[derive(Debug, Clone)]
pub struct LrSchedule<S> {
    scheduler: S,
    every: Every,
}

impl<S: LrScheduler> LrSchedule<S> {
    /// Advances `scheduler` after every optimizer step.
    pub fn per_step(scheduler: S) -> Self {
        LrSchedule { scheduler, every: Every::Step }
    }
    /// Advances `scheduler` after every epoch.
    pub fn per_epoch(scheduler: S) -> Self {
        LrSchedule { scheduler, every: Every::Epoch }
    }
    /// The scheduler.
    pub fn scheduler(&self) -> &S {
        &self.scheduler
    }
}

impl<S: LrScheduler> Callback for LrSchedule<S> {
    fn on_batch_end(&mut self, _: &BatchLog, ctx: &mut Context) -> Result<()> {
        if self.every == Every::Step {
            self.scheduler.step(ctx.optimizer);
        }
        Ok(())
    }
    fn on_epoch_end(&mut self, _: &EpochLog, ctx: &mut Context) -> Result<()> {
        if self.every == Every::Epoch {
            self.scheduler.step(ctx.optimizer);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- early stopping

/// The quantity [`EarlyStopping`] watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    /// Validation loss (lower is better).
    ValLoss,
    /// Validation accuracy (higher is better).
    ValAccuracy,
    /// Training loss (lower is better).
    TrainLoss,
    /// Training accuracy (higher is better).
    TrainAccuracy,
}

impl Monitor {
    fn value(self, log: &EpochLog) -> Option<f64> {
        match self {
            Monitor::ValLoss => log.val_loss(),
            Monitor::ValAccuracy => log.val_accuracy(),
            Monitor::TrainLoss => Some(log.train_loss),
            Monitor::TrainAccuracy => log.train_accuracy,
        }
    }
    fn higher_is_better(self) -> bool {
        matches!(self, Monitor::ValAccuracy | Monitor::TrainAccuracy)
    }
    fn name(self) -> &'static str {
        match self {
            Monitor::ValLoss => "val_loss",
            Monitor::ValAccuracy => "val_acc",
            Monitor::TrainLoss => "train_loss",
            Monitor::TrainAccuracy => "train_acc",
        }
    }
}

/// Stops training when the monitored value has not improved by more than `min_delta` for
/// `patience` epochs in a row (Keras' `EarlyStopping`; the weights are left as they are).
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    monitor: Monitor,
    patience: usize,
    min_delta: f64,
    best: Option<f64>,
    best_epoch: usize,
    wait: usize,
    stop: bool,
}

impl EarlyStopping {
    /// Watches `monitor`, stopping after `patience` epochs without improvement.
    pub fn new(monitor: Monitor, patience: usize) -> Self {
        EarlyStopping { monitor, patience, min_delta: 0.0, best: None, best_epoch: 0, wait: 0, stop: false }
    }
    /// The smallest change that counts as an improvement (default 0).
    pub fn min_delta(mut self, min_delta: f64) -> Self {
        self.min_delta = min_delta.abs();
        self
    }
    /// The best value seen and its epoch (from 1).
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best.map(|b| (b, self.best_epoch))
    }
    /// Records an epoch's log; true when training should stop after it.
    pub fn update(&mut self, log: &EpochLog) -> Result<bool> {
        let Some(v) = self.monitor.value(log) else {
            return Err(Error::op(
                "EarlyStopping",
                format!(
                    "monitors {} but epoch {} has no such value{}",
                    self.monitor.name(),
                    log.epoch,
                    if log.val.is_none() { " (fit has no validation loader)" } else { "" }
                ),
            ));
        };
        let better = match self.best {
            None => true,
            Some(b) if self.monitor.higher_is_better() => v > b + self.min_delta,
            Some(b) => v < b - self.min_delta,
        };
        if better {
            self.best = Some(v);
            self.best_epoch = log.epoch;
            self.wait = 0;
        } else {
            self.wait += 1;
            if self.wait >= self.patience {
                self.stop = true;
            }
        }
        Ok(self.stop)
    }
}

impl Callback for EarlyStopping {
    fn on_epoch_end(&mut self, log: &EpochLog, _: &mut Context) -> Result<()> {
        self.update(log).map(|_| ())
    }
    fn should_stop(&self) -> bool {
        self.stop
    }
}

// ---------------------------------------------------------------- gradient clipping

/// Clips the total gradient norm of the model's trainable parameters before every optimizer
/// step (kiln-optim's [`clip_grad_norm`], PyTorch's `clip_grad_norm_`).
#[derive(Debug, Clone)]
pub struct GradClip {
    max_norm: f32,
    norm_type: f32,
    params: Vec<Tensor>,
    last_norm: f32,
}

impl GradClip {
    /// Clips the 2-norm to `max_norm`.
    pub fn new(max_norm: f32) -> Self {
        GradClip { max_norm, norm_type: 2.0, params: Vec::new(), last_norm: 0.0 }
    }
    /// Another p-norm (`f32::INFINITY` for the largest |g|).
    pub fn norm_type(mut self, norm_type: f32) -> Self {
        self.norm_type = norm_type;
        self
    }
    /// The total norm before clipping, at the last step.
    pub fn last_norm(&self) -> f32 {
        self.last_norm
    }
}

impl Callback for GradClip {
    fn on_train_begin(&mut self, ctx: &mut Context) -> Result<()> {
        // Listed once: the per-step hook then allocates nothing.
        self.params = ctx.model.parameters().into_iter().filter(Tensor::requires_grad).collect();
        Ok(())
    }
    fn on_before_step(&mut self, _: &mut Context) -> Result<()> {
        self.last_norm = clip_grad_norm(self.params.iter(), self.max_norm, self.norm_type)?;
        Ok(())
    }
}

// ---------------------------------------------------------------- logs

/// Writes the CSV log ([`History::CSV_HEADER`], one row per epoch) as training goes, flushed
/// after every epoch.
#[derive(Debug)]
pub struct CsvLogger {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl CsvLogger {
    /// Logs to `path` (created or truncated when training begins).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CsvLogger { path: path.into(), file: None }
    }
}

impl Callback for CsvLogger {
    fn on_train_begin(&mut self, _: &mut Context) -> Result<()> {
        let mut f = std::fs::File::create(&self.path).map_err(|e| io_err(&self.path, e))?;
        writeln!(f, "{}", History::CSV_HEADER).map_err(|e| io_err(&self.path, e))?;
        self.file = Some(f);
        Ok(())
    }
    fn on_epoch_end(&mut self, log: &EpochLog, _: &mut Context) -> Result<()> {
        if let Some(f) = &mut self.file {
            writeln!(f, "{}", log.csv_row()).and_then(|_| f.flush()).map_err(|e| io_err(&self.path, e))?;
        }
        Ok(())
    }
}

/// Redraws the SVG plot of the history ([`History::plot_svg`]) after every epoch.
#[derive(Debug, Clone)]
pub struct SvgPlot {
    path: PathBuf,
}

impl SvgPlot {
    /// Plots to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SvgPlot { path: path.into() }
    }
}

impl Callback for SvgPlot {
    fn on_epoch_end(&mut self, _: &EpochLog, ctx: &mut Context) -> Result<()> {
        ctx.history.plot_svg(&self.path)
    }
}

/// A closure called after every epoch: [`Trainer::on_epoch_end`](crate::Trainer::on_epoch_end).
pub struct OnEpochEnd<F>(pub F);

impl<F: FnMut(&EpochLog) -> Result<()>> Callback for OnEpochEnd<F> {
    fn on_epoch_end(&mut self, log: &EpochLog, _: &mut Context) -> Result<()> {
        (self.0)(log)
    }
}

/// A borrowed callback: pass `&mut cb` to keep `cb` (and what it recorded) after fit.
impl<C: Callback + ?Sized> Callback for &mut C {
    fn on_train_begin(&mut self, ctx: &mut Context) -> Result<()> {
        (**self).on_train_begin(ctx)
    }
    fn on_epoch_begin(&mut self, ctx: &mut Context) -> Result<()> {
        (**self).on_epoch_begin(ctx)
    }
    fn on_before_step(&mut self, ctx: &mut Context) -> Result<()> {
        (**self).on_before_step(ctx)
    }
    fn on_batch_end(&mut self, batch: &BatchLog, ctx: &mut Context) -> Result<()> {
        (**self).on_batch_end(batch, ctx)
    }
    fn on_epoch_end(&mut self, log: &EpochLog, ctx: &mut Context) -> Result<()> {
        (**self).on_epoch_end(log, ctx)
    }
    fn on_train_end(&mut self, ctx: &mut Context) -> Result<()> {
        (**self).on_train_end(ctx)
    }
    fn should_stop(&self) -> bool {
        (**self).should_stop()
    }
}
