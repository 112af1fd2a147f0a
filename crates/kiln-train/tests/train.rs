//! kiln-train against hand-computed values: fit on a separable problem, evaluate's counts,
//! top-k, early stopping on a scripted curve, the CSV log, the scheduler and clipping
//! callbacks.

use kiln_autograd::{Array, Result, Tensor};
use kiln_data::{ArrayDataset, DataLoader};
use kiln_nn::{init, Forward, Linear, Module, ReLU, Sequential};
use kiln_optim::{CosineAnnealingLR, Optimizer, Sgd, StepLR};
use kiln_train::*;
use std::cell::Cell;
use std::path::PathBuf;

/// Three well-separated clusters in 2-D (centres on a circle of radius 3, points within 0.5).
fn blobs(n: usize, seed: u64) -> Result<ArrayDataset> {
    let noise = init::uniform(&[n, 2], -0.5, 0.5, &mut init::rng(seed)).to_vec_f32()?;
    let mut x = Vec::with_capacity(2 * n);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % 3;
        let a = c as f32 * 2.0 * std::f32::consts::PI / 3.0;
        x.push(3.0 * a.cos() + noise[2 * i]);
        x.push(3.0 * a.sin() + noise[2 * i + 1]);
        y.push(c as i64);
    }
    ArrayDataset::from_labels(Array::from_vec(x, &[n, 2])?, y)
}

fn mlp(seed: u64) -> Sequential {
    let mut rng = init::rng(seed);
    Sequential::new().with(Linear::new(2, 16, true, &mut rng)).with(ReLU).with(Linear::new(16, 3, true, &mut rng))
}

#[test]
fn fit_reduces_the_loss_and_separates_the_blobs() -> Result<()> {
    let train = DataLoader::new(blobs(150, 1)?, 16)?.shuffle(true).seed(3);
    let test = DataLoader::new(blobs(60, 2)?, 25)?;
    let mut model = mlp(0);
    let mut opt = Sgd::new(model.parameters(), 0.1).momentum(0.9);
    let history =
        Trainer::new(&mut model, &mut opt).epochs(8).validation(&test).progress(Progress::Silent).fit(&train)?;
    assert_eq!(history.epochs.len(), 8);
    assert_eq!(history.step_losses.len(), 8 * 10); // ceil(150 / 16) = 10 steps per epoch
    let (first, last) = (&history.epochs[0], history.last().unwrap());
    assert!(last.train_loss < 0.2 * first.train_loss, "{} -> {}", first.train_loss, last.train_loss);
    assert_eq!(last.val_accuracy(), Some(1.0));
    assert_eq!(last.train_accuracy, Some(1.0));
    assert_eq!((last.step, last.samples), (80, 150));
    // evaluate agrees with the last validation, and leaves the model in training mode.
    let m = evaluate(&mut model, &test)?;
    assert_eq!(m.accuracy, Some(1.0));
    assert!((m.loss - last.val_loss().unwrap()).abs() < 1e-9);
    assert_eq!(m.samples, 60);
    Ok(())
}

/// A linear model with weight `I` and bias 0: the logits are the inputs themselves.
fn identity_model() -> Result<Linear> {
    let model = Linear::new(2, 2, true, &mut init::rng(0));
    model.load_state_dict(
        &[
            ("weight".to_string(), Array::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2])?),
            ("bias".to_string(), Array::from_vec(vec![0.0f32, 0.0], &[2])?),
        ]
        .into(),
        true,
    )?;
    Ok(model)
}

