//! Gradient clipping by total norm (PyTorch's `torch.nn.utils.clip_grad_norm_`).

use kiln_autograd::{Error, Result, Tensor};
use kiln_tensor::parallel::par_chunks_mut_zip;

/// Scales the gradients of `params` in place so that their total `norm_type`-norm is at most
/// `max_norm`, and returns the total norm before clipping.
///
/// The total norm is the p-norm of all gradient elements together (`norm_type` = 2 for the
/// Euclidean norm, any p > 0, or `f32::INFINITY` for the largest |g|), accumulated in f64.
/// Every gradient is multiplied by `coef = min(1, max_norm/(total + 1e-6))`. Parameters
/// without a gradient are skipped. A gradient not shared with anything else is scaled without
/// a copy.
///
/// ```
/// use kiln_autograd::{Array, Tensor};
/// use kiln_optim::clip_grad_norm;
/// let p = Tensor::zeros(&[2]).requires_grad_(true);
/// p.set_grad(Some(Array::from_vec(vec![3.0f32, 4.0], &[2])?))?;
/// let total = clip_grad_norm([&p], 1.0, 2.0)?;
/// assert_eq!(total, 5.0);
/// let g = p.grad().unwrap().to_vec_f32()?;
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
pub fn clip_grad_norm<'a, I>(params: I, max_norm: f32, norm_type: f32) -> Result<f32>
where
    I: IntoIterator<Item = &'a Tensor> + Clone,
{
    if norm_type.is_nan() || norm_type <= 0.0 {
        return Err(Error::op("clip_grad_norm", format!("norm_type must be positive or inf, got {norm_type}")));
    }
    let total = grad_norm(params.clone(), norm_type)?;
    let coef = (max_norm as f64 / (total + 1e-6)).min(1.0) as f32;
    if coef < 1.0 {
        for p in params {
            // Take the gradient out of its slot so that an unshared buffer is scaled in place.
            let Some(mut g) = p.grad() else { continue };
            p.zero_grad();
            let r = g.make_mut_f32().map(|s| par_chunks_mut_zip(s, |_, c| c.iter_mut().for_each(|x| *x *= coef)));
            p.set_grad(Some(g))?;
            r?;
        }
    }
    Ok(total as f32)
}

/// The total `norm_type`-norm (p > 0, or infinity) of the gradients of `params`, in f64.
pub fn grad_norm<'a>(params: impl IntoIterator<Item = &'a Tensor>, norm_type: f32) -> Result<f64> {
    let p = norm_type as f64;
    let mut acc = 0.0f64;
    for t in params {
        let Some(g) = t.grad() else { continue };
        let g = g.f32_cow()?;
        if p == f64::INFINITY {
            // NaN propagates (a NaN gradient gives a NaN norm, as in PyTorch).
            acc = g.iter().fold(acc, |m, &x| if m.is_nan() || x.abs() as f64 <= m { m } else { x.abs() as f64 });
        } else if p == 2.0 {
            acc += g.iter().map(|&x| x as f64 * x as f64).sum::<f64>();
        } else if p == 1.0 {
            acc += g.iter().map(|&x| x.abs() as f64).sum::<f64>();
        } else {
            acc += g.iter().map(|&x| (x.abs() as f64).powf(p)).sum::<f64>();
        }
    }
    Ok(if p == f64::INFINITY || p == 1.0 {
        acc
    } else if p == 2.0 {
        acc.sqrt()
    } else {
        acc.powf(1.0 / p)
    })
}
