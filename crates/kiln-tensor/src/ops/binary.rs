//! Elementwise binary ops with broadcasting: add, sub, mul, div, maximum, minimum, and the
//! same with a scalar operand.

use crate::layout::broadcast_shapes;
use crate::parallel::{par_chunks_mut_zip, PAR_ELEMS};
use crate::strided::for_each_row_n;
use crate::{Array, DType, Result};

/// Applies `f` elementwise over `a` and `b` broadcast together, into a new contiguous f32 array.
pub fn zip_map(op: &'static str, a: &Array, b: &Array, f: impl Fn(f32, f32) -> f32 + Sync + Send + Copy) -> Result<Array> {
    a.expect_dtype(op, DType::F32)?;
    b.expect_dtype(op, DType::F32)?;
    // Fast path: the same shape, both contiguous.
    if a.shape() == b.shape() {
        if let (Some(x), Some(y)) = (a.as_slice::<f32>(), b.as_slice::<f32>()) {
            let mut out = Vec::<f32>::with_capacity(x.len());
            // SAFETY: every element is written below before being read.
            unsafe { out.set_len(x.len()) };
            par_chunks_mut_zip(&mut out, |start, chunk| {
                let n = chunk.len();
                let (x, y) = (&x[start..start + n], &y[start..start + n]);
                for ((o, &p), &q) in chunk.iter_mut().zip(x).zip(y) {
                    *o = f(p, q);
                }
            });
            return Ok(Array::from_f32_unchecked(out, a.shape()));
        }
    }
    // Fast path: one operand is a single element.
    if b.numel() == 1 && a.numel() >= 1 {
        let s = b.item()?;
        let shape = broadcast_shapes(op, a.shape(), b.shape())?;
        if let Some(x) = a.as_slice::<f32>() {
            if shape.as_slice() == a.shape() {
                return Ok(Array::from_f32_unchecked(map_slice(x, |p| f(p, s)), &shape));
            }
        }
    }
    if a.numel() == 1 && b.numel() >= 1 {
        let s = a.item()?;
        let shape = broadcast_shapes(op, a.shape(), b.shape())?;
        if let Some(y) = b.as_slice::<f32>() {
            if shape.as_slice() == b.shape() {
                return Ok(Array::from_f32_unchecked(map_slice(y, |q| f(s, q)), &shape));
            }
        }
    }
    // General path: walk rows of the broadcast output.
    let (a, b) = Array::broadcast_pair(op, a, b)?;
    let shape = a.shape().to_vec();
    let (xa, xb) = (a.buffer::<f32>()?, b.buffer::<f32>()?);
    let n = a.numel();
    let mut out = Vec::with_capacity(n);
    let rank = shape.len();
    let (len, sa, sb) = if rank == 0 { (1, 0, 0) } else { (shape[rank - 1], a.layout().strides()[rank - 1], b.layout().strides()[rank - 1]) };
    for_each_row_n(&shape, [a.layout(), b.layout()], |[oa, ob]| match (sa, sb) {
        (1, 1) => out.extend(xa[oa..oa + len].iter().zip(&xb[ob..ob + len]).map(|(&p, &q)| f(p, q))),
        (1, 0) => {
            let q = xb[ob];
            out.extend(xa[oa..oa + len].iter().map(|&p| f(p, q)))
        }
        (0, 1) => {
            let p = xa[oa];
            out.extend(xb[ob..ob + len].iter().map(|&q| f(p, q)))
        }
        _ => out.extend((0..len).map(|i| f(xa[oa + i * sa], xb[ob + i * sb]))),
    });
    Ok(Array::from_f32_unchecked(out, &shape))
}

/// Applies `f` to each element of a contiguous slice, in parallel for large inputs.
pub fn map_slice(x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send + Copy) -> Vec<f32> {
    let mut out = Vec::<f32>::with_capacity(x.len());
    // SAFETY: every element is written below before being read.
    unsafe { out.set_len(x.len()) };
    if x.len() < PAR_ELEMS {
        for (o, &p) in out.iter_mut().zip(x) {
            *o = f(p);
        }
    } else {
        par_chunks_mut_zip(&mut out, |start, chunk| {
            let n = chunk.len();
            for (o, &p) in chunk.iter_mut().zip(&x[start..start + n]) {
                *o = f(p);
            }
        });
    }
    out
}

impl Array {
    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Array) -> Result<Array> {
        zip_map("add", self, other, |a, b| a + b)
    }
    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Array) -> Result<Array> {
        zip_map("sub", self, other, |a, b| a - b)
    }
    /// `self * other`, broadcasting.
    pub fn mul(&self, other: &Array) -> Result<Array> {
        zip_map("mul", self, other, |a, b| a * b)
    }
    /// `self / other`, broadcasting.
    pub fn div(&self, other: &Array) -> Result<Array> {
        zip_map("div", self, other, |a, b| a / b)
    }
    /// Elementwise maximum (NaN propagates), broadcasting.
    pub fn maximum(&self, other: &Array) -> Result<Array> {
        zip_map("maximum", self, other, |a, b| if a.is_nan() || a > b { a } else { b })
    }
    /// Elementwise minimum (NaN propagates), broadcasting.
    pub fn minimum(&self, other: &Array) -> Result<Array> {
        zip_map("minimum", self, other, |a, b| if a.is_nan() || a < b { a } else { b })
    }
    /// `self + s`.
    pub fn add_scalar(&self, s: f32) -> Result<Array> {
        self.map("add", move |a| a + s)
    }
    /// `self * s`.
    pub fn mul_scalar(&self, s: f32) -> Result<Array> {
        self.map("mul", move |a| a * s)
    }

    /// `self += other` in place (other broadcast to self's shape); copies first only if the
    /// buffer is shared. Used to accumulate gradients without allocating.
    pub fn add_assign(&mut self, other: &Array) -> Result<()> {
        other.expect_dtype("add_", DType::F32)?;
        let o = other.broadcast_to(self.shape()).map_err(|_| {
            crate::Error::op("add_", format!("cannot add shape {:?} into shape {:?} in place", other.shape(), self.shape()))
        })?;
        let o = o.f32_cow()?;
        let s = self.make_mut_f32()?;
        for (x, &y) in s.iter_mut().zip(o.iter()) {
            *x += y;
        }
        Ok(())
    }
}
