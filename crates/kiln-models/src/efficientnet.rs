//! EfficientNet-Lite0 (Tan & Le, the TF Lite variant): ReLU6 instead of swish, no
//! squeeze-and-excitation, stem and head not scaled, TensorFlow "SAME" padding. Parameter and
//! buffer names are those of the PyTorch package `efficientnet-lite-pytorch` (`_conv_stem.weight`,
//! `_blocks.3._depthwise_conv.weight`, `_bn1.running_var`, `_fc.bias`, ...), so its checkpoints
//! load strictly with no renaming.
//!
//! ```no_run
//! use kiln_models::efficientnet::EfficientNet;
//! use kiln_autograd::{no_grad, Tensor};
//! let model = EfficientNet::from_pretrained("efficientnet-lite0/model.safetensors")?;
//! let x = Tensor::zeros(&[2, 3, 224, 224]);
//! let logits = no_grad(|| model.forward(&x))?; // [2, 1000]
//! let features = no_grad(|| model.features(&x))?; // [2, 1280], for transfer learning
//! # Ok::<(), kiln_autograd::Error>(())
//! ```
//!
//! The padding of every convolution is computed from the size of its actual input at each
//! forward ([`same_padding`]), so any input size works (the package computes it once from a
//! fixed `image_size`, which only agrees at that size). In evaluation mode each BatchNorm is
//! folded into the convolution before it (weight scaled per output channel, shift as the conv
//! bias): the same function, differentiable in every parameter, one pass over each feature map
//! less. ReLU6 runs in place when no gradient is recorded.

use kiln_autograd::ops::conv::{conv2d, Conv2dOptions};
use kiln_autograd::{Array, Error, Result, Tensor};
use kiln_nn::{init, BatchNorm2d, Dropout, Forward, Linear, Module};
use kiln_tensor::ops::vmath::{map1_inplace, map2_inplace, Fn1, Fn2};
use kiln_tensor::parallel::par_chunks_mut_zip;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

/// Per-channel mean of the ImageNet training images (RGB, for inputs scaled to `[0, 1]`).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation of the ImageNet training images (RGB, inputs in `[0, 1]`).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// BatchNorm's `eps` (TensorFlow's 1e-3).
const BN_EPS: f64 = 1e-3;
/// BatchNorm's PyTorch momentum (TensorFlow's decay 0.99).
const BN_MOMENTUM: f64 = 0.01;
/// Channels of the stem (not scaled in the Lite models).
const STEM_CHANNELS: usize = 32;
/// Channels of the head, the size of the pooled features (not scaled in the Lite models).
pub const FEATURES: usize = 1280;

/// TensorFlow "SAME" padding of one spatial dim: `(before, after)` zeros so that the output
/// has `⌈input/stride⌉` positions, the odd one after.
///
/// ```
/// use kiln_models::efficientnet::same_padding;
/// assert_eq!(same_padding(224, 3, 2, 1), (0, 1));
/// assert_eq!(same_padding(7, 5, 2, 1), (2, 2));
/// assert_eq!(same_padding(14, 5, 2, 1), (1, 2));
/// assert_eq!(same_padding(10, 1, 1, 1), (0, 0));
/// ```
pub fn same_padding(input: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let out = input.div_ceil(stride.max(1));
    let span = dilation * kernel.saturating_sub(1) + 1;
    let total = (out.saturating_sub(1) * stride + span).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// One MBConv stage of the architecture, as in TensorFlow's block strings
/// (`r2_k3_s22_e6_i16_o24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageArgs {
    /// Number of blocks; the repeats keep stride 1 and `input = output` channels.
    pub repeats: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Stride of the first block.
    pub stride: usize,
    /// Expansion ratio of the hidden width (1: no expansion conv).
    pub expand_ratio: usize,
    /// Input channels of the first block.
    pub input_filters: usize,
    /// Output channels of every block.
    pub output_filters: usize,
}

