//! Random number generators whose state can be saved and restored, and a process-wide
//! default generator (PyTorch's `torch.manual_seed`, `torch.get_rng_state`,
//! `torch.set_rng_state`).
//!
//! A [`Generator`] is a ChaCha8 stream cipher used as a generator: its whole state is a
//! 32-byte key (the seed), a 64-bit stream number and a word position in the stream, so a
//! [`GeneratorState`] captured after any number of draws restores exactly the draws that
//! follow. Layers that draw random numbers at run time (dropout) use the default generator
//! unless they were given their own, so checkpointing the default generator's state makes a
//! resumed run draw the same masks as an uninterrupted one.
//!
//! ```
//! use kiln_autograd::random;
//! use rand::RngCore;
//! random::manual_seed(42);
//! let state = random::rng_state();
//! let a = random::with_default_generator(|g| g.next_u64());
//! random::set_rng_state(&state);
//! let b = random::with_default_generator(|g| g.next_u64());
//! assert_eq!(a, b);
//! ```
//!
//! The default generator is shared by every thread of the process: code that needs its own
//! reproducible stream while other threads draw (tests run in parallel, data-loading workers)
//! should own a [`Generator`].

use kiln_tensor::{Error, Result};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::{LazyLock, Mutex, MutexGuard};

/// The seed of the default generator until [`manual_seed`] is called (PyTorch's default
/// `torch.initial_seed()`).
pub const DEFAULT_SEED: u64 = 67_280_421_310_721;

/// A seedable random number generator whose exact state can be captured ([`Generator::state`])
/// and restored ([`Generator::set_state`]). Implements [`rand::RngCore`], so it works with every
/// `rand` distribution and with kernels that take `&mut impl RngCore`.
#[derive(Clone, PartialEq, Eq)]
pub struct Generator {
    rng: ChaCha8Rng,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").field("state", &self.state()).finish()
    }
}

impl Generator {
    /// A generator seeded with `seed` (the same seed always gives the same stream).
    pub fn new(seed: u64) -> Generator {
        Generator { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// A generator in the given state.
    pub fn from_state(state: &GeneratorState) -> Generator {
        let mut rng = ChaCha8Rng::from_seed(state.key);
        rng.set_stream(state.stream);
        rng.set_word_pos(state.word_pos);
        Generator { rng }
    }

    /// The current state: restoring it replays the draws that follow.
    pub fn state(&self) -> GeneratorState {
        GeneratorState { key: self.rng.get_seed(), stream: self.rng.get_stream(), word_pos: self.rng.get_word_pos() }
    }

    /// Puts the generator in `state`.
    pub fn set_state(&mut self, state: &GeneratorState) {
        *self = Generator::from_state(state);
    }

    /// Reseeds the generator (as a fresh `Generator::new(seed)`).
    pub fn manual_seed(&mut self, seed: u64) {
        *self = Generator::new(seed);
    }
}

impl RngCore for Generator {
    fn next_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.rng.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand::Error> {
        self.rng.try_fill_bytes(dest)
    }
}

/// The complete state of a [`Generator`]: ChaCha8's 32-byte key, its stream number and the
/// position in the stream, in 32-bit words. [`GeneratorState::to_bytes`] gives a fixed
/// [`GeneratorState::BYTES`]-byte little-endian encoding for checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GeneratorState {
    /// The ChaCha key (derived from the seed).
    pub key: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// The number of 32-bit words drawn from the stream so far.
    pub word_pos: u128,
}

impl GeneratorState {
    /// The length of [`GeneratorState::to_bytes`]: key (32), stream (8), word position (16).
    pub const BYTES: usize = 56;

    /// The state as bytes: the key, then the stream and the word position little-endian.
    pub fn to_bytes(&self) -> [u8; Self::BYTES] {
        let mut out = [0u8; Self::BYTES];
        out[..32].copy_from_slice(&self.key);
        out[32..40].copy_from_slice(&self.stream.to_le_bytes());
        out[40..].copy_from_slice(&self.word_pos.to_le_bytes());
        out
    }

    /// Reads [`GeneratorState::to_bytes`]'s encoding; errors on another length.
    pub fn from_bytes(bytes: &[u8]) -> Result<GeneratorState> {
        if bytes.len() != Self::BYTES {
            return Err(Error::op(
                "set_rng_state",
                format!("a generator state is {} bytes, got {}", Self::BYTES, bytes.len()),
            ));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[..32]);
        let stream = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes"));
        let word_pos = u128::from_le_bytes(bytes[40..].try_into().expect("16 bytes"));
        Ok(GeneratorState { key, stream, word_pos })
    }
}

static DEFAULT: LazyLock<Mutex<Generator>> = LazyLock::new(|| Mutex::new(Generator::new(DEFAULT_SEED)));

fn default_generator() -> MutexGuard<'static, Generator> {
    // A panic while drawing cannot leave the generator half-updated in a harmful way.
    DEFAULT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reseeds the default generator (PyTorch's `torch.manual_seed`).
pub fn manual_seed(seed: u64) {
    default_generator().manual_seed(seed);
}

/// The default generator's state (PyTorch's `torch.get_rng_state`).
pub fn rng_state() -> GeneratorState {
    default_generator().state()
}

/// Restores the default generator's state (PyTorch's `torch.set_rng_state`).
pub fn set_rng_state(state: &GeneratorState) {
    default_generator().set_state(state);
}

/// Runs `f` with the default generator locked (other threads wait).
pub fn with_default_generator<R>(f: impl FnOnce(&mut Generator) -> R) -> R {
    f(&mut default_generator())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_mid_block_and_through_bytes() {
        let mut g = Generator::new(7);
        // 5 words: inside the first 16-word block.
        for _ in 0..5 {
            g.next_u32();
        }
        let st = g.state();
        assert_eq!(st.word_pos, 5);
        let ahead: Vec<u32> = (0..40).map(|_| g.next_u32()).collect();
        let mut h = Generator::from_state(&GeneratorState::from_bytes(&st.to_bytes()).unwrap());
        let replay: Vec<u32> = (0..40).map(|_| h.next_u32()).collect();
        assert_eq!(ahead, replay);
        assert_eq!(g.state(), h.state());
        assert!(GeneratorState::from_bytes(&[0; 55]).unwrap_err().to_string().contains("56 bytes"));
    }

    #[test]
    fn seeds_give_distinct_reproducible_streams() {
        let (mut a, mut b, mut c) = (Generator::new(1), Generator::new(1), Generator::new(2));
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
        a.manual_seed(1);
        assert_eq!(a.next_u64(), x);
    }
}
