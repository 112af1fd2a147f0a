//! Differentiable ops, a file per family. Each op's forward and backward sit side by side:
//! the forward calls a `kiln-tensor` kernel and hands its backward rule to
//! [`Tensor::from_op`](crate::Tensor::from_op).
//!
//! Every fallible op has a `try_` form returning `Result`, and a plain form that panics with
//! the same message at the caller's line.

pub mod attention;
pub mod binary;
pub mod conv;
pub mod dropout;
pub mod index;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pad;
pub mod pool;
pub mod reduce;
pub mod shape;
pub mod softmax;
pub mod unary;

/// Declares the plain (panicking, `#[track_caller]`) form of `try_` methods on `Tensor`:
/// `plain_forms! { /// doc
///   fn add(other: &Tensor) => try_add; }`
macro_rules! plain_forms {
    ($( $(#[$m:meta])* fn $name:ident ( $($arg:ident : $ty:ty),* ) => $try:ident; )*) => {
        impl $crate::Tensor {
            $(
                $(#[$m])*
                #[track_caller]
                pub fn $name(&self, $($arg: $ty),*) -> $crate::Tensor {
                    match self.$try($($arg),*) {
                        Ok(t) => t,
                        Err(e) => panic!("{e}"),
                    }
                }
            )*
        }
    };
}
pub(crate) use plain_forms;
