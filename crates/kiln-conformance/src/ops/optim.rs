//! Optimizers (each case steps parameters `p0`, `p1`, ... K times with given gradients),
//! gradient clipping, and learning-rate schedules.

use super::Outputs;
use crate::case::Case;
use kiln::optim::scheduler::{
    cosine_annealing_lr, exponential_lr, linear_warmup_then_linear_decay, multistep_lr, step_lr,
};
use kiln::optim::{clip_grad_norm, Adagrad, Adam, AdamW, Anneal, OneCycle, Optimizer, RmsProp, Sgd};
use kiln::{Array, Error, Result, Tensor};
use std::collections::BTreeMap;

pub fn run(op: &str, c: &Case) -> Option<Result<Outputs>> {
    Some(match op {
        "sgd" | "adam" | "adamw" | "rmsprop" | "adagrad" => run_optimizer(op, c),
        "clip_grad_norm" => run_clip(c),
        "step_lr"
        | "multistep_lr"
        | "exponential_lr"
        | "cosine_annealing_lr"
        | "one_cycle_lr"
        | "linear_warmup_then_linear_decay" => run_schedule(op, c),
        _ => return None,
    })
}

/// A float attribute that defaults when absent or null.
fn f32_or(c: &Case, name: &str, default: f32) -> Result<f32> {
    Ok(c.opt_f64(name)?.map_or(default, |v| v as f32))
}

/// A non-negative integer attribute.
fn usize_attr(c: &Case, name: &str) -> Result<usize> {
    let v = c.int(name)?;
    usize::try_from(v).map_err(|_| Error::Msg(format!("attr {name} must be non-negative, got {v}")))
}

/// The optimizer of `op` over `params`, configured from the case's attrs (PyTorch defaults
/// where an attr is absent).
fn build(op: &str, c: &Case, params: Vec<Tensor>) -> Result<Box<dyn Optimizer>> {
    let lr = c.f32("lr")?;
    let wd = f32_or(c, "weight_decay", if op == "adamw" { 0.01 } else { 0.0 })?;
    let betas = || -> Result<(f32, f32)> {
        match c.attr("betas") {
            None => Ok((0.9, 0.999)),
            Some(_) => match c.floats("betas")?[..] {
                [b1, b2] => Ok((b1 as f32, b2 as f32)),
                ref b => Err(Error::Msg(format!("attr betas: expected two numbers, got {b:?}"))),
            },
        }
    };
    Ok(match op {
        "sgd" => Box::new(
            Sgd::new(params, lr)
                .momentum(f32_or(c, "momentum", 0.0)?)
                .dampening(f32_or(c, "dampening", 0.0)?)
                .nesterov(c.bool("nesterov")?)
                .weight_decay(wd),
        ),
        "adam" | "adamw" => {
            let (b1, b2) = betas()?;
            let eps = f32_or(c, "eps", 1e-8)?;
            let amsgrad = c.bool("amsgrad")?;
            if op == "adam" {
                Box::new(Adam::new(params, lr).betas(b1, b2).eps(eps).weight_decay(wd).amsgrad(amsgrad))
            } else {
                Box::new(AdamW::new(params, lr).betas(b1, b2).eps(eps).weight_decay(wd).amsgrad(amsgrad))
            }
        }
        "rmsprop" => Box::new(
            RmsProp::new(params, lr)
                .alpha(f32_or(c, "alpha", 0.99)?)
                .eps(f32_or(c, "eps", 1e-8)?)
                .momentum(f32_or(c, "momentum", 0.0)?)
                .centered(c.bool("centered")?)
                .weight_decay(wd),
        ),
        "adagrad" => Box::new(
            Adagrad::new(params, lr)
                .lr_decay(f32_or(c, "lr_decay", 0.0)?)
                .eps(f32_or(c, "eps", 1e-10)?)
                .weight_decay(wd)
                .initial_accumulator_value(f32_or(c, "initial_accumulator_value", 0.0)?),
        ),
        _ => unreachable!("dispatched above"),
    })
}

fn run_optimizer(op: &str, c: &Case) -> Result<Outputs> {
    // Parameters p0, p1, ... with their per-step gradients.
    let mut params = Vec::new();
    let mut grads: Vec<Vec<&Array>> = Vec::new();
    for i in 0.. {
        let Some(init) = c.opt_input(&format!("p{i}.param.init")) else { break };
        params.push(Tensor::from_array(init.data().contiguous()).requires_grad_(true));
        grads.push((0..).map_while(|k| c.stored.get(&format!("p{i}.grad.step{k}"))).collect());
    }
    let steps = grads.first().map_or(0, Vec::len);
    if let Some(i) = grads.iter().position(|g| g.len() != steps) {
        return Err(Error::Msg(format!("p{i} has {} gradient steps, p0 has {steps}", grads[i].len())));
    }
    let mut opt = build(op, c, params.clone())?;
    let mut values = BTreeMap::new();
    for k in 0..steps {
        for (p, g) in params.iter().zip(&grads) {
            p.set_grad(Some(g[k].clone()))?;
        }
        opt.step()?;
        for (i, p) in params.iter().enumerate() {
            // A shared handle is a snapshot: the next in-place step copies-on-write.
            values.insert(format!("p{i}.param.step{k}"), Tensor::from_array(p.data()));
        }
    }
    outputs_by_name(c, values)
}

