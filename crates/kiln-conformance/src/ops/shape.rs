//! Shape ops: reshape, transpose, permute, cat, stack, narrow, squeeze, unsqueeze, expand, flatten,
//! pad.

use super::Outputs;
use crate::case::Case;
use kiln::{Error, Result, Tensor};

/// Runs a shape op, or `None` for ops of other families.
pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    let int = |name: &str| -> Result<isize> { Ok(c.int(name)? as isize) };
    let x = || c.input("input");
    let out = |t: Result<Tensor>| t.map(|t| vec![t]);
    Some(match op {
        "reshape" => x().and_then(|x| out(x.try_reshape(&c.dims("shape")?))),
        "transpose" => x().and_then(|x| out(x.try_transpose(int("dim0")?, int("dim1")?))),
        "permute" => x().and_then(|x| out(x.try_permute(&c.dims("dims")?))),
        "cat" => int("dim").and_then(|d| out(Tensor::try_cat(&c.input_list("tensors"), d))),
        "stack" => int("dim").and_then(|d| out(Tensor::try_stack(&c.input_list("tensors"), d))),
        "narrow" => x().and_then(|x| out(x.try_narrow(int("dim")?, int("start")?, c.int("length")? as usize))),
        // `dim` is an int; a list squeezes each listed size-1 dim, null squeezes them all.
        "squeeze" => x().and_then(|x| match c.opt_ints("dim")? {
            None => out(Ok(x.squeeze_all())),
            Some(dims) => out(x.try_squeeze_dims(&dims.into_iter().map(|d| d as isize).collect::<Vec<_>>())),
        }),
        "unsqueeze" => x().and_then(|x| out(x.try_unsqueeze(int("dim")?))),
        "expand" => x().and_then(|x| out(x.try_expand(&c.dims("sizes")?))),
        "flatten" => x().and_then(|x| {
            let start = c.opt_int("start_dim")?.unwrap_or(0) as isize;
            let end = c.opt_int("end_dim")?.unwrap_or(-1) as isize;
            out(x.try_flatten(start, end))
        }),
        // PyTorch's F.pad: `pad` pairs from the last dim; constant mode only.
        "pad" => x().and_then(|x| {
            if let Some(mode) = c.attr("mode") {
                if mode.as_str() != Some("constant") {
                    return Err(Error::Msg(format!("pad: only mode \"constant\" is supported, got {mode}")));
                }
            }
            out(x.try_pad(&c.dims("pad")?, c.opt_f64("value")?.unwrap_or(0.0) as f32))
        }),
        _ => return None,
    })
}
