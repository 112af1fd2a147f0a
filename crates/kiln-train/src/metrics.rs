//! Classification metrics: accuracy and top-k accuracy, counted straight from the logits'
//! buffer (no tensor ops, no allocation when the logits are contiguous).

use kiln_autograd::{Array, DType, Error, Result, Tensor};

/// How many samples have their target among the `k` highest scores, and how many samples were
/// counted: `(hits, counted)`.
///
/// `logits` is `[N, C]` or `[N, C, d1, ...]` (classes along dim 1, as for cross-entropy) and
/// `targets` holds class indices, i64 `[N]` or `[N, d1, ...]`. A target is a hit when fewer
/// than `k` classes rank above it, ranking by score and, among equal scores, by lower class
/// index (so `k = 1` agrees with `argmax`, which returns the first maximum). Negative targets
/// (an `ignore_index` such as -100) are not counted; a target `>= C` is an error.
pub fn count_top_k(logits: &Array, targets: &Array, k: usize) -> Result<(usize, usize)> {
    let op = "top_k_accuracy";
    if logits.rank() < 2 {
        return Err(Error::op(op, format!("logits must be [N, C, ...], got shape {:?}", logits.shape())));
    }
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    let inner: usize = logits.shape()[2..].iter().product();
    // Targets [N, d1, ...] for logits [N, C, d1, ...] (checked without allocating: per step).
    let ts = targets.shape();
    if targets.dtype() != DType::I64 || ts.len() + 1 != logits.rank() || ts[0] != n || ts[1..] != logits.shape()[2..] {
        let mut want = vec![n];
        want.extend_from_slice(&logits.shape()[2..]);
        return Err(Error::op(
            op,
            format!(
                "targets must be i64 class indices of shape {want:?} for logits {:?}, got {} {:?}",
                logits.shape(),
                targets.dtype(),
                ts
            ),
        ));
    }
    if k == 0 {
        return Err(Error::op(op, "k must be at least 1"));
    }
    let x = logits.f32_cow()?;
    let t_owned;
    let t: &[i64] = match targets.as_slice::<i64>() {
        Some(s) => s,
        None => {
            t_owned = targets.to_vec::<i64>()?;
            &t_owned
        }
    };
    let (mut hits, mut counted) = (0usize, 0usize);
    for (i, &target) in t.iter().enumerate() {
        if target < 0 {
            continue;
        }
        let target = target as usize;
        if target >= c {
            return Err(Error::op(op, format!("target {target} is out of range for {c} classes")));
        }
        // Scores of sample i: x[base + class * inner].
        let base = (i / inner) * c * inner + i % inner;
        let score = |class: usize| x[base + class * inner];
        let s = score(target);
        let above = (0..c).filter(|&j| score(j) > s || (score(j) == s && j < target)).count();
        counted += 1;
        hits += (above < k) as usize;
    }
    Ok((hits, counted))
}

/// The fraction of samples whose highest score is their target (see [`count_top_k`] for the
/// shapes); NaN when no sample was counted.
pub fn accuracy(logits: &Tensor, targets: &Tensor) -> Result<f64> {
    top_k_accuracy(logits, targets, 1)
}

/// The fraction of samples whose target is among the `k` highest scores (see
/// [`count_top_k`]); NaN when no sample was counted.
pub fn top_k_accuracy(logits: &Tensor, targets: &Tensor, k: usize) -> Result<f64> {
    let (hits, counted) = count_top_k(&logits.data(), &targets.data(), k)?;
    Ok(hits as f64 / counted as f64)
}

/// What [`evaluate`](crate::evaluate) measures over a whole loader.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// The mean loss per sample (each batch's mean loss weighted by its size).
    pub loss: f64,
    /// Top-1 accuracy in `[0, 1]`; `None` when the targets are not class indices.
    pub accuracy: Option<f64>,
    /// `(k, top-k accuracy)` for each requested `k`.
    pub top_k: Vec<(usize, f64)>,
    /// Samples seen.
    pub samples: usize,
}

impl Metrics {
    /// The top-`k` accuracy, when it was requested.
    pub fn top(&self, k: usize) -> Option<f64> {
        self.top_k.iter().find(|(j, _)| *j == k).map(|&(_, a)| a)
    }
}

/// True when `targets` look like class indices for `output` (i64, one dim less).
pub(crate) fn is_classification(output: &Array, targets: &Array) -> bool {
    targets.dtype() == DType::I64 && output.rank() == targets.rank() + 1 && output.rank() >= 2
}
