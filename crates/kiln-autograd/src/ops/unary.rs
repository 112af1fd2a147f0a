//! Elementwise unary ops: neg, exp, log, sqrt, abs, sin, cos, tanh, sigmoid, relu, silu,
//! leaky_relu, gelu, softplus, clamp and `powf` (a scalar exponent).
//!
//! Each saves only what its backward needs: the output where the derivative is a function
//! of it (exp, sqrt, tanh, sigmoid, relu), the input otherwise.

use super::plain_forms;
use crate::Tensor;
pub use kiln_tensor::ops::unary::GeluApproximate;
use kiln_tensor::{Array, Result};

impl Tensor {
    /// Records a unary op whose backward is `backward(saved, g)`; `saved` is the output
    /// when `save_output`, else the input.
    fn unary(
        &self,
        name: &'static str,
        forward: impl FnOnce(&Array) -> Result<Array>,
        save_output: bool,
        backward: impl FnOnce(&Array, &Array) -> Result<Array> + Send + 'static,
    ) -> Result<Tensor> {
        let x = self.data();
        let out = forward(&x)?;
        let saved = if save_output { out.clone() } else { x };
        Ok(Tensor::from_op(out, name, &[self], move |g, _| Ok(vec![Some(backward(&saved, g)?)])))
    }

    /// `-self`.
    pub fn try_neg(&self) -> Result<Tensor> {
        let out = self.data().neg()?;
        Ok(Tensor::from_op(out, "neg", &[self], |g, _| Ok(vec![Some(g.neg()?)])))
    }
    /// `e^self`.
    pub fn try_exp(&self) -> Result<Tensor> {
        self.unary("exp", Array::exp, true, |y, g| g.mul(y))
    }
    /// Natural logarithm.
    pub fn try_log(&self) -> Result<Tensor> {
        self.unary("log", Array::log, false, |x, g| g.div(x))
    }
    /// Square root.
    pub fn try_sqrt(&self) -> Result<Tensor> {
        self.unary("sqrt", Array::sqrt, true, |y, g| y.sqrt_backward(g))
    }
    /// Absolute value (gradient 0 at 0).
    pub fn try_abs(&self) -> Result<Tensor> {
        self.unary("abs", Array::abs, false, |x, g| x.abs_backward(g))
    }
    /// Sine.
    pub fn try_sin(&self) -> Result<Tensor> {
        self.unary("sin", Array::sin, false, |x, g| x.sin_backward(g))
    }
    /// Cosine.
    pub fn try_cos(&self) -> Result<Tensor> {
        self.unary("cos", Array::cos, false, |x, g| x.cos_backward(g))
    }
    /// Hyperbolic tangent.
    pub fn try_tanh(&self) -> Result<Tensor> {
        self.unary("tanh", Array::tanh, true, |y, g| y.tanh_backward(g))
    }
    /// Logistic sigmoid.
    pub fn try_sigmoid(&self) -> Result<Tensor> {
        self.unary("sigmoid", Array::sigmoid, true, |y, g| y.sigmoid_backward(g))
    }
    /// `max(x, 0)`; the gradient is 0 where `x ≤ 0`.
    pub fn try_relu(&self) -> Result<Tensor> {
        self.unary("relu", Array::relu, true, |y, g| y.relu_backward(g))
    }
    /// SiLU (swish): `x · sigmoid(x)`.
    pub fn try_silu(&self) -> Result<Tensor> {
        self.unary("silu", Array::silu, false, |x, g| x.silu_backward(g))
    }
    /// `x` where `x > 0`, else `negative_slope · x`.
    pub fn try_leaky_relu(&self, negative_slope: f32) -> Result<Tensor> {
        self.unary(
            "leaky_relu",
            |x| x.leaky_relu(negative_slope),
            false,
            move |x, g| x.leaky_relu_backward(g, negative_slope),
        )
    }
    /// GELU: exact (`GeluApproximate::None`, erf) or the tanh approximation.
    pub fn try_gelu(&self, approximate: GeluApproximate) -> Result<Tensor> {
        self.unary("gelu", |x| x.gelu(approximate), false, move |x, g| x.gelu_backward(g, approximate))
    }
    /// Softplus `log(1 + e^(beta·x)) / beta`, linear where `beta·x > threshold`
    /// (PyTorch's defaults are `beta = 1`, `threshold = 20`).
    pub fn try_softplus(&self, beta: f32, threshold: f32) -> Result<Tensor> {
        self.unary(
            "softplus",
            |x| x.softplus(beta, threshold),
            false,
            move |x, g| x.softplus_backward(g, beta, threshold),
        )
    }
    /// Clamps into `[min, max]` (`None` = open on that side); the gradient is 0 where the
    /// value was clamped. Errors when both bounds are `None`.
    pub fn try_clamp(&self, min: Option<f32>, max: Option<f32>) -> Result<Tensor> {
        self.unary("clamp", |x| x.clamp(min, max), false, move |x, g| x.clamp_backward(g, min, max))
    }
    /// `self ^ exponent` elementwise (PyTorch's `pow` with a number exponent). Negative
    /// bases need an integral exponent. The gradient is `exponent · x^(exponent − 1)`,
    /// and 0 for exponent 0.
    pub fn try_powf(&self, exponent: f32) -> Result<Tensor> {
        self.unary("pow", |x| x.powf(exponent), false, move |x, g| x.powf_backward(g, exponent))
    }
}

plain_forms! {
    /// `-self`.
    fn neg() => try_neg;
    /// `e^self`.
    fn exp() => try_exp;
    /// Natural logarithm.
    fn log() => try_log;
    /// Square root.
    fn sqrt() => try_sqrt;
    /// Absolute value.
    fn abs() => try_abs;
    /// Sine.
    fn sin() => try_sin;
    /// Cosine.
    fn cos() => try_cos;
    /// Hyperbolic tangent.
    fn tanh() => try_tanh;
    /// Logistic sigmoid.
    fn sigmoid() => try_sigmoid;
    /// `max(x, 0)`.
    fn relu() => try_relu;
    /// SiLU (swish): `x · sigmoid(x)`.
    fn silu() => try_silu;
    /// Leaky ReLU with the given negative slope.
    fn leaky_relu(negative_slope: f32) => try_leaky_relu;
    /// GELU (see [`Tensor::try_gelu`]).
    fn gelu(approximate: GeluApproximate) => try_gelu;
    /// Softplus (see [`Tensor::try_softplus`]).
    fn softplus(beta: f32, threshold: f32) => try_softplus;
    /// Clamp into `[min, max]` (see [`Tensor::try_clamp`]).
    fn clamp(min: Option<f32>, max: Option<f32>) => try_clamp;
    /// `self ^ exponent` elementwise.
    fn powf(exponent: f32) => try_powf;
}
