//! [`Trainer`] (fit), [`evaluate`] and [`predict`].

use crate::batches::Batches;
use crate::callbacks::{BatchLog, Callback, Context, CsvLogger, OnEpochEnd, SvgPlot};
use crate::history::{EpochLog, History};
use crate::loss::Loss;
use crate::metrics::{count_top_k, is_classification, Metrics};
use crate::progress::{Progress, Reporter};
use kiln_autograd::{no_grad, on_pool, Error, Result, Tensor};
use kiln_nn::{Forward, Module};
use kiln_optim::Optimizer;
use std::path::PathBuf;
use std::time::Instant;

/// Trains a model: Keras' `fit` as a builder.
///
/// ```ignore
/// let history = Trainer::new(&mut model, &mut opt)
///     .loss(Loss::cross_entropy()) // the default
///     .epochs(3)
///     .validation(&test_loader)
///     .callback(LrSchedule::per_step(sched))
///     .csv_log("train.csv")
///     .plot("train.svg")
///     .fit(&train_loader)?;
/// ```
///
/// Each step: forward in training mode, loss, `zero_grad`, backward, the `on_before_step`
/// hooks (gradient clipping), `optimizer.step()`, one read of the loss value. The forward,
/// backward and optimizer step run on kiln's worker threads ([`on_pool`]: one hand-over each
/// instead of one per parallel kernel), the callbacks on the caller's thread. Validation runs
/// after each epoch in eval mode under `no_grad` (see [`evaluate`]); the model is back in
/// training mode afterwards.
pub struct Trainer<'a, M> {
    model: &'a mut M,
    optimizer: &'a mut (dyn Optimizer + Send),
    loss: Loss,
    epochs: usize,
    initial_epoch: usize,
    max_steps: Option<usize>,
    validation: Option<&'a dyn Batches>,
    top_k: Vec<usize>,
    callbacks: Vec<Box<dyn Callback + 'a>>,
    progress: Progress,
}

impl<'a, M: Module + Forward + Sync> Trainer<'a, M> {
    /// Trains `model` with `optimizer` (built over the model's parameters), cross-entropy
    /// loss, one epoch, progress [`Progress::Auto`].
    pub fn new(model: &'a mut M, optimizer: &'a mut (dyn Optimizer + Send)) -> Self {
        Trainer {
            model,
            optimizer,
            loss: Loss::default(),
            epochs: 1,
            initial_epoch: 0,
            max_steps: None,
            validation: None,
            top_k: Vec::new(),
            callbacks: Vec::new(),
            progress: Progress::Auto,
        }
    }

    /// The loss (a [`Loss`] or any `Fn(&Tensor, &Tensor) -> Result<Tensor>`).
    pub fn loss(mut self, loss: impl Into<Loss>) -> Self {
        self.loss = loss.into();
        self
    }

    /// Runs until epoch `epochs` (counted from 1).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Starts at epoch `epoch` (counted from 0), to resume a run: the loader shuffles as it
    /// would have for that epoch, and the step counter starts at `epoch` full epochs.
    pub fn initial_epoch(mut self, epoch: usize) -> Self {
        self.initial_epoch = epoch;
        self
    }