/// The seven stages of EfficientNet-Lite0 (width and depth multipliers 1.0).
pub const LITE0_STAGES: [StageArgs; 7] = [
    StageArgs { repeats: 1, kernel: 3, stride: 1, expand_ratio: 1, input_filters: 32, output_filters: 16 },
    StageArgs { repeats: 2, kernel: 3, stride: 2, expand_ratio: 6, input_filters: 16, output_filters: 24 },
    StageArgs { repeats: 2, kernel: 5, stride: 2, expand_ratio: 6, input_filters: 24, output_filters: 40 },
    StageArgs { repeats: 3, kernel: 3, stride: 2, expand_ratio: 6, input_filters: 40, output_filters: 80 },
    StageArgs { repeats: 3, kernel: 5, stride: 1, expand_ratio: 6, input_filters: 80, output_filters: 112 },
    StageArgs { repeats: 4, kernel: 5, stride: 2, expand_ratio: 6, input_filters: 112, output_filters: 192 },
    StageArgs { repeats: 1, kernel: 3, stride: 1, expand_ratio: 6, input_filters: 192, output_filters: 320 },
];

// ------------------------------------------------------------------------------- layers

/// A bias-free convolution with TensorFlow "SAME" padding computed from the size of each input
/// (PyTorch package: `Conv2dDynamicSamePadding`). Parameter: `weight` `[out, in/groups, k, k]`.
#[derive(Module, Debug)]
pub struct Conv2dSame {
    /// The filters, `[out_channels, in_channels/groups, k, k]`.
    pub weight: Tensor,
    #[module(skip)]
    stride: usize,
    #[module(skip)]
    groups: usize,
}

impl Conv2dSame {
    /// A `kernel`x`kernel` convolution from `cin` to `cout` channels, initialised like
    /// PyTorch's `nn.Conv2d`.
    pub fn new(cin: usize, cout: usize, kernel: usize, stride: usize, groups: usize, rng: &mut impl Rng) -> Self {
        Conv2dSame::build(cin, cout, kernel, stride, groups, &mut Init::Random(rng))
    }

    fn build<R: Rng>(cin: usize, cout: usize, kernel: usize, stride: usize, groups: usize, init: &mut Init<R>) -> Self {
        Conv2dSame { weight: init.weight(&[cout, cin / groups, kernel, kernel]), stride, groups }
    }

    /// The stride (both dims).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The number of channel groups.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// The conv2d options for an input of shape `x` (`[N, C, H, W]`): "SAME" padding for its
    /// height and width.
    pub fn options(&self, x: &[usize]) -> Result<Conv2dOptions> {
        if x.len() != 4 {
            return Err(Error::op("Conv2dSame", format!("expected a 4-d input [N, C, H, W], got shape {x:?}")));
        }
        let (kh, kw) = (self.weight.shape()[2], self.weight.shape()[3]);
        let (t, b) = same_padding(x[2], kh, self.stride, 1);
        let (l, r) = same_padding(x[3], kw, self.stride, 1);
        Ok(Conv2dOptions::default().stride([self.stride; 2]).groups(self.groups).padding([t, l]).padding_end([b, r]))
    }
}

impl Forward for Conv2dSame {
    /// Convolves `x` `[N, in_channels, H, W]` to `[N, out_channels, ⌈H/s⌉, ⌈W/s⌉]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv2d(x, &self.weight, None, &self.options(x.shape())?)
    }
}

/// How new parameters are filled: PyTorch's default initialisation, or zeros for a model
/// whose weights are loaded right after (drawing millions of random numbers for nothing).
enum Init<'a, R: Rng> {
    Random(&'a mut R),
    Zeros,
}

impl<R: Rng> Init<'_, R> {
    /// A conv or linear weight of `shape` (trainable).
    fn weight(&mut self, shape: &[usize]) -> Tensor {
        match self {
            Init::Random(rng) => init::default_weight(shape, *rng),
            Init::Zeros => Tensor::zeros(shape).requires_grad_(true),
        }
    }

    /// A `Linear(inp, out)` with a bias.
    fn linear(&mut self, inp: usize, out: usize) -> Linear {
        match self {
            Init::Random(rng) => Linear::new(inp, out, true, *rng),
            Init::Zeros => Linear::from_weights(
                Tensor::zeros(&[out, inp]).requires_grad_(true),
                Some(Tensor::zeros(&[out]).requires_grad_(true)),
            )
            .expect("a [out, in] weight and an [out] bias"),
        }
    }
}

/// A BatchNorm with EfficientNet's `eps` and momentum.
fn batch_norm(channels: usize) -> BatchNorm2d {
    BatchNorm2d::with_options(channels, BN_EPS, Some(BN_MOMENTUM), true, true)
}

