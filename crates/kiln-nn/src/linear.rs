//! [`Linear`]: `y = x·Wᵀ + b`.

use crate::init;
use crate::{Forward, Module};
use kiln_autograd::{Error, Result, Tensor};
use rand::Rng;

/// A fully connected layer (PyTorch's `nn.Linear`): `y = x·weightᵀ + bias` for `x` `[*, in]`.
///
/// Parameters: `weight` `[out_features, in_features]` and `bias` `[out_features]` (unless built
/// without one), both initialised uniform in `±1/√in_features` as in PyTorch.
///
/// ```
/// use kiln_nn::{Forward, Linear, Module};
/// use kiln_autograd::Tensor;
/// let fc = Linear::new(3, 2, true, &mut kiln_nn::init::rng(0));
/// assert_eq!(fc.named_parameters().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), ["weight", "bias"]);
/// assert_eq!(fc.forward(&Tensor::zeros(&[5, 3]))?.shape(), &[5, 2]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
#[derive(Module, Debug)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, if any.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer with PyTorch's default initialisation.
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut impl Rng) -> Linear {
        Linear {
            weight: init::default_weight(&[out_features, in_features], rng),
            bias: bias.then(|| init::default_bias(out_features, in_features, rng)),
        }
    }

    /// A layer over the given tensors (`weight` `[out, in]`, `bias` `[out]`), used as they are.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if weight.rank() != 2 {
            return Err(Error::op("linear", format!("weight must be 2-d [out, in], got shape {:?}", weight.shape())));
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                return Err(Error::op(
                    "linear",
                    format!(
                        "bias must have shape [{}] for weight {:?}, got {:?}",
                        weight.shape()[0],
                        weight.shape(),
                        b.shape()
                    ),
                ));
            }
        }
        Ok(Linear { weight, bias })
    }

    /// Size of each input vector.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Size of each output vector.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Forward for Linear {
    /// Maps `x` `[*, in_features]` to `[*, out_features]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.try_linear(&self.weight, self.bias.as_ref())
    }
}
