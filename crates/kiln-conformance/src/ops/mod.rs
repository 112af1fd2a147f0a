//! Op dispatch, a file per op family. Each family's `run` returns `None` for ops it does not
//! know, `Some(result)` with one output per name in `case.spec.outputs` otherwise.

use crate::case::Case;
use kiln::{Result, Tensor};

mod attention;
mod conv;
mod elementwise;
mod indexing;
mod linalg;
mod loss;
mod models;
mod norm;
mod optim;
mod reduce;
mod shape;
mod train;

/// The outputs of a case, in `case.spec.outputs` order.
pub type Outputs = Vec<Tensor>;

/// Runs the case's op, or returns `None` when kiln has no implementation of it yet.
pub fn run(case: &Case) -> Option<Result<Outputs>> {
    let op = case.spec.op.as_str();
    elementwise::run(op, case)
        .or_else(|| reduce::run(op, case))
        .or_else(|| shape::run(op, case))
        .or_else(|| indexing::run(op, case))
        .or_else(|| linalg::run(op, case))
        .or_else(|| norm::run(op, case))
        .or_else(|| optim::run(op, case))
        .or_else(|| loss::run(op, case))
        .or_else(|| attention::run(op, case))
        .or_else(|| train::run(op, case))
        .or_else(|| conv::run(op, case))
        .or_else(|| models::run(op, case))
}
