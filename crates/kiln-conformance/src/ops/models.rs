//! Whole pretrained-architecture models (README §10) built from `attrs.config` and the case's
//! parameters, which are inputs under their Hugging Face names.

use super::Outputs;
use crate::case::Case;
use kiln::models::bert::{BertConfig, BertModel};
use kiln::nn::Module;
use kiln::{Error, Result, Tensor};
use std::collections::BTreeMap;

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    Some(match op {
        "bert_encoder" => bert_encoder(c),
        _ => return None,
    })
}

// ------------------------------------------------------------------------------ BERT

/// Hugging Face `BertModel` (with or without pooler): `last_hidden_state` and, when the
/// case stores the pooler, `pooler_output`. The model holds the case's input tensors
/// themselves, so the parameter gradients land on them.
fn bert_encoder(c: &Case) -> Result<Outputs> {
    let config_json = c.attr("config").ok_or_else(|| Error::Msg("bert_encoder needs attrs.config".into()))?;
    let config: BertConfig = serde_json::from_value(config_json.clone())
        .map_err(|e| Error::Msg(format!("bert_encoder: bad attrs.config: {e}")))?;
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
