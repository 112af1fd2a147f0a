//! How kiln splits work over rayon's pool. Small inputs stay on the calling thread: a rayon
//! fork costs microseconds, more than a tiny kernel.

use rayon::prelude::*;

/// Below this many elements an elementwise kernel runs on the calling thread.
pub const PAR_ELEMS: usize = 1 << 15;

/// Runs `f(start, chunk)` over chunks of `out`, in parallel when `out` is large.
pub fn par_chunks_mut_zip<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let n = out.len();
    let threads = rayon::current_num_threads();
    if n < PAR_ELEMS || threads == 1 {
        f(0, out);
        return;
    }
    if rayon::current_thread_index().is_some() {
        let chunk = n.div_ceil(threads * 4).max(PAR_ELEMS / 4);
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i * chunk, c));
        return;
    }
    // Called from outside the pool (the usual case: the user's thread). Handing the whole job
    // to the pool and sleeping until it is done costs two thread wake-ups per op (tens of µs
    // on a VM); instead the calling thread takes the first share itself while the workers
    // take the others, as OpenMP's master thread does.
    let chunk = n.div_ceil(threads);
    let f = &f;
    rayon::in_place_scope(|s| {
        let mut rest = out;
        let mut start = 0;
        let (first, tail) = std::mem::take(&mut rest).split_at_mut(chunk.min(n));
        rest = tail;
        start += first.len();
        while !rest.is_empty() {
            let take = chunk.min(rest.len());
            let (c, tail) = std::mem::take(&mut rest).split_at_mut(take);
            let at = start;
            s.spawn(move |_| f(at, c));
            start += take;
            rest = tail;
        }
        f(0, first);
    });
}

/// Sets the number of threads kiln's kernels use (rayon's global pool), like PyTorch's
/// `torch.set_num_threads`. Must be called before any parallel kernel runs; later calls fail.
/// The `RAYON_NUM_THREADS` environment variable has the same effect.
pub fn set_num_threads(n: usize) -> crate::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| crate::Error::Msg(format!("set_num_threads({n}): {e} (the pool is already running)")))
}

/// The number of threads kiln's kernels use.
pub fn num_threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f` on one of kiln's worker threads, so the kernels it calls split their work
/// without first handing it over from a thread outside the pool (one wake-up for the whole
/// of `f` instead of one per kernel). Runs `f` in place when already on a worker thread or
/// when the pool has a single thread. Thread-local state (such as autograd's `no_grad` mode)
/// is the worker's, not the caller's.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() == 1 {
        return f();
    }
    let mut out = None;
    rayon::scope(|s| s.spawn(|_| out = Some(f())));
    out.expect("the scope ran the closure")
}
