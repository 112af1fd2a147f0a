//! `pad`: constant padding (PyTorch's `F.pad` in constant mode). The gradient of a pad is the
//! pad of the output gradient by the negated amounts: the padding is cut off again, and what a
//! negative pad removed comes back as zeros.

use super::plain_forms;
use crate::Tensor;
use kiln_tensor::Result;

impl Tensor {
    /// Pads with `value` (PyTorch's `F.pad(x, pad, value=value)`): `pads` holds `(before, after)`
    /// pairs starting from the last dim (`[left, right, top, bottom]` pads the last two dims);
    /// negative entries remove elements. Differentiable (f32).
    ///
    /// ```
    /// use kiln_autograd::Tensor;
    /// let x = Tensor::ones(&[1, 1, 2, 2]);
    /// // TensorFlow "SAME" padding of a stride-2 3x3 conv on an even input: one zero after.
    /// let y = x.try_pad(&[0, 1, 0, 1], 0.0)?;
    /// assert_eq!(y.shape(), &[1, 1, 3, 3]);
    /// # Ok::<(), kiln_autograd::Error>(())
    /// ```
    pub fn try_pad(&self, pads: &[isize], value: f32) -> Result<Tensor> {
        let out = self.data().pad(pads, value)?;
        let back: Vec<isize> = pads.iter().map(|&p| -p).collect();
        Ok(Tensor::from_op(out, "pad", &[self], move |g, _| Ok(vec![Some(g.pad(&back, 0.0)?)])))
    }
}

plain_forms! {
    /// Pads with `value`; `pads` are `(before, after)` pairs from the last dim (see
    /// [`Tensor::try_pad`]).
    fn pad(pads: &[isize], value: f32) => try_pad;
}
