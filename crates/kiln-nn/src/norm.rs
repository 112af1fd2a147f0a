//! Normalization layers: [`LayerNorm`], [`RMSNorm`], [`GroupNorm`], [`BatchNorm1d`] and
//! [`BatchNorm2d`], with PyTorch's parameter and buffer names and default initialisation
//! (weights ones, biases zeros).

use crate::{Forward, Module};
use kiln_autograd::ops::norm::{batch_norm, group_norm, layer_norm, rms_norm};
use kiln_autograd::{Array, Error, Result, Tensor};

/// A trainable tensor of `shape` filled with `v`.
fn param(shape: &[usize], v: f32) -> Tensor {
    Tensor::full(shape, v).requires_grad_(true)
}

/// Layer normalization over the trailing `normalized_shape` dims (PyTorch's `nn.LayerNorm`):
/// `(x − mean)/√(var + eps)·weight + bias`, biased variance.
///
/// Parameters (with `elementwise_affine`): `weight` (ones) and `bias` (zeros, unless built
/// without one), both of shape `normalized_shape`.
///
/// ```
/// use kiln_nn::{Forward, LayerNorm, Module};
/// use kiln_autograd::Tensor;
/// let ln = LayerNorm::new(&[4]);
/// assert_eq!(ln.named_parameters().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), ["weight", "bias"]);
/// let y = ln.forward(&Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 4])?)?;
/// assert!(y.to_vec_f32()?.iter().sum::<f32>().abs() < 1e-6);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
#[derive(Module, Debug, Clone)]
pub struct LayerNorm {
    /// The scale, `normalized_shape` (absent without `elementwise_affine`).
    pub weight: Option<Tensor>,
    /// The shift, `normalized_shape` (absent without `elementwise_affine` or `bias`).
    pub bias: Option<Tensor>,
    #[module(skip)]
    normalized_shape: Vec<usize>,
    #[module(skip)]
    eps: f64,
}

impl LayerNorm {
    /// A layer norm with PyTorch's defaults: `eps = 1e-5`, a weight and a bias.
    pub fn new(normalized_shape: &[usize]) -> LayerNorm {
        LayerNorm::with_options(normalized_shape, 1e-5, true, true)
    }

    /// A layer norm with the given `eps`; without `elementwise_affine` it has no parameters,
    /// and without `bias` no bias.
    pub fn with_options(normalized_shape: &[usize], eps: f64, elementwise_affine: bool, bias: bool) -> LayerNorm {
        LayerNorm {
            weight: elementwise_affine.then(|| param(normalized_shape, 1.0)),
            bias: (elementwise_affine && bias).then(|| param(normalized_shape, 0.0)),
            normalized_shape: normalized_shape.to_vec(),
            eps,
        }
    }

    /// The trailing dims normalized over.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// The value added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl Forward for LayerNorm {
    /// Normalizes `x` `[*, normalized_shape]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.normalized_shape, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

/// RMS normalization over the trailing `normalized_shape` dims (PyTorch's `nn.RMSNorm`):
/// `x/√(mean(x²) + eps)·weight`. `eps` `None` is f32's machine epsilon.
///
/// Parameter (with `elementwise_affine`): `weight`, ones of shape `normalized_shape`.
#[derive(Module, Debug)]
pub struct RMSNorm {
    /// The scale, `normalized_shape` (absent without `elementwise_affine`).
    pub weight: Option<Tensor>,
    #[module(skip)]
    normalized_shape: Vec<usize>,
    #[module(skip)]
    eps: Option<f64>,
}

impl RMSNorm {
    /// An RMS norm with PyTorch's defaults: `eps` `None` (f32's epsilon) and a weight.
    pub fn new(normalized_shape: &[usize]) -> RMSNorm {
        RMSNorm::with_options(normalized_shape, None, true)
    }

    /// An RMS norm with the given `eps`; without `elementwise_affine` it has no weight.
    pub fn with_options(normalized_shape: &[usize], eps: Option<f64>, elementwise_affine: bool) -> RMSNorm {
        RMSNorm {
            weight: elementwise_affine.then(|| param(normalized_shape, 1.0)),
            normalized_shape: normalized_shape.to_vec(),
            eps,
        }
    }

    /// The trailing dims normalized over.
    pub fn normalized_shape(&self) -> &[usize] {
        &self.normalized_shape
    }

    /// The value added to the mean square (`None`: f32's machine epsilon).
    pub fn eps(&self) -> Option<f64> {
        self.eps
    }
}

impl Forward for RMSNorm {
    /// Normalizes `x` `[*, normalized_shape]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, &self.normalized_shape, self.weight.as_ref(), self.eps)
    }
}

