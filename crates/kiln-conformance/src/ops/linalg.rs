//! Linear algebra: matmul and linear.

use super::Outputs;
use crate::case::Case;
use kiln::Result;

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    Some(match op {
        "matmul" => (|| Ok(vec![c.input("input")?.try_matmul(c.input("other")?)?]))(),
        "linear" => (|| Ok(vec![c.input("input")?.try_linear(c.input("weight")?, c.opt_input("bias"))?]))(),
        _ => return None,
    })
}
