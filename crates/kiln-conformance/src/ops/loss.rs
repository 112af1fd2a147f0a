//! Losses (README §8): cross_entropy, nll_loss, mse_loss, l1_loss, smooth_l1_loss,
//! binary_cross_entropy_with_logits, kl_div.

use super::Outputs;
use crate::case::Case;
use kiln::autograd::ops::loss::{self, BceWithLogitsOptions, CrossEntropyOptions, NllLossOptions, Reduction};
use kiln::Result;

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    // `reduction` defaults to "mean", as in PyTorch.
    let reduction = || -> Result<Reduction> {
        match c.attr("reduction") {
            None => Ok(Reduction::Mean),
            Some(_) => Reduction::parse(c.str("reduction")?),
        }
    };
    let ignore_index = || -> Result<i64> { Ok(c.opt_int("ignore_index")?.unwrap_or(-100)) };
    let pair = |f: &dyn Fn(&kiln::Tensor, &kiln::Tensor, Reduction) -> Result<kiln::Tensor>| -> Result<Outputs> {
        Ok(vec![f(c.input("input")?, c.input("target")?, reduction()?)?])
    };
    Some(match op {
        "cross_entropy" => (|| {
            let opts = CrossEntropyOptions {
                weight: c.opt_input("weight").cloned(),
                ignore_index: ignore_index()?,
                reduction: reduction()?,
                label_smoothing: c.opt_f64("label_smoothing")?.unwrap_or(0.0) as f32,
            };
            Ok(vec![loss::cross_entropy(c.input("input")?, c.input("target")?, &opts)?])
        })(),
        "nll_loss" => (|| {
            let opts = NllLossOptions {
                weight: c.opt_input("weight").cloned(),
                ignore_index: ignore_index()?,
                reduction: reduction()?,
            };
            Ok(vec![loss::nll_loss(c.input("input")?, c.input("target")?, &opts)?])
        })(),
        "mse_loss" => pair(&loss::mse_loss),
        "l1_loss" => pair(&loss::l1_loss),
        "smooth_l1_loss" => (|| {
            let beta = c.opt_f64("beta")?.unwrap_or(1.0) as f32;
            pair(&|x, y, r| loss::smooth_l1_loss(x, y, r, beta))
        })(),
        "binary_cross_entropy_with_logits" => (|| {
            let opts = BceWithLogitsOptions {
                weight: c.opt_input("weight").cloned(),
                pos_weight: c.opt_input("pos_weight").cloned(),
                reduction: reduction()?,
            };
            Ok(vec![loss::binary_cross_entropy_with_logits(c.input("input")?, c.input("target")?, &opts)?])
        })(),
        "kl_div" => (|| {
            let log_target = c.bool("log_target")?;
            pair(&|x, y, r| loss::kl_div(x, y, r, log_target))
        })(),
        _ => return None,
    })
}