/// `clamp(x, 0, 6)`; in place when `x` records no gradient.
fn relu6(x: Tensor) -> Result<Tensor> {
    if x.requires_grad() {
        return x.try_clamp(Some(0.0), Some(6.0));
    }
    x.update_data(|a| -> Result<()> {
        // NaN stays NaN, as in PyTorch.
        let k = Fn1(|v: f32| {
            let v = if v < 0.0 { 0.0 } else { v };
            if v > 6.0 {
                6.0
            } else {
                v
            }
        });
        par_chunks_mut_zip(a.make_mut_f32()?, |_, chunk| map1_inplace(k, chunk));
        Ok(())
    })?;
    Ok(x)
}

/// `conv` followed by `bn` (and ReLU6 with `act`). Out of training mode the BatchNorm is
/// folded into the convolution: `W' = W·s`, bias `β − μ·s` with `s = γ/√(σ² + eps)` per
/// output channel (differentiable in `W`, `γ` and `β`; the running statistics are constants).
fn conv_bn(x: &Tensor, conv: &Conv2dSame, bn: &BatchNorm2d, act: bool) -> Result<Tensor> {
    let opts = conv.options(x.shape())?;
    let y = match (bn.is_training(), &bn.running_mean, &bn.running_var) {
        (false, Some(mean), Some(var)) => {
            let c = bn.num_features();
            let inv_std: Vec<f32> =
                var.to_vec_f32()?.iter().map(|&v| (1.0 / (v as f64 + bn.eps()).sqrt()) as f32).collect();
            let inv_std = Tensor::from_vec(inv_std, &[c])?;
            let scale = match &bn.weight {
                Some(g) => g.try_mul(&inv_std)?,
                None => inv_std,
            };
            // As [C, K] · [C, 1]: a broadcast over the rows of the weight (a [C, 1, 1, 1]
            // operand would broadcast over rows of one element).
            let ws = conv.weight.shape().to_vec();
            let w = conv.weight.try_reshape(&[c as isize, -1])?.try_mul(&scale.try_reshape(&[c as isize, 1])?)?;
            let w = w.try_reshape(&ws.iter().map(|&d| d as isize).collect::<Vec<_>>())?;
            let shift = mean.try_mul(&scale)?.try_neg()?;
            let shift = match &bn.bias {
                Some(b) => b.try_add(&shift)?,
                None => shift,
            };
            conv2d(x, &w, Some(&shift), &opts)?
        }
        _ => bn.forward(&conv2d(x, &conv.weight, None, &opts)?)?,
    };
    if act {
        relu6(y)
    } else {
        Ok(y)
    }
}

/// Drop connect (stochastic depth): zeroes whole samples with probability `p`, scaling the
/// others by `1/(1 − p)`.
fn drop_connect(x: &Tensor, p: f32, rng: &mut StdRng) -> Result<Tensor> {
    let n = x.shape()[0];
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..n).map(|_| if rng.gen::<f32>() < keep { 1.0 / keep } else { 0.0 }).collect();
    let mut shape = vec![1; x.rank()];
    shape[0] = n;
    x.try_mul(&Tensor::from_vec(mask, &shape)?)
}

// ------------------------------------------------------------------------------- block

/// A mobile inverted bottleneck block without squeeze-and-excitation: 1x1 expansion (unless
/// the ratio is 1) → BN → ReLU6 → depthwise k×k → BN → ReLU6 → 1x1 projection → BN, plus the
/// input when the stride is 1 and the channel counts agree.
#[derive(Module, Debug)]
pub struct MBConvBlock {
    /// 1x1 expansion to `input·expand_ratio` channels (absent for ratio 1).
    #[module(rename = "_expand_conv")]
    pub expand_conv: Option<Conv2dSame>,
    /// BatchNorm after the expansion (absent for ratio 1).
    #[module(rename = "_bn0")]
    pub bn0: Option<BatchNorm2d>,
    /// The depthwise convolution (groups = hidden channels).
    #[module(rename = "_depthwise_conv")]
    pub depthwise_conv: Conv2dSame,
    /// BatchNorm after the depthwise convolution.
    #[module(rename = "_bn1")]
    pub bn1: BatchNorm2d,
    /// 1x1 projection to the output channels.
    #[module(rename = "_project_conv")]
    pub project_conv: Conv2dSame,
    /// BatchNorm after the projection (no activation follows).
    #[module(rename = "_bn2")]
    pub bn2: BatchNorm2d,
    #[module(skip)]
    residual: bool,
}

impl MBConvBlock {
    /// A block with `kernel`, `stride` and `expand_ratio` from `cin` to `cout` channels.
    pub fn new(cin: usize, cout: usize, kernel: usize, stride: usize, expand_ratio: usize, rng: &mut impl Rng) -> Self {
        MBConvBlock::build(cin, cout, kernel, stride, expand_ratio, &mut Init::Random(rng))
    }

