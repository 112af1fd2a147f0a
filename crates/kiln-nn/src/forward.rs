//! [`Forward`]: layers that map one tensor to one tensor.

use crate::Module;
use kiln_autograd::{Result, Tensor};

/// A layer with one input and one output (`Linear`, activations, `Dropout`, `Sequential`).
pub trait Forward {
    /// Applies the layer to `x`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
}

/// A [`Module`] that is also a [`Forward`] layer, as [`Sequential`](crate::Sequential) holds
/// them (`Box<dyn ForwardModule>`). Implemented for every such type that is `Send + Sync`.
pub trait ForwardModule: Module + Forward + Send + Sync {}

impl<T: Module + Forward + Send + Sync + ?Sized> ForwardModule for T {}

impl<T: Forward + ?Sized> Forward for Box<T> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (**self).forward(x)
    }
}

impl<T: Forward + ?Sized> Forward for &T {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        (**self).forward(x)
    }
}
