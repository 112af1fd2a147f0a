//! Whether ops record themselves: a thread-local switch and its `no_grad` scope.

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// True unless the current thread is inside a [`no_grad`] scope.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// While alive, ops on this thread record nothing (no graph, no saved tensors).
/// Restores the previous mode when dropped, so scopes nest.
///
/// ```
/// use kiln_autograd::{NoGradGuard, Tensor};
/// let w = Tensor::ones(&[3]).requires_grad_(true);
/// {
///     let _guard = NoGradGuard::new();
///     let y = w.mul_scalar(2.0);
///     assert!(!y.requires_grad());
/// }
/// assert!(w.mul_scalar(2.0).requires_grad());
/// ```
pub struct NoGradGuard {
    _mode: ModeGuard,
}

impl NoGradGuard {
    /// Disables recording on this thread until the guard is dropped.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        NoGradGuard { _mode: ModeGuard::set(false) }
    }
}

/// Sets this thread's mode and puts the previous one back when dropped: what every scope
/// below is made of.
struct ModeGuard {
    prev: bool,
}

impl ModeGuard {
    fn set(enabled: bool) -> Self {
        ModeGuard { prev: GRAD_ENABLED.with(|g| g.replace(enabled)) }
    }
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Runs `f` with recording set to `enabled` on this thread, restoring the previous mode after.
pub(crate) fn with_grad_mode<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    let _mode = ModeGuard::set(enabled);
    f()
}

/// While alive, ops on this thread record again, even inside a [`no_grad`] scope (PyTorch's
/// `torch.enable_grad()`). Restores the previous mode when dropped.
pub struct EnableGradGuard {
    _mode: ModeGuard,
}

impl EnableGradGuard {
    /// Enables recording on this thread until the guard is dropped.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        EnableGradGuard { _mode: ModeGuard::set(true) }
    }
}

/// Runs `f` with recording enabled on this thread: PyTorch's `with torch.enable_grad():`.
pub fn enable_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = EnableGradGuard::new();
    f()
}

/// Runs `f` with recording disabled on this thread: PyTorch's `with torch.no_grad():`.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Runs `f` on one of kiln's worker threads (rayon's pool) with this thread's grad mode, and
/// returns its result: a whole training step called this way hands its work to the pool once,
/// instead of once per parallel kernel (each hand-over from a thread outside the pool wakes
/// a worker and puts the caller to sleep: tens of µs on a VM). Runs `f` in place when already
/// on a worker thread or when the pool has one thread.
///
/// ```
/// use kiln_autograd::{on_pool, Tensor};
/// let w = Tensor::ones(&[3]).requires_grad_(true);
/// let loss = on_pool(|| {
///     let loss = w.mul_scalar(2.0).sum_all();
///     loss.backward().map(|_| loss)
/// })?;
/// assert_eq!(w.grad().unwrap().to_vec_f32()?, vec![2.0; 3]);
/// # let _ = loss;
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let enabled = is_grad_enabled();
    kiln_tensor::parallel::install(move || with_grad_mode(enabled, f))
}
