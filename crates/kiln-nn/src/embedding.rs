//! [`Embedding`]: a lookup table of vectors indexed by token id.

use crate::init;
use crate::{Forward, Module};
use kiln_autograd::{Error, Result, Tensor};
use rand::Rng;

/// A table of `num_embeddings` vectors of size `embedding_dim` (PyTorch's `nn.Embedding`):
/// `forward(ids)` maps i64 ids of any shape to `ids.shape + [embedding_dim]`.
///
/// The parameter is `weight`, `[num_embeddings, embedding_dim]`. With a `padding_idx`, that
/// row starts at zero and never receives a gradient.
#[derive(Module, Debug)]
pub struct Embedding {
    /// The table, `[num_embeddings, embedding_dim]`.
    pub weight: Tensor,
    /// The padding row (non-negative), if any.
    #[module(skip)]
    padding_idx: Option<i64>,
}

impl Embedding {
    /// A table initialised like PyTorch's: `N(0, 1)` entries, the padding row zeroed.
    /// `padding_idx` may be negative (counted from the end).
    pub fn new(
        num_embeddings: usize,
        embedding_dim: usize,
        padding_idx: Option<i64>,
        rng: &mut impl Rng,
    ) -> Result<Embedding> {
        let padding_idx = normalize_padding(padding_idx, num_embeddings)?;
        let mut w = init::normal(&[num_embeddings, embedding_dim], 0.0, 1.0, rng);
        if let Some(p) = padding_idx {
            let row = p as usize * embedding_dim;
            w.make_mut_f32()?[row..row + embedding_dim].fill(0.0);
        }
        Ok(Embedding { weight: Tensor::from_array(w).requires_grad_(true), padding_idx })
    }

    /// A table over the given weight (`[num, dim]`, e.g. pretrained vectors), used as it is:
    /// whether it is trained follows its `requires_grad`.
    pub fn from_weight(weight: Tensor, padding_idx: Option<i64>) -> Result<Embedding> {
        if weight.rank() != 2 {
            return Err(Error::op(
                "embedding",
                format!("weight has to be 2-d [num, dim], got shape {:?}", weight.shape()),
            ));
        }
        let padding_idx = normalize_padding(padding_idx, weight.shape()[0])?;
        Ok(Embedding { weight, padding_idx })
    }

    /// Number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape()[0]
    }

    /// Size of each vector.
    pub fn embedding_dim(&self) -> usize {
        self.weight.shape()[1]
    }

    /// The padding row, if any (non-negative).
    pub fn padding_idx(&self) -> Option<i64> {
        self.padding_idx
    }
}

fn normalize_padding(padding_idx: Option<i64>, num: usize) -> Result<Option<i64>> {
    match padding_idx {
        None => Ok(None),
        Some(p) if p >= 0 && p < num as i64 => Ok(Some(p)),
        Some(p) if p < 0 && p >= -(num as i64) => Ok(Some(p + num as i64)),
        Some(p) => {
            Err(Error::op("embedding", format!("padding_idx {p} is out of range for an embedding table of {num} rows")))
        }
    }
}

impl Forward for Embedding {
    /// Looks up `ids` (i64, any shape).
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        ids.try_embedding(&self.weight, self.padding_idx)
    }
}
