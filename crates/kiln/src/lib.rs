#![doc = include_str!("../../../README.md")]
//!
//! ## This crate
//!
//! The facade: it re-exports the layered
//! crates (`kiln-tensor`, `kiln-autograd`, `kiln-nn`, `kiln-optim`, `kiln-data`, `kiln-io`, `kiln-train`);
//! `use kiln::prelude::*` brings the everyday names into scope.
//!
//! With the default `mimalloc` feature, kiln installs mimalloc as the global allocator, so
//! tensor buffers are recycled instead of faulting in fresh pages on every op; freed memory
//! is kept for reuse rather than returned to the OS (set `MIMALLOC_PURGE_DELAY` to override).

pub use kiln_autograd as autograd;
pub use kiln_data as data;
pub use kiln_io as io;
pub use kiln_models as models;
pub use kiln_nn as nn;
pub use kiln_optim as optim;
pub use kiln_tensor as tensor;
pub use kiln_train as train;

pub use kiln_autograd::{no_grad, Array, DType, Error, NoGradGuard, Result, Tensor};
pub use kiln_tensor::parallel::{num_threads, set_num_threads};

#[cfg(feature = "mimalloc")]
mod allocator;

/// Makes mimalloc keep freed memory instead of handing it back to the OS ("purging") a delay
/// after the free. A training step frees its activations and allocates them again a step
/// later; with purging on, every step faulted them in again and the kernel zeroed them
/// (`clear_page_erms` was 10% of E4's profile, 11k page faults in 8 steps against 300 without
/// purging, at the same peak RSS). Runs before `main` (an ELF constructor) and only sets the
/// default: the `MIMALLOC_PURGE_DELAY` environment variable still overrides it.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[used]
#[link_section = ".init_array"]
static KEEP_FREED_MEMORY: extern "C" fn() = keep_freed_memory;

#[cfg(all(feature = "mimalloc", target_os = "linux"))]
extern "C" fn keep_freed_memory() {
    extern "C" {
        fn mi_option_set_default(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // `mi_option_purge_delay` (the same index in mimalloc v2 and v3); -1 = never purge.
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    // SAFETY: a plain setter of mimalloc's option table, valid at any time.
    unsafe { mi_option_set_default(MI_OPTION_PURGE_DELAY, -1) }
}

/// The everyday names: `use kiln::prelude::*`.
pub mod prelude {
    pub use kiln_autograd::{no_grad, Array, DType, Error, NoGradGuard, Result, Tensor};
    pub use kiln_nn::{Forward, Module};
    pub use kiln_optim::{Adam, AdamW, LrScheduler, Optimizer, Sgd};
}
