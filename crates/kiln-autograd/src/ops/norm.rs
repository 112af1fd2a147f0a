//! Normalization layers as functions (PyTorch's `F.layer_norm`, `F.rms_norm`,
//! `F.group_norm`, `F.batch_norm`). Each is one fused kernel with its own backward: the
//! forward saves its input and the small per-group statistics, and the backward computes
//! only the gradients asked for, in closed form.

use crate::Tensor;
use kiln_tensor::ops::norm::{NormGrads, NormStats};
use kiln_tensor::{Array, Result};

/// The data of optional tensors.
fn data(t: Option<&Tensor>) -> Option<Array> {
    t.map(Tensor::data)
}

/// The inputs of an op with optional weight and bias, in order, plus the position of the
/// weight and bias among them.
fn op_inputs<'a>(
    x: &'a Tensor,
    weight: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
) -> (Vec<&'a Tensor>, Option<usize>, Option<usize>) {
    let mut inputs = vec![x];
    let wi = weight.map(|w| {
        inputs.push(w);
        inputs.len() - 1
    });
    let bi = bias.map(|b| {
        inputs.push(b);
        inputs.len() - 1
    });
    (inputs, wi, bi)
}

/// `[input, weight, bias]` needs from the autograd `needs` of the op's inputs.
fn expand_needs(needs: &[bool], wi: Option<usize>, bi: Option<usize>) -> [bool; 3] {
    [needs[0], wi.is_some_and(|i| needs[i]), bi.is_some_and(|i| needs[i])]
}

/// The gradients in the order of the op's inputs.
fn ordered(g: NormGrads, wi: Option<usize>, bi: Option<usize>) -> Vec<Option<Array>> {
    let mut out = vec![g.input];
    if wi.is_some() {
        out.push(g.weight);
    }
    if bi.is_some() {
        out.push(g.bias);
    }
    out
}

/// Layer normalization over the trailing `normalized_shape` dims:
/// `(x − mean)/√(var + eps)·weight + bias` with the biased variance. `weight` and `bias` are
/// optional and have shape `normalized_shape`. Differentiable in all three tensors.
///
/// ```
/// use kiln_autograd::{ops::norm::layer_norm, Tensor};
/// let x = Tensor::from_vec(vec![1.0, 3.0], &[1, 2])?;
/// let y = layer_norm(&x, &[2], None, None, 0.0)?;
/// assert_eq!(y.to_vec_f32()?, vec![-1.0, 1.0]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
pub fn layer_norm(
    x: &Tensor,
    normalized_shape: &[usize],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let (xd, wd) = (x.data(), data(weight));
    let (out, stats) = xd.layer_norm(normalized_shape, wd.as_ref(), data(bias).as_ref(), eps)?;
    let (inputs, wi, bi) = op_inputs(x, weight, bias);
    let shape = normalized_shape.to_vec();
    Ok(Tensor::from_op(out, "layer_norm", &inputs, move |g, needs| {
        let grads = xd.layer_norm_backward(g, &stats, &shape, wd.as_ref(), expand_needs(needs, wi, bi))?;
        Ok(ordered(grads, wi, bi))
    }))
}

/// RMS normalization over the trailing `normalized_shape` dims: `x/√(mean(x²) + eps)·weight`,
/// `weight` optional of shape `normalized_shape`; `eps` `None` is f32's machine epsilon (as
/// PyTorch's default). Differentiable in `x` and `weight`.
pub fn rms_norm(x: &Tensor, normalized_shape: &[usize], weight: Option<&Tensor>, eps: Option<f64>) -> Result<Tensor> {
    let (xd, wd) = (x.data(), data(weight));
    let (out, rstd) = xd.rms_norm(normalized_shape, wd.as_ref(), eps)?;
    let (inputs, wi, _) = op_inputs(x, weight, None);
    let shape = normalized_shape.to_vec();
    Ok(Tensor::from_op(out, "rms_norm", &inputs, move |g, needs| {
        let n = expand_needs(needs, wi, None);
        let grads = xd.rms_norm_backward(g, &rstd, &shape, wd.as_ref(), [n[0], n[1]])?;
        Ok(ordered(grads, wi, None))
    }))
}

/// Group normalization of `x` `[N, C, *]` (`*` may be empty): statistics per sample and group
/// of `C/num_groups` consecutive channels (biased variance), then the per-channel affine
/// (`weight`, `bias` optional, `[C]`). Differentiable in all three tensors.
pub fn group_norm(
    x: &Tensor,
    num_groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let (xd, wd) = (x.data(), data(weight));
    let (out, stats) = xd.group_norm(num_groups, wd.as_ref(), data(bias).as_ref(), eps)?;
    let (inputs, wi, bi) = op_inputs(x, weight, bias);
    Ok(Tensor::from_op(out, "group_norm", &inputs, move |g, needs| {
        let grads = xd.group_norm_backward(g, &stats, num_groups, wd.as_ref(), expand_needs(needs, wi, bi))?;
        Ok(ordered(grads, wi, bi))
    }))
}

/// Batch normalization of `x` `[N, C, *]` (PyTorch's `F.batch_norm`).
///
/// With `training`, normalizes each channel with the mean and biased variance of the batch
/// (over all dims but 1) and, when `running_mean` and `running_var` (`[C]`) are given, also
/// returns their updated values `(1 − momentum)·running + momentum·batch` (the variance
/// unbiased, `·M/(M − 1)`), as plain arrays: the caller stores them (the module layers do,
/// with [`Tensor::set_data`]). The running tensors themselves are never modified here and
/// never receive gradients.
///
/// Without `training`, normalizes with `running_mean` / `running_var` (required) and returns
/// no update. The output is differentiable in `x`, `weight` and `bias` (`[C]`, optional).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<(Tensor, Option<(Array, Array)>)> {
    let (rm, rv) = (data(running_mean), data(running_var));
    let running = match (&rm, &rv) {
        (Some(m), Some(v)) => Some((m, v)),
        (None, None) => None,
        _ => {
            return Err(kiln_tensor::Error::op(
                "batch_norm",
                "running_mean and running_var have to be given together (or both omitted)",
            ))
        }
    };
    let (xd, wd) = (x.data(), data(weight));
    let (out, stats, update): (Array, NormStats, _) =
        xd.batch_norm(running, wd.as_ref(), data(bias).as_ref(), training, momentum, eps)?;
    let (inputs, wi, bi) = op_inputs(x, weight, bias);
    let out = Tensor::from_op(out, "batch_norm", &inputs, move |g, needs| {
        let grads = xd.batch_norm_backward(g, &stats, wd.as_ref(), training, expand_needs(needs, wi, bi))?;
        Ok(ordered(grads, wi, bi))
    });
    Ok((out, update))
}
