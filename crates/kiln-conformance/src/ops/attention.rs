//! Attention (README §7): scaled_dot_product_attention.

use super::Outputs;
use crate::case::Case;
use kiln::autograd::ops::attention::scaled_dot_product_attention;
use kiln::Result;

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    Some(match op {
        "scaled_dot_product_attention" => (|| {
            let is_causal = c.attr("is_causal").is_some() && c.bool("is_causal")?;
            let scale = c.opt_f64("scale")?.map(|s| s as f32);
            Ok(vec![scaled_dot_product_attention(
                c.input("query")?,
                c.input("key")?,
                c.input("value")?,
                c.opt_input("attn_mask"),
                is_causal,
                scale,
            )?])
        })(),
        _ => return None,
    })
}
