//! Vectorizable math over slices, shared by the kernels of several families (exp for
//! softmax and cross-entropy, tanh and erf for GELU, ...).
//!
//! The scalar functions here ([`exp`], [`log`], [`tanh`], [`sigmoid`], [`erfc`], ...) are
//! branch-free polynomial approximations with range reduction (special values are handled
//! with selects, powers of two with bit arithmetic), so LLVM vectorizes any loop that calls
//! them. Their relative error is a few 1e-7 (about 1–3 ulp) over the whole f32 range, and
//! they return the IEEE results at ±inf, NaN, overflow and underflow. Each takes a
//! `const FMA: bool`: `true` fuses multiply-adds and must be used only where the CPU has FMA
//! (inside the dispatched kernels below, which pass the right value for the target).
//!
//! The slice drivers ([`map1_slice`], [`map2_slices`], ...) are compiled for AVX-512,
//! AVX2+FMA and the baseline target, and pick one at run time, so a portable binary still
//! runs 16-lane kernels on an AVX-512 machine. A kernel is a small `Copy` value implementing
//! [`Map1`] or [`Map2`]; [`Fn1`]/[`Fn2`] wrap plain closures.

use multiversion::multiversion;
use std::mem::MaybeUninit;

/// `a * b + c`, fused (one rounding) when `FMA`.
#[inline(always)]
pub fn fma<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Horner evaluation of `c[0] + c[1] x + c[2] x² + ...`.
#[inline(always)]
fn poly<const FMA: bool, const N: usize>(x: f32, c: &[f32; N]) -> f32 {
    let mut p = c[N - 1];
    let mut i = N - 1;
    while i > 0 {
        i -= 1;
        p = fma::<FMA>(p, x, c[i]);
    }
    p
}

/// `2^n` for `n` in [-126, 127], built from the exponent bits.
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

// Minimax coefficients (Remez fits in double precision, rounded to f32):
// exp(r) = 1 + r + r²·P(r) on |r| ≤ ln2/2 (relative error of the fit 3e-9).
const EXP_P: [f32; 6] = [5e-1, 1.6666667e-1, 4.1666463e-2, 8.333361e-3, 1.3933856e-3, 1.9857896e-4];
// log(1+f) = f − f²/2 + f³·Q(f) on [√½ − 1, √2 − 1] (relative error of the fit 3e-8).
const LOG_Q: [f32; 8] =
    [3.3333325e-1, -2.5000286e-1, 2.000193e-1, -1.6643205e-1, 1.4188488e-1, -1.294558e-1, 1.2814492e-1, -8.3174795e-2];
// tanh(x) = x + x³·T(x²) on |x| < 0.625 (absolute error of T 4e-8).
const TANH_T: [f32; 5] = [-3.3333328e-1, 1.3332795e-1, -5.385407e-2, 2.1010082e-2, -6.113193e-3];
// erf(x) = x·E(x²) on |x| ≤ 1 (relative error of the fit 4e-8).
const ERF_E: [f32; 6] =
    [std::f32::consts::FRAC_2_SQRT_PI, -3.7612325e-1, 1.128018e-1, -2.6711311e-2, 4.9175513e-3, -5.6314224e-4];
// erfc(z) = t·exp(−z² + H(t)) with t = 1/(1 + z/2), z ≥ 0 (absolute error of H 5e-8).
const ERFC_H: [f32; 10] = [
    -1.265453,
    9.987261e-1,
    3.85907e-1,
    3.781126e-2,
    -7.3925774e-3,
    -6.524623e-2,
    -7.1311414e-1,
    1.1685616,
    -6.8555045e-1,
    1.4575055e-1,
];

/// `e^x`. Exact at the extremes: `exp(-inf) = 0`, `exp(+inf) = inf`, overflow gives inf,
/// underflow goes through the subnormals to 0, NaN propagates.
#[inline(always)]
pub fn exp<const FMA: bool>(x: f32) -> f32 {
    // Adding -0.0 is an exact identity that the compiler folds away.
    exp_hi_lo::<FMA>(x, -0.0)
}