#[test]
fn evaluate_counts_like_a_hand_count_and_weights_the_loss_by_batch_size() -> Result<()> {
    // Logits = inputs; prediction = the larger coordinate.
    let x = vec![2.0f32, 0.0, 0.0, 1.0, 1.0, 3.0, 0.5, 0.0, -1.0, 1.0, 3.0, 2.0, 0.0, 0.2];
    let y = vec![0i64, 1, 0, 0, 0, 1, 1];
    // Predictions: 0, 1, 1, 0, 1, 0, 1 -> correct: yes, yes, no, yes, no, no, yes = 4 of 7.
    let data = ArrayDataset::from_labels(Array::from_vec(x.clone(), &[7, 2])?, y.clone())?;
    let loader = DataLoader::new(data, 3)?; // batches of 3, 3, 1
    let mut model = identity_model()?;
    let m = evaluate_with(&mut model, &loader, &Loss::cross_entropy(), &[2])?;
    assert_eq!(m.accuracy, Some(4.0 / 7.0));
    assert_eq!(m.top(2), Some(1.0)); // two classes: always in the top 2
    assert_eq!(m.samples, 7);
    // Mean cross-entropy over all 7 samples: logsumexp(x) - x[y].
    let ce: f64 = (0..7)
        .map(|i| {
            let (a, b) = (x[2 * i] as f64, x[2 * i + 1] as f64);
            let lse = a.max(b) + ((a - a.max(b)).exp() + (b - a.max(b)).exp()).ln();
            lse - if y[i] == 0 { a } else { b }
        })
        .sum::<f64>()
        / 7.0;
    assert!((m.loss - ce).abs() < 1e-6, "{} vs {ce}", m.loss);
    // predict: the outputs in order, i.e. the inputs.
    let p = predict(&mut model, &loader)?;
    assert_eq!(p.shape(), &[7, 2]);
    assert_eq!(p.to_vec_f32()?, x);
    Ok(())
}

#[test]
fn top_k_on_hand_made_logits() -> Result<()> {
    #[rustfmt::skip]
    let logits = Tensor::from_vec(vec![
        0.1, 0.5, 0.2, 0.9, 0.0, // ranks: 3, 1, 2, 0, 4
        1.0, 1.0, 0.0, 2.0, 1.0, // ties: 3, then 0, 1, 4 (lower index first), then 2
        -1.0, -2.0, -3.0, -4.0, -5.0,
        0.3, 0.3, 0.3, 0.3, 0.3,
    ], &[4, 5])?;
    let targets = Tensor::from_vec_i64(vec![2, 4, 0, 3], &[4])?;
    // Target ranks (0-based): 2, 3, 0, 3.
    assert_eq!(count_top_k(&logits.data(), &targets.data(), 1)?, (1, 4));
    assert_eq!(count_top_k(&logits.data(), &targets.data(), 2)?, (1, 4));
    assert_eq!(count_top_k(&logits.data(), &targets.data(), 3)?, (2, 4));
    assert_eq!(top_k_accuracy(&logits, &targets, 4)?, 1.0);
    assert_eq!(accuracy(&logits, &targets)?, 0.25);
    // An ignored target (-100) is not counted; a target past the classes is an error.
    let t = Tensor::from_vec_i64(vec![3, -100, 0, 1], &[4])?; // hit, ignored, hit, miss (tie: 0 first)
    assert_eq!(count_top_k(&logits.data(), &t.data(), 1)?, (2, 3));
    let bad = Tensor::from_vec_i64(vec![5, 0, 0, 0], &[4])?;
    assert!(count_top_k(&logits.data(), &bad.data(), 1).unwrap_err().to_string().contains("out of range"));
    // Classes along dim 1 of [N, C, L]: sample 0's positions have scores (1, 0) and (0, 1).
    let seq = Array::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[1, 2, 2])?;
    assert_eq!(count_top_k(&seq, &Array::from_vec(vec![0i64, 1], &[1, 2])?, 1)?, (2, 2));
    assert_eq!(count_top_k(&seq, &Array::from_vec(vec![1i64, 1], &[1, 2])?, 1)?, (1, 2));
    Ok(())
}

fn log_with_val_loss(epoch: usize, val_loss: f64) -> EpochLog {
    EpochLog {
        epoch,
        step: epoch,
        steps: 1,
        samples: 1,
        train_loss: 1.0,
        train_accuracy: None,
        val: Some(Metrics { loss: val_loss, accuracy: None, top_k: vec![], samples: 1 }),
        lr: 0.1,
        seconds: 1.0,
        val_seconds: 0.0,
    }
}

