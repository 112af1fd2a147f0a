//! Whole models (README §10), each built from `attrs.config` and the case's parameters by
//! their Hugging Face names.

use super::Outputs;
use crate::case::Case;
use kiln::models::bert::{BertConfig, BertModel};
use kiln::nn::Module;
use kiln::{Error, Result, Tensor};
use std::collections::BTreeMap;

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    Some(match op {
        "gpt2" => gpt2(c),
        "bert_encoder" => bert_encoder(c),
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
    let mut config: GptConfig = config(c)?;
    // GPT2Model has no LM head: tied, the model needs no `lm_head.weight`.
    config.tie_word_embeddings = true;
    // The case's parameter leaves themselves, so their gradients are the ones compared.
    let mut model = Gpt::from_tensors(config, &c.inputs)?;
    model.eval();
    Ok(vec![model.forward_hidden(c.input("input_ids")?, c.opt_input("attention_mask"))?])
}

// ------------------------------------------------------------------------------ BERT

/// Hugging Face `BertModel` (with or without pooler): `last_hidden_state` and, when the
/// case stores the pooler, `pooler_output`. The model holds the case's input tensors
/// themselves, so the parameter gradients land on them.
fn bert_encoder(c: &Case) -> Result<Outputs> {
    let config: BertConfig = config(c)?;
    config.validate()?;
    let data_inputs = ["input_ids", "token_type_ids", "attention_mask"];
    let params: BTreeMap<String, Tensor> = c
        .inputs
        .iter()
        .filter(|(n, _)| !data_inputs.contains(&n.as_str()))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let mut model = BertModel::from_tensors(&config, &params)?;
    model.eval();
    let out = model.forward(c.input("input_ids")?, c.opt_input("attention_mask"), c.opt_input("token_type_ids"))?;
    c.spec
        .outputs
        .iter()
        .map(|name| match name.as_str() {
            "last_hidden_state" => Ok(out.last_hidden_state.clone()),
            "pooler_output" => out
                .pooler_output
                .clone()
                .ok_or_else(|| Error::Msg("pooler_output asked for, but no pooler.* parameters".into())),
            other => Err(Error::Msg(format!("bert_encoder has no output {other}"))),
        })
        .collect()
}
