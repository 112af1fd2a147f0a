//! Pooling layers (no parameters): [`MaxPool2d`], [`AvgPool2d`] and [`AdaptiveAvgPool2d`],
//! over `[N, C, H, W]` or `[C, H, W]` inputs.
//!
//! ```
//! use kiln_nn::{Forward, MaxPool2d};
//! use kiln_autograd::Tensor;
//! let y = MaxPool2d::new([2, 2]).forward(&Tensor::zeros(&[1, 3, 8, 6]))?;
//! assert_eq!(y.shape(), &[1, 3, 4, 3]);
//! # Ok::<(), kiln_autograd::Error>(())
//! ```

use crate::{Forward, Module};
pub use kiln_autograd::ops::pool::Pool2dOptions;
use kiln_autograd::ops::pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};
use kiln_autograd::{Result, Tensor};

/// 2-d max pooling (PyTorch's `nn.MaxPool2d`, dilation 1, floor mode): the maximum of each
/// window, with implicit −inf padding.
#[derive(Module, Debug, Clone)]
pub struct MaxPool2d {
    #[module(skip)]
    kernel_size: [usize; 2],
    #[module(skip)]
    stride: [usize; 2],
    #[module(skip)]
    padding: [usize; 2],
}

impl MaxPool2d {
    /// A `kernel_size` window with stride = kernel size and no padding (PyTorch's defaults).
    pub fn new(kernel_size: [usize; 2]) -> MaxPool2d {
        MaxPool2d { kernel_size, stride: kernel_size, padding: [0, 0] }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    /// Sets the padding (at most half the kernel size).
    pub fn padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }
    /// Kernel size, stride and padding.
    pub fn options(&self) -> Pool2dOptions {
        Pool2dOptions { kernel_size: self.kernel_size, stride: self.stride, padding: self.padding }
    }
}

impl Forward for MaxPool2d {
    /// Pools `x` `[N, C, H, W]` or `[C, H, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        max_pool2d(x, &self.options())
    }
}

/// 2-d average pooling (PyTorch's `nn.AvgPool2d`, floor mode, zero padding): each window's
/// sum over `kH·kW` (with `count_include_pad`, the default) or over its elements inside the
/// input.
#[derive(Module, Debug, Clone)]
pub struct AvgPool2d {
    #[module(skip)]
    kernel_size: [usize; 2],
    #[module(skip)]
    stride: [usize; 2],
    #[module(skip)]
    padding: [usize; 2],
    #[module(skip)]
    count_include_pad: bool,
}

impl AvgPool2d {
    /// A `kernel_size` window with stride = kernel size, no padding, `count_include_pad`.
    pub fn new(kernel_size: [usize; 2]) -> AvgPool2d {
        AvgPool2d { kernel_size, stride: kernel_size, padding: [0, 0], count_include_pad: true }
    }
    /// Sets the stride.
    pub fn stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    /// Sets the padding (at most half the kernel size).
    pub fn padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }
    /// Whether the padding counts in the divisor.
    pub fn count_include_pad(mut self, count_include_pad: bool) -> Self {
        self.count_include_pad = count_include_pad;
        self
    }
    /// Kernel size, stride and padding.
    pub fn options(&self) -> Pool2dOptions {
        Pool2dOptions { kernel_size: self.kernel_size, stride: self.stride, padding: self.padding }
    }
}

impl Forward for AvgPool2d {
    /// Pools `x` `[N, C, H, W]` or `[C, H, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        avg_pool2d(x, &self.options(), self.count_include_pad)
    }
}

/// Adaptive 2-d average pooling (PyTorch's `nn.AdaptiveAvgPool2d`) to a fixed `output_size`:
/// output cell `i` averages rows `⌊i·H/oh⌋ … ⌈(i+1)·H/oh⌉ − 1` (likewise columns).
#[derive(Module, Debug, Clone)]
pub struct AdaptiveAvgPool2d {
    #[module(skip)]
    output_size: [usize; 2],
}

impl AdaptiveAvgPool2d {
    /// Pooling to `output_size` `[oh, ow]` (`[1, 1]`: global average pooling).
    pub fn new(output_size: [usize; 2]) -> AdaptiveAvgPool2d {
        AdaptiveAvgPool2d { output_size }
    }
    /// The output size `[oh, ow]`.
    pub fn output_size(&self) -> [usize; 2] {
        self.output_size
    }
}

impl Forward for AdaptiveAvgPool2d {
    /// Pools `x` `[N, C, H, W]` or `[C, H, W]` to `[.., oh, ow]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        adaptive_avg_pool2d(x, self.output_size)
    }
}
