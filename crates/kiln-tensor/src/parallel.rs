//! How kiln splits work over rayon's pool. Small inputs stay on the calling thread: a rayon
//! fork costs microseconds, more than a tiny kernel.

use rayon::prelude::*;

/// Below this many elements an elementwise kernel runs on the calling thread.
pub const PAR_ELEMS: usize = 1 << 15;

/// Runs `f(start, chunk)` over chunks of `out`, in parallel when `out` is large.
pub fn par_chunks_mut_zip<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let n = out.len();
    if n < PAR_ELEMS || rayon::current_num_threads() == 1 {
        f(0, out);
        return;
    }
    let chunk = n.div_ceil(rayon::current_num_threads() * 4).max(PAR_ELEMS / 4);
    out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i * chunk, c));
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
