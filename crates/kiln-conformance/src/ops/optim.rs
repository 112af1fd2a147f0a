//! Optimizers: each case steps two parameters K times with given gradients.

use super::Outputs;
use crate::case::Case;
use kiln::optim::Sgd;
use kiln::{Result, Tensor};

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    match op {
        "sgd" => Some(run_sgd(c)),
        _ => None,
    }
}

/// The parameters `p0`, `p1`, ... with their per-step gradients.
fn params(c: &Case) -> Result<Vec<(Tensor, Vec<&kiln::Array>)>> {
    let mut out = Vec::new();
    for i in 0.. {
        let Some(init) = c.opt_input(&format!("p{i}.param.init")) else { break };
        let p = Tensor::from_array(init.data().contiguous()).requires_grad_(true);
        let grads: Vec<&kiln::Array> = (0..).map_while(|k| c.stored.get(&format!("p{i}.grad.step{k}"))).collect();
        out.push((p, grads));
    }
    Ok(out)
}

fn run_sgd(c: &Case) -> Result<Outputs> {
    let ps = params(c)?;
    let mut opt = Sgd::new(ps.iter().map(|(p, _)| p.clone()).collect(), c.f32("lr")?)
        .momentum(c.opt_f64("momentum")?.unwrap_or(0.0) as f32)
        .dampening(c.opt_f64("dampening")?.unwrap_or(0.0) as f32)
        .nesterov(c.bool("nesterov")?)
        .weight_decay(c.opt_f64("weight_decay")?.unwrap_or(0.0) as f32);
    let steps = ps.first().map_or(0, |(_, g)| g.len());
    let mut history: Vec<Vec<Tensor>> = vec![Vec::new(); ps.len()];
    for k in 0..steps {
        for (p, grads) in &ps {
            p.set_grad(Some(grads[k].clone()))?;
        }
        opt.step()?;
        for (i, (p, _)) in ps.iter().enumerate() {
            // A shared handle is a snapshot: the next in-place step copies-on-write.
            history[i].push(Tensor::from_array(p.data()));
        }
    }
    Ok(history.into_iter().flatten().collect())
}