    /// Stops after `steps` optimizer steps (the epoch in progress is then logged and
    /// validated as a partial epoch).
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = Some(steps);
        self
    }

    /// Evaluates on `data` after every epoch.
    pub fn validation(mut self, data: &'a dyn Batches) -> Self {
        self.validation = Some(data);
        self
    }

    /// Also measures top-`k` accuracy on the validation data.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k.push(k);
        self
    }

    /// Adds a callback (called in the order added).
    pub fn callback(mut self, callback: impl Callback + 'a) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Calls `f` with each epoch's log.
    pub fn on_epoch_end(self, f: impl FnMut(&EpochLog) -> Result<()> + 'a) -> Self {
        self.callback(OnEpochEnd(f))
    }

    /// Writes the CSV log to `path` as training goes ([`CsvLogger`]).
    pub fn csv_log(self, path: impl Into<PathBuf>) -> Self {
        self.callback(CsvLogger::new(path))
    }

    /// Redraws the SVG plot of loss and accuracy at `path` after every epoch ([`SvgPlot`]).
    pub fn plot(self, path: impl Into<PathBuf>) -> Self {
        self.callback(SvgPlot::new(path))
    }

    /// How progress is reported (default [`Progress::Auto`]).
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Trains on `train` for the configured epochs and returns what was recorded.
    pub fn fit(&mut self, train: &dyn Batches) -> Result<History> {
        let Trainer {
            model,
            optimizer,
            loss,
            epochs,
            initial_epoch,
            max_steps,
            validation,
            top_k,
            callbacks,
            progress,
        } = self;
        let (epochs, steps_per_epoch) = (*epochs, train.num_batches());
        let planned = epochs.saturating_sub(*initial_epoch) * steps_per_epoch;
        let mut history = History { steps_per_epoch, ..History::default() };
        history.step_losses.reserve(max_steps.map_or(planned, |m| m.min(planned)));
        history.epochs.reserve(epochs.saturating_sub(*initial_epoch));
        let mut reporter = Reporter::new(*progress);
        let mut global_step = *initial_epoch * steps_per_epoch;
        let mut steps_done = 0usize;

        // A fresh view of the run for the callbacks (a few words on the stack).
        macro_rules! ctx {
            ($epoch:expr) => {
                &mut Context {
                    model: &**model,
                    optimizer: &mut **optimizer,
                    epoch: $epoch,
                    epochs,
                    global_step,
                    steps_per_epoch,
                    history: &history,
                }
            };
        }

        model.train();
        for cb in callbacks.iter_mut() {
            cb.on_train_begin(ctx!(*initial_epoch))?;
        }
        let mut stop = callbacks.iter().any(|c| c.should_stop());
        for epoch in *initial_epoch..epochs {
            if stop {
                break;
            }
            for cb in callbacks.iter_mut() {
                cb.on_epoch_begin(ctx!(epoch))?;
            }
            reporter.epoch_begin(epoch, epochs, steps_per_epoch);
            let start = Instant::now();
            let (mut loss_sum, mut samples, mut steps) = (0f64, 0usize, 0usize);
            let (mut hits, mut counted) = (0usize, 0usize);
            let mut classify = None;
            for (b, batch) in train.batches(epoch as u64).enumerate() {
                let (x, y) = batch?;
                let y = y.ok_or_else(|| Error::op("fit", "the training batches have no targets"))?;
                let (out, l) = {
                    let (model, loss, optimizer, x, y) = (&**model, &*loss, &mut **optimizer, &x, &y);
                    on_pool(move || -> Result<(Tensor, Tensor)> {
                        let out = model.forward(x)?;
                        let l = loss.compute(&out, y)?;
                        optimizer.zero_grad();
                        l.backward()?;
                        Ok((out, l))
                    })?
                };
                for cb in callbacks.iter_mut() {
                    cb.on_before_step(ctx!(epoch))?;
                }
                {
                    let optimizer = &mut **optimizer;
                    on_pool(move || optimizer.step())?;
                }
                let lv = l.item()?;
                let n = x.shape().first().copied().unwrap_or(1);
                loss_sum += lv as f64 * n as f64;
                samples += n;
                let (out, y) = (out.data(), y.data());
                if *classify.get_or_insert_with(|| is_classification(&out, &y)) {
                    let (h, c) = count_top_k(&out, &y, 1)?;
                    hits += h;
                    counted += c;
                }
                global_step += 1;
                steps += 1;
                steps_done += 1;
                history.step_losses.push(lv);
                let log = BatchLog { epoch, batch: b, size: n, loss: lv };
                for cb in callbacks.iter_mut() {
                    cb.on_batch_end(&log, ctx!(epoch))?;
                }
                let acc = (counted > 0).then(|| hits as f64 / counted as f64);
                reporter.step(loss_sum / samples as f64, acc, samples, start.elapsed().as_secs_f64());
                if max_steps.is_some_and(|m| steps_done >= m) || callbacks.iter().any(|c| c.should_stop()) {
                    stop = true;
                    break;
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            let (val, val_seconds) = match validation {
                Some(v) => {
                    reporter.validating();
                    let t = Instant::now();
                    let m = evaluate_with(&mut **model, *v, loss, top_k)?;
                    (Some(m), t.elapsed().as_secs_f64())
                }
                None => (None, 0.0),
            };
            history.epochs.push(EpochLog {
                epoch: epoch + 1,
                step: global_step,
                steps,
                samples,
                train_loss: loss_sum / samples as f64,
                train_accuracy: (counted > 0).then(|| hits as f64 / counted as f64),
                val,
                lr: optimizer.lr(),
                seconds,
                val_seconds,
            });
            let log = history.epochs.last().expect("just pushed").clone();
            reporter.epoch_end(&log, epochs);
            for cb in callbacks.iter_mut() {
                cb.on_epoch_end(&log, ctx!(epoch))?;
            }
            stop |= callbacks.iter().any(|c| c.should_stop());
            if stop && epoch + 1 < epochs {
                history.stopped_early = true;
            }
        }
        let last = history.epochs.last().map_or(*initial_epoch, |e| e.epoch.saturating_sub(1));
        for cb in callbacks.iter_mut() {
            cb.on_train_end(ctx!(last))?;
        }
        Ok(history)
    }
}

/// Runs `model` in eval mode under `no_grad` over `data`, then restores its mode.
fn in_eval_mode<M: Module + Forward, R>(model: &mut M, f: impl FnOnce(&M) -> Result<R>) -> Result<R> {
    let was_training = model.is_training();
    model.eval();
    let r = no_grad(|| f(model));
    model.set_training(was_training);
    r
}

/// The cross-entropy loss and accuracy of `model` over `data` (in eval mode, under
/// `no_grad`; the model's mode is restored afterwards).
pub fn evaluate<M: Module + Forward>(model: &mut M, data: &dyn Batches) -> Result<Metrics> {
    evaluate_with(model, data, &Loss::cross_entropy(), &[])
}

/// Like [`evaluate`] with another loss and top-`k` accuracies for each `k` of `top_k`. The
/// loss is each batch's (mean) loss weighted by the batch size; accuracies are computed only
/// when the targets are class indices.
pub fn evaluate_with<M: Module + Forward>(
    model: &mut M,
    data: &dyn Batches,
    loss: &Loss,
    top_k: &[usize],
) -> Result<Metrics> {
    in_eval_mode(model, |model| {
        let (mut loss_sum, mut samples) = (0f64, 0usize);
        // (k, hits); k = 1 first for the accuracy.
        let mut hits: Vec<(usize, usize)> = std::iter::once(1).chain(top_k.iter().copied()).map(|k| (k, 0)).collect();
        let (mut counted, mut classify) = (0usize, None);
        for batch in data.batches(0) {
            let (x, y) = batch?;
            let y = y.ok_or_else(|| Error::op("evaluate", "the batches have no targets"))?;
            let out = model.forward(&x)?;
            let n = x.shape().first().copied().unwrap_or(1);
            loss_sum += loss.compute(&out, &y)?.item()? as f64 * n as f64;
            samples += n;
            let (out, y) = (out.data(), y.data());
            if *classify.get_or_insert_with(|| is_classification(&out, &y)) {
                for (k, h) in hits.iter_mut() {
                    let (hk, c) = count_top_k(&out, &y, *k)?;
                    *h += hk;
                    if *k == 1 {
                        counted += c;
                    }
                }
            }
        }
        let frac = |h: usize| h as f64 / counted as f64;
        let classify = classify == Some(true);
        Ok(Metrics {
            loss: loss_sum / samples as f64,
            accuracy: classify.then(|| frac(hits[0].1)),
            top_k: if classify { hits[1..].iter().map(|&(k, h)| (k, frac(h))).collect() } else { Vec::new() },
            samples,
        })
    })
}

/// The model's outputs over `data`, concatenated along dim 0 in the loader's order (in eval
/// mode, under `no_grad`; the model's mode is restored afterwards). Targets, if any, are
/// ignored.
pub fn predict<M: Module + Forward>(model: &mut M, data: &dyn Batches) -> Result<Tensor> {
    in_eval_mode(model, |model| {
        let mut outs = Vec::with_capacity(data.num_batches());
        for batch in data.batches(0) {
            outs.push(model.forward(&batch?.0)?);
        }
        if outs.is_empty() {
            return Err(Error::op("predict", "the data has no batch"));
        }
        let refs: Vec<&Tensor> = outs.iter().collect();
        Tensor::try_cat(&refs, 0)
    })
}
