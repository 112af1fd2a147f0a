//! Reductions, softmax and log_softmax.

use super::Outputs;
use crate::case::Case;
use kiln::{Result, Tensor};

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    // `dim`: a list, a single int, or null (= all dims).
    let dims = || -> Result<Option<Vec<isize>>> {
        Ok(c.opt_ints("dim")?.map(|d| d.into_iter().map(|d| d as isize).collect()))
    };
    let reduce = |f: fn(&Tensor, Option<&[isize]>, bool) -> Result<Tensor>| -> Result<Outputs> {
        Ok(vec![f(c.input("input")?, dims()?.as_deref(), c.bool("keepdim")?)?])
    };
    Some(match op {
        "sum" => reduce(|x, d, k| x.try_sum(d, k)),
        "mean" => reduce(|x, d, k| x.try_mean(d, k)),
        "amax" => reduce(|x, d, k| x.try_amax(d, k)),
        "logsumexp" => reduce(|x, d, k| x.try_logsumexp(d, k)),
        "var" => (|| {
            let correction = c.opt_int("correction")?.unwrap_or(1);
            Ok(vec![c.input("input")?.try_var(dims()?.as_deref(), c.bool("keepdim")?, correction)?])
        })(),
        "argmax" => (|| {
            let dim = c.opt_int("dim")?.map(|d| d as isize);
            Ok(vec![c.input("input")?.try_argmax(dim, c.bool("keepdim")?)?])
        })(),
        "softmax" => (|| Ok(vec![c.input("input")?.try_softmax(c.int("dim")? as isize)?]))(),
        "log_softmax" => (|| Ok(vec![c.input("input")?.try_log_softmax(c.int("dim")? as isize)?]))(),
        _ => return None,
    })
}