/// Group normalization (PyTorch's `nn.GroupNorm`): the `num_channels` channels of an input
/// `[N, C, *]` are split into `num_groups` groups of consecutive channels, each normalized
/// per sample over its channels and trailing dims, then scaled and shifted per channel.
///
/// Parameters (with `affine`): `weight` (ones) and `bias` (zeros), both `[num_channels]`.
#[derive(Module, Debug)]
pub struct GroupNorm {
    /// The per-channel scale, `[num_channels]` (absent without `affine`).
    pub weight: Option<Tensor>,
    /// The per-channel shift, `[num_channels]` (absent without `affine`).
    pub bias: Option<Tensor>,
    #[module(skip)]
    num_groups: usize,
    #[module(skip)]
    num_channels: usize,
    #[module(skip)]
    eps: f64,
}

impl GroupNorm {
    /// A group norm with PyTorch's defaults (`eps = 1e-5`, affine). Errors unless
    /// `num_groups` divides `num_channels`.
    pub fn new(num_groups: usize, num_channels: usize) -> Result<GroupNorm> {
        GroupNorm::with_options(num_groups, num_channels, 1e-5, true)
    }

    /// A group norm with the given `eps`, with or without the affine parameters.
    pub fn with_options(num_groups: usize, num_channels: usize, eps: f64, affine: bool) -> Result<GroupNorm> {
        if num_channels.checked_rem(num_groups) != Some(0) {
            return Err(Error::op(
                "group_norm",
                format!("num_channels ({num_channels}) must be divisible by num_groups ({num_groups})"),
            ));
        }
        Ok(GroupNorm {
            weight: affine.then(|| param(&[num_channels], 1.0)),
            bias: affine.then(|| param(&[num_channels], 0.0)),
            num_groups,
            num_channels,
            eps,
        })
    }

    /// The number of groups.
    pub fn num_groups(&self) -> usize {
        self.num_groups
    }

    /// The number of channels.
    pub fn num_channels(&self) -> usize {
        self.num_channels
    }

    /// The value added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl Forward for GroupNorm {
    /// Normalizes `x` `[N, num_channels, *]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_channels("group_norm", x, self.num_channels)?;
        group_norm(x, self.num_groups, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

/// Errors unless `x` has at least 2 dims and `channels` channels in dim 1.
fn check_channels(op: &'static str, x: &Tensor, channels: usize) -> Result<()> {
    if x.rank() < 2 || x.shape()[1] != channels {
        return Err(Error::op(op, format!("expected input of shape [N, {channels}, *], got {:?}", x.shape())));
    }
    Ok(())
}

/// The state of a batch-norm layer that its forward uses.
struct BatchNormState<'a> {
    op: &'static str,
    weight: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
    running_mean: Option<&'a Tensor>,
    running_var: Option<&'a Tensor>,
    num_batches_tracked: Option<&'a Tensor>,
    num_features: usize,
    eps: f64,
    momentum: Option<f64>,
    training: bool,
}

impl BatchNormState<'_> {
    /// PyTorch's `_BatchNorm.forward`: in training mode (or without running statistics) the
    /// batch statistics normalize and, when tracked, update the running buffers in place; in
    /// evaluation mode the running statistics normalize.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_channels(self.op, x, self.num_features)?;
        let tracked = self.running_mean.is_some() && self.running_var.is_some();
        let use_batch = self.training || !tracked;
        // Updates only in training mode with running statistics.
        let update = self.training && tracked;
        let count = match (update, self.num_batches_tracked) {
            (true, Some(n)) => n.data().to_vec::<i64>()?.first().copied().unwrap_or(0) + 1,
            _ => 0,
        };
        let factor = match self.momentum {
            Some(m) => m,
            // Cumulative moving average.
            None if count > 0 => 1.0 / count as f64,
            None => 0.0,
        };
        let (rm, rv) = if use_batch && !update { (None, None) } else { (self.running_mean, self.running_var) };
        let (y, new_stats) = batch_norm(x, rm, rv, self.weight, self.bias, use_batch, factor, self.eps)?;
        if update {
            if let (Some((m, v)), Some(rm), Some(rv)) = (new_stats, self.running_mean, self.running_var) {
                rm.set_data(m)?;
                rv.set_data(v)?;
            }
            if let Some(n) = self.num_batches_tracked {
                n.set_data(Array::from_vec(vec![count], &[])?)?;
            }
        }
        Ok(y)
    }
}