    fn build<R: Rng>(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        expand_ratio: usize,
        init: &mut Init<R>,
    ) -> Self {
        let hidden = cin * expand_ratio;
        let expand = expand_ratio != 1;
        MBConvBlock {
            expand_conv: expand.then(|| Conv2dSame::build(cin, hidden, 1, 1, 1, init)),
            bn0: expand.then(|| batch_norm(hidden)),
            depthwise_conv: Conv2dSame::build(hidden, hidden, kernel, stride, hidden, init),
            bn1: batch_norm(hidden),
            project_conv: Conv2dSame::build(hidden, cout, 1, 1, 1, init),
            bn2: batch_norm(cout),
            residual: stride == 1 && cin == cout,
        }
    }

    /// True when the block adds its input to its output.
    pub fn has_residual(&self) -> bool {
        self.residual
    }

    /// Applies the block; in training mode the residual branch is dropped per sample with
    /// probability `drop_rate` (drawn from `rng`).
    pub fn forward_with(&self, x: &Tensor, drop_rate: f32, rng: &Mutex<StdRng>) -> Result<Tensor> {
        let mut h = match (&self.expand_conv, &self.bn0) {
            (Some(conv), Some(bn)) => conv_bn(x, conv, bn, true)?,
            _ => x.clone(),
        };
        h = conv_bn(&h, &self.depthwise_conv, &self.bn1, true)?;
        h = conv_bn(&h, &self.project_conv, &self.bn2, false)?;
        if !self.residual {
            return Ok(h);
        }
        if drop_rate > 0.0 && self.bn2.is_training() {
            let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
            h = drop_connect(&h, drop_rate, &mut rng)?;
        }
        if h.requires_grad() || x.requires_grad() {
            return h.try_add(x);
        }
        // No graph: add the input in place.
        let xd = x.data();
        h.update_data(|a| -> Result<()> {
            let xs = xd.f32_cow()?;
            par_chunks_mut_zip(a.make_mut_f32()?, |start, chunk| {
                map2_inplace(Fn2(|v: f32, s: f32| v + s), chunk, &xs[start..start + chunk.len()])
            });
            Ok(())
        })?;
        Ok(h)
    }
}

// ------------------------------------------------------------------------------- model

/// EfficientNet-Lite0: stem conv 3→32 (3x3, stride 2) → BN → ReLU6, 16 [`MBConvBlock`]s, head
/// conv 320→1280 → BN → ReLU6, global average pool, dropout 0.2, linear classifier `_fc`.
///
/// Tensors are named as in the PyTorch checkpoints (296 with the `num_batches_tracked`
/// buffers, which the file has too).
#[derive(Module, Debug)]
pub struct EfficientNet {
    /// Stem convolution, 3→32, 3x3, stride 2.
    #[module(rename = "_conv_stem")]
    pub conv_stem: Conv2dSame,
    /// BatchNorm of the stem.
    #[module(rename = "_bn0")]
    pub bn0: BatchNorm2d,
    /// The 16 MBConv blocks.
    #[module(rename = "_blocks")]
    pub blocks: Vec<MBConvBlock>,
    /// Head convolution, 320→1280, 1x1.
    #[module(rename = "_conv_head")]
    pub conv_head: Conv2dSame,
    /// BatchNorm of the head.
    #[module(rename = "_bn1")]
    pub bn1: BatchNorm2d,
    /// Dropout before the classifier (no tensors).
    pub dropout: Dropout,
    /// The classifier, `[num_classes, 1280]` and a bias.
    #[module(rename = "_fc")]
    pub fc: Linear,
    #[module(skip)]
    drop_connect_rate: f32,
    #[module(skip)]
    rng: Mutex<StdRng>,
    #[module(training)]
    training: bool,
}

impl EfficientNet {
    /// EfficientNet-Lite0 with `num_classes` outputs, initialised like the PyTorch package
    /// (PyTorch's layer defaults), in training mode. Seeded with 0; see
    /// [`EfficientNet::lite0_seeded`].
    pub fn lite0(num_classes: usize) -> Result<EfficientNet> {
        EfficientNet::lite0_seeded(num_classes, 0)
    }

    /// [`EfficientNet::lite0`] with the initialisation, dropout and drop-connect generators
    /// seeded from `seed`.
    pub fn lite0_seeded(num_classes: usize, seed: u64) -> Result<EfficientNet> {
        EfficientNet::build(&LITE0_STAGES, num_classes, 0.2, 0.2, seed)
    }

