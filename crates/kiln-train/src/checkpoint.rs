//! [`ModelCheckpoint`]: saves kiln-io training checkpoints during fit, and [`resume`].

use crate::callbacks::{BatchLog, Callback, Context, Every};
use crate::history::EpochLog;
use kiln_autograd::{Error, Result};
use kiln_io::{load_checkpoint, save_checkpoint, Checkpoint};
use kiln_nn::Module;
use kiln_optim::Optimizer;
use std::path::{Path, PathBuf};

/// Saves a kiln-io [`Checkpoint`] (the model's and the optimizer's state dicts, the step and
/// epoch counters and the default generator's state) every `n` epochs or every `n` optimizer
/// steps, into `dir/epoch-0003.safetensors` or `dir/step-000300.safetensors`. Each file is
/// written atomically (a crash mid-save leaves the previous files intact).
///
/// The scheduler's state is not part of these files: a per-step scheduler resumes with
/// `sched.set_last_step(ckpt.step as usize)`, a per-epoch one with `ckpt.epoch`, each followed
/// by `sched.apply(&mut opt)` (the base rates are in the optimizer's state). Resume from an
/// epoch checkpoint with [`resume`] and [`Trainer::initial_epoch`](crate::Trainer::initial_epoch).
#[derive(Debug, Clone)]
pub struct ModelCheckpoint {
    dir: PathBuf,
    every: Every,
    n: usize,
    saved: Vec<PathBuf>,
}

impl ModelCheckpoint {
    /// A checkpoint after every `n`-th epoch (`n` of 0 is taken as 1).
    pub fn every_epochs(dir: impl Into<PathBuf>, n: usize) -> Self {
        ModelCheckpoint { dir: dir.into(), every: Every::Epoch, n: n.max(1), saved: Vec::new() }
    }

    /// A checkpoint after every `n`-th optimizer step (`n` of 0 is taken as 1).
    pub fn every_steps(dir: impl Into<PathBuf>, n: usize) -> Self {
        ModelCheckpoint { dir: dir.into(), every: Every::Step, n: n.max(1), saved: Vec::new() }
    }

    /// The files written so far, in order.
    pub fn saved(&self) -> &[PathBuf] {
        &self.saved
    }

    /// The file of epoch `epoch` (counted from 1) in `dir`.
    pub fn epoch_path(dir: impl AsRef<Path>, epoch: usize) -> PathBuf {
        dir.as_ref().join(format!("epoch-{epoch:04}.safetensors"))
    }

    /// The file of step `step` in `dir`.
    pub fn step_path(dir: impl AsRef<Path>, step: usize) -> PathBuf {
        dir.as_ref().join(format!("step-{step:07}.safetensors"))
    }

    fn save(&mut self, path: PathBuf, ctx: &Context, epochs_done: usize) -> Result<()> {
        let ckpt = Checkpoint::capture(ctx.model, &*ctx.optimizer, None, ctx.global_step as u64, epochs_done as u64)?;
        save_checkpoint(&path, &ckpt)?;
        self.saved.push(path);
        Ok(())
    }
}

impl Callback for ModelCheckpoint {
    fn on_train_begin(&mut self, _: &mut Context) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::Io { path: self.dir.display().to_string(), source })
    }
    fn on_batch_end(&mut self, _: &BatchLog, ctx: &mut Context) -> Result<()> {
        if self.every == Every::Step && ctx.global_step.is_multiple_of(self.n) {
            self.save(Self::step_path(&self.dir, ctx.global_step), ctx, ctx.epoch)?;
        }
        Ok(())
    }
    fn on_epoch_end(&mut self, log: &EpochLog, ctx: &mut Context) -> Result<()> {
        if self.every == Every::Epoch && log.epoch.is_multiple_of(self.n) {
            self.save(Self::epoch_path(&self.dir, log.epoch), ctx, log.epoch)?;
        }
        Ok(())
    }
}

/// Loads the checkpoint at `path` into `model` (strictly) and `optimizer`, restores the
/// default generator, and returns the checkpoint: its `epoch` is the
/// [`initial_epoch`](crate::Trainer::initial_epoch) to continue from, its `step` the step
/// count (for a per-step scheduler's `set_last_step`).
pub fn resume(path: impl AsRef<Path>, model: &dyn Module, optimizer: &mut dyn Optimizer) -> Result<Checkpoint> {
    let ckpt = load_checkpoint(path)?;
    ckpt.restore(model, optimizer, None)?;
    Ok(ckpt)
}
