//! Whole training runs (README §10): mlp_train.

use super::Outputs;
use crate::case::Case;
use kiln::autograd::ops::loss::{cross_entropy, CrossEntropyOptions};
use kiln::optim::{Optimizer, Sgd};
use kiln::{Error, Result, Tensor};

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    Some(match op {
        "mlp_train" => mlp_train(c),
        _ => return None,
    })
}

/// Full-batch SGD on `linear(relu(linear(x, fc1)), fc2)` with a mean cross-entropy loss:
/// the loss before each step, then the final parameters.
fn mlp_train(c: &Case) -> Result<Outputs> {
    let names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];
    // Fresh leaves over the inputs' arrays (the optimizer copies a shared buffer on write).
    let params: Vec<Tensor> =
        names.iter().map(|n| Ok(Tensor::from_array(c.input(n)?.data()).requires_grad_(true))).collect::<Result<_>>()?;
    let (x, y) = (c.input("x")?, c.input("y")?);
    let steps = c.int("steps")?;
    let steps =
        usize::try_from(steps).map_err(|_| Error::Msg(format!("attr steps must be non-negative, got {steps}")))?;
    let momentum = c.opt_f64("momentum")?.unwrap_or(0.0) as f32;
    let named: Vec<(String, Tensor)> = names.iter().map(|n| n.to_string()).zip(params.iter().cloned()).collect();
    let mut opt = Sgd::new(kiln::optim::Params::named(named), c.f32("lr")?).momentum(momentum);
    let opts = CrossEntropyOptions::default();
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        opt.zero_grad();
        let h = x.try_linear(&params[0], Some(&params[1]))?.try_relu()?;
        let logits = h.try_linear(&params[2], Some(&params[3]))?;
        let loss = cross_entropy(&logits, y, &opts)?;
        losses.push(loss.item()?);
        loss.backward()?;
        opt.step()?;
    }
    let mut outs = vec![Tensor::from_vec(losses, &[steps])?];
    outs.extend(params.iter().map(|p| Tensor::from_array(p.data())));
    Ok(outs)
}
