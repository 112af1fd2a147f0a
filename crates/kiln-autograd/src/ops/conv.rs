//! Convolutions as differentiable functions (PyTorch's `F.conv1d`, `F.conv2d`,
//! `F.conv_transpose2d`). Each is one im2col + GEMM kernel (bias fused into the output) with
//! its own backward: the forward keeps only what the gradients asked for need (the input for
//! the weight gradient, the weight for the input gradient).

use crate::Tensor;
pub use kiln_tensor::ops::conv::{Conv1dOptions, Conv2dOptions, ConvTranspose2dOptions};
use kiln_tensor::{Array, Result};

/// The op's inputs in order (`input`, `weight`, then `bias` if any).
fn inputs<'a>(x: &'a Tensor, weight: &'a Tensor, bias: Option<&'a Tensor>) -> Vec<&'a Tensor> {
    let mut v = vec![x, weight];
    v.extend(bias);
    v
}

/// The three gradients computed by `grad_x`, `grad_w` (and the channel sums for the bias),
/// each only when asked for.
fn grads(
    g: &Array,
    needs: &[bool],
    has_bias: bool,
    grad_x: impl FnOnce() -> Result<Array>,
    grad_w: impl FnOnce() -> Result<Array>,
) -> Result<Vec<Option<Array>>> {
    let mut out = vec![if needs[0] { Some(grad_x()?) } else { None }, if needs[1] { Some(grad_w()?) } else { None }];
    if has_bias {
        out.push(if needs[2] { Some(Array::conv_grad_bias(g)?) } else { None });
    }
    Ok(out)
}

/// What backward needs to keep: the input when the weight needs a gradient, the weight when
/// the input does.
fn saved(x: &Tensor, weight: &Tensor) -> (Option<Array>, Option<Array>) {
    (weight.requires_grad().then(|| x.data()), x.requires_grad().then(|| weight.data()))
}

/// 2-d convolution (PyTorch's `F.conv2d`): `x` `[N, Cin, H, W]`, `weight`
/// `[Cout, Cin/groups, kH, kW]`, `bias` `[Cout]` (optional); output `[N, Cout, oH, oW]`.
/// Differentiable in all three.
///
/// ```
/// use kiln_autograd::{ops::conv::{conv2d, Conv2dOptions}, Tensor};
/// let x = Tensor::ones(&[1, 1, 3, 3]);
/// let w = Tensor::ones(&[2, 1, 3, 3]);
/// let y = conv2d(&x, &w, None, &Conv2dOptions::default().padding([1, 1]))?;
/// assert_eq!(y.shape(), &[1, 2, 3, 3]);
/// assert_eq!(y.to_vec_f32()?[..3], [4.0, 6.0, 4.0]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, opts: &Conv2dOptions) -> Result<Tensor> {
    let out = x.data().conv2d(&weight.data(), bias.map(Tensor::data).as_ref(), opts)?;
    let (xs, ws) = (x.shape().to_vec(), weight.shape().to_vec());
    let (sx, sw) = saved(x, weight);
    let opts = *opts;
    Ok(Tensor::from_op(out, "conv2d", &inputs(x, weight, bias), move |g, needs| {
        grads(
            g,
            needs,
            needs.len() == 3,
            || Array::conv2d_grad_input(g, sw.as_ref().expect("weight saved"), &xs, &opts),
            || Array::conv2d_grad_weight(g, sx.as_ref().expect("input saved"), &ws, &opts),
        )
    }))
}

/// 1-d convolution (PyTorch's `F.conv1d`): `x` `[N, Cin, L]`, `weight` `[Cout, Cin/groups, K]`,
/// `bias` `[Cout]` (optional); output `[N, Cout, Lout]`. Differentiable in all three.
pub fn conv1d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, opts: &Conv1dOptions) -> Result<Tensor> {
    let out = x.data().conv1d(&weight.data(), bias.map(Tensor::data).as_ref(), opts)?;
    let (xs, ws) = (x.shape().to_vec(), weight.shape().to_vec());
    let (sx, sw) = saved(x, weight);
    let opts = *opts;
    Ok(Tensor::from_op(out, "conv1d", &inputs(x, weight, bias), move |g, needs| {
        grads(
            g,
            needs,
            needs.len() == 3,
            || Array::conv1d_grad_input(g, sw.as_ref().expect("weight saved"), &xs, &opts),
            || Array::conv1d_grad_weight(g, sx.as_ref().expect("input saved"), &ws, &opts),
        )
    }))
}

/// Transposed 2-d convolution (PyTorch's `F.conv_transpose2d`, the adjoint of `conv2d`):
/// `x` `[N, Cin, H, W]`, `weight` `[Cin, Cout/groups, kH, kW]`, `bias` `[Cout]` (optional);
/// output `[N, Cout, Hout, Wout]`, `Hout = (H − 1)s − 2p + d(kH − 1) + output_padding + 1`.
/// Differentiable in all three.
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: &ConvTranspose2dOptions,
) -> Result<Tensor> {
    let out = x.data().conv_transpose2d(&weight.data(), bias.map(Tensor::data).as_ref(), opts)?;
    let (xs, ws) = (x.shape().to_vec(), weight.shape().to_vec());
    let (sx, sw) = saved(x, weight);
    let opts = *opts;
    Ok(Tensor::from_op(out, "conv_transpose2d", &inputs(x, weight, bias), move |g, needs| {
        grads(
            g,
            needs,
            needs.len() == 3,
            || Array::conv_transpose2d_grad_input(g, sw.as_ref().expect("weight saved"), &xs, &opts),
            || Array::conv_transpose2d_grad_weight(g, sx.as_ref().expect("input saved"), &ws, &opts),
        )
    }))
}