#[test]
fn early_stopping_on_a_scripted_curve() -> Result<()> {
    // Best at epoch 2; epochs 3 and 4 do not improve (4 ties): patience 2 stops after epoch 4.
    let curve = [1.0, 0.8, 0.85, 0.8, 0.7, 0.6];
    let mut es = EarlyStopping::new(Monitor::ValLoss, 2);
    let stopped_at =
        curve.iter().enumerate().find_map(|(i, &v)| es.update(&log_with_val_loss(i + 1, v)).unwrap().then_some(i + 1));
    assert_eq!(stopped_at, Some(4));
    assert_eq!(es.best(), Some((0.8, 2)));
    // min_delta: 0.75 is not better than 0.8 by more than 0.1.
    let mut es = EarlyStopping::new(Monitor::ValLoss, 1).min_delta(0.1);
    assert!(!es.update(&log_with_val_loss(1, 0.8))?);
    assert!(es.update(&log_with_val_loss(2, 0.75))?);
    // Accuracy is better when higher.
    let mut es = EarlyStopping::new(Monitor::TrainAccuracy, 1);
    let acc = |e, a| EpochLog { train_accuracy: Some(a), ..log_with_val_loss(e, 0.0) };
    assert!(!es.update(&acc(1, 0.5))?);
    assert!(!es.update(&acc(2, 0.6))?);
    assert!(es.update(&acc(3, 0.6))?);
    // Monitoring a validation value without validation is an error that says so.
    let mut es = EarlyStopping::new(Monitor::ValAccuracy, 1);
    let e = es.update(&EpochLog { val: None, ..log_with_val_loss(1, 0.0) }).unwrap_err().to_string();
    assert!(e.contains("no validation loader"), "{e}");
    Ok(())
}

/// Validation batches whose targets follow a script, one entry per evaluation: with fixed
/// logits favouring class 0, `wrong[e]` samples labelled 1 make evaluation `e`'s loss.
struct ScriptedValidation {
    wrong: Vec<usize>,
    calls: Cell<usize>,
}

impl Batches for ScriptedValidation {
    fn batches(&self, _: u64) -> BatchIter<'_> {
        let e = self.calls.get();
        self.calls.set(e + 1);
        let k = self.wrong[e.min(self.wrong.len() - 1)];
        let x = Tensor::from_vec(vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0], &[4, 2]).unwrap();
        let y = Tensor::from_vec_i64((0..4).map(|i| (i < k) as i64).collect(), &[4]).unwrap();
        Box::new(std::iter::once(Ok((x, Some(y)))))
    }
    fn num_batches(&self) -> usize {
        1
    }
    fn num_samples(&self) -> usize {
        4
    }
}

#[test]
fn early_stopping_stops_fit_at_the_right_epoch() -> Result<()> {
    // Val losses follow wrong = [2, 1, 1, 2, 0, ...]: best at epoch 2, no improvement at 3
    // and 4; patience 2 stops after epoch 4 of 10.
    let val = ScriptedValidation { wrong: vec![2, 1, 1, 2, 0, 0, 0, 0, 0, 0], calls: Cell::new(0) };
    let train = vec![(Tensor::from_vec(vec![1.0, 0.0], &[1, 2])?, Tensor::from_vec_i64(vec![0], &[1])?)];
    let mut model = identity_model()?;
    let mut opt = Sgd::new(model.parameters(), 0.0); // lr 0: the logits stay the inputs
    let history = Trainer::new(&mut model, &mut opt)
        .epochs(10)
        .validation(&val)
        .callback(EarlyStopping::new(Monitor::ValLoss, 2))
        .progress(Progress::Silent)
        .fit(&train)?;
    assert_eq!(history.epochs.len(), 4);
    assert!(history.stopped_early);
    let accs: Vec<f64> = history.epochs.iter().map(|e| e.val_accuracy().unwrap()).collect();
    assert_eq!(accs, [0.5, 0.75, 0.75, 0.5]);
    Ok(())
}

