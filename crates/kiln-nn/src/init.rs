//! Parameter initialisation, with PyTorch's default schemes and a seedable generator.

use kiln_autograd::{Array, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A seeded random generator for initialisation (reproducible runs).
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Values drawn uniformly from `[lo, hi)`.
pub fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut impl Rng) -> Array {
    let n: usize = shape.iter().product();
    let v = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Array::from_vec(v, shape).expect("length equals the shape's element count")
}

/// Values drawn from the normal distribution `N(mean, std²)` (Box–Muller).
pub fn normal(shape: &[usize], mean: f32, std: f32, rng: &mut impl Rng) -> Array {
    let n: usize = shape.iter().product();
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        // u1 in (0, 1] so its log is finite.
        let u1 = 1.0 - rng.gen::<f64>();
        let u2 = rng.gen::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        v.push(mean + std * (r * t.cos()) as f32);
        if v.len() < n {
            v.push(mean + std * (r * t.sin()) as f32);
        }
    }
    Array::from_vec(v, shape).expect("length equals the shape's element count")
}

/// PyTorch's default for `Linear`/`Conv` weights: `kaiming_uniform_(a = √5)`, i.e. uniform in
/// `±1/√fan_in`, where `fan_in` is the product of every dim but the first.
pub fn default_weight(shape: &[usize], rng: &mut impl Rng) -> Tensor {
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    let bound = 1.0 / (fan_in as f32).sqrt();
    Tensor::from_array(uniform(shape, -bound, bound, rng)).requires_grad_(true)
}

/// PyTorch's default for biases: uniform in `±1/√fan_in` of the layer's weight.
pub fn default_bias(len: usize, fan_in: usize, rng: &mut impl Rng) -> Tensor {
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    Tensor::from_array(uniform(&[len], -bound, bound, rng)).requires_grad_(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_weight_respects_the_fan_in_bound_and_fills_it() {
        let w = default_weight(&[64, 100], &mut rng(0)).to_vec_f32().unwrap();
        let (lo, hi) = w.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(lo >= -0.1 && hi < 0.1 && lo < -0.09 && hi > 0.09, "{lo} {hi}");
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        assert!(mean.abs() < 0.005, "{mean}");
    }

    #[test]
    fn normal_has_the_requested_moments() {
        let v = normal(&[20_000], 1.5, 2.0, &mut rng(3)).to_vec_f32().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        // Standard errors: 2/√n ≈ 0.014 for the mean, about 0.04 for the variance.
        assert!((mean - 1.5).abs() < 0.06, "{mean}");
        assert!((var - 4.0).abs() < 0.2, "{var}");
        let within_one_std = v.iter().filter(|&&x| (x - 1.5).abs() < 2.0).count() as f64 / n;
        assert!((within_one_std - 0.6827).abs() < 0.02, "{within_one_std}");
    }

    #[test]
    fn same_seed_same_values() {
        assert_eq!(
            uniform(&[5], 0.0, 1.0, &mut rng(7)).to_vec_f32().unwrap(),
            uniform(&[5], 0.0, 1.0, &mut rng(7)).to_vec_f32().unwrap()
        );
    }
}
