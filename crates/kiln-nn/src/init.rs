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
    fn same_seed_same_values() {
        assert_eq!(uniform(&[5], 0.0, 1.0, &mut rng(7)).to_vec_f32().unwrap(), uniform(&[5], 0.0, 1.0, &mut rng(7)).to_vec_f32().unwrap());
    }
}
