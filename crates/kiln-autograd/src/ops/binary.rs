//! Elementwise binary ops with broadcasting, their scalar forms, and the `+ - * /` operators.

use super::plain_forms;
use crate::Tensor;
use kiln_tensor::{Array, Result};

/// Reduces a broadcast gradient back to an operand's shape.
fn unbroadcast(g: Array, shape: &[usize]) -> Result<Array> {
    g.sum_to(shape)
}

impl Tensor {
    /// `self + other` with broadcasting.
    pub fn try_add(&self, other: &Tensor) -> Result<Tensor> {
        let (a, b) = (self.data(), other.data());
        let out = a.add(&b)?;
        let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
        Ok(Tensor::from_op(out, "add", &[self, other], move |g, needs| {
            Ok(vec![
                needs[0].then(|| unbroadcast(g.clone(), &sa)).transpose()?,
                needs[1].then(|| unbroadcast(g.clone(), &sb)).transpose()?,
            ])
        }))
    }

    /// `self - other` with broadcasting.
    pub fn try_sub(&self, other: &Tensor) -> Result<Tensor> {
        let (a, b) = (self.data(), other.data());
        let out = a.sub(&b)?;
        let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
        Ok(Tensor::from_op(out, "sub", &[self, other], move |g, needs| {
            Ok(vec![
                needs[0].then(|| unbroadcast(g.clone(), &sa)).transpose()?,
                needs[1].then(|| unbroadcast(g.neg()?, &sb)).transpose()?,
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
        let (a, b) = (self.data(), other.data());
        let out = a.div(&b)?;
        let saved_out = out.clone();
        Ok(Tensor::from_op(out, "div", &[self, other], move |g, needs| {
            let ga = needs[0].then(|| unbroadcast(g.div(&b)?, a.shape())).transpose()?;
            // d(a/b)/db = -(a/b)/b
            let gb = needs[1]
                .then(|| unbroadcast(kiln_tensor::ops::binary::zip_map("div", &g.mul(&saved_out)?, &b, |x, y| -x / y)?, b.shape()))
                .transpose()?;
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
            use kiln_tensor::ops::binary::zip_map;
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
            let gb = needs[1].then(|| unbroadcast(zip_map(name, g, &wa, |g, w| g * (1.0 - w))?, b.shape())).transpose()?;
            Ok(vec![ga, gb])
        }))
    }

    /// `self + s`.
    pub fn add_scalar(&self, s: f32) -> Tensor {
        let out = self.data().add_scalar(s).expect("add_scalar on f32");
        Tensor::from_op(out, "add", &[self], |g, _| Ok(vec![Some(g.clone())]))
    }

    /// `self * s`.
    pub fn mul_scalar(&self, s: f32) -> Tensor {
        let out = self.data().mul_scalar(s).expect("mul_scalar on f32");
        Tensor::from_op(out, "mul", &[self], move |g, _| Ok(vec![Some(g.mul_scalar(s)?)]))
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
operator!(Sub, sub, sub, |t, s| t.add_scalar(-s));
operator!(Mul, mul, mul, |t, s| t.mul_scalar(s));
operator!(Div, div, div, |t, s| t.mul_scalar(1.0 / s));

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        self.mul_scalar(-1.0)
    }
}
impl std::ops::Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        self.mul_scalar(-1.0)
    }
}
