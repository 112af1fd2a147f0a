//! The comparison rule of the conformance format.

use kiln::{Array, DType};

/// `None` when `actual` matches `expected`; otherwise what differs.
/// Integers must be equal, infinities must match exactly, and other values must satisfy
/// `|actual − expected| ≤ atol + rtol·|expected|`.
pub fn compare(expected: &Array, actual: &Array, rtol: f64, atol: f64) -> Option<String> {
    if expected.shape() != actual.shape() {
        return Some(format!("shape {:?}, expected {:?}", actual.shape(), expected.shape()));
    }
    match expected.dtype() {
        DType::I64 | DType::U8 => {
            let (e, a) = (
                expected.to_dtype(DType::I64).ok()?.to_vec::<i64>().ok()?,
                actual.to_dtype(DType::I64).ok()?.to_vec::<i64>().ok()?,
            );
            let bad = e.iter().zip(&a).filter(|(x, y)| x != y).count();
            (bad > 0).then(|| format!("{bad} of {} integer elements differ", e.len()))
        }
        DType::F32 => {
            let Ok(a) = actual.to_dtype(DType::F32).and_then(|a| a.to_vec_f32()) else {
                return Some(format!("dtype {}, expected f32", actual.dtype()));
            };
            let e = expected.to_vec_f32().ok()?;
            let (mut max_abs, mut max_rel, mut bad) = (0f64, 0f64, 0usize);
            for (&x, &y) in e.iter().zip(&a) {
                let (x, y) = (x as f64, y as f64);
                let ok = if x.is_infinite() {
                    x == y
                } else {
                    let d = (y - x).abs();
                    if d.is_finite() {
                        max_abs = max_abs.max(d);
                        if x != 0.0 {
                            max_rel = max_rel.max(d / x.abs());
                        }
                    } else {
                        max_abs = f64::INFINITY;
                    }
                    d <= atol + rtol * x.abs()
                };
                if !ok {
                    bad += 1;
                }
            }
            (bad > 0).then(|| {
                format!(
                    "max abs err {max_abs:.3e}, max rel err {max_rel:.3e} ({bad} of {} elements out of tolerance)",
                    e.len()
                )
            })
        }
    }
}
