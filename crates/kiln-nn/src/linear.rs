//! [`Linear`]: `y = x·Wᵀ + b`, optionally plus a LoRA update.

use crate::init;
use crate::lora::{LoraAdapter, LoraConfig};
use crate::{Forward, Module};
use kiln_autograd::{DType, Error, Result, Tensor};
use rand::Rng;

/// A fully connected layer (PyTorch's `nn.Linear`): `y = x·weightᵀ + bias` for `x` `[*, in]`.
///
/// Parameters: `weight` `[out_features, in_features]` and `bias` `[out_features]` (unless built
/// without one), both initialised uniform in `±1/√in_features` as in PyTorch.
///
/// It may carry a LoRA adapter ([`Linear::add_lora`], or [`crate::lora::inject_lora`] over a
/// whole model): then `y = x·weightᵀ + bias + (alpha/rank)·dropout(x)·Aᵀ·Bᵀ`, and its
/// parameters include `lora_A.weight` and `lora_B.weight` until the adapter is merged.
///
/// A clone shares the layer's tensors (and its adapter's dropout generator), like a clone of
/// a [`Tensor`].
///
/// ```
/// use kiln_nn::{Forward, Linear, Module};
/// use kiln_autograd::Tensor;
/// let fc = Linear::new(3, 2, true, &mut kiln_nn::init::rng(0));
/// assert_eq!(fc.named_parameters().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), ["weight", "bias"]);
/// assert_eq!(fc.forward(&Tensor::zeros(&[5, 3]))?.shape(), &[5, 2]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
#[derive(Module, Debug, Clone)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, if any.
    pub bias: Option<Tensor>,
    /// The LoRA adapter, if any; its tensors are named under the layer's own name.
    #[module(flatten)]
    lora: Option<LoraAdapter>,
}

impl Linear {
    /// A layer with PyTorch's default initialisation.
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut impl Rng) -> Linear {
        Linear {
            weight: init::default_weight(&[out_features, in_features], rng),
            bias: bias.then(|| init::default_bias(out_features, in_features, rng)),
            lora: None,
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
        Ok(Linear { weight, bias, lora: None })
    }

    /// Size of each input vector.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Size of each output vector.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Adds a fresh LoRA adapter built from `config` (`A` drawn from `rng`, `B` zeros, so the
    /// output is unchanged until `B` is trained). The adapter's parameters require grad; the
    /// layer's own are left as they are. Errors if the layer already has an adapter, if its
    /// weight is not f32, or if `config` is invalid.
    pub fn add_lora(&mut self, config: &LoraConfig, rng: &mut impl Rng) -> Result<()> {
        if self.lora.is_some() {
            return Err(Error::op("add_lora", "this Linear already has a LoRA adapter"));
        }
        if self.weight.dtype() != DType::F32 {
            return Err(Error::op("add_lora", format!("LoRA needs an f32 weight, got {}", self.weight.dtype())));
        }
        self.lora = Some(LoraAdapter::new(self.in_features(), self.out_features(), config, rng)?);
        Ok(())
    }

    /// The LoRA adapter, if any.
    pub fn lora(&self) -> Option<&LoraAdapter> {
        self.lora.as_ref()
    }

    /// Removes the LoRA adapter without merging it (the layer computes its base output again).
    pub fn take_lora(&mut self) -> Option<LoraAdapter> {
        self.lora.take()
    }

    /// Checks that the adapter (if any) fits the weight, as merging needs.
    pub(crate) fn check_lora(&self) -> Result<()> {
        let Some(l) = &self.lora else { return Ok(()) };
        let (w, a, b) = (self.weight.shape(), l.lora_a.shape(), l.lora_b.shape());
        if self.weight.dtype() != DType::F32
            || a.len() != 2
            || b.len() != 2
            || a[1] != w[1]
            || b[0] != w[0]
            || a[0] != b[1]
        {
            return Err(Error::op(
                "merge_lora",
                format!("adapter A {a:?}, B {b:?} does not fit the {} weight {w:?}", self.weight.dtype()),
            ));
        }
        Ok(())
    }

    /// Folds the LoRA adapter into the weight (`weight += (alpha/rank)·B·A`) and removes it.
    /// Returns whether there was one. The weight keeps its `requires_grad`.
    pub fn merge_lora(&mut self) -> Result<bool> {
        self.check_lora()?;
        let Some(l) = &self.lora else { return Ok(false) };
        let delta = l.weight_delta()?;
        self.weight.update_data(|w| -> Result<()> {
            let d = delta.f32_cow()?;
            for (x, &dx) in w.make_mut_f32()?.iter_mut().zip(d.iter()) {
                *x += dx;
            }
            Ok(())
        })?;
        self.lora = None;
        Ok(true)
    }
}

impl Forward for Linear {
    /// Maps `x` `[*, in_features]` to `[*, out_features]` (one fused op without an adapter).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.try_linear(&self.weight, self.bias.as_ref())?;
        match &self.lora {
            None => Ok(y),
            Some(l) => y.try_add(&l.delta(x)?),
        }
    }
}