/// `e^(hi + lo)` without rounding `hi + lo` first, for an exact `hi` and a small correction
/// `lo` (|lo| ≲ 2). Keeps full accuracy where `hi` is large and carries all the magnitude.
#[inline(always)]
pub fn exp_hi_lo<const FMA: bool>(hi: f32, lo: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2^15.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to an integer that sits in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    // Beyond these, e^x is inf / rounds to 0 anyway; clamping keeps n in range. NaN passes.
    let hi = if hi > 89.0 { 89.0 } else { hi };
    let hi = if hi < -104.0 { -104.0 } else { hi };
    let t = fma::<FMA>(hi + lo, LOG2E, SHIFT);
    let n = t - SHIFT;
    let r = fma::<FMA>(n, -LN2_HI, hi);
    let r = fma::<FMA>(n, -LN2_LO, r) + lo;
    let p = poly::<FMA, 6>(r, &EXP_P);
    let y = fma::<FMA>(p, r * r, r) + 1.0;
    // y·2^n in two steps, so that n in [-153, 129] neither overflows the exponent field
    // nor skips the subnormal rounding.
    let ni = t.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    y * pow2i(n1) * pow2i(n2)
}

/// Natural logarithm: `log(0) = -inf`, `log(x < 0) = NaN`, `log(inf) = inf`, subnormals
/// handled, NaN propagates.
#[inline(always)]
pub fn log<const FMA: bool>(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const SQRT_HALF_BITS: u32 = 0x3f35_04f3;
    // Scale subnormals into the normal range.
    let tiny = x < f32::MIN_POSITIVE;
    let xs = if tiny { x * 8_388_608.0 } else { x };
    // x = 2^e · m with m in [√½, √2).
    let ix = xs.to_bits().wrapping_sub(SQRT_HALF_BITS);
    let e = ((ix as i32) >> 23) as f32 - if tiny { 23.0 } else { 0.0 };
    let m = f32::from_bits((ix & 0x007f_ffff).wrapping_add(SQRT_HALF_BITS));
    let f = m - 1.0;
    let f2 = f * f;
    let q = poly::<FMA, 8>(f, &LOG_Q);
    let lo = fma::<FMA>(f2 * f, q, fma::<FMA>(e, LN2_LO, -0.5 * f2));
    let y = fma::<FMA>(e, LN2_HI, f + lo);
    let y = if x == f32::INFINITY { f32::INFINITY } else { y };
    let y = if x == 0.0 { f32::NEG_INFINITY } else { y };
    if x < 0.0 || x.is_nan() {
        f32::NAN
    } else {
        y
    }
}

/// `log(1 + w)` for `w ≥ 0` (as used by softplus), accurate also for tiny `w`.
#[inline(always)]
pub fn log1p_pos<const FMA: bool>(w: f32) -> f32 {
    // u − 1 is exact, and log(u)/(u − 1) varies slowly, so the ratio corrects u's rounding.
    let u = 1.0 + w;
    let d = u - 1.0;
    let r = log::<FMA>(u) * (w / d);
    let r = if d == 0.0 { w } else { r };
    if w == f32::INFINITY {
        w
    } else {
        r
    }
}