#[test]
fn the_csv_log_has_a_row_per_epoch() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("kiln-train-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (csv, svg) = (dir.join("log.csv"), dir.join("plot.svg"));
    let train = DataLoader::new(blobs(30, 5)?, 8)?; // 4 steps per epoch
    let test = DataLoader::new(blobs(12, 6)?, 12)?;
    let mut model = mlp(1);
    let mut opt = Sgd::new(model.parameters(), 0.05);
    let history = Trainer::new(&mut model, &mut opt)
        .epochs(3)
        .validation(&test)
        .csv_log(&csv)
        .plot(&svg)
        .progress(Progress::Silent)
        .fit(&train)?;
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "epoch,step,train_loss,train_acc,val_loss,val_acc,lr,seconds");
    for (i, line) in lines[1..].iter().enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 8, "{line}");
        assert_eq!(f[0], (i + 1).to_string());
        assert_eq!(f[1], (4 * (i + 1)).to_string());
        let e = &history.epochs[i];
        let num = |s: &str| s.parse::<f64>().unwrap();
        assert!((num(f[2]) - e.train_loss).abs() < 1e-6);
        assert!((num(f[3]) - e.train_accuracy.unwrap()).abs() < 1e-6);
        assert!((num(f[4]) - e.val_loss().unwrap()).abs() < 1e-6);
        assert!((num(f[5]) - e.val_accuracy().unwrap()).abs() < 1e-6);
        assert_eq!(num(f[6]) as f32, 0.05);
        assert!(num(f[7]) >= 0.0);
    }
    assert_eq!(history.to_csv(), text);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("polyline") && plot.contains("accuracy"), "{plot}");
    std::fs::remove_dir_all(&dir).unwrap();
    Ok(())
}

/// Records the learning rate in effect at every optimizer step.
struct LrRecorder<'a>(&'a std::cell::RefCell<Vec<f32>>);

impl Callback for LrRecorder<'_> {
    fn on_before_step(&mut self, ctx: &mut Context) -> Result<()> {
        self.0.borrow_mut().push(ctx.optimizer.lr());
        Ok(())
    }
}

#[test]
fn the_scheduler_callback_sets_the_formula_rate() -> Result<()> {
    let train = DataLoader::new(blobs(9, 7)?, 3)?; // 3 steps per epoch
                                                   // Per step: cosine annealing from 0.2 to 0.02 over T_max = 4 steps, then rising again.
    let mut model = mlp(2);
    let mut opt = Sgd::new(model.parameters(), 0.2);
    let sched = CosineAnnealingLR::new(&mut opt, 4, 0.02)?;
    let lrs = std::cell::RefCell::new(Vec::new());
    Trainer::new(&mut model, &mut opt)
        .epochs(2)
        .callback(LrSchedule::per_step(sched))
        .callback(LrRecorder(&lrs))
        .progress(Progress::Silent)
        .fit(&train)?;
    let lrs = lrs.into_inner();
    assert_eq!(lrs.len(), 6);
    for (t, &lr) in lrs.iter().enumerate() {
        let want = 0.02 + (0.2 - 0.02) * (1.0 + (std::f64::consts::PI * t as f64 / 4.0).cos()) / 2.0;
        assert!((lr as f64 - want).abs() < 1e-6, "step {t}: {lr} vs {want}");
    }
    // Per epoch: StepLR halving every epoch; each epoch's log has the rate of its steps.
    let mut model = mlp(3);
    let mut opt = Sgd::new(model.parameters(), 0.4);
    let sched = StepLR::new(&mut opt, 1, 0.5)?;
    let history = Trainer::new(&mut model, &mut opt)
        .epochs(3)
        .callback(LrSchedule::per_epoch(sched))
        .progress(Progress::Silent)
        .fit(&train)?;
    let got: Vec<f32> = history.epochs.iter().map(|e| e.lr).collect();
    assert_eq!(got, [0.4, 0.2, 0.1]);
    assert_eq!(opt.lr(), 0.05);
    Ok(())
}

#[test]
fn grad_clip_bounds_each_update() -> Result<()> {
    // With plain SGD at lr 1, the update is the clipped gradient: its norm is at most 1e-3.
    let train = DataLoader::new(blobs(12, 8)?, 4)?;
    let mut model = mlp(4);
    let before: Vec<f32> = model.parameters().iter().flat_map(|p| p.to_vec_f32().unwrap()).collect();
    let mut opt = Sgd::new(model.parameters(), 1.0);
    Trainer::new(&mut model, &mut opt)
        .callback(GradClip::new(1e-3))
        .max_steps(1)
        .progress(Progress::Silent)
        .fit(&train)?;
    let after: Vec<f32> = model.parameters().iter().flat_map(|p| p.to_vec_f32().unwrap()).collect();
    let moved = before.iter().zip(&after).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    assert!(moved > 0.0 && moved <= 1.001e-3, "{moved}");
    Ok(())
}

