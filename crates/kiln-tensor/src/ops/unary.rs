//! Elementwise unary ops (neg, exp, log, sqrt, abs, sin, cos, tanh, sigmoid, relu, silu,
//! leaky_relu, gelu, softplus, clamp, pow with a scalar exponent) and the kernels of their
//! backward rules (`*_backward`, which take the upstream gradient and the saved input or
//! output and return the input's gradient).

use super::binary::{map_k, zip_map, zip_map_k};
use super::vmath::{self, Fn1, Map1, Map2};
use crate::parallel::par_chunks_mut_zip;
use crate::{bail, Array, Error, Result};
use std::mem::MaybeUninit;

/// `x[i] = k(x[i])` through the out-of-place kernel, one L1-sized block at a time: the
/// in-place loop (`vmath::map1_inplace`) compiles to about twice the instructions for the
/// polynomial kernels (GELU), the block copy costs little.
fn map_in_place<K: Map1>(k: K, x: &mut [f32]) {
    let mut buf = [0f32; 512];
    for c in x.chunks_mut(buf.len()) {
        let src = &mut buf[..c.len()];
        src.copy_from_slice(c);
        // SAFETY: MaybeUninit<f32> has f32's layout; map1_slice writes only initialized values.
        let dst = unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) };
        vmath::map1_slice(k, src, dst);
    }
}

/// Declares a [`Map1`] kernel: `kernel1!(Name { field: f32 } |k, x| body)`. The body may
/// use the const `FMA` (passed on to the `vmath` functions) and the fields through `k`.
macro_rules! kernel1 {
    ($name:ident { $($field:ident : $ty:ty),* } |$k:ident, $x:ident| $body:expr) => {
        #[derive(Clone, Copy)]
        struct $name { $($field: $ty),* }
        impl Map1 for $name {
            #[inline(always)]
            #[allow(unused_variables)]
            fn apply<const FMA: bool>(self, $x: f32) -> f32 {
                let $k = self;
                $body
            }
        }
    };
}