    /// A Lite model from its stages, with `dropout` before the classifier and a drop-connect
    /// rate growing linearly from 0 to `drop_connect_rate` over the blocks.
    pub fn build(
        stages: &[StageArgs],
        num_classes: usize,
        dropout: f32,
        drop_connect_rate: f32,
        seed: u64,
    ) -> Result<EfficientNet> {
        let mut rng = init::rng(seed);
        EfficientNet::build_with(stages, num_classes, dropout, drop_connect_rate, seed, &mut Init::Random(&mut rng))
    }

    fn build_with<R: Rng>(
        stages: &[StageArgs],
        num_classes: usize,
        dropout: f32,
        drop_connect_rate: f32,
        seed: u64,
        init: &mut Init<R>,
    ) -> Result<EfficientNet> {
        if num_classes == 0 {
            return Err(Error::op("EfficientNet", "num_classes must be positive"));
        }
        if !(0.0..1.0).contains(&drop_connect_rate) {
            return Err(Error::op(
                "EfficientNet",
                format!("drop_connect_rate must be in [0, 1), got {drop_connect_rate}"),
            ));
        }
        let conv_stem = Conv2dSame::build(3, STEM_CHANNELS, 3, 2, 1, init);
        let mut blocks = Vec::new();
        let mut channels = STEM_CHANNELS;
        for st in stages {
            if st.repeats == 0 || st.input_filters != channels {
                return Err(Error::op(
                    "EfficientNet",
                    format!("stage {st:?} must repeat at least once and take the {channels} channels before it"),
                ));
            }
            for r in 0..st.repeats {
                let (cin, stride) = if r == 0 { (st.input_filters, st.stride) } else { (st.output_filters, 1) };
                blocks.push(MBConvBlock::build(cin, st.output_filters, st.kernel, stride, st.expand_ratio, init));
            }
            channels = st.output_filters;
        }
        let conv_head = Conv2dSame::build(channels, FEATURES, 1, 1, 1, init);
        let fc = init.linear(FEATURES, num_classes);
        Ok(EfficientNet {
            conv_stem,
            bn0: batch_norm(STEM_CHANNELS),
            blocks,
            conv_head,
            bn1: batch_norm(FEATURES),
            dropout: Dropout::with_seed(dropout, seed ^ 0x5EED_D20F)?,
            fc,
            drop_connect_rate,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0xD0C0_77EC)),
            training: true,
        })
    }

    /// EfficientNet-Lite0 with the weights of a safetensors checkpoint (a file, or a
    /// directory holding `model.safetensors`), loaded strictly, in evaluation mode. The number
    /// of classes is that of the checkpoint's `_fc.weight`.
    pub fn from_pretrained(path: impl AsRef<Path>) -> Result<EfficientNet> {
        let path = path.as_ref();
        let file = if path.is_dir() { path.join("model.safetensors") } else { path.to_path_buf() };
        EfficientNet::from_state_dict(&kiln_io::load_safetensors(&file)?)
    }

    /// EfficientNet-Lite0 with the given named tensors (all of them, no more), in evaluation
    /// mode.
    pub fn from_state_dict(state: &BTreeMap<String, Array>) -> Result<EfficientNet> {
        let num_classes = match state.get("_fc.weight").map(Array::shape) {
            Some(&[classes, FEATURES]) => classes,
            Some(s) => {
                return Err(Error::op(
                    "EfficientNet",
                    format!("_fc.weight must be [num_classes, {FEATURES}], got {s:?}"),
                ))
            }
            None => return Err(Error::op("EfficientNet", "the state dict has no _fc.weight")),
        };
        let mut model = EfficientNet::build_with(&LITE0_STAGES, num_classes, 0.2, 0.2, 0, &mut Init::<StdRng>::Zeros)?;
        model.load_state_dict(state, true)?;
        model.eval();
        Ok(model)
    }

    /// The number of classes of the classifier.
    pub fn num_classes(&self) -> usize {
        self.fc.out_features()
    }

    /// Replaces the classifier `_fc` by a new `Linear(1280, num_classes)` with PyTorch's
    /// default initialisation (for transfer learning: freeze the rest with
    /// `model.freeze("*")` then `model.unfreeze("_fc.*")`).
    pub fn reset_classifier(&mut self, num_classes: usize, rng: &mut impl Rng) -> Result<()> {
        if num_classes == 0 {
            return Err(Error::op("EfficientNet", "num_classes must be positive"));
        }
        self.fc = Linear::new(FEATURES, num_classes, true, rng);
        Ok(())
    }

    /// Replaces the classifier `_fc` by `fc` (whose input must be the 1280 features).
    pub fn set_classifier(&mut self, fc: Linear) -> Result<()> {
        if fc.in_features() != FEATURES {
            return Err(Error::op(
                "EfficientNet",
                format!("the classifier must take {FEATURES} features, this one takes {}", fc.in_features()),
            ));
        }
        self.fc = fc;
        Ok(())
    }

    /// The feature maps after the head's BatchNorm and ReLU6, `[N, 1280, ⌈H/32⌉, ⌈W/32⌉]`, of
    /// images `x` `[N, 3, H, W]`.
    pub fn feature_maps(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 4 || x.shape()[1] != 3 {
            return Err(Error::op("EfficientNet", format!("expected images [N, 3, H, W], got shape {:?}", x.shape())));
        }
        let mut h = conv_bn(x, &self.conv_stem, &self.bn0, true)?;
        let n = self.blocks.len() as f32;
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward_with(&h, self.drop_connect_rate * i as f32 / n, &self.rng)?;
        }
        conv_bn(&h, &self.conv_head, &self.bn1, true)
    }

    /// The pooled features `[N, 1280]` of images `x` `[N, 3, H, W]` (the classifier's input,
    /// before dropout): for transfer learning.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.feature_maps(x)?.try_mean(Some(&[2, 3]), false)
    }

    /// The class logits `[N, num_classes]` of images `x` `[N, 3, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = self.dropout.forward(&self.features(x)?)?;
        self.fc.forward(&f)
    }
}

