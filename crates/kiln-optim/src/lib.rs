//! # kiln-optim
//!
//! Optimizers that update parameters in place from their accumulated gradients ([`Sgd`],
//! [`Adam`], [`AdamW`], [`RmsProp`], [`Adagrad`], all behind the [`Optimizer`] trait), with
//! parameter groups ([`Params`], [`ParamGroup`]), a state dict keyed by parameter name,
//! gradient clipping ([`clip_grad_norm`]) and learning-rate schedulers ([`LrScheduler`]).
//!
//! ```
//! use kiln_autograd::Tensor;
//! use kiln_optim::{clip_grad_norm, CosineAnnealingLR, LrScheduler, Optimizer, Params, AdamW};
//! let w = Tensor::from_vec(vec![0.5, -0.5, 1.0, 2.0], &[2, 2])?.requires_grad_(true);
//! let b = Tensor::zeros(&[2]).requires_grad_(true);
//! let named = vec![("fc.weight".to_string(), w.clone()), ("fc.bias".to_string(), b.clone())];
//! let mut opt = AdamW::new(Params::split_no_decay(named), 1e-2).weight_decay(0.1);
//! let mut sched = CosineAnnealingLR::new(&mut opt, 10, 0.0)?;
//! for _ in 0..3 {
//!     opt.zero_grad();
//!     (&w * &w).sum_all().try_add(&b.sum_all())?.backward()?;
//!     clip_grad_norm([&w, &b], 1.0, 2.0)?;
//!     opt.step()?;
//!     sched.step(&mut opt);
//! }
//! let state = opt.state_dict()?; // "fc.weight.exp_avg", "fc.weight.step", ...
//! assert!(state.contains_key("fc.bias.exp_avg_sq"));
//! # Ok::<(), kiln_autograd::Error>(())
//! ```

mod adagrad;
mod adam;
mod clip;
mod optimizer;
mod rmsprop;
pub mod scheduler;
mod sgd;

pub use adagrad::Adagrad;
pub use adam::{Adam, AdamBase, AdamW};
pub use clip::{clip_grad_norm, grad_norm};
pub use optimizer::{Optimizer, ParamGroup, Params, StateDict};
pub use rmsprop::RmsProp;
pub use scheduler::{
    Anneal, CosineAnnealingLR, ExponentialLR, LinearWarmupDecay, LrScheduler, MultiStepLR, OneCycle, OneCycleLR,
    SchedulerState, StepLR,
};
pub use sgd::Sgd;
