//! (in progress)

use super::Outputs;
use crate::case::Case;
use kiln::Result;

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    let _ = (op, c);
    None
}