/// Defines a batch-norm layer type; the two differ only in the input ranks they accept.
macro_rules! batch_norm_layer {
    ($(#[$doc:meta])* $name:ident, $ranks:expr, $expected:literal) => {
        $(#[$doc])*
        #[derive(Module, Debug)]
        pub struct $name {
            /// The per-channel scale, `[num_features]` (absent without `affine`).
            pub weight: Option<Tensor>,
            /// The per-channel shift, `[num_features]` (absent without `affine`).
            pub bias: Option<Tensor>,
            /// Running mean, `[num_features]` (absent without `track_running_stats`).
            #[module(buffer)]
            pub running_mean: Option<Tensor>,
            /// Running (unbiased) variance, `[num_features]`.
            #[module(buffer)]
            pub running_var: Option<Tensor>,
            /// Number of training batches seen, an i64 0-d tensor.
            #[module(buffer)]
            pub num_batches_tracked: Option<Tensor>,
            #[module(skip)]
            num_features: usize,
            #[module(skip)]
            eps: f64,
            #[module(skip)]
            momentum: Option<f64>,
            #[module(training)]
            training: bool,
        }

        impl $name {
            /// A layer with PyTorch's defaults: `eps = 1e-5`, `momentum = 0.1`, affine, tracking
            /// running statistics (mean zeros, variance ones), in training mode.
            pub fn new(num_features: usize) -> $name {
                $name::with_options(num_features, 1e-5, Some(0.1), true, true)
            }

            /// A layer with the given options. `momentum` `None` makes the running statistics
            /// a cumulative average of the batch statistics; without `track_running_stats`
            /// there are no buffers and batch statistics are used in evaluation mode too.
            pub fn with_options(
                num_features: usize,
                eps: f64,
                momentum: Option<f64>,
                affine: bool,
                track_running_stats: bool,
            ) -> $name {
                let c = [num_features];
                let track = track_running_stats;
                $name {
                    weight: affine.then(|| param(&c, 1.0)),
                    bias: affine.then(|| param(&c, 0.0)),
                    running_mean: track.then(|| Tensor::zeros(&c)),
                    running_var: track.then(|| Tensor::ones(&c)),
                    num_batches_tracked: track.then(|| {
                        Tensor::from_vec_i64(vec![0], &[]).expect("one element for a 0-d tensor")
                    }),
                    num_features,
                    eps,
                    momentum,
                    training: true,
                }
            }

            /// The number of channels.
            pub fn num_features(&self) -> usize {
                self.num_features
            }

            /// The value added to the variance.
            pub fn eps(&self) -> f64 {
                self.eps
            }

            /// The running-statistics momentum (`None`: cumulative average).
            pub fn momentum(&self) -> Option<f64> {
                self.momentum
            }

            /// Resets the running statistics (mean zeros, variance ones, no batches seen).
            pub fn reset_running_stats(&self) -> Result<()> {
                let c = [self.num_features];
                if let Some(t) = &self.running_mean {
                    t.set_data(Array::zeros(&c))?;
                }
                if let Some(t) = &self.running_var {
                    t.set_data(Array::ones(&c))?;
                }
                if let Some(t) = &self.num_batches_tracked {
                    t.set_data(Array::from_vec(vec![0i64], &[])?)?;
                }
                Ok(())
            }
        }

        impl Forward for $name {
            /// Normalizes `x` per channel (dim 1); in training mode also updates the running
            /// statistics.
            fn forward(&self, x: &Tensor) -> Result<Tensor> {
                const OP: &str = stringify!($name);
                if !$ranks.contains(&x.rank()) {
                    return Err(Error::op(
                        OP,
                        format!(concat!("expected ", $expected, " input, got shape {:?}"), x.shape()),
                    ));
                }
                BatchNormState {
                    op: OP,
                    weight: self.weight.as_ref(),
                    bias: self.bias.as_ref(),
                    running_mean: self.running_mean.as_ref(),
                    running_var: self.running_var.as_ref(),
                    num_batches_tracked: self.num_batches_tracked.as_ref(),
                    num_features: self.num_features,
                    eps: self.eps,
                    momentum: self.momentum,
                    training: self.training,
                }
                .forward(x)
            }
        }
    };
}

batch_norm_layer! {
    /// Batch normalization of `[N, C]` or `[N, C, L]` inputs (PyTorch's `nn.BatchNorm1d`).
    ///
    /// In training mode each channel is normalized with the batch mean and biased variance,
    /// and the running statistics are updated in place:
    /// `running = (1 − momentum)·running + momentum·batch` (the variance unbiased), and
    /// `num_batches_tracked` counts the batches. In evaluation mode the running statistics
    /// normalize. Parameters `weight` (ones) and `bias` (zeros); buffers `running_mean`,
    /// `running_var` and `num_batches_tracked`, as PyTorch names them.
    BatchNorm1d, [2usize, 3], "a 2-d [N, C] or 3-d [N, C, L]"
}

batch_norm_layer! {
    /// Batch normalization of `[N, C, H, W]` inputs (PyTorch's `nn.BatchNorm2d`); otherwise
    /// as [`BatchNorm1d`].
    BatchNorm2d, [4usize], "a 4-d [N, C, H, W]"
}
