//! A character-level text corpus: vocabulary, encoding, splits and training windows.

use crate::dataset::{out_of_range, Dataset};
use crate::rng::{derive_seed, Rng};
use crate::{format_err, read_file};
use kiln_tensor::{bail, Array, Result};
use std::path::Path;

/// The vocabulary of a character corpus: its sorted distinct characters; token `k` is `chars[k]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
    /// Token of each char below 256 (`-1`: not in the vocabulary): the common case is a lookup.
    latin1: Box<[i64; 256]>,
}

impl CharVocab {
    /// The sorted distinct characters of `text`.
    pub fn from_text(text: &str) -> CharVocab {
        let mut seen = [false; 256];
        let mut other: Vec<char> = Vec::new();
        for c in text.chars() {
            match seen.get_mut(c as usize) {
                Some(s) => *s = true,
                None => other.push(c),
            }
        }
        other.sort_unstable();
        other.dedup();
        let mut chars: Vec<char> = (0u8..=255).filter(|&b| seen[b as usize]).map(char::from).collect();
        chars.extend(other);
        CharVocab::from_chars(chars)
    }

    /// A vocabulary of the given characters (sorted and deduplicated).
    pub fn from_chars(mut chars: Vec<char>) -> CharVocab {
        chars.sort_unstable();
        chars.dedup();
        let mut latin1 = Box::new([-1i64; 256]);
        for (k, &c) in chars.iter().enumerate() {
            if (c as u32) < 256 {
                latin1[c as usize] = k as i64;
            }
        }
        CharVocab { chars, latin1 }
    }

    /// Number of distinct characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// True for the vocabulary of an empty text.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters, in token order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The token of `c`, if it is in the vocabulary.
    pub fn token(&self, c: char) -> Option<i64> {
        if (c as u32) < 256 {
            let t = self.latin1[c as usize];
            (t >= 0).then_some(t)
        } else {
            self.chars.binary_search(&c).ok().map(|k| k as i64)
        }
    }

    /// The tokens of `text`; errors on a character outside the vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        text.chars()
            .map(|c| {
                self.token(c).ok_or_else(|| kiln_tensor::Error::op("encode", format!("{c:?} is not in the vocabulary")))
            })
            .collect()
    }

    /// The text of `tokens`; errors on a token outside `0..len()`.
    pub fn decode(&self, tokens: &[i64]) -> Result<String> {
        tokens
            .iter()
            .map(|&t| {
                usize::try_from(t).ok().and_then(|k| self.chars.get(k).copied()).ok_or_else(|| {
                    kiln_tensor::Error::op(
                        "decode",
                        format!("token {t} is out of range for a vocabulary of {}", self.chars.len()),
                    )
                })
            })
            .collect()
    }
}

/// A text as a sequence of character tokens.
#[derive(Debug, Clone)]
pub struct CharCorpus {
    /// The vocabulary (sorted distinct characters of the text).
    pub vocab: CharVocab,
    /// The whole text encoded, i64 `[n]`.
    pub tokens: Array,
}

impl CharCorpus {
    /// Encodes `text` with its own vocabulary.
    pub fn from_text(text: &str) -> CharCorpus {
        let vocab = CharVocab::from_text(text);
        let tokens = vocab.encode(text).expect("every char of the text is in its vocabulary");
        let n = tokens.len();
        CharCorpus { vocab, tokens: Array::from_vec(tokens, &[n]).expect("1-d") }
    }

    /// Reads a UTF-8 text file.
    pub fn load(path: impl AsRef<Path>) -> Result<CharCorpus> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| format_err(&path.display().to_string(), format!("not UTF-8 text: {e}")))?;
        Ok(CharCorpus::from_text(text))
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.numel()
    }

    /// True for an empty text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(train, val)` token views split at `int(train_fraction * n)` (Python's truncation, as in
    /// `n = int(0.9 * len(data))`). Errors unless `0 <= train_fraction <= 1`.
    pub fn split(&self, train_fraction: f64) -> Result<(Array, Array)> {
        if !(0.0..=1.0).contains(&train_fraction) {
            bail!("split", "train_fraction must be in [0, 1], got {train_fraction}");
        }
        let n = self.len();
        let k = ((train_fraction * n as f64) as usize).min(n);
        Ok((self.tokens.narrow(0, 0, k)?, self.tokens.narrow(0, k, n - k)?))
    }
}

