//! Elementwise binary ops with broadcasting, their scalar forms, and the `+ - * /` operators
//! (tensor with tensor, tensor with `f32` on either side).

use super::plain_forms;
use crate::Tensor;
use kiln_tensor::layout::Dims;
use kiln_tensor::ops::binary::zip_map;
use kiln_tensor::{Array, Result};

/// Reduces a broadcast gradient back to an operand's shape (no copy when it already has it).
fn unbroadcast(g: Array, shape: &[usize]) -> Result<Array> {
    g.sum_to(shape)
}

/// The operand's shape when it differs from the output's (so its gradient must be summed
/// back), `None` in the common same-shape case, which then costs no copy of the shape.
fn bcast_shape(operand: &Tensor, out: &Array) -> Option<Dims> {
    (operand.shape() != out.shape()).then(|| Dims::from_slice(operand.shape()))
}

/// The gradient of an operand from the output gradient `g` (already transformed by `f`).
fn reduce_to(g: Array, shape: &Option<Dims>) -> Result<Array> {
    match shape {
        None => Ok(g),
        Some(s) => unbroadcast(g, s),
    }
}

impl Tensor {
    /// `self + other` with broadcasting.
    pub fn try_add(&self, other: &Tensor) -> Result<Tensor> {
        let out = self.data().add(&other.data())?;
        let (sa, sb) = (bcast_shape(self, &out), bcast_shape(other, &out));
        Ok(Tensor::from_op(out, "add", &[self, other], move |g, needs| {
            Ok(vec![
                needs[0].then(|| reduce_to(g.clone(), &sa)).transpose()?,
                needs[1].then(|| reduce_to(g.clone(), &sb)).transpose()?,
            ])
        }))
    }

    /// `self - other` with broadcasting.
    pub fn try_sub(&self, other: &Tensor) -> Result<Tensor> {
        let out = self.data().sub(&other.data())?;
        let (sa, sb) = (bcast_shape(self, &out), bcast_shape(other, &out));
        Ok(Tensor::from_op(out, "sub", &[self, other], move |g, needs| {
            Ok(vec![
                needs[0].then(|| reduce_to(g.clone(), &sa)).transpose()?,
                needs[1].then(|| reduce_to(g.neg()?, &sb)).transpose()?,
            ])
        }))
    }

    /// `self * other` with broadcasting.
    pub fn try_mul(&self, other: &Tensor) -> Result<Tensor> {
        let (a, b) = (self.data(), other.data());
        let out = a.mul(&b)?;
        Ok(Tensor::from_op(out, "mul", &[self, other], move |g, needs| {
            Ok(vec![
                needs[0].then(|| unbroadcast(g.mul(&b)?, a.shape())).transpose()?,
                needs[1].then(|| unbroadcast(g.mul(&a)?, b.shape())).transpose()?,
            ])
        }))
    }

    /// `self / other` with broadcasting.
    pub fn try_div(&self, other: &Tensor) -> Result<Tensor> {
        let b = other.data();
        let out = self.data().div(&b)?;
        let saved_out = out.clone();
        let sa = bcast_shape(self, &out);
        Ok(Tensor::from_op(out, "div", &[self, other], move |g, needs| {
            // d(a/b)/da = 1/b and d(a/b)/db = -(a/b)/b: both from q = g/b.
            let q = g.div(&b)?;
            let gb = needs[1]
                .then(|| unbroadcast(zip_map("div_backward", &q, &saved_out, |q, o| -q * o)?, b.shape()))
                .transpose()?;
            let ga = needs[0].then(|| reduce_to(q, &sa)).transpose()?;
            Ok(vec![ga, gb])
        }))
    }