/// Declares a [`Map2`] kernel of `(grad, saved)`, like [`kernel1`].
macro_rules! kernel2 {
    ($name:ident { $($field:ident : $ty:ty),* } |$k:ident, $g:ident, $x:ident| $body:expr) => {
        #[derive(Clone, Copy)]
        struct $name { $($field: $ty),* }
        impl Map2 for $name {
            #[inline(always)]
            #[allow(unused_variables)]
            fn apply<const FMA: bool>(self, $g: f32, $x: f32) -> f32 {
                let $k = self;
                $body
            }
        }
    };
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;
const INV_SQRT_2PI: f32 = 0.398_942_3;

kernel1!(Log {} | k, x | vmath::log::<FMA>(x));
kernel1!(Tanh {} | k, x | vmath::tanh::<FMA>(x));
kernel1!(Sigmoid {} | k, x | vmath::sigmoid::<FMA>(x));
kernel1!(
    Silu {} | k,
    x | {
        let s = vmath::sigmoid::<FMA>(x);
        // s = 0 only at x = -inf: the limit is 0, not -inf·0.
        if s == 0.0 {
            0.0
        } else {
            x * s
        }
    }
);
kernel1!(
    GeluErf {} | k,
    x | {
        let c = vmath::normal_cdf::<FMA>(x);
        // c = 0 only where x = -inf (or deep in the tail): the limit is 0, not -inf·0.
        if c == 0.0 {
            0.0
        } else {
            x * c
        }
    }
);
kernel1!(
    GeluTanh {} | k,
    x | {
        // 0.5x(1 + tanh(u)) = x·sigmoid(2u): no cancellation for negative x.
        let u = SQRT_2_OVER_PI * vmath::fma::<FMA>(GELU_C * x, x * x, x);
        let s = vmath::sigmoid::<FMA>(u + u);
        if s == 0.0 {
            0.0
        } else {
            x * s
        }
    }
);
kernel1!(
    Softplus { beta: f32, threshold: f32 } | k,
    x | {
        let z = k.beta * x;
        // log(1 + e^z) = max(z, 0) + log(1 + e^-|z|)
        let sp = (if z > 0.0 { z } else { 0.0 } + vmath::log1p_pos::<FMA>(vmath::exp::<FMA>(-z.abs()))) / k.beta;
        if z > k.threshold {
            x
        } else {
            sp
        }
    }
);

kernel2!(SqrtGrad {} | k, g, y | g / (y + y));
kernel2!(
    AbsGrad {} | k,
    g,
    x | if x > 0.0 {
        g
    } else if x < 0.0 {
        -g
    } else {
        0.0
    }
);
kernel2!(SinGrad {} | k, g, x | g * x.cos());
kernel2!(CosGrad {} | k, g, x | -g * x.sin());
kernel2!(TanhGrad {} | k, g, y | g * (1.0 - y * y));
kernel2!(SigmoidGrad {} | k, g, y | g * (y * (1.0 - y)));
kernel2!(ReluGrad {} | k, g, y | if y > 0.0 { g } else { 0.0 });
kernel2!(
    SiluGrad {} | k,
    g,
    x | {
        let s = vmath::sigmoid::<FMA>(x);
        g * (s * vmath::fma::<FMA>(x, 1.0 - s, 1.0))
    }
);
kernel2!(LeakyReluGrad { slope: f32 } | k, g, x | if x > 0.0 { g } else { g * k.slope });
kernel2!(
    GeluErfGrad {} | k,
    g,
    x | {
        // Φ(x) + x·φ(x); the second term is 0 at ±inf.
        let pdf = INV_SQRT_2PI * vmath::exp_neg_half_sq::<FMA>(x);
        let xp = x * pdf;
        g * (vmath::normal_cdf::<FMA>(x) + if pdf == 0.0 { 0.0 } else { xp })
    }
);
kernel2!(
    GeluTanhGrad {} | k,
    g,
    x | {
        // y = x·s with s = sigmoid(2u): y' = s + 2x·s(1 − s)·u'
        let x2 = x * x;
        let u = SQRT_2_OVER_PI * vmath::fma::<FMA>(GELU_C * x, x2, x);
        let du = SQRT_2_OVER_PI * vmath::fma::<FMA>(3.0 * GELU_C, x2, 1.0);
        let s = vmath::sigmoid::<FMA>(u + u);
        let d = s * (1.0 - s);
        let t = 2.0 * x * d * du;
        g * (s + if d == 0.0 { 0.0 } else { t })
    }
);
kernel2!(
    SoftplusGrad { beta: f32, threshold: f32 } | k,
    g,
    x | {
        let z = k.beta * x;
        if z > k.threshold {
            g
        } else {
            g * vmath::sigmoid::<FMA>(z)
        }
    }
);
kernel2!(ClampGrad { lo: f32, hi: f32 } | k, g, x | if x >= k.lo && x <= k.hi { g } else { 0.0 });

/// How `gelu` computes the normal CDF (PyTorch's `approximate` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeluApproximate {
    /// The exact form `0.5·x·(1 + erf(x/√2))` (`"none"`).
    #[default]
    None,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (`"tanh"`, GPT-2's `gelu_new`).
    Tanh,
}

impl GeluApproximate {
    /// Parses PyTorch's spelling: `"none"` or `"tanh"`.
    pub fn parse(s: &str) -> Result<GeluApproximate> {
        match s {
            "none" => Ok(GeluApproximate::None),
            "tanh" => Ok(GeluApproximate::Tanh),
            _ => Err(Error::op("gelu", format!("approximate must be \"none\" or \"tanh\", got {s:?}"))),
        }
    }
}

/// The elementwise function behind `pow` with a fixed exponent.
#[derive(Clone, Copy)]
enum PowKind {
    One,
    Square,
    Cube,
    Sqrt,
    Rsqrt,
    Recip,
    RecipSquare,
    General(f32),
}

impl PowKind {
    fn of(e: f32) -> PowKind {
        match e {
            1.0 => PowKind::One,
            2.0 => PowKind::Square,
            3.0 => PowKind::Cube,
            0.5 => PowKind::Sqrt,
            -0.5 => PowKind::Rsqrt,
            -1.0 => PowKind::Recip,
            -2.0 => PowKind::RecipSquare,
            _ => PowKind::General(e),
        }
    }
}

/// `x^e` for any layout; the common exponents run vectorized kernels, the others `powf`
/// (which handles negative bases with integral exponents).
fn pow_array(op: &'static str, x: &Array, e: f32) -> Result<Array> {
    match PowKind::of(e) {
        PowKind::One => map_k(op, x, Fn1(|v| v)),
        PowKind::Square => map_k(op, x, Fn1(|v| v * v)),
        PowKind::Cube => map_k(op, x, Fn1(|v| v * v * v)),
        PowKind::Sqrt => map_k(op, x, Fn1(f32::sqrt)),
        PowKind::Rsqrt => map_k(op, x, Fn1(|v: f32| 1.0 / v.sqrt())),
        PowKind::Recip => map_k(op, x, Fn1(|v| 1.0 / v)),
        PowKind::RecipSquare => map_k(op, x, Fn1(|v| 1.0 / (v * v))),
        PowKind::General(e) => map_k(op, x, Fn1(move |v: f32| v.powf(e))),
    }
}

impl Array {
    /// Applies `f` to every element into a new contiguous f32 array (`op` names errors).
    pub fn map(&self, op: &'static str, f: impl Fn(f32) -> f32 + Sync + Send + Copy) -> Result<Array> {
        map_k(op, self, Fn1(f))
    }

    /// `-self`.
    pub fn neg(&self) -> Result<Array> {
        map_k("neg", self, Fn1(|x: f32| -x))
    }
    /// `e^self`.
    pub fn exp(&self) -> Result<Array> {
        map_k("exp", self, vmath::Exp)
    }
    /// Natural logarithm (`-inf` at 0, NaN below).
    pub fn log(&self) -> Result<Array> {
        map_k("log", self, Log {})
    }
    /// Square root.
    pub fn sqrt(&self) -> Result<Array> {
        map_k("sqrt", self, Fn1(f32::sqrt))
    }
    /// Absolute value.
    pub fn abs(&self) -> Result<Array> {
        map_k("abs", self, Fn1(f32::abs))
    }
    /// Sine.
    pub fn sin(&self) -> Result<Array> {
        map_k("sin", self, Fn1(f32::sin))
    }
    /// Cosine.
    pub fn cos(&self) -> Result<Array> {
        map_k("cos", self, Fn1(f32::cos))
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Array> {
        map_k("tanh", self, Tanh {})
    }
    /// Logistic sigmoid `1 / (1 + e^-x)`.
    pub fn sigmoid(&self) -> Result<Array> {
        map_k("sigmoid", self, Sigmoid {})
    }
    /// `max(x, 0)` (NaN propagates).
    pub fn relu(&self) -> Result<Array> {
        map_k("relu", self, Fn1(|x: f32| if x < 0.0 { 0.0 } else { x }))
    }
    /// `x · sigmoid(x)`.
    pub fn silu(&self) -> Result<Array> {
        map_k("silu", self, Silu {})
    }
    /// `x` where `x > 0`, else `negative_slope · x`.
    pub fn leaky_relu(&self, negative_slope: f32) -> Result<Array> {
        map_k("leaky_relu", self, Fn1(move |x: f32| if x > 0.0 { x } else { x * negative_slope }))
    }
    /// GELU, exact (erf) or with the tanh approximation.
    pub fn gelu(&self, approximate: GeluApproximate) -> Result<Array> {
        match approximate {
            GeluApproximate::None => map_k("gelu", self, GeluErf {}),
            GeluApproximate::Tanh => map_k("gelu", self, GeluTanh {}),
        }
    }
    /// [`Array::gelu`] in place (inference paths that own their buffer): copies first only if
    /// the buffer is shared or not contiguous.
    pub fn gelu_(&mut self, approximate: GeluApproximate) -> Result<()> {
        self.expect_dtype("gelu_", crate::DType::F32)?;
        let x = self.make_mut_f32()?;
        match approximate {
            GeluApproximate::None => par_chunks_mut_zip(x, |_, c| map_in_place(GeluErf {}, c)),
            GeluApproximate::Tanh => par_chunks_mut_zip(x, |_, c| map_in_place(GeluTanh {}, c)),
        }
        Ok(())
    }
    /// `log(1 + e^(beta·x)) / beta`, or `x` where `beta·x > threshold`.
    pub fn softplus(&self, beta: f32, threshold: f32) -> Result<Array> {
        map_k("softplus", self, Softplus { beta, threshold })
    }
    /// Clamps into `[min, max]`; `None` leaves that side open. NaN propagates, and where
    /// `min > max` every element becomes `max`, as in PyTorch. Errors when both are `None`.
    pub fn clamp(&self, min: Option<f32>, max: Option<f32>) -> Result<Array> {
        if min.is_none() && max.is_none() {
            bail!("clamp", "at least one of min and max must be given (tensor of shape {:?})", self.shape());
        }
        let (lo, hi) = (min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY));
        map_k(
            "clamp",
            self,
            Fn1(move |x: f32| {
                let y = if x < lo { lo } else { x };
                if y > hi {
                    hi
                } else {
                    y
                }
            }),
        )
    }
    /// `self ^ exponent` elementwise (negative bases work with integral exponents; other
    /// exponents give NaN there, as in PyTorch).
    pub fn powf(&self, exponent: f32) -> Result<Array> {
        pow_array("pow", self, exponent)
    }

    // ------------------------------------------------------------ backward kernels

    /// Gradient of `sqrt` from its output `self`: `grad / (2·self)`.
    pub fn sqrt_backward(&self, grad: &Array) -> Result<Array> {
        zip_map_k("sqrt_backward", grad, self, SqrtGrad {})
    }
    /// Gradient of `abs` from its input `self`: `grad · sign(self)` (0 at 0).
    pub fn abs_backward(&self, grad: &Array) -> Result<Array> {
        zip_map_k("abs_backward", grad, self, AbsGrad {})
    }
    /// Gradient of `sin` from its input `self`: `grad · cos(self)`.
    pub fn sin_backward(&self, grad: &Array) -> Result<Array> {
        zip_map_k("sin_backward", grad, self, SinGrad {})
    }
    /// Gradient of `cos` from its input `self`: `−grad · sin(self)`.
    pub fn cos_backward(&self, grad: &Array) -> Result<Array> {
        zip_map_k("cos_backward", grad, self, CosGrad {})
    }
    /// Gradient of `tanh` from its output `self`: `grad · (1 − self²)`.
    pub fn tanh_backward(&self, grad: &Array) -> Result<Array> {
        zip_map_k("tanh_backward", grad, self, TanhGrad {})
    }
    /// Gradient of `sigmoid` from its output `self`: `grad · self · (1 − self)`.
    pub fn sigmoid_backward(&self, grad: &Array) -> Result<Array> {
        zip_map_k("sigmoid_backward", grad, self, SigmoidGrad {})
    }
    /// Gradient of `relu` from its output `self`: `grad` where `self > 0`, else 0.
    pub fn relu_backward(&self, grad: &Array) -> Result<Array> {
        zip_map_k("relu_backward", grad, self, ReluGrad {})
    }
    /// Gradient of `silu` from its input `self`: `grad · s · (1 + x(1 − s))`, `s = sigmoid(x)`.
    pub fn silu_backward(&self, grad: &Array) -> Result<Array> {
        zip_map_k("silu_backward", grad, self, SiluGrad {})
    }
    /// Gradient of `leaky_relu` from its input `self`.
    pub fn leaky_relu_backward(&self, grad: &Array, negative_slope: f32) -> Result<Array> {
        zip_map_k("leaky_relu_backward", grad, self, LeakyReluGrad { slope: negative_slope })
    }
    /// Gradient of `gelu` from its input `self`.
    pub fn gelu_backward(&self, grad: &Array, approximate: GeluApproximate) -> Result<Array> {
        match approximate {
            GeluApproximate::None => zip_map_k("gelu_backward", grad, self, GeluErfGrad {}),
            GeluApproximate::Tanh => zip_map_k("gelu_backward", grad, self, GeluTanhGrad {}),
        }
    }
    /// Gradient of `softplus` from its input `self`: `grad · sigmoid(beta·x)`, or `grad`
    /// where `beta·x > threshold`.
    pub fn softplus_backward(&self, grad: &Array, beta: f32, threshold: f32) -> Result<Array> {
        zip_map_k("softplus_backward", grad, self, SoftplusGrad { beta, threshold })
    }
    /// Gradient of `clamp` from its input `self`: `grad` where `min ≤ x ≤ max`, else 0.
    pub fn clamp_backward(&self, grad: &Array, min: Option<f32>, max: Option<f32>) -> Result<Array> {
        let (lo, hi) = (min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY));
        zip_map_k("clamp_backward", grad, self, ClampGrad { lo, hi })
    }
    /// Gradient of `powf(exponent)` from its input `self`: `grad · e · x^(e−1)` (0 for e = 0).
    pub fn powf_backward(&self, grad: &Array, exponent: f32) -> Result<Array> {
        let e = exponent;
        if e == 0.0 {
            return Ok(Array::zeros(grad.shape()));
        }
        if e == 1.0 {
            return Ok(grad.clone());
        }
        if e == 2.0 {
            return zip_map("pow_backward", grad, self, |g, x| g * (x + x));
        }
        let p = pow_array("pow_backward", self, e - 1.0)?;
        zip_map("pow_backward", grad, &p, move |g, p| g * (e * p))
    }
}
