//! Reductions, softmax and log_softmax.

use super::Outputs;
use crate::case::Case;
use kiln::Result;

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    Some(match op {
        "sum" => (|| {
            let dims = c.opt_ints("dim")?.map(|d| d.into_iter().map(|d| d as isize).collect::<Vec<_>>());
            Ok(vec![c.input("input")?.try_sum(dims.as_deref(), c.bool("keepdim")?)?])
        })(),
        _ => return None,
    })
}