fn run_clip(c: &Case) -> Result<Outputs> {
    let grads = c.input_list("grads");
    let params: Vec<Tensor> = grads.iter().map(|g| Tensor::zeros(g.shape()).requires_grad_(true)).collect();
    for (p, g) in params.iter().zip(&grads) {
        p.set_grad(Some(g.data()))?;
    }
    let total = clip_grad_norm(&params, c.f32("max_norm")?, c.f32("norm_type")?)?;
    let mut values = BTreeMap::new();
    for (i, p) in params.iter().enumerate() {
        let g = p.grad().ok_or_else(|| Error::Msg(format!("clip_grad_norm dropped gradient {i}")))?;
        values.insert(format!("clipped.{i}"), Tensor::from_array(g));
    }
    values.insert("total_norm".to_string(), Tensor::scalar(total));
    outputs_by_name(c, values)
}

fn run_schedule(op: &str, c: &Case) -> Result<Outputs> {
    let n = usize_attr(c, "num_steps")?;
    let lr = || c.f64("lr");
    let lrs: Vec<f64> = match op {
        "step_lr" => {
            let (lr, size, gamma) = (lr()?, usize_attr(c, "step_size")?, c.f64("gamma")?);
            if size == 0 {
                return Err(Error::Msg("step_lr: step_size must be positive".into()));
            }
            (0..n).map(|t| step_lr(lr, size, gamma, t)).collect()
        }
        "multistep_lr" => {
            let milestones =
                c.ints("milestones")?.into_iter().map(|m| usize::try_from(m).unwrap_or(0)).collect::<Vec<_>>();
            let (lr, gamma) = (lr()?, c.f64("gamma")?);
            (0..n).map(|t| multistep_lr(lr, &milestones, gamma, t)).collect()
        }
        "exponential_lr" => {
            let (lr, gamma) = (lr()?, c.f64("gamma")?);
            (0..n).map(|t| exponential_lr(lr, gamma, t)).collect()
        }
        "cosine_annealing_lr" => {
            let (lr, t_max, eta_min) = (lr()?, usize_attr(c, "T_max")?, c.opt_f64("eta_min")?.unwrap_or(0.0));
            if t_max == 0 {
                return Err(Error::Msg("cosine_annealing_lr: T_max must be positive".into()));
            }
            (0..n).map(|t| cosine_annealing_lr(lr, t_max, eta_min, t)).collect()
        }
        "one_cycle_lr" => {
            let anneal = match c.attr("anneal_strategy").map(|_| c.str("anneal_strategy")).transpose()? {
                None | Some("cos") => Anneal::Cos,
                Some("linear") => Anneal::Linear,
                Some(s) => return Err(Error::Msg(format!("one_cycle_lr: unknown anneal_strategy {s:?}"))),
            };
            let mut s = OneCycle::new(c.f64("max_lr")?, usize_attr(c, "total_steps")?).anneal(anneal);
            s.pct_start = c.opt_f64("pct_start")?.unwrap_or(s.pct_start);
            s.div_factor = c.opt_f64("div_factor")?.unwrap_or(s.div_factor);
            s.final_div_factor = c.opt_f64("final_div_factor")?.unwrap_or(s.final_div_factor);
            s.three_phase = c.bool("three_phase")?;
            s.validate()?;
            (0..n).map(|t| s.lr_at(t)).collect()
        }
        "linear_warmup_then_linear_decay" => {
            let (lr, w, total) = (lr()?, usize_attr(c, "num_warmup_steps")?, usize_attr(c, "num_training_steps")?);
            (0..n).map(|t| linear_warmup_then_linear_decay(lr, w, total, t)).collect()
        }
        _ => unreachable!("dispatched above"),
    };
    let lrs = Tensor::from_vec(lrs.into_iter().map(|v| v as f32).collect(), &[n])?;
    outputs_by_name(c, BTreeMap::from([("lrs".to_string(), lrs)]))
}

/// The case's outputs in manifest order, taken from `values` by name.
fn outputs_by_name(c: &Case, mut values: BTreeMap<String, Tensor>) -> Result<Outputs> {
    c.spec
        .outputs
        .iter()
        .map(|name| values.remove(name).ok_or_else(|| Error::Msg(format!("the op produced no output named {name}"))))
        .collect()
}
