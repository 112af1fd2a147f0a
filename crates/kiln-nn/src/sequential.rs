//! [`Sequential`]: layers applied one after the other, and the [`Identity`] layer.

use crate::{Forward, ForwardModule, Module};
use kiln_autograd::{Result, Tensor};

/// Layers applied in order, each to the output of the one before (PyTorch's
/// `nn.Sequential`). Its tensors are named by layer index: `0.weight`, `1.weight`, ...
///
/// ```
/// use kiln_nn::{Dropout, Embedding, Forward, Identity, Module, Sequential};
/// use kiln_autograd::Tensor;
///
/// let mut rng = kiln_nn::init::rng(0);
/// let mut model = Sequential::new()
///     .with(Embedding::new(10, 4, None, &mut rng)?)
///     .with(Dropout::new(0.1)?)
///     .with(Identity);
/// assert_eq!(model.named_parameters()[0].0, "0.weight");
/// model.eval();
/// let y = model.forward(&Tensor::from_vec_i64(vec![1, 2, 3], &[3])?)?;
/// assert_eq!(y.shape(), &[3, 4]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
#[derive(Module, Default)]
pub struct Sequential {
    #[module(flatten)]
    layers: Vec<Box<dyn ForwardModule>>,
}

impl Sequential {
    /// No layers (the identity).
    pub fn new() -> Sequential {
        Sequential { layers: Vec::new() }
    }

    /// Appends a layer (builder style).
    pub fn with(mut self, layer: impl ForwardModule + 'static) -> Sequential {
        self.push(layer);
        self
    }

    /// Appends a layer.
    pub fn push(&mut self, layer: impl ForwardModule + 'static) {
        self.layers.push(Box::new(layer));
    }

    /// Appends an already boxed layer.
    pub fn push_boxed(&mut self, layer: Box<dyn ForwardModule>) {
        self.layers.push(layer);
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn ForwardModule>] {
        &self.layers
    }

    /// The layers, in order, mutably.
    pub fn layers_mut(&mut self) -> &mut [Box<dyn ForwardModule>] {
        &mut self.layers
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True with no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl FromIterator<Box<dyn ForwardModule>> for Sequential {
    fn from_iter<I: IntoIterator<Item = Box<dyn ForwardModule>>>(iter: I) -> Sequential {
        Sequential { layers: iter.into_iter().collect() }
    }
}

impl Forward for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}

/// Returns its input unchanged (PyTorch's `nn.Identity`): a placeholder layer.
#[derive(Module, Debug, Clone, Copy, Default)]
pub struct Identity;

impl Forward for Identity {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
}

/// Flattens dims `start_dim..=end_dim` into one (PyTorch's `nn.Flatten`, default dims 1 to -1):
/// `[N, C, H, W]` → `[N, C·H·W]`, a view when the input is contiguous.
///
/// ```
/// use kiln_nn::{Flatten, Forward};
/// use kiln_autograd::Tensor;
/// let y = Flatten::default().forward(&Tensor::zeros(&[2, 3, 4, 5]))?;
/// assert_eq!(y.shape(), &[2, 60]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
#[derive(Module, Debug, Clone, Copy)]
pub struct Flatten {
    #[module(skip)]
    start_dim: isize,
    #[module(skip)]
    end_dim: isize,
}

impl Flatten {
    /// Flattens dims `start_dim..=end_dim` (negative dims count from the end).
    pub fn new(start_dim: isize, end_dim: isize) -> Flatten {
        Flatten { start_dim, end_dim }
    }
}

impl Default for Flatten {
    /// `Flatten::new(1, -1)`, PyTorch's default: keeps the batch dim.
    fn default() -> Flatten {
        Flatten::new(1, -1)
    }
}

impl Forward for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_flatten(self.start_dim, self.end_dim)
    }
}
