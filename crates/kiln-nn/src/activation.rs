//! Activation layers over the elementwise and softmax ops: [`ReLU`], [`GELU`], [`SiLU`],
//! [`Tanh`], [`Sigmoid`], [`LeakyReLU`], [`Softplus`], [`Softmax`] and [`LogSoftmax`].
//! None has parameters.

use crate::{Forward, Module};
pub use kiln_autograd::ops::unary::GeluApproximate;
use kiln_autograd::{Result, Tensor};

/// `max(x, 0)` (PyTorch's `nn.ReLU`).
#[derive(Module, Debug, Clone, Copy, Default)]
pub struct ReLU;

impl Forward for ReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_relu()
    }
}

/// GELU (PyTorch's `nn.GELU`): exact (erf) with `GeluApproximate::None`, else the tanh form.
#[derive(Module, Debug, Clone, Copy)]
pub struct GELU {
    /// Which form.
    #[module(skip)]
    pub approximate: GeluApproximate,
}

impl GELU {
    /// GELU of the given form.
    pub fn new(approximate: GeluApproximate) -> GELU {
        GELU { approximate }
    }
}

impl Default for GELU {
    /// The exact (erf) form, as in PyTorch.
    fn default() -> GELU {
        GELU { approximate: GeluApproximate::None }
    }
}

impl Forward for GELU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_gelu(self.approximate)
    }
}

/// `x · sigmoid(x)` (PyTorch's `nn.SiLU`).
#[derive(Module, Debug, Clone, Copy, Default)]
pub struct SiLU;

impl Forward for SiLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_silu()
    }
}

/// Hyperbolic tangent (PyTorch's `nn.Tanh`).
#[derive(Module, Debug, Clone, Copy, Default)]
pub struct Tanh;

impl Forward for Tanh {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_tanh()
    }
}

/// Logistic sigmoid (PyTorch's `nn.Sigmoid`).
#[derive(Module, Debug, Clone, Copy, Default)]
pub struct Sigmoid;

impl Forward for Sigmoid {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_sigmoid()
    }
}

/// `x` where `x > 0`, else `negative_slope · x` (PyTorch's `nn.LeakyReLU`, default slope 0.01).
#[derive(Module, Debug, Clone, Copy)]
pub struct LeakyReLU {
    /// The slope for negative inputs.
    pub negative_slope: f32,
}

impl LeakyReLU {
    /// Leaky ReLU with the given slope.
    pub fn new(negative_slope: f32) -> LeakyReLU {
        LeakyReLU { negative_slope }
    }
}

impl Default for LeakyReLU {
    /// Slope 0.01, as in PyTorch.
    fn default() -> LeakyReLU {
        LeakyReLU { negative_slope: 0.01 }
    }
}

impl Forward for LeakyReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_leaky_relu(self.negative_slope)
    }
}

/// `log(1 + e^(beta·x)) / beta`, linear where `beta·x > threshold` (PyTorch's `nn.Softplus`,
/// defaults `beta = 1`, `threshold = 20`).
#[derive(Module, Debug, Clone, Copy)]
pub struct Softplus {
    /// The sharpness.
    pub beta: f32,
    /// Above `beta·x > threshold` the layer is the identity.
    pub threshold: f32,
}

impl Softplus {
    /// Softplus with the given `beta` and `threshold`.
    pub fn new(beta: f32, threshold: f32) -> Softplus {
        Softplus { beta, threshold }
    }
}

impl Default for Softplus {
    /// `beta = 1`, `threshold = 20`, as in PyTorch.
    fn default() -> Softplus {
        Softplus { beta: 1.0, threshold: 20.0 }
    }
}

impl Forward for Softplus {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_softplus(self.beta, self.threshold)
    }
}

/// softmax along `dim` (PyTorch's `nn.Softmax(dim)`; negative counts from the end).
#[derive(Module, Debug, Clone, Copy)]
pub struct Softmax {
    /// The dim normalized over.
    pub dim: isize,
}

impl Softmax {
    /// softmax along `dim`.
    pub fn new(dim: isize) -> Softmax {
        Softmax { dim }
    }
}

impl Forward for Softmax {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_softmax(self.dim)
    }
}

/// log_softmax along `dim` (PyTorch's `nn.LogSoftmax(dim)`).
#[derive(Module, Debug, Clone, Copy)]
pub struct LogSoftmax {
    /// The dim normalized over.
    pub dim: isize,
}

impl LogSoftmax {
    /// log_softmax along `dim`.
    pub fn new(dim: isize) -> LogSoftmax {
        LogSoftmax { dim }
    }
}

impl Forward for LogSoftmax {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_log_softmax(self.dim)
    }
}
