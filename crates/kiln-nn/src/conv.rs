//! Convolution layers: [`Conv1d`], [`Conv2d`] and [`ConvTranspose2d`], with PyTorch's
//! parameter names (`weight`, `bias`) and default initialisation (`kaiming_uniform(a = √5)`:
//! weight and bias uniform in `±1/√fan_in`, `fan_in = weight.size(1)·kernel elements`).
//!
//! ```
//! use kiln_nn::{init, Conv2d, Forward, Module};
//! use kiln_autograd::Tensor;
//! let conv = Conv2d::builder(3, 8, [3, 3]).padding([1, 1]).build(&mut init::rng(0))?;
//! assert_eq!(conv.weight.shape(), &[8, 3, 3, 3]);
//! let y = conv.forward(&Tensor::zeros(&[2, 3, 5, 5]))?;
//! assert_eq!(y.shape(), &[2, 8, 5, 5]);
//! # Ok::<(), kiln_autograd::Error>(())
//! ```

use crate::init::{default_bias, default_weight};
use crate::{Forward, Module};
use kiln_autograd::ops::conv::{conv1d, conv2d, conv_transpose2d};
pub use kiln_autograd::ops::conv::{Conv1dOptions, Conv2dOptions, ConvTranspose2dOptions};
use kiln_autograd::{Error, Result, Tensor};
use rand::Rng;

/// Errors unless both channel counts are divisible by `groups` (positive).
fn check_groups(op: &'static str, cin: usize, cout: usize, groups: usize) -> Result<()> {
    if groups == 0 || !cin.is_multiple_of(groups) || !cout.is_multiple_of(groups) {
        return Err(Error::op(
            op,
            format!("in_channels ({cin}) and out_channels ({cout}) must be divisible by groups ({groups})"),
        ));
    }
    Ok(())
}

/// Errors unless `x` has `rank` dims with `channels` channels in dim 1.
fn check_input(op: &'static str, x: &Tensor, rank: usize, channels: usize) -> Result<()> {
    if x.rank() != rank || x.shape()[1] != channels {
        let dims = if rank == 3 { "L" } else { "H, W" };
        return Err(Error::op(op, format!("expected input of shape [N, {channels}, {dims}], got {:?}", x.shape())));
    }
    Ok(())
}

/// A weight of `shape` and an optional bias of `len`, with PyTorch's default initialisation.
fn init_params(shape: &[usize], bias_len: Option<usize>, rng: &mut impl Rng) -> (Tensor, Option<Tensor>) {
    let fan_in: usize = shape[1..].iter().product();
    let weight = default_weight(shape, rng);
    (weight, bias_len.map(|n| default_bias(n, fan_in, rng)))
}

// ------------------------------------------------------------------------------- Conv2d

/// 2-d convolution layer (PyTorch's `nn.Conv2d`): input `[N, in_channels, H, W]` →
/// `[N, out_channels, oH, oW]`.
///
/// Parameters: `weight` `[out_channels, in_channels/groups, kH, kW]` and `bias`
/// `[out_channels]` (unless built without one).
#[derive(Module, Debug)]
pub struct Conv2d {
    /// The filters, `[out_channels, in_channels/groups, kH, kW]`.
    pub weight: Tensor,
    /// The per-output-channel bias, `[out_channels]` (absent when built without one).
    pub bias: Option<Tensor>,
    #[module(skip)]
    in_channels: usize,
    #[module(skip)]
    options: Conv2dOptions,
}

/// Builds a [`Conv2d`]: [`Conv2d::builder`], then options, then [`build`](Conv2dBuilder::build).
#[derive(Clone, Copy, Debug)]
pub struct Conv2dBuilder {
    in_channels: usize,
    out_channels: usize,
    kernel_size: [usize; 2],
    options: Conv2dOptions,
    bias: bool,
}

impl Conv2dBuilder {
    /// Sets the stride (default `[1, 1]`).
    pub fn stride(mut self, stride: [usize; 2]) -> Self {
        self.options.stride = stride;
        self
    }
    /// Sets the zero padding on both sides (default `[0, 0]`).
    pub fn padding(mut self, padding: [usize; 2]) -> Self {
        self.options.padding = padding;
        self
    }
    /// Sets the dilation (default `[1, 1]`).
    pub fn dilation(mut self, dilation: [usize; 2]) -> Self {
        self.options.dilation = dilation;
        self
    }
    /// Sets the number of groups (default 1; `in_channels` for a depthwise convolution).
    pub fn groups(mut self, groups: usize) -> Self {
        self.options.groups = groups;
        self
    }
    /// With or without a bias (default with).
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// The layer, initialised like PyTorch's. Errors unless the channel counts are divisible
    /// by `groups` and the sizes are positive.
    pub fn build(self, rng: &mut impl Rng) -> Result<Conv2d> {
        let (cin, cout, g) = (self.in_channels, self.out_channels, self.options.groups);
        check_groups("Conv2d", cin, cout, g)?;
        let [kh, kw] = self.kernel_size;
        let (weight, bias) = init_params(&[cout, cin / g, kh, kw], self.bias.then_some(cout), rng);
        Conv2d::from_parameters(weight, bias, self.options)
    }
}

