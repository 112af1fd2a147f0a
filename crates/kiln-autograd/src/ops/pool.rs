//! 2-d pooling as differentiable functions (PyTorch's `F.max_pool2d`, `F.avg_pool2d`,
//! `F.adaptive_avg_pool2d`) over `[N, C, H, W]` or `[C, H, W]` inputs. Max pooling keeps only
//! the argmax of each window (u32) for its backward; the average poolings keep only shapes.

use crate::Tensor;
pub use kiln_tensor::ops::pool::Pool2dOptions;
use kiln_tensor::{Array, Result};

/// 2-d max pooling (dilation 1, floor mode, implicit −inf padding). The gradient of each
/// output goes to the maximum of its window.
///
/// ```
/// use kiln_autograd::{ops::pool::{max_pool2d, Pool2dOptions}, Tensor};
/// let x = Tensor::from_vec(vec![1.0, 5.0, 2.0, 3.0], &[1, 1, 2, 2])?.requires_grad_(true);
/// let y = max_pool2d(&x, &Pool2dOptions::new([2, 2]))?;
/// y.sum_all().backward()?;
/// assert_eq!(x.grad().unwrap().to_vec_f32()?, vec![0.0, 1.0, 0.0, 0.0]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
pub fn max_pool2d(x: &Tensor, opts: &Pool2dOptions) -> Result<Tensor> {
    let (out, idx) = x.data().max_pool2d(opts)?;
    Ok(Tensor::from_op(out, "max_pool2d", &[x], move |g, _| Ok(vec![Some(Array::max_pool2d_backward(g, &idx)?)])))
}

/// 2-d average pooling (floor mode, zero padding): each window's sum divided by `kh·kw` when
/// `count_include_pad`, else by its number of elements inside the input.
pub fn avg_pool2d(x: &Tensor, opts: &Pool2dOptions, count_include_pad: bool) -> Result<Tensor> {
    let out = x.data().avg_pool2d(opts, count_include_pad)?;
    let (shape, opts) = (x.shape().to_vec(), *opts);
    Ok(Tensor::from_op(out, "avg_pool2d", &[x], move |g, _| {
        Ok(vec![Some(Array::avg_pool2d_backward(g, &shape, &opts, count_include_pad)?)])
    }))
}

/// Adaptive 2-d average pooling to `output_size` `[oh, ow]`: output cell `i` averages rows
/// `⌊i·H/oh⌋ … ⌈(i+1)·H/oh⌉ − 1` (likewise columns).
pub fn adaptive_avg_pool2d(x: &Tensor, output_size: [usize; 2]) -> Result<Tensor> {
    let out = x.data().adaptive_avg_pool2d(output_size)?;
    let shape = x.shape().to_vec();
    Ok(Tensor::from_op(out, "adaptive_avg_pool2d", &[x], move |g, _| {
        Ok(vec![Some(Array::adaptive_avg_pool2d_backward(g, &shape)?)])
    }))
}