/// Hyperbolic tangent: ±1 at ±inf, NaN propagates.
#[inline(always)]
pub fn tanh<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let s = x * x;
    let small = fma::<FMA>(x * s, poly::<FMA, 5>(s, &TANH_T), x);
    let large = (1.0 - 2.0 / (exp::<FMA>(a + a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

/// `1 / (1 + e^-x)`, accurate to a few ulp relative also for large negative `x`.
#[inline(always)]
pub fn sigmoid<const FMA: bool>(x: f32) -> f32 {
    let e = exp::<FMA>(-x.abs());
    let d = 1.0 / (1.0 + e);
    if x >= 0.0 {
        d
    } else {
        e * d
    }
}

/// `erfc(z)` for `z ≥ 0` (relative error a few 1e-7 down to the f32 underflow at z ≈ 9).
#[inline(always)]
pub fn erfc_pos<const FMA: bool>(z: f32) -> f32 {
    erfc_core::<FMA>(z, z, 1.0)
}

/// `erfc(z)` for `z ≥ 0` where `z² = scale·a²` (`scale` a power of two), so that callers
/// with `z = a/√2` avoid rounding `z` before squaring it.
#[inline(always)]
fn erfc_core<const FMA: bool>(z: f32, a: f32, scale: f32) -> f32 {
    let t = 1.0 / fma::<FMA>(z, 0.5, 1.0);
    let h = poly::<FMA, 10>(t, &ERFC_H);
    // e^(−z²) loses |z²|·2^-24 relative to the rounding of z² (1e-6 at z = 4). With ah = a
    // cut to 12 bits, ah² is exact and −z² = −scale·ah² + scale·(ah − a)(ah + a) leaves a
    // small remainder that goes with h.
    let ah = f32::from_bits(a.to_bits() & 0xffff_f000);
    let rest = fma::<FMA>(scale * (ah - a), ah + a, h);
    let r = t * exp_hi_lo::<FMA>(-(scale * ah * ah), rest);
    // erfc is 0 in f32 beyond z ≈ 10.05; there the split above is out of its range.
    if z > 11.0 {
        0.0
    } else {
        r
    }
}

/// `e^(−x²/2)` (the Gaussian kernel), without the error of rounding `x²` first.
#[inline(always)]
pub fn exp_neg_half_sq<const FMA: bool>(x: f32) -> f32 {
    let xh = f32::from_bits(x.to_bits() & 0xffff_f000);
    let r = exp_hi_lo::<FMA>(-0.5 * (xh * xh), 0.5 * ((xh - x) * (xh + x)));
    // e^(−x²/2) is 0 in f32 beyond |x| ≈ 14.4; there the split above is out of its range.
    if x.abs() > 15.0 {
        0.0
    } else {
        r
    }
}

/// The complementary error function `1 − erf(x)`.
#[inline(always)]
pub fn erfc<const FMA: bool>(x: f32) -> f32 {
    let r = erfc_pos::<FMA>(x.abs());
    if x < 0.0 {
        2.0 - r
    } else {
        r
    }
}

/// The error function (relatively accurate also near 0).
#[inline(always)]
pub fn erf<const FMA: bool>(x: f32) -> f32 {
    let near = x * poly::<FMA, 6>(x * x, &ERF_E);
    let far = (1.0 - erfc_pos::<FMA>(x.abs())).copysign(x);
    if x.abs() < 1.0 {
        near
    } else {
        far
    }
}

/// `Φ(x) = (1 + erf(x/√2)) / 2`, the standard normal CDF, relatively accurate in both tails.
#[inline(always)]
pub fn normal_cdf<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    let e = erfc_core::<FMA>(a * std::f32::consts::FRAC_1_SQRT_2, a, 0.5);
    0.5 * if x < 0.0 { e } else { 2.0 - e }
}

// ------------------------------------------------------------------ kernels and drivers

/// An elementwise function of one f32, for the dispatched slice drivers.
pub trait Map1: Copy + Send + Sync {
    /// The value at `x`; `FMA` says whether the code is compiled for a CPU with FMA.
    fn apply<const FMA: bool>(self, x: f32) -> f32;
}

/// An elementwise function of two f32s, for the dispatched slice drivers.
pub trait Map2: Copy + Send + Sync {
    /// The value at `(a, b)`; `FMA` says whether the code is compiled for a CPU with FMA.
    fn apply<const FMA: bool>(self, a: f32, b: f32) -> f32;
}

/// A [`Map1`] from a closure (for kernels that need no FMA-dependent math).
#[derive(Clone, Copy)]
pub struct Fn1<F>(pub F);
impl<F: Fn(f32) -> f32 + Copy + Send + Sync> Map1 for Fn1<F> {
    #[inline(always)]
    fn apply<const FMA: bool>(self, x: f32) -> f32 {
        (self.0)(x)
    }
}

/// A [`Map2`] from a closure.
#[derive(Clone, Copy)]
pub struct Fn2<F>(pub F);
impl<F: Fn(f32, f32) -> f32 + Copy + Send + Sync> Map2 for Fn2<F> {
    #[inline(always)]
    fn apply<const FMA: bool>(self, a: f32, b: f32) -> f32 {
        (self.0)(a, b)
    }
}

/// `e^x` as a kernel.
#[derive(Clone, Copy, Debug)]
pub struct Exp;
impl Map1 for Exp {
    #[inline(always)]
    fn apply<const FMA: bool>(self, x: f32) -> f32 {
        exp::<FMA>(x)
    }
}

/// `dst[i] = k(src[i])` (the lengths must match). `dst` may be uninitialized: every element
/// is written.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma", "x86_64+avx2+fma"))]
pub fn map1_slice<K: Map1>(k: K, src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    const FMA: bool = multiversion::target::target_cfg_f!(target_feature = "fma");
    assert_eq!(src.len(), dst.len(), "map1_slice: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        d.write(k.apply::<FMA>(s));
    }
}

/// `x[i] = k(x[i])`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma", "x86_64+avx2+fma"))]
pub fn map1_inplace<K: Map1>(k: K, x: &mut [f32]) {
    const FMA: bool = multiversion::target::target_cfg_f!(target_feature = "fma");
    for v in x.iter_mut() {
        *v = k.apply::<FMA>(*v);
    }
}

/// `dst[i] = k(a[i], b[i])` (the lengths must match; `dst` may be uninitialized).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma", "x86_64+avx2+fma"))]
pub fn map2_slices<K: Map2>(k: K, a: &[f32], b: &[f32], dst: &mut [MaybeUninit<f32>]) {
    const FMA: bool = multiversion::target::target_cfg_f!(target_feature = "fma");
    assert!(a.len() == dst.len() && b.len() == dst.len(), "map2_slices: length mismatch");
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        d.write(k.apply::<FMA>(x, y));
    }
}

/// `x[i] = k(x[i], b[i])` (the lengths must match).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma", "x86_64+avx2+fma"))]
pub fn map2_inplace<K: Map2>(k: K, x: &mut [f32], b: &[f32]) {
    const FMA: bool = multiversion::target::target_cfg_f!(target_feature = "fma");
    assert_eq!(x.len(), b.len(), "map2_inplace: length mismatch");
    for (v, &y) in x.iter_mut().zip(b) {
        *v = k.apply::<FMA>(*v, y);
    }
}

/// `dst[i] = k(a[i], b)` (`dst` may be uninitialized).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma", "x86_64+avx2+fma"))]
pub fn map2_slice_scalar<K: Map2>(k: K, a: &[f32], b: f32, dst: &mut [MaybeUninit<f32>]) {
    const FMA: bool = multiversion::target::target_cfg_f!(target_feature = "fma");
    assert_eq!(a.len(), dst.len(), "map2_slice_scalar: length mismatch");
    for (d, &x) in dst.iter_mut().zip(a) {
        d.write(k.apply::<FMA>(x, b));
    }
}

/// `dst[i] = k(a, b[i])` (`dst` may be uninitialized).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512dq+avx512bw+avx2+fma", "x86_64+avx2+fma"))]
pub fn map2_scalar_slice<K: Map2>(k: K, a: f32, b: &[f32], dst: &mut [MaybeUninit<f32>]) {
    const FMA: bool = multiversion::target::target_cfg_f!(target_feature = "fma");
    assert_eq!(b.len(), dst.len(), "map2_scalar_slice: length mismatch");
    for (d, &y) in dst.iter_mut().zip(b) {
        d.write(k.apply::<FMA>(a, y));
    }
}

/// Views initialized f32s as possibly-uninitialized ones, for the drivers' `dst`. Private:
/// writing `MaybeUninit::uninit()` through the result would de-initialize `x`.
fn as_uninit(x: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: MaybeUninit<f32> has f32's layout, and the drivers only ever write
    // initialized values through it, so `x` stays initialized.
    unsafe { &mut *(x as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// A new `Vec` of `n` elements, each written by `fill`.
///
/// # Safety
/// `fill` must initialize every element of the slice it is given.
pub(crate) unsafe fn filled_vec(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller guarantees that `fill` initialized all n elements.
    unsafe { v.set_len(n) };
    v
}

/// `dst[i] = exp(src[i])` (the lengths must match).
pub fn exp_slice(src: &[f32], dst: &mut [f32]) {
    map1_slice(Exp, src, as_uninit(dst))
}

/// `x[i] = exp(x[i])`.
pub fn exp_inplace(x: &mut [f32]) {
    map1_inplace(Exp, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error against an f64 reference, with an absolute floor for results near 0.
    fn check(
        name: &str,
        f: impl Fn(f32) -> f32,
        reference: impl Fn(f64) -> f64,
        xs: impl Iterator<Item = f32>,
        tol: f64,
    ) {
        let mut worst = (0.0f64, 0.0f32);
        for x in xs {
            let want = reference(x as f64);
            let got = f(x) as f64;
            let err = if want == 0.0 { got.abs() / f32::MIN_POSITIVE as f64 } else { ((got - want) / want).abs() };
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 < tol, "{name}: relative error {} at x = {}", worst.0, worst.1);
    }

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_is_accurate_over_the_normal_range() {
        for fma_ in [false, true] {
            let f = |x| if fma_ { exp::<true>(x) } else { exp::<false>(x) };
            check("exp", f, f64::exp, grid(-87.0, 88.7, 200_000), 3e-7);
            check("exp", f, f64::exp, grid(-1.0, 1.0, 100_000), 2e-7);
        }
    }

    #[test]
    fn exp_special_values_and_subnormals() {
        let e = exp::<false>;
        assert_eq!(e(f32::NEG_INFINITY), 0.0);
        assert_eq!(e(f32::INFINITY), f32::INFINITY);
        assert_eq!(e(89.0), f32::INFINITY);
        assert_eq!(e(1e30), f32::INFINITY);
        assert_eq!(e(-1e30), 0.0);
        assert_eq!(e(-200.0), 0.0);
        assert_eq!(e(0.0), 1.0);
        assert!(e(f32::NAN).is_nan());
        assert_eq!(e(88.72), 88.72f32.exp());
        // Subnormal results agree with std to within one unit of the smallest subnormal.
        for x in [-88.0f32, -90.0, -95.5, -100.0, -103.0] {
            let (got, want) = (e(x), (x as f64).exp());
            assert!((got as f64 - want).abs() <= 1.5e-45 + 3e-7 * want, "exp({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn log_is_accurate_and_handles_special_values() {
        for fma_ in [false, true] {
            let f = |x| if fma_ { log::<true>(x) } else { log::<false>(x) };
            check("log", f, f64::ln, grid(0.5, 2.0, 100_000), 3e-7);
            check("log", f, f64::ln, grid(1e-3, 1e3, 100_000), 2e-7);
            check("log", f, f64::ln, (0..2000).map(|i| 1e-44f32 * 1.01f32.powi(i)), 2e-7);
            check("log", f, f64::ln, (0..2000).map(|i| 1e30f32 * 1.02f32.powi(i)).filter(|x| x.is_finite()), 2e-7);
        }
        let l = log::<false>;
        assert_eq!(l(0.0), f32::NEG_INFINITY);
        assert_eq!(l(-0.0), f32::NEG_INFINITY);
        assert_eq!(l(f32::INFINITY), f32::INFINITY);
        assert!(l(-1.0).is_nan() && l(f32::NEG_INFINITY).is_nan() && l(f32::NAN).is_nan());
        assert_eq!(l(1.0), 0.0);
        assert_eq!(l(f32::MAX), f32::MAX.ln());
        assert!((l(1e-45) as f64 - (1e-45f32 as f64).ln()).abs() < 1e-5);
    }

    #[test]
    fn log1p_pos_is_accurate_for_tiny_and_large_arguments() {
        let f = log1p_pos::<false>;
        check("log1p", f, f64::ln_1p, (0..3000).map(|i| 1e-30f32 * 1.03f32.powi(i)).filter(|&x| x <= 1.0), 3e-7);
        assert_eq!(f(0.0), 0.0);
        assert_eq!(f(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn tanh_and_sigmoid_are_accurate_and_saturate() {
        for fma_ in [false, true] {
            let t = |x| if fma_ { tanh::<true>(x) } else { tanh::<false>(x) };
            check("tanh", t, f64::tanh, grid(-10.0, 10.0, 200_001), 3e-7);
            check("tanh", t, f64::tanh, (0..1000).map(|i| 1e-30f32 * 1.1f32.powi(i)).filter(|&x| x < 1.0), 2e-7);
            let s = |x| if fma_ { sigmoid::<true>(x) } else { sigmoid::<false>(x) };
            check("sigmoid", s, |x| 1.0 / (1.0 + (-x).exp()), grid(-80.0, 30.0, 200_000), 3e-7);
        }
        let t = tanh::<false>;
        assert_eq!(t(f32::INFINITY), 1.0);
        assert_eq!(t(f32::NEG_INFINITY), -1.0);
        assert_eq!(t(50.0), 1.0);
        assert_eq!(t(-1e30), -1.0);
        assert!(t(f32::NAN).is_nan());
        let s = sigmoid::<false>;
        assert_eq!(s(f32::INFINITY), 1.0);
        assert_eq!(s(f32::NEG_INFINITY), 0.0);
        assert_eq!(s(0.0), 0.5);
        assert_eq!(s(1e30), 1.0);
        assert!(s(f32::NAN).is_nan());
    }

    /// erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1)), for |x| < 2.
    fn erf_series(x: f64) -> f64 {
        let (mut sum, mut term, mut n) = (0.0, x, 0.0);
        while term.abs() > 1e-20 * x.abs() {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    /// erfc in f64 from its continued fraction (large z) or the Taylor series of erf (small z).
    fn erfc_ref(x: f64) -> f64 {
        if x < 0.0 {
            return 2.0 - erfc_ref(-x);
        }
        if x < 2.0 {
            1.0 - erf_series(x)
        } else {
            // erfc(x) = e^{-x²}/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), evaluated bottom-up.
            let mut f = x;
            for k in (1..200).rev() {
                f = x + (k as f64 / 2.0) / f;
            }
            (-x * x).exp() / std::f64::consts::PI.sqrt() / f
        }
    }

    #[test]
    fn erfc_and_erf_are_accurate() {
        for fma_ in [false, true] {
            let e = |x| if fma_ { erfc::<true>(x) } else { erfc::<false>(x) };
            check("erfc", e, erfc_ref, grid(-6.0, 9.0, 200_000), 4e-7);
        }
        check("erf", erf::<false>, |x| 1.0 - erfc_ref(x), grid(-5.0, 5.0, 100_001), 3e-7);
        check("erf", erf::<true>, erf_series, (0..1000).map(|i| 1e-30f32 * 1.1f32.powi(i)).filter(|&x| x < 1.0), 3e-7);
        assert_eq!(erf::<false>(f32::INFINITY), 1.0);
        assert_eq!(erf::<false>(f32::NEG_INFINITY), -1.0);
        check("normal_cdf", normal_cdf::<false>, |x| 0.5 * erfc_ref(-x / 2f64.sqrt()), grid(-12.0, 6.0, 50_000), 6e-7);
        assert_eq!(erfc::<false>(f32::INFINITY), 0.0);
        assert_eq!(erfc::<false>(f32::NEG_INFINITY), 2.0);
        assert_eq!((erfc::<false>(1e20), erfc::<false>(-1e20), erfc::<false>(10.5)), (0.0, 2.0, 0.0));
        assert_eq!(erf::<false>(0.0), 0.0);
        assert!(erfc::<false>(f32::NAN).is_nan());
    }

    #[test]
    fn gaussian_kernel_is_accurate_in_the_tail() {
        check("exp(-x²/2)", exp_neg_half_sq::<false>, |x| (-0.5 * x * x).exp(), grid(-13.0, 13.0, 100_001), 3e-7);
        check("exp(-x²/2)", exp_neg_half_sq::<true>, |x| (-0.5 * x * x).exp(), grid(-13.0, 13.0, 100_001), 3e-7);
        assert_eq!(exp_neg_half_sq::<false>(f32::INFINITY), 0.0);
        assert_eq!(exp_neg_half_sq::<false>(-1e20), 0.0);
        assert!(exp_neg_half_sq::<false>(f32::NAN).is_nan());
    }

    #[test]
    fn slice_drivers_match_the_scalar_functions() {
        let src: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.17).collect();
        let mut dst = vec![0.0; src.len()];
        exp_slice(&src, &mut dst);
        for (&x, &y) in src.iter().zip(&dst) {
            let want = (x as f64).exp();
            assert!(((y as f64) - want).abs() <= 3e-7 * want + 1.5e-45, "exp({x}) = {y}");
        }
        let mut v = src.clone();
        exp_inplace(&mut v);
        assert_eq!(v, dst);
        let mut d2 = vec![0.0; src.len()];
        map2_slices(Fn2(|a: f32, b: f32| a * b), &src, &dst, as_uninit(&mut d2));
        assert!(d2.iter().zip(src.iter().zip(&dst)).all(|(&o, (&a, &b))| o == a * b));
    }
}