impl Conv2d {
    /// A builder for a layer from `in_channels` to `out_channels` with a `kernel_size` window
    /// (stride 1, no padding, dilation 1, one group, a bias until told otherwise).
    pub fn builder(in_channels: usize, out_channels: usize, kernel_size: [usize; 2]) -> Conv2dBuilder {
        Conv2dBuilder { in_channels, out_channels, kernel_size, options: Conv2dOptions::default(), bias: true }
    }

    /// A layer with PyTorch's defaults (stride 1, no padding, a bias).
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: [usize; 2], rng: &mut impl Rng) -> Result<Conv2d> {
        Conv2d::builder(in_channels, out_channels, kernel_size).build(rng)
    }

    /// A layer over the given parameters (`weight` `[Cout, Cin/groups, kH, kW]`, `bias`
    /// `[Cout]`), used as they are.
    pub fn from_parameters(weight: Tensor, bias: Option<Tensor>, options: Conv2dOptions) -> Result<Conv2d> {
        if weight.rank() != 4 || options.groups == 0 || !weight.shape()[0].is_multiple_of(options.groups) {
            return Err(Error::op(
                "Conv2d",
                format!(
                    "weight must be [out_channels, in_channels/groups, kH, kW] with out_channels divisible by groups ({}), got {:?}",
                    options.groups,
                    weight.shape()
                ),
            ));
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                return Err(Error::op(
                    "Conv2d",
                    format!("bias must have shape [{}], got {:?}", weight.shape()[0], b.shape()),
                ));
            }
        }
        let in_channels = weight.shape()[1] * options.groups;
        Ok(Conv2d { weight, bias, in_channels, options })
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }
    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }
    /// Window size `[kH, kW]`.
    pub fn kernel_size(&self) -> [usize; 2] {
        [self.weight.shape()[2], self.weight.shape()[3]]
    }
    /// Stride, padding, dilation and groups.
    pub fn options(&self) -> &Conv2dOptions {
        &self.options
    }
}

impl Forward for Conv2d {
    /// Convolves `x` `[N, in_channels, H, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_input("Conv2d", x, 4, self.in_channels)?;
        conv2d(x, &self.weight, self.bias.as_ref(), &self.options)
    }
}

// ------------------------------------------------------------------------------- Conv1d

/// 1-d convolution layer (PyTorch's `nn.Conv1d`): input `[N, in_channels, L]` →
/// `[N, out_channels, Lout]`.
///
/// Parameters: `weight` `[out_channels, in_channels/groups, K]` and `bias` `[out_channels]`
/// (unless built without one).
#[derive(Module, Debug)]
pub struct Conv1d {
    /// The filters, `[out_channels, in_channels/groups, K]`.
    pub weight: Tensor,
    /// The per-output-channel bias, `[out_channels]` (absent when built without one).
    pub bias: Option<Tensor>,
    #[module(skip)]
    in_channels: usize,
    #[module(skip)]
    options: Conv1dOptions,
}

/// Builds a [`Conv1d`]: [`Conv1d::builder`], then options, then [`build`](Conv1dBuilder::build).
#[derive(Clone, Copy, Debug)]
pub struct Conv1dBuilder {
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    options: Conv1dOptions,
    bias: bool,
}

impl Conv1dBuilder {
    /// Sets the stride (default 1).
    pub fn stride(mut self, stride: usize) -> Self {
        self.options.stride = stride;
        self
    }
    /// Sets the zero padding on both sides (default 0).
    pub fn padding(mut self, padding: usize) -> Self {
        self.options.padding = padding;
        self
    }
    /// Sets the dilation (default 1).
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.options.dilation = dilation;
        self
    }
    /// Sets the number of groups (default 1).
    pub fn groups(mut self, groups: usize) -> Self {
        self.options.groups = groups;
        self
    }
    /// With or without a bias (default with).
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// The layer, initialised like PyTorch's. Errors unless the channel counts are divisible
    /// by `groups`.
    pub fn build(self, rng: &mut impl Rng) -> Result<Conv1d> {
        let (cin, cout, g) = (self.in_channels, self.out_channels, self.options.groups);
        check_groups("Conv1d", cin, cout, g)?;
        let (weight, bias) = init_params(&[cout, cin / g, self.kernel_size], self.bias.then_some(cout), rng);
        Ok(Conv1d { weight, bias, in_channels: cin, options: self.options })
    }
}

impl Conv1d {
    /// A builder for a layer from `in_channels` to `out_channels` with a `kernel_size` window
    /// (stride 1, no padding, dilation 1, one group, a bias until told otherwise).
    pub fn builder(in_channels: usize, out_channels: usize, kernel_size: usize) -> Conv1dBuilder {
        Conv1dBuilder { in_channels, out_channels, kernel_size, options: Conv1dOptions::default(), bias: true }
    }

