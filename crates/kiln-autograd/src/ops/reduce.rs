//! Reductions.

use crate::Tensor;
use kiln_tensor::ops::reduce::reduce_mask;
use kiln_tensor::Result;

impl Tensor {
    /// Sum over `dims` (`None` = all dims); reduced dims are kept as size 1 when `keepdim`.
    pub fn try_sum(&self, dims: Option<&[isize]>, keepdim: bool) -> Result<Tensor> {
        let x = self.data();
        let out = x.sum(dims, keepdim)?;
        let in_shape = x.shape().to_vec();
        let mask = reduce_mask("sum", in_shape.len(), dims)?;
        Ok(Tensor::from_op(out, "sum", &[self], move |g, _| {
            let kept: Vec<usize> = in_shape.iter().zip(&mask).map(|(&s, &m)| if m { 1 } else { s }).collect();
            Ok(vec![Some(g.reshape_to(&kept)?.broadcast_to(&in_shape)?.contiguous())])
        }))
    }

    /// Sum of all elements, as a 0-d tensor.
    pub fn sum_all(&self) -> Tensor {
        self.try_sum(None, false).expect("sum over all dims cannot fail on f32")
    }
}
