//! Whole models (README §10), each built from `attrs.config` and the case's parameters by
//! their Hugging Face names.

use super::Outputs;
use crate::case::Case;
use kiln::{Error, Result};

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    Some(match op {
        "gpt2" => gpt2(c),
        _ => return None,
    })
}

/// `attrs.config` deserialized into a model config.
fn config<T: serde::de::DeserializeOwned>(c: &Case) -> Result<T> {
    let v = c.attr("config").ok_or_else(|| Error::Msg("attr config: expected an object".into()))?;
    serde_json::from_value(v.clone()).map_err(|e| Error::Msg(format!("attr config: {e}")))
}

// ------------------------------------------------------------------------------ gpt2

/// Hugging Face `GPT2Model`: `last_hidden_state` of `input_ids` with the padding
/// `attention_mask`, no dropout.
fn gpt2(c: &Case) -> Result<Outputs> {
    use kiln::models::{Gpt, GptConfig};
    use kiln::nn::Module;
    let mut config: GptConfig = config(c)?;
    // GPT2Model has no LM head: tied, the model needs no `lm_head.weight`.
    config.tie_word_embeddings = true;
    // The case's parameter leaves themselves, so their gradients are the ones compared.
    let mut model = Gpt::from_tensors(config, &c.inputs)?;
    model.eval();
    Ok(vec![model.forward_hidden(c.input("input_ids")?, c.opt_input("attention_mask"))?])
}
