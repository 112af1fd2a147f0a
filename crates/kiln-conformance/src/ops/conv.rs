//! Convolution and pooling: conv1d, conv2d, conv_transpose2d, max_pool2d, avg_pool2d,
//! adaptive_avg_pool2d; and the `cnn_train` model case (conv2d → relu → max_pool2d → flatten
//! → linear → cross-entropy, trained with Adam).

use super::Outputs;
use crate::case::Case;
use kiln::autograd::ops::conv::{
    conv1d, conv2d, conv_transpose2d, Conv1dOptions, Conv2dOptions, ConvTranspose2dOptions,
};
use kiln::autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
use kiln::autograd::ops::pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d, Pool2dOptions};
use kiln::optim::{Adam, Optimizer};
use kiln::{Error, Result, Tensor};

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    let one = |r: Result<Tensor>| r.map(|t| vec![t]);
    Some(match op {
        "conv1d" => one((|| {
            let o = Conv1dOptions {
                stride: spatial::<1>(c, "stride", 1)?[0],
                padding: spatial::<1>(c, "padding", 0)?[0],
                dilation: spatial::<1>(c, "dilation", 1)?[0],
                groups: groups(c)?,
            };
            conv1d(c.input("input")?, c.input("weight")?, c.opt_input("bias"), &o)
        })()),
        "conv2d" => one((|| {
            let o = Conv2dOptions {
                stride: spatial(c, "stride", 1)?,
                padding: spatial(c, "padding", 0)?,
                padding_end: None,
                dilation: spatial(c, "dilation", 1)?,
                groups: groups(c)?,
            };
            conv2d(c.input("input")?, c.input("weight")?, c.opt_input("bias"), &o)
        })()),
        "conv_transpose2d" => one((|| {
            let o = ConvTranspose2dOptions {
                stride: spatial(c, "stride", 1)?,
                padding: spatial(c, "padding", 0)?,
                output_padding: spatial(c, "output_padding", 0)?,
                dilation: spatial(c, "dilation", 1)?,
                groups: groups(c)?,
            };
            conv_transpose2d(c.input("input")?, c.input("weight")?, c.opt_input("bias"), &o)
        })()),
        "max_pool2d" => one((|| max_pool2d(c.input("input")?, &pool_options(c)?))()),
        "avg_pool2d" => one((|| {
            let include = if c.attr("count_include_pad").is_some() { c.bool("count_include_pad")? } else { true };
            avg_pool2d(c.input("input")?, &pool_options(c)?, include)
        })()),
        "adaptive_avg_pool2d" => one((|| adaptive_avg_pool2d(c.input("input")?, spatial(c, "output_size", 1)?))()),
        "cnn_train" => cnn_train(c),
        _ => return None,
    })
}

/// A non-negative integer.
fn to_usize(name: &str, v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::Msg(format!("attr {name}: expected a non-negative integer, got {v}")))
}

/// A per-spatial-dim attribute: a list of `N` ints, or one int (or a one-element list) used for
/// every dim; `default` when null or absent.
fn spatial<const N: usize>(c: &Case, name: &str, default: usize) -> Result<[usize; N]> {
    let Some(v) = c.opt_ints(name)? else { return Ok([default; N]) };
    match v.len() {
        1 => Ok([to_usize(name, v[0])?; N]),
        n if n == N => {
            let mut out = [0; N];
            for (o, &x) in out.iter_mut().zip(&v) {
                *o = to_usize(name, x)?;
            }
            Ok(out)
        }
        n => Err(Error::Msg(format!("attr {name}: expected {N} entries, got {n}"))),
    }
}

fn groups(c: &Case) -> Result<usize> {
    to_usize("groups", c.opt_int("groups")?.unwrap_or(1))
}

/// `kernel_size`, `stride` (null or absent: the kernel size) and `padding`.
fn pool_options(c: &Case) -> Result<Pool2dOptions> {
    let k = spatial(c, "kernel_size", 1)?;
    let stride = match c.opt_ints("stride")? {
        Some(v) if !v.is_empty() => spatial(c, "stride", 1)?,
        _ => k,
    };
    Ok(Pool2dOptions::new(k).stride(stride).padding(spatial(c, "padding", 0)?))
}

/// The `cnn_train` case: full-batch Adam training of conv2d(stride 1, padding) → relu →
/// max_pool2d(kernel = stride = pool) → flatten → linear → cross-entropy (mean). Outputs the
/// loss before each step and the final parameters.
fn cnn_train(c: &Case) -> Result<Outputs> {
    let steps = to_usize("steps", c.int("steps")?)?;
    let padding = spatial(c, "padding", 0)?;
    let pool = spatial(c, "pool", 1)?;
    let lr = c.f32("lr")?;
    let (b1, b2) = match c.attr("betas") {
        None => (0.9, 0.999),
        Some(_) => match c.floats("betas")?[..] {
            [b1, b2] => (b1 as f32, b2 as f32),
            ref b => return Err(Error::Msg(format!("attr betas: expected two numbers, got {b:?}"))),
        },
    };
    let eps = c.opt_f64("eps")?.map_or(1e-8, |v| v as f32);
    let (x, y) = (c.input("x")?.detach(), c.input("y")?.detach());
    let names = ["conv.weight", "conv.bias", "fc.weight", "fc.bias"];
    let params: Vec<Tensor> = names
        .iter()
        .map(|n| Ok(Tensor::from_array(c.input(n)?.data().contiguous()).requires_grad_(true)))
        .collect::<Result<_>>()?;
    let [cw, cb, fw, fb] = [&params[0], &params[1], &params[2], &params[3]];
    let conv = Conv2dOptions::default().padding(padding);
    let pooling = Pool2dOptions::new(pool);
    let mut opt = Adam::new(params.clone(), lr).betas(b1, b2).eps(eps).weight_decay(0.0).amsgrad(false);
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let h = conv2d(&x, cw, Some(cb), &conv)?.try_relu()?;
        let h = max_pool2d(&h, &pooling)?.try_flatten(1, -1)?;
        let logits = h.try_linear(fw, Some(fb))?;
        let loss = cross_entropy(&logits, &y, &CrossEntropyOptions::default())?;
        losses.push(loss.item()?);
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
    }
    let mut outs = Vec::new();
    for name in &c.spec.outputs {
        outs.push(match name.as_str() {
            "losses" => Tensor::from_vec(losses.clone(), &[steps])?,
            n => {
                let i = n
                    .strip_prefix("final.")
                    .and_then(|p| names.iter().position(|&m| m == p))
                    .ok_or_else(|| Error::Msg(format!("cnn_train: unknown output {n}")))?;
                Tensor::from_array(params[i].data())
            }
        });
    }
    Ok(outs)
}
