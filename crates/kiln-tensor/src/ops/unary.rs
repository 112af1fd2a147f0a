//! Elementwise unary ops.

use super::binary::map_slice;
use crate::{Array, DType, Result};

impl Array {
    /// Applies `f` to every element into a new contiguous f32 array.
    pub fn map(&self, op: &'static str, f: impl Fn(f32) -> f32 + Sync + Send + Copy) -> Result<Array> {
        self.expect_dtype(op, DType::F32)?;
        let x = self.f32_cow()?;
        Ok(Array::from_f32_unchecked(map_slice(&x, f), self.shape()))
    }

    /// `-self`.
    pub fn neg(&self) -> Result<Array> {
        self.map("neg", |x| -x)
    }
    /// `e^self`.
    pub fn exp(&self) -> Result<Array> {
        self.map("exp", f32::exp)
    }
}
