//! Every CPU kernel, a file per op family. Each family adds methods to [`Array`](crate::Array).

pub mod attention;
pub mod binary;
pub mod conv;
pub mod gemm;
pub mod index;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pad;
pub mod pool;
pub mod reduce;
pub mod shape;
pub mod softmax;
pub mod unary;
pub mod vmath;

/// A buffer of `n` f32 for kernels that write every element of their output before reading
/// any: skipping the zero fill saves a pass over the output (and the page-zeroing memset).
#[allow(clippy::uninit_vec)]
pub(crate) fn output_buffer(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns, and every caller writes each element of the
    // buffer before it reads it (see the call sites).
    unsafe { v.set_len(n) };
    v
}
