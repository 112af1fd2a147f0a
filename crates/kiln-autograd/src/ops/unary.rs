//! Elementwise unary ops.

use crate::Tensor;
use kiln_tensor::Result;

impl Tensor {
    /// `e^self`.
    pub fn try_exp(&self) -> Result<Tensor> {
        let out = self.data().exp()?;
        let y = out.clone();
        Ok(Tensor::from_op(out, "exp", &[self], move |g, _| Ok(vec![Some(g.mul(&y)?)])))
    }
}

super::plain_forms! {
    /// `e^self`.
    fn exp() => try_exp;
}