    /// A layer with PyTorch's defaults (stride 1, no padding, a bias).
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize, rng: &mut impl Rng) -> Result<Conv1d> {
        Conv1d::builder(in_channels, out_channels, kernel_size).build(rng)
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }
    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[0]
    }
    /// Stride, padding, dilation and groups.
    pub fn options(&self) -> &Conv1dOptions {
        &self.options
    }
}

impl Forward for Conv1d {
    /// Convolves `x` `[N, in_channels, L]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_input("Conv1d", x, 3, self.in_channels)?;
        conv1d(x, &self.weight, self.bias.as_ref(), &self.options)
    }
}

// ------------------------------------------------------------------------------- ConvTranspose2d

/// Transposed 2-d convolution layer (PyTorch's `nn.ConvTranspose2d`, the adjoint of a
/// conv2d): input `[N, in_channels, H, W]` → `[N, out_channels, Hout, Wout]`,
/// `Hout = (H − 1)·stride − 2·padding + dilation·(kH − 1) + output_padding + 1`.
///
/// Parameters: `weight` `[in_channels, out_channels/groups, kH, kW]` and `bias`
/// `[out_channels]` (unless built without one). Initialised like PyTorch's, whose fan-in for
/// a transposed conv is `weight.size(1)·kH·kW`.
#[derive(Module, Debug)]
pub struct ConvTranspose2d {
    /// The filters, `[in_channels, out_channels/groups, kH, kW]`.
    pub weight: Tensor,
    /// The per-output-channel bias, `[out_channels]` (absent when built without one).
    pub bias: Option<Tensor>,
    #[module(skip)]
    options: ConvTranspose2dOptions,
}

/// Builds a [`ConvTranspose2d`]: [`ConvTranspose2d::builder`], then options, then
/// [`build`](ConvTranspose2dBuilder::build).
#[derive(Clone, Copy, Debug)]
pub struct ConvTranspose2dBuilder {
    in_channels: usize,
    out_channels: usize,
    kernel_size: [usize; 2],
    options: ConvTranspose2dOptions,
    bias: bool,
}

impl ConvTranspose2dBuilder {
    /// Sets the stride (default `[1, 1]`).
    pub fn stride(mut self, stride: [usize; 2]) -> Self {
        self.options.stride = stride;
        self
    }
    /// Sets the padding (default `[0, 0]`).
    pub fn padding(mut self, padding: [usize; 2]) -> Self {
        self.options.padding = padding;
        self
    }
    /// Sets the output padding (default `[0, 0]`).
    pub fn output_padding(mut self, output_padding: [usize; 2]) -> Self {
        self.options.output_padding = output_padding;
        self
    }
    /// Sets the dilation (default `[1, 1]`).
    pub fn dilation(mut self, dilation: [usize; 2]) -> Self {
        self.options.dilation = dilation;
        self
    }
    /// Sets the number of groups (default 1).
    pub fn groups(mut self, groups: usize) -> Self {
        self.options.groups = groups;
        self
    }
    /// With or without a bias (default with).
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// The layer, initialised like PyTorch's. Errors unless the channel counts are divisible
    /// by `groups`.
    pub fn build(self, rng: &mut impl Rng) -> Result<ConvTranspose2d> {
        let (cin, cout, g) = (self.in_channels, self.out_channels, self.options.groups);
        check_groups("ConvTranspose2d", cin, cout, g)?;
        let [kh, kw] = self.kernel_size;
        let (weight, bias) = init_params(&[cin, cout / g, kh, kw], self.bias.then_some(cout), rng);
        Ok(ConvTranspose2d { weight, bias, options: self.options })
    }
}

impl ConvTranspose2d {
    /// A builder for a layer from `in_channels` to `out_channels` with a `kernel_size` window
    /// (stride 1, no padding or output padding, dilation 1, one group, a bias until told
    /// otherwise).
    pub fn builder(in_channels: usize, out_channels: usize, kernel_size: [usize; 2]) -> ConvTranspose2dBuilder {
        ConvTranspose2dBuilder {
            in_channels,
            out_channels,
            kernel_size,
            options: ConvTranspose2dOptions::default(),
            bias: true,
        }
    }

    /// A layer with PyTorch's defaults (stride 1, no padding, a bias).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
        rng: &mut impl Rng,
    ) -> Result<ConvTranspose2d> {
        ConvTranspose2d::builder(in_channels, out_channels, kernel_size).build(rng)
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.shape()[0]
    }
    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.shape()[1] * self.options.groups
    }
    /// Stride, padding, output padding, dilation and groups.
    pub fn options(&self) -> &ConvTranspose2dOptions {
        &self.options
    }
}

impl Forward for ConvTranspose2d {
    /// Applies the transposed convolution to `x` `[N, in_channels, H, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_input("ConvTranspose2d", x, 4, self.in_channels())?;
        conv_transpose2d(x, &self.weight, self.bias.as_ref(), &self.options)
    }
}
