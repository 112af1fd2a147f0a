//! Vectorizable math over slices, shared by the kernels of several families (exp for
//! softmax and cross-entropy, tanh for GELU, ...).

/// `dst[i] = exp(src[i])`.
pub fn exp_slice(src: &[f32], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s.exp();
    }
}

/// `x[i] = exp(x[i])`.
pub fn exp_inplace(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = v.exp();
    }
}
