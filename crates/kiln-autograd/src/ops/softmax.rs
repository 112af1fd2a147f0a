//! softmax and log_softmax along one dim. Both save only their output for backward.

use super::plain_forms;
use crate::Tensor;
use kiln_tensor::Result;

impl Tensor {
    /// `exp(x) / Σ exp(x)` along `dim`, numerically stable (`-inf` logits give 0).
    pub fn try_softmax(&self, dim: isize) -> Result<Tensor> {
        let out = self.data().softmax(dim)?;
        let y = out.clone();
        Ok(Tensor::from_op(out, "softmax", &[self], move |g, _| Ok(vec![Some(y.softmax_backward(g, dim)?)])))
    }

    /// `x − log Σ exp(x)` along `dim`, numerically stable (`-inf` logits stay `-inf`, and
    /// their gradient is the output gradient itself).
    pub fn try_log_softmax(&self, dim: isize) -> Result<Tensor> {
        let out = self.data().log_softmax(dim)?;
        let y = out.clone();
        Ok(Tensor::from_op(out, "log_softmax", &[self], move |g, _| Ok(vec![Some(y.log_softmax_backward(g, dim)?)])))
    }
}

plain_forms! {
    /// softmax along `dim`. Panics on an invalid dim.
    fn softmax(dim: isize) => try_softmax;
    /// log_softmax along `dim`. Panics on an invalid dim.
    fn log_softmax(dim: isize) => try_log_softmax;
}
