//! Elementwise binary and unary ops.

use super::Outputs;
use crate::case::Case;
use kiln::autograd::ops::unary::GeluApproximate;
use kiln::{Result, Tensor};

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    let binary = |f: fn(&Tensor, &Tensor) -> Result<Tensor>| -> Result<Outputs> {
        Ok(vec![f(c.input("input")?, c.input("other")?)?])
    };
    let unary = |f: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<Outputs> { Ok(vec![f(c.input("input")?)?]) };
    // A float attribute with PyTorch's default when absent or null.
    let float_or = |name: &str, default: f64| -> Result<f32> { Ok(c.opt_f64(name)?.unwrap_or(default) as f32) };
    let opt_float = |name: &str| -> Result<Option<f32>> { Ok(c.opt_f64(name)?.map(|v| v as f32)) };
    Some(match op {
        "add" => binary(|a, b| a.try_add(b)),
        "sub" => binary(|a, b| a.try_sub(b)),
        "mul" => binary(|a, b| a.try_mul(b)),
        "div" => binary(|a, b| a.try_div(b)),
        "maximum" => binary(|a, b| a.try_maximum(b)),
        "minimum" => binary(|a, b| a.try_minimum(b)),
        "pow" => c.f32("exponent").and_then(|e| unary(&|x| x.try_powf(e))),
        "neg" => unary(&|x| x.try_neg()),
        "exp" => unary(&|x| x.try_exp()),
        "log" => unary(&|x| x.try_log()),
        "sqrt" => unary(&|x| x.try_sqrt()),
        "abs" => unary(&|x| x.try_abs()),
        "sin" => unary(&|x| x.try_sin()),
        "cos" => unary(&|x| x.try_cos()),
        "tanh" => unary(&|x| x.try_tanh()),
        "sigmoid" => unary(&|x| x.try_sigmoid()),
        "relu" => unary(&|x| x.try_relu()),
        "silu" => unary(&|x| x.try_silu()),
        "leaky_relu" => float_or("negative_slope", 0.01).and_then(|s| unary(&|x| x.try_leaky_relu(s))),
        "gelu" => (|| {
            let approximate = match c.attr("approximate") {
                None => GeluApproximate::None,
                Some(_) => GeluApproximate::parse(c.str("approximate")?)?,
            };
            unary(&|x| x.try_gelu(approximate))
        })(),
        "softplus" => (|| {
            let (beta, threshold) = (float_or("beta", 1.0)?, float_or("threshold", 20.0)?);
            unary(&|x| x.try_softplus(beta, threshold))
        })(),
        "clamp" => (|| {
            let (min, max) = (opt_float("min")?, opt_float("max")?);
            unary(&|x| x.try_clamp(min, max))
        })(),
        _ => return None,
    })
}
