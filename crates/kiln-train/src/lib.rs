//! # kiln-train
//!
//! A thin, Keras-like training layer over kiln's modules, optimizers and data loaders:
//!
//! - [`Trainer`]: `fit` as a builder (loss, epochs, validation, callbacks, progress, logs);
//!   [`evaluate`] and [`predict`] run a model in eval mode under `no_grad`.
//! - [`metrics`]: loss, accuracy and top-k accuracy ([`Metrics`]).
//! - [`callbacks`]: the [`Callback`] trait and stock callbacks: [`LrSchedule`] (a kiln-optim
//!   scheduler per step or per epoch), [`EarlyStopping`], [`GradClip`], [`CsvLogger`],
//!   [`SvgPlot`], and [`ModelCheckpoint`] (kiln-io checkpoints every N epochs or steps; resume
//!   with [`resume`]).
//! - [`History`]: per-epoch logs and per-step losses, as CSV and as an SVG plot.
//!
//! The loop itself is short (see `Trainer::fit`): writing one by hand stays easy, with the
//! same pieces (`DataLoader`, `Module::train`/`eval`, `no_grad`, [`accuracy`]).
//!
//! ```
//! use kiln_autograd::Tensor;
//! use kiln_data::{ArrayDataset, DataLoader};
//! use kiln_nn::{init, Linear, Module};
//! use kiln_optim::Adam;
//! use kiln_tensor::Array;
//! use kiln_train::{evaluate, Progress, Trainer};
//!
//! // Two separable classes: the sign of the first feature.
//! let x: Vec<f32> = (0..64).flat_map(|i| [if i % 2 == 0 { 1.0 } else { -1.0 }, 0.5]).collect();
//! let y: Vec<i64> = (0..64).map(|i| (i % 2) as i64).collect();
//! let data = ArrayDataset::from_labels(Array::from_vec(x, &[64, 2])?, y)?;
//! let loader = DataLoader::new(data, 16)?.shuffle(true);
//!
//! let mut model = Linear::new(2, 2, true, &mut init::rng(0));
//! let mut opt = Adam::new(model.parameters(), 0.1);
//! let history = Trainer::new(&mut model, &mut opt).epochs(5).progress(Progress::Silent).fit(&loader)?;
//! assert!(history.last().unwrap().train_loss < history.epochs[0].train_loss);
//! assert_eq!(evaluate(&mut model, &loader)?.accuracy, Some(1.0));
//! # Ok::<(), kiln_autograd::Error>(())
//! ```

#![warn(missing_docs)]

pub mod batches;
pub mod callbacks;
pub mod checkpoint;
pub mod history;
pub mod loss;
pub mod metrics;
mod plot;
pub mod progress;
pub mod trainer;

pub use batches::{BatchIter, Batches, IntoBatch};
pub use callbacks::{
    BatchLog, Callback, Context, CsvLogger, EarlyStopping, Every, GradClip, LrSchedule, Monitor, OnEpochEnd, SvgPlot,
};
pub use checkpoint::{resume, ModelCheckpoint};
pub use history::{EpochLog, History};
pub use loss::Loss;
pub use metrics::{accuracy, count_top_k, top_k_accuracy, Metrics};
pub use progress::Progress;
pub use trainer::{evaluate, evaluate_with, predict, Trainer};
