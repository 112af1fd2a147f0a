//! Indexing ops: index_select, gather, embedding, masked_fill, where.

use super::Outputs;
use crate::case::Case;
use kiln::{Result, Tensor};

/// Runs an indexing op, or `None` for ops of other families.
pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    let dim = || -> Result<isize> { Ok(c.int("dim")? as isize) };
    let out = |t: Result<Tensor>| t.map(|t| vec![t]);
    Some(match op {
        "index_select" => (|| out(c.input("input")?.try_index_select(dim()?, c.input("index")?)))(),
        "gather" => (|| out(c.input("input")?.try_gather(dim()?, c.input("index")?)))(),
        "embedding" => (|| out(c.input("input")?.try_embedding(c.input("weight")?, c.opt_int("padding_idx")?)))(),
        "masked_fill" => (|| out(c.input("input")?.try_masked_fill(c.input("mask")?, c.f32("value")?)))(),
        "where" => (|| out(Tensor::try_where_cond(c.input("condition")?, c.input("input")?, c.input("other")?)))(),
        _ => return None,
    })
}