/// Checks `tokens` is 1-d and long enough for one window of `block` (inputs and targets).
fn check_windows(op: &'static str, tokens: &Array, block: usize) -> Result<usize> {
    if tokens.rank() != 1 {
        bail!(op, "tokens must be 1-d, got {:?}", tokens.shape());
    }
    let n = tokens.numel();
    if block == 0 || n < block + 1 {
        bail!(op, "a window of {block} tokens (and its shifted target) needs at least {} tokens, got {n}", block + 1);
    }
    Ok(n)
}

/// Random training windows, nanoGPT style: item `(x, y)` with `x = tokens[s..s+block]` and
/// `y = tokens[s+1..s+block+1]` for a start `s` uniform in `0..n-block`, drawn from the
/// per-sample seed ([`Dataset::get_seeded`]): new windows each epoch, reproducible.
#[derive(Debug, Clone)]
pub struct RandomWindows {
    tokens: Array,
    block: usize,
    samples: usize,
    seed: u64,
}

/// The stream tag of window starts.
const WINDOW_STREAM: u64 = 0x0057_494e;

impl RandomWindows {
    /// `samples` windows of `block` tokens per epoch from 1-d `tokens`, mixed with `seed`.
    pub fn new(tokens: &Array, block: usize, samples: usize, seed: u64) -> Result<RandomWindows> {
        check_windows("RandomWindows", tokens, block)?;
        Ok(RandomWindows { tokens: tokens.clone(), block, samples, seed })
    }

    /// Window length.
    pub fn block(&self) -> usize {
        self.block
    }

    /// A batch `(x, y)` of `batch` random windows, i64 `[batch, block]` each, from `rng`
    /// (`torch.randint(len(data) - block, (batch,))`-style starts), without a loader.
    pub fn sample_batch(&self, batch: usize, rng: &mut Rng) -> Result<(Array, Array)> {
        let n = self.tokens.numel();
        let (mut xs, mut ys) = (Vec::with_capacity(batch), Vec::with_capacity(batch));
        for _ in 0..batch {
            let s = rng.below(n - self.block);
            xs.push(self.tokens.narrow(0, s, self.block)?);
            ys.push(self.tokens.narrow(0, s + 1, self.block)?);
        }
        Ok((crate::loader::stack(&xs)?, crate::loader::stack(&ys)?))
    }
}

impl Dataset for RandomWindows {
    type Item = (Array, Array);
    fn len(&self) -> usize {
        self.samples
    }
    /// Without a loader's seed, sample `index` uses seed 0.
    fn get(&self, index: usize) -> Result<(Array, Array)> {
        self.get_seeded(index, 0)
    }
    fn get_seeded(&self, index: usize, seed: u64) -> Result<(Array, Array)> {
        if index >= self.samples {
            return Err(out_of_range(index, self.samples));
        }
        let n = self.tokens.numel();
        let s = Rng::new(derive_seed(self.seed, &[WINDOW_STREAM, seed, index as u64])).below(n - self.block);
        Ok((self.tokens.narrow(0, s, self.block)?, self.tokens.narrow(0, s + 1, self.block)?))
    }
}

/// The non-overlapping windows of a token sequence (validation): item `k` is
/// `(tokens[k*block..(k+1)*block], tokens[k*block+1..(k+1)*block+1])`, `(n - 1) / block` items.
#[derive(Debug, Clone)]
pub struct Windows {
    tokens: Array,
    block: usize,
}

impl Windows {
    /// The windows of `block` tokens of 1-d `tokens`.
    pub fn new(tokens: &Array, block: usize) -> Result<Windows> {
        check_windows("Windows", tokens, block)?;
        Ok(Windows { tokens: tokens.clone(), block })
    }
}

impl Dataset for Windows {
    type Item = (Array, Array);
    fn len(&self) -> usize {
        (self.tokens.numel() - 1) / self.block
    }
    fn get(&self, index: usize) -> Result<(Array, Array)> {
        if index >= self.len() {
            return Err(out_of_range(index, self.len()));
        }
        let s = index * self.block;
        Ok((self.tokens.narrow(0, s, self.block)?, self.tokens.narrow(0, s + 1, self.block)?))
    }
}
