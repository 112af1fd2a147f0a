//! Every CPU kernel, a file per op family. Each family adds methods to [`Array`](crate::Array).

pub mod attention;
pub mod binary;
pub mod conv;
pub mod gemm;
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
pub mod vmath;
