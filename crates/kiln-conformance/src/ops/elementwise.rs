//! Elementwise binary and unary ops.

use super::Outputs;
use crate::case::Case;
use kiln::Result;

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    let binary = |f: fn(&kiln::Tensor, &kiln::Tensor) -> Result<kiln::Tensor>| -> Result<Outputs> {
        Ok(vec![f(c.input("input")?, c.input("other")?)?])
    };
    Some(match op {
        "add" => binary(|a, b| a.try_add(b)),
        "sub" => binary(|a, b| a.try_sub(b)),
        "mul" => binary(|a, b| a.try_mul(b)),
        "div" => binary(|a, b| a.try_div(b)),
        "maximum" => binary(|a, b| a.try_maximum(b)),
        "minimum" => binary(|a, b| a.try_minimum(b)),
        "exp" => c.input("input").and_then(|x| Ok(vec![x.try_exp()?])),
        _ => return None,
    })
}
