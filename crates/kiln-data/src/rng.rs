//! [`Rng`]: the small seeded generator behind shuffling, splits and random transforms.
//!
//! The stream is defined here (SplitMix64), not by a dependency's version, so an epoch's order
//! or a crop's offsets stay the same across builds and platforms: a resumed run reproduces them.

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a seed from `seed` and further words (an epoch, an index, a stream tag): a pure
/// function, so `derive_seed(s, &[e, i])` names one fixed stream for sample `i` of epoch `e`.
pub fn derive_seed(seed: u64, words: &[u64]) -> u64 {
    let mut h = mix64(seed ^ 0x6A09_E667_F3BC_C908);
    for &w in words {
        h = mix64(h ^ mix64(w.wrapping_add(GAMMA)));
    }
    h
}

/// A seeded pseudo-random generator (SplitMix64): fast, 64-bit state, fixed stream per seed.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// A uniform integer in `0..n` without modulo bias (`0` when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        if n <= 1 {
            return 0;
        }
        // Multiply-shift with rejection of the short first interval (Lemire's method).
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// A uniform float in `[0, 1)` with 24 random bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// True with probability `p` (clamped to `[0, 1]`).
    pub fn bernoulli(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) < p
    }

    /// Shuffles `v` in place (Fisher-Yates): every order is equally likely.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }

    /// A uniformly random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_published_reference_stream() {
        // First outputs of the reference C implementation (Vigna's splitmix64.c) seeded with 0
        // and 1234567, as also listed in other SplitMix64 ports' test vectors.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut r = Rng::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn below_is_unbiased_and_in_range() {
        let mut r = Rng::new(7);
        let mut counts = [0usize; 6];
        let n = 60_000;
        for _ in 0..n {
            counts[r.below(6)] += 1;
        }
        // Chi-square with 5 degrees of freedom: 20.5 is the 0.999 quantile.
        let e = n as f64 / 6.0;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 20.5, "{counts:?} chi2 {chi2}");
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
    }

    #[test]
    fn permutation_positions_are_uniform() {
        // Where element 0 lands over many permutations of 5: uniform over the 5 positions.
        let mut counts = [0usize; 5];
        for s in 0..20_000u64 {
            let p = Rng::new(derive_seed(3, &[s])).permutation(5);
            let mut sorted = p.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
            counts[p.iter().position(|&x| x == 0).unwrap()] += 1;
        }
        let e = 4000.0;
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 18.5, "{counts:?} chi2 {chi2}"); // 4 d.o.f., 0.999 quantile
    }

    #[test]
    fn uniform_and_bernoulli_cover_their_ranges() {
        let mut r = Rng::new(11);
        let xs: Vec<f32> = (0..10_000).map(|_| r.uniform()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let hits = (0..10_000).filter(|_| r.bernoulli(0.25)).count();
        assert!((2300..2700).contains(&hits), "{hits}");
        assert!(!(0..100).any(|_| r.bernoulli(0.0)));
        assert!((0..100).all(|_| r.bernoulli(1.0)));
    }
}
