// Helpers shared by kiln-tensor's tests: the integration tests (`mod common;`) and the unit
// tests in src/ops/conv.rs (`include!`, which takes no inner doc comment).

/// Deterministic values in [-1, 1) (an xorshift stream seeded by `seed`).
pub fn vals(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
