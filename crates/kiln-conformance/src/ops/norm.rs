//! Normalization: layer_norm, rms_norm, group_norm, batch_norm.

use super::Outputs;
use crate::case::Case;
use kiln::autograd::ops::norm;
use kiln::{Error, Result, Tensor};

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    let shape = || -> Result<Vec<usize>> {
        c.ints("normalized_shape")?
            .into_iter()
            .map(|d| usize::try_from(d).map_err(|_| Error::Msg(format!("normalized_shape: invalid size {d}"))))
            .collect()
    };
    let eps = || -> Result<f64> { Ok(c.opt_f64("eps")?.unwrap_or(1e-5)) };
    let (w, b) = (c.opt_input("weight"), c.opt_input("bias"));
    Some(match op {
        "layer_norm" => (|| Ok(vec![norm::layer_norm(c.input("input")?, &shape()?, w, b, eps()?)?]))(),
        "rms_norm" => (|| Ok(vec![norm::rms_norm(c.input("input")?, &shape()?, w, c.opt_f64("eps")?)?]))(),
        "group_norm" => (|| {
            let g = c.int("num_groups")?;
            let g = usize::try_from(g).map_err(|_| Error::Msg(format!("num_groups: invalid value {g}")))?;
            Ok(vec![norm::group_norm(c.input("input")?, g, w, b, eps()?)?])
        })(),
        "batch_norm" => (|| {
            let training = c.bool("training")?;
            let momentum = c.opt_f64("momentum")?.unwrap_or(0.1);
            let (rm, rv) = (c.opt_input("running_mean"), c.opt_input("running_var"));
            let (out, update) = norm::batch_norm(c.input("input")?, rm, rv, w, b, training, momentum, eps()?)?;
            let mut outs = vec![out];
            if let Some((m, v)) = update {
                outs.push(Tensor::non_differentiable(m));
                outs.push(Tensor::non_differentiable(v));
            }
            Ok(outs)
        })(),
        _ => return None,
    })
}