    /// Elementwise maximum with broadcasting; the gradient goes to the larger operand
    /// (split equally on ties, as PyTorch does).
    pub fn try_maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.extremum(other, "maximum", true)
    }

    /// Elementwise minimum with broadcasting; the gradient goes to the smaller operand.
    pub fn try_minimum(&self, other: &Tensor) -> Result<Tensor> {
        self.extremum(other, "minimum", false)
    }

    fn extremum(&self, other: &Tensor, name: &'static str, max: bool) -> Result<Tensor> {
        let (a, b) = (self.data(), other.data());
        let out = if max { a.maximum(&b)? } else { a.minimum(&b)? };
        Ok(Tensor::from_op(out, name, &[self, other], move |g, needs| {
            // Share of the gradient going to `a`: 1 where a wins, 0.5 on ties, 0 where b wins.
            let wa = zip_map(name, &a, &b, move |x, y| {
                if x == y {
                    0.5
                } else if (x > y) == max {
                    1.0
                } else {
                    0.0
                }
            })?;
            let ga = needs[0].then(|| unbroadcast(g.mul(&wa)?, a.shape())).transpose()?;
            let gb =
                needs[1].then(|| unbroadcast(zip_map(name, g, &wa, |g, w| g * (1.0 - w))?, b.shape())).transpose()?;
            Ok(vec![ga, gb])
        }))
    }

    /// `self + s`.
    pub fn add_scalar(&self, s: f32) -> Tensor {
        let out = self.data().add_scalar(s).expect("add_scalar on f32");
        Tensor::from_op(out, "add", &[self], |g, _| Ok(vec![Some(g.clone())]))
    }

    /// `self - s`.
    pub fn sub_scalar(&self, s: f32) -> Tensor {
        let out = self.data().sub_scalar(s).expect("sub_scalar on f32");
        Tensor::from_op(out, "sub", &[self], |g, _| Ok(vec![Some(g.clone())]))
    }

    /// `self * s`.
    pub fn mul_scalar(&self, s: f32) -> Tensor {
        let out = self.data().mul_scalar(s).expect("mul_scalar on f32");
        Tensor::from_op(out, "mul", &[self], move |g, _| Ok(vec![Some(g.mul_scalar(s)?)]))
    }

    /// `self / s` (a true division).
    pub fn div_scalar(&self, s: f32) -> Tensor {
        let out = self.data().div_scalar(s).expect("div_scalar on f32");
        Tensor::from_op(out, "div", &[self], move |g, _| Ok(vec![Some(g.div_scalar(s)?)]))
    }

    /// `s - self` (PyTorch's `rsub`).
    pub fn rsub_scalar(&self, s: f32) -> Tensor {
        let out = self.data().map("rsub", move |x| s - x).expect("rsub_scalar on f32");
        Tensor::from_op(out, "rsub", &[self], |g, _| Ok(vec![Some(g.neg()?)]))
    }

    /// `s / self`.
    pub fn rdiv_scalar(&self, s: f32) -> Tensor {
        let x = self.data();
        let out = x.map("div", move |v| s / v).expect("rdiv_scalar on f32");
        let y = out.clone();
        // d(s/x)/dx = -s/x² = -y/x
        Tensor::from_op(out, "div", &[self], move |g, _| {
            Ok(vec![Some(zip_map("div_backward", &g.mul(&y)?, &x, |gy, x| -gy / x)?)])
        })
    }
}

plain_forms! {
    /// `self + other` with broadcasting. Panics on shapes that do not broadcast.
    fn add(other: &Tensor) => try_add;
    /// `self - other` with broadcasting.
    fn sub(other: &Tensor) => try_sub;
    /// `self * other` with broadcasting.
    fn mul(other: &Tensor) => try_mul;
    /// `self / other` with broadcasting.
    fn div(other: &Tensor) => try_div;
    /// Elementwise maximum with broadcasting.
    fn maximum(other: &Tensor) => try_maximum;
    /// Elementwise minimum with broadcasting.
    fn minimum(other: &Tensor) => try_minimum;
}

macro_rules! operator {
    ($trait:ident, $method:ident, $plain:ident, $scalar:expr) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.$plain(rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                (&self).$plain(&rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                (&self).$plain(rhs)
            }
        }
        impl std::ops::$trait<f32> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f32) -> Tensor {
                let f: fn(&Tensor, f32) -> Tensor = $scalar;
                f(self, rhs)
            }
        }
        impl std::ops::$trait<f32> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f32) -> Tensor {
                let f: fn(&Tensor, f32) -> Tensor = $scalar;
                f(&self, rhs)
            }
        }
    };
}
operator!(Add, add, add, |t, s| t.add_scalar(s));
operator!(Sub, sub, sub, |t, s| t.sub_scalar(s));
operator!(Mul, mul, mul, |t, s| t.mul_scalar(s));
operator!(Div, div, div, |t, s| t.div_scalar(s));

/// `f32 (op) tensor`: the scalar on the left.
macro_rules! scalar_lhs {
    ($trait:ident, $method:ident, $f:expr) => {
        impl std::ops::$trait<&Tensor> for f32 {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                let f: fn(&Tensor, f32) -> Tensor = $f;
                f(rhs, self)
            }
        }
        impl std::ops::$trait<Tensor> for f32 {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                let f: fn(&Tensor, f32) -> Tensor = $f;
                f(&rhs, self)
            }
        }
    };
}
scalar_lhs!(Add, add, |t, s| t.add_scalar(s));
scalar_lhs!(Sub, sub, |t, s| t.rsub_scalar(s));
scalar_lhs!(Mul, mul, |t, s| t.mul_scalar(s));
scalar_lhs!(Div, div, |t, s| t.rdiv_scalar(s));

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}
impl std::ops::Neg for Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}