impl Forward for EfficientNet {
    /// The class logits, as [`EfficientNet::forward`].
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        EfficientNet::forward(self, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_autograd::gradcheck::{check_gradients, uniform};

    /// A conv + BatchNorm pair over the given tensors, in evaluation mode with running
    /// statistics away from the defaults.
    fn pair(w: &Tensor, gamma: &Tensor, beta: &Tensor, stride: usize, groups: usize) -> (Conv2dSame, BatchNorm2d) {
        let c = w.shape()[0];
        let mut bn = batch_norm(c);
        bn.weight = Some(gamma.clone());
        bn.bias = Some(beta.clone());
        bn.running_mean = Some(Tensor::from_array(uniform(&[c], -0.5, 0.5, 11)));
        bn.running_var = Some(Tensor::from_array(uniform(&[c], 0.5, 2.0, 12)));
        bn.eval();
        (Conv2dSame { weight: w.clone(), stride, groups }, bn)
    }

    #[test]
    fn folded_batch_norm_matches_conv_then_batch_norm() {
        for (xs, ws, stride, groups) in [([2, 3, 7, 6], [4, 3, 3, 3], 2, 1), ([1, 4, 6, 6], [4, 1, 5, 5], 1, 4)] {
            let x = Tensor::from_array(uniform(&xs, -1.0, 1.0, 1));
            let w = Tensor::from_array(uniform(&ws, -1.0, 1.0, 2));
            let gamma = Tensor::from_array(uniform(&[ws[0]], 0.5, 1.5, 3));
            let beta = Tensor::from_array(uniform(&[ws[0]], -1.0, 1.0, 4));
            let (conv, bn) = pair(&w, &gamma, &beta, stride, groups);
            let folded = conv_bn(&x, &conv, &bn, false).unwrap().to_vec_f32().unwrap();
            let plain = bn.forward(&conv.forward(&x).unwrap()).unwrap().to_vec_f32().unwrap();
            assert_eq!(folded.len(), plain.len());
            for (a, b) in folded.iter().zip(&plain) {
                assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn gradcheck_folded_batch_norm() {
        // No activation, so no kinks to keep the values away from.
        let arrays = [
            uniform(&[1, 2, 5, 5], -1.0, 1.0, 5),
            uniform(&[2, 1, 3, 3], -1.0, 1.0, 6),
            uniform(&[2], 0.5, 1.5, 7),
            uniform(&[2], -1.0, 1.0, 8),
        ];
        check_gradients(&arrays, |t| {
            let (conv, bn) = pair(&t[1], &t[2], &t[3], 2, 2);
            conv_bn(&t[0], &conv, &bn, false)
        })
        .unwrap();
    }
}