#[test]
fn max_steps_cuts_the_epoch_and_the_model_forward_is_unchanged_by_evaluate() -> Result<()> {
    let train = DataLoader::new(blobs(30, 9)?, 4)?; // 8 steps per epoch
    let mut model = mlp(5);
    let mut opt = Sgd::new(model.parameters(), 0.01);
    let h = Trainer::new(&mut model, &mut opt).epochs(3).max_steps(10).progress(Progress::Silent).fit(&train)?;
    assert_eq!(h.epochs.iter().map(|e| e.steps).collect::<Vec<_>>(), [8, 2]);
    assert_eq!(h.epochs[1].samples, 8);
    assert_eq!(h.step_losses.len(), 10);
    let x = Tensor::from_vec(vec![0.5, -0.5], &[1, 2])?;
    let y0 = model.forward(&x)?.to_vec_f32()?;
    evaluate(&mut model, &train)?;
    assert_eq!(model.forward(&x)?.to_vec_f32()?, y0);
    Ok(())
}

#[test]
fn a_run_resumed_from_an_epoch_checkpoint_matches_the_straight_run() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("kiln-train-ckpt-{}", std::process::id()));
    let train = DataLoader::new(blobs(40, 11)?, 8)?.shuffle(true).seed(4); // 5 steps per epoch
    let weights =
        |m: &Sequential| -> Vec<Vec<f32>> { m.parameters().iter().map(|p| p.to_vec_f32().unwrap()).collect() };

    // Straight: 3 epochs, a checkpoint after each.
    let mut a = mlp(6);
    let mut opt_a = kiln_optim::Adam::new(a.named_parameters(), 0.01);
    let mut ckpts = ModelCheckpoint::every_epochs(&dir, 1);
    Trainer::new(&mut a, &mut opt_a).epochs(3).callback(&mut ckpts).progress(Progress::Silent).fit(&train)?;
    let files: Vec<PathBuf> = (1..=3).map(|e| ModelCheckpoint::epoch_path(&dir, e)).collect();
    assert_eq!(ckpts.saved(), files.as_slice());

    // Resumed: a differently initialised model and a fresh optimizer, from epoch 1's file.
    let mut b = mlp(99);
    let mut opt_b = kiln_optim::Adam::new(b.named_parameters(), 0.01);
    let ckpt = resume(&files[0], &b, &mut opt_b)?;
    assert_eq!((ckpt.epoch, ckpt.step), (1, 5));
    let h = Trainer::new(&mut b, &mut opt_b)
        .epochs(3)
        .initial_epoch(ckpt.epoch as usize)
        .progress(Progress::Silent)
        .fit(&train)?;
    assert_eq!(h.epochs.iter().map(|e| (e.epoch, e.step)).collect::<Vec<_>>(), [(2, 10), (3, 15)]);
    assert_eq!(weights(&b), weights(&a)); // bit for bit

    // Every 4 steps over 2 epochs of 5 steps: after steps 4 and 8.
    let mut c = mlp(7);
    let mut opt_c = Sgd::new(c.parameters(), 0.01);
    let mut every = ModelCheckpoint::every_steps(dir.join("steps"), 4);
    Trainer::new(&mut c, &mut opt_c).epochs(2).callback(&mut every).progress(Progress::Silent).fit(&train)?;
    let want: Vec<PathBuf> = [4, 8].iter().map(|&s| ModelCheckpoint::step_path(dir.join("steps"), s)).collect();
    assert_eq!(every.saved(), want.as_slice());
    let ck = kiln_io::load_checkpoint(&want[1])?;
    assert_eq!((ck.step, ck.epoch), (8, 1));
    std::fs::remove_dir_all(&dir).unwrap();
    Ok(())
}
