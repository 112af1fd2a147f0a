//! The one GEMM entry point of kiln: `C (= or +=) alpha · A · B` over strided f32 matrices.
//!
//! Every caller (matmul, linear, their backward passes, convolution through im2col, attention)
//! goes through [`gemm`], so a transposed weight or a permuted attention head reaches the kernel
//! as strides, never as a copy. Which kernel runs behind it is chosen per size class (see
//! docs/performance.md, "GEMM kernel choice", for the measurements behind the thresholds):
//!
//! * small and mid-size products (`m·n·k` up to [`SMALL_MNK`], with A small enough to be
//!   re-read from cache) run a register-blocked AVX-512 kernel written here: no packing and no
//!   dispatch overhead (what dominates a 16x16 product), about 96% of the FMA peak on one
//!   core from n = 96 on, and bands of rows on rayon's pool above [`PAR_MNK`];
//! * larger products run the `gemm` crate (its AVX-512 kernels, feature `x86-v4`, detected at
//!   run time), whose cache blocking wins once the operands leave the caches, on rayon's pool.
//!
//! Products below [`PAR_MNK`] stay on the calling thread: waking a rayon worker costs more
//! than it saves there.
//!
//! [`set_kernel`] swaps the kernel for every size (benchmarks and tests use it to compare).

use rayon::prelude::*;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

/// A read-only view of an f32 matrix: element `(i, j)` is `data[offset + i·rs + j·cs]`.
/// Strides are in elements and may be 0 (a broadcast row or column).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A `rows x cols` view of `data` with the given offset and strides. Panics if an element
    /// would lie outside `data`.
    pub fn new(data: &'a [f32], offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(in_bounds(data.len(), offset, rows, cols, rs, cs), "MatRef: [{rows}, {cols}] view out of bounds");
        MatRef { data, offset, rows, cols, rs, cs }
    }

    /// A contiguous row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef::new(data, 0, rows, cols, cols, 1)
    }

    /// The transpose (a view: the strides swap).
    pub fn t(self) -> Self {
        MatRef { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn ptr(&self) -> *const f32 {
        // In bounds by construction (or one past the end of an empty view).
        self.data[self.offset.min(self.data.len())..].as_ptr()
    }
}

/// A mutable view of an f32 matrix whose elements are distinct (no stride 0, no overlap).
/// Made from initialized memory ([`MatMut::new`]) or from uninitialized memory
/// ([`MatMut::uninit`], e.g. a fresh `Vec`'s spare capacity), which [`gemm`] only writes.
#[derive(Debug)]
pub struct MatMut<'a> {
    ptr: *mut f32,
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    init: bool,
    _borrow: PhantomData<&'a mut [f32]>,
}

impl<'a> MatMut<'a> {
    /// A `rows x cols` view of `data`. Panics if an element would lie outside `data` or if two
    /// elements would share a location.
    pub fn new(data: &'a mut [f32], offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        Self::make(data.as_mut_ptr(), data.len(), offset, rows, cols, rs, cs, true)
    }

    /// A view of uninitialized memory: [`gemm`] may only overwrite it (`accumulate == false`),
    /// after which every element of the view is initialized.
    pub fn uninit(
        data: &'a mut [MaybeUninit<f32>],
        offset: usize,
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Self {
        Self::make(data.as_mut_ptr().cast(), data.len(), offset, rows, cols, rs, cs, false)
    }

    /// A contiguous row-major `rows x cols` matrix.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut::new(data, 0, rows, cols, cols, 1)
    }

    #[allow(clippy::too_many_arguments)]
    fn make(
        ptr: *mut f32,
        len: usize,
        offset: usize,
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
        init: bool,
    ) -> Self {
        assert!(in_bounds(len, offset, rows, cols, rs, cs), "MatMut: [{rows}, {cols}] view out of bounds");
        // Distinct elements: the larger stride must step over a whole run of the smaller one.
        let (small, large) = if rs <= cs { ((rows, rs), cs) } else { ((cols, cs), rs) };
        let distinct = match (rows <= 1, cols <= 1) {
            (true, true) => true,
            (true, false) => cs >= 1,
            (false, true) => rs >= 1,
            (false, false) => small.1 >= 1 && large >= small.1 * small.0,
        };
        assert!(distinct, "MatMut: strides [{rs}, {cs}] of a [{rows}, {cols}] view overlap");
        // An empty view never dereferences its pointer, so its offset need not be in bounds.
        let offset = if rows == 0 || cols == 0 { 0 } else { offset };
        MatMut { ptr, offset, rows, cols, rs, cs, init, _borrow: PhantomData }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn ptr(&mut self) -> *mut f32 {
        // SAFETY: in bounds by construction (offset 0 for an empty view).
        unsafe { self.ptr.add(self.offset) }
    }
}

fn in_bounds(len: usize, offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1).checked_mul(rs).and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
    last.and_then(|l| l.checked_add(offset)).is_some_and(|l| l < len)
}

/// Whether [`gemm`] may use rayon's pool for one product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// Split the product over the current rayon pool when it is large enough.
    Auto,
    /// Stay on the calling thread (the caller already runs products in parallel).
    Seq,
}

/// The kernel behind [`gemm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kernel {
    /// The measured choice per size class (the default).
    Auto = 0,
    /// The `gemm` crate for every size.
    GemmCrate = 1,
    /// The `matrixmultiply` crate for every size (row blocks over rayon when parallel).
    MatrixMultiply = 2,
    /// kiln's register-blocked AVX-512 kernel for every size (the `gemm` crate where AVX-512
    /// is missing or the layout does not suit it).
    Small = 3,
}

static KERNEL: AtomicU8 = AtomicU8::new(Kernel::Auto as u8);

/// Selects the kernel behind [`gemm`] for the whole process (for benchmarks and tests).
pub fn set_kernel(k: Kernel) {
    KERNEL.store(k as u8, Ordering::Relaxed);
}

/// The kernel selected by [`set_kernel`].
pub fn kernel() -> Kernel {
    match KERNEL.load(Ordering::Relaxed) {
        1 => Kernel::GemmCrate,
        2 => Kernel::MatrixMultiply,
        3 => Kernel::Small,
        _ => Kernel::Auto,
    }
}

/// Products with `m·n·k` up to this run kiln's own kernel (when AVX-512 is there and A is
/// small enough; see [`gemm`]).
pub const SMALL_MNK: usize = 192 * 192 * 192;
/// Products with `m·n·k` below this stay on one thread.
pub const PAR_MNK: usize = 80 * 80 * 80;
/// kiln's kernel re-reads A once per 32 columns of C; above this many elements of A (1 MiB,
/// the L2 cache of a Zen 4 core) with more than 32 columns, the `gemm` crate's blocking wins.
const SMALL_MAX_A: usize = 1 << 18;
/// Products `A·B` with A row-major and B column-major (`x @ Wᵀ`) with `m·n·k` up to this run
/// kiln's dot-product kernel (see [`gemm`]).
pub const DOTS_MNK: usize = 512 * 512 * 512;

/// `C = alpha·A·B` (`accumulate == false`, C is not read) or `C += alpha·A·B`
/// (`accumulate == true`), for `A: m x k`, `B: k x n`, `C: m x n`, all with arbitrary strides.
/// Panics when the shapes do not chain (callers check shapes and report errors first).
pub fn gemm(mut c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, alpha: f32, accumulate: bool, par: Par) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    assert!(
        b.rows == k && c.rows == m && c.cols == n,
        "gemm: [{}, {}] @ [{}, {}] into [{}, {}]",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.init || !accumulate, "gemm: cannot accumulate into uninitialized memory");
    if k == 0 || alpha == 0.0 {
        if !accumulate {
            let (rs, cs, p) = (c.rs, c.cs, c.ptr());
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: (i, j) is inside the bounds-checked view.
                    unsafe { p.add(i * rs + j * cs).write(0.0) };
                }
            }
        }
        return;
    }
    let mnk = m.saturating_mul(n).saturating_mul(k);
    let threads = if par == Par::Auto && mnk >= PAR_MNK { rayon::current_num_threads() } else { 1 };
    let par = if threads > 1 { Par::Auto } else { Par::Seq };
    let kern = kernel();
    let small = match kern {
        Kernel::Auto => match small::shape(&a, &b) {
            // x @ Wᵀ: the `gemm` crate splits such products poorly over threads (70-140
            // GFLOP/s at 2 threads where kiln's dot kernel reaches 150-210), but its one-thread
            // kernel beats the dot kernel while k is short.
            small::Shape::Dots => mnk <= DOTS_MNK && (threads > 1 || k >= 192 || mnk <= 32 * 32 * 128),
            _ => mnk <= SMALL_MNK && (n <= 32 || m * k <= SMALL_MAX_A),
        },
        Kernel::Small => true,
        _ => false,
    };
    if small && small::try_gemm(&mut c, &a, &b, alpha, accumulate, threads) {
        return;
    }
    if kern == Kernel::MatrixMultiply {
        mm_gemm(c, a, b, alpha, accumulate, par);
    } else {
        gemm_crate(c, a, b, alpha, accumulate, par);
    }
}

fn gemm_crate(mut c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, alpha: f32, accumulate: bool, par: Par) {
    let parallelism = match par {
        Par::Auto => gemm::Parallelism::Rayon(rayon::current_num_threads()),
        Par::Seq => gemm::Parallelism::None,
    };
    // SAFETY: the views were bounds-checked on construction, C's elements are distinct, and
    // the shapes chain (checked in `gemm`). The crate computes dst = x·dst + y·lhs·rhs,
    // reading dst only when `read_dst`.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            c.ptr(),
            c.cs as isize,
            c.rs as isize,
            accumulate,
            a.ptr(),
            a.cs as isize,
            a.rs as isize,
            b.ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A raw pointer that may cross threads: each task writes disjoint rows of C.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint row blocks of one C to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

fn mm_gemm(mut c: MatMut<'_>, a: MatRef<'_>, b: MatRef<'_>, alpha: f32, accumulate: bool, par: Par) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let beta = if accumulate { 1.0 } else { 0.0 };
    let threads = if par == Par::Auto { rayon::current_num_threads() } else { 1 };
    let (cp, ap, bp) = (SendPtr(c.ptr()), a.ptr() as usize, b.ptr() as usize);
    let run = |i0: usize, rows: usize| {
        // SAFETY: rows i0..i0+rows of A and C lie inside the bounds-checked views, and row
        // blocks of C given to different tasks are disjoint.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                alpha,
                (ap as *const f32).add(i0 * a.rs),
                a.rs as isize,
                a.cs as isize,
                bp as *const f32,
                b.rs as isize,
                b.cs as isize,
                beta,
                cp.get().add(i0 * c.rs),
                c.rs as isize,
                c.cs as isize,
            )
        }
    };
    if threads <= 1 || m < 2 * 16 {
        run(0, m);
    } else {
        let block = m.div_ceil(threads).next_multiple_of(16);
        (0..m.div_ceil(block)).into_par_iter().for_each(|t| run(t * block, block.min(m - t * block)));
    }
}

/// kiln's own kernels for small and mid-size products, where packing and dispatch cost more
/// than they save.
mod small {
    use super::{MatMut, MatRef};

    /// Which of kiln's kernels suits a layout.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Shape {
        /// B row-major (`cs == 1`): broadcast-A, multiply-add rows of B (`x86::gemm`).
        RowsOfB,
        /// A row-major and B column-major (`x @ Wᵀ`, `q @ kᵀ`): dot products (`x86::gemm_nt`).
        Dots,
        /// Neither: B must be packed first.
        Other,
    }

    /// The kernel a layout calls for.
    pub(super) fn shape(a: &MatRef<'_>, b: &MatRef<'_>) -> Shape {
        if b.cs == 1 || b.cols == 1 {
            Shape::RowsOfB
        } else if (a.cs == 1 || a.cols == 1) && (b.rs == 1 || b.rows == 1) && a.cols >= 64 {
            Shape::Dots
        } else {
            Shape::Other
        }
    }

    /// Runs the product if this machine and layout suit kiln's kernels (false otherwise),
    /// split over `threads` rayon tasks (bands of rows, or of columns when there are few rows).
    pub(super) fn try_gemm(
        c: &mut MatMut<'_>,
        a: &MatRef<'_>,
        b: &MatRef<'_>,
        alpha: f32,
        acc: bool,
        threads: usize,
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            if c.cs != 1 || !std::arch::is_x86_feature_detected!("avx512f") {
                return false;
            }
            let (m, n, k) = (a.rows, b.cols, a.cols);
            let p = Ptrs(a.ptr(), b.ptr(), c.ptr());
            let (rsa, csa, rsb, csb, rsc) = (a.rs, a.cs, b.rs, b.cs, c.rs);
            // SAFETY (all kernel calls): AVX-512F is present; the views are in bounds, C's rows
            // are distinct, and `split` hands out disjoint bands of C.
            match shape(a, b) {
                Shape::RowsOfB => split(threads, m, n, x86::MR, 32, move |i0, rows, j0, cols| unsafe {
                    let (a, b, c) = (p.a().add(i0 * rsa), p.b().add(j0), p.c().add(i0 * rsc + j0));
                    x86::gemm(rows, cols, k, a, rsa, csa, b, rsb, c, rsc, alpha, acc)
                }),
                Shape::Dots => split(threads, m, n, x86::NT, x86::NT, move |i0, rows, j0, cols| unsafe {
                    let (a, b, c) = (p.a().add(i0 * rsa), p.b().add(j0 * csb), p.c().add(i0 * rsc + j0));
                    x86::gemm_nt(rows, cols, k, a, rsa, b, csb, c, rsc, alpha, acc)
                }),
                Shape::Other => {
                    // Pack B row-major when that is cheap next to the product (a strided
                    // gather costs about as much as 16 multiply-adds).
                    if k * n > 64 * 64 && m < 128 {
                        return false;
                    }
                    PACK.with(|buf| {
                        let mut buf = buf.borrow_mut();
                        buf.clear();
                        buf.resize(k * n, 0.0);
                        let src = b.ptr();
                        // SAFETY: (i, j) < (k, n) stays inside the bounds-checked view of B,
                        // and `buf` holds k x n elements.
                        unsafe {
                            let dst = buf.as_mut_ptr();
                            if rsb == 1 {
                                // Columns of B are contiguous: read them in order.
                                for j in 0..n {
                                    let col = src.add(j * csb);
                                    for i in 0..k {
                                        *dst.add(i * n + j) = *col.add(i);
                                    }
                                }
                            } else {
                                for i in 0..k {
                                    for j in 0..n {
                                        *dst.add(i * n + j) = *src.add(i * rsb + j * csb);
                                    }
                                }
                            }
                        }
                        let bp = Ptrs(p.0, buf.as_ptr(), p.2);
                        split(threads, m, n, x86::MR, 32, move |i0, rows, j0, cols| unsafe {
                            let (a, b, c) = (bp.a().add(i0 * rsa), bp.b().add(j0), bp.c().add(i0 * rsc + j0));
                            x86::gemm(rows, cols, k, a, rsa, csa, b, n, c, rsc, alpha, acc)
                        });
                    });
                }
            }
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (c, a, b, alpha, acc, threads);
            false
        }
    }

    /// Pointers that cross into rayon tasks, which touch disjoint parts of C.
    #[cfg(target_arch = "x86_64")]
    #[derive(Clone, Copy)]
    struct Ptrs(*const f32, *const f32, *mut f32);
    // SAFETY: the tasks read A and B and write disjoint bands of C.
    #[cfg(target_arch = "x86_64")]
    unsafe impl Send for Ptrs {}
    #[cfg(target_arch = "x86_64")]
    unsafe impl Sync for Ptrs {}
    #[cfg(target_arch = "x86_64")]
    impl Ptrs {
        // Methods (not field reads) so that closures capture the whole, shareable struct.
        fn a(self) -> *const f32 {
            self.0
        }
        fn b(self) -> *const f32 {
            self.1
        }
        fn c(self) -> *mut f32 {
            self.2
        }
    }

    /// Calls `run(i0, rows, j0, cols)` over `threads` bands of an `m x n` C: bands of rows in
    /// multiples of `tm`, or of columns in multiples of `tn` when there are too few rows; all
    /// of C at once on one thread.
    #[cfg(target_arch = "x86_64")]
    fn split(
        threads: usize,
        m: usize,
        n: usize,
        tm: usize,
        tn: usize,
        run: impl Fn(usize, usize, usize, usize) + Sync,
    ) {
        use rayon::prelude::*;
        if threads <= 1 || (m < 2 * tm && n < 2 * tn) {
            run(0, m, 0, n);
        } else if m >= 2 * tm {
            let band = m.div_ceil(threads).next_multiple_of(tm);
            (0..m.div_ceil(band)).into_par_iter().for_each(|t| run(t * band, band.min(m - t * band), 0, n));
        } else {
            let band = n.div_ceil(threads).next_multiple_of(tn);
            (0..n.div_ceil(band)).into_par_iter().for_each(|t| run(0, m, t * band, band.min(n - t * band)));
        }
    }

    #[cfg(target_arch = "x86_64")]
    thread_local! {
        static PACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        /// Rows per micro-tile.
        pub(super) const MR: usize = 8;
        /// Rows and columns per tile of [`gemm_nt`].
        pub(super) const NT: usize = 4;

        /// `C (=|+=) alpha·A·B` for A row-major by rows (`cs == 1`) and B column-major
        /// (`rs == 1`), the layout of `x @ Wᵀ`: every element is a dot product of two contiguous
        /// runs of k. 4x4 tiles keep 16 zmm accumulators over k (8 loads per 16 multiply-adds),
        /// then one transpose-and-add tree reduces the 16 of them at once. Rows are taken in
        /// blocks whose A fits in L2, so A is read from cache once per 4 columns of C.
        ///
        /// # Safety
        /// AVX-512F must be available; all `m x k`, `k x n`, `m x n` elements must be valid,
        /// with C's rows distinct.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn gemm_nt(
            m: usize,
            n: usize,
            k: usize,
            a: *const f32,
            rsa: usize,
            b: *const f32,
            csb: usize,
            c: *mut f32,
            rsc: usize,
            alpha: f32,
            acc: bool,
        ) {
            let (full, rem) = (k / 16, k % 16);
            let tail: __mmask16 = ((1u32 << rem) - 1) as u16;
            let block = ((1usize << 16) / k.max(1)).max(NT).next_multiple_of(NT);
            let al = _mm512_set1_ps(alpha);
            for ib in (0..m).step_by(block) {
                let ie = (ib + block).min(m);
                for j0 in (0..n).step_by(NT) {
                    let nc = (n - j0).min(NT);
                    // Columns past the edge repeat the last one; their results are not stored.
                    let bp: [*const f32; NT] = std::array::from_fn(|j| b.add((j0 + j.min(nc - 1)) * csb));
                    for i0 in (ib..ie).step_by(NT) {
                        let nr = (ie - i0).min(NT);
                        let ap: [*const f32; NT] = std::array::from_fn(|i| a.add((i0 + i.min(nr - 1)) * rsa));
                        let mut s = [[_mm512_setzero_ps(); NT]; NT];
                        for q in 0..full {
                            let o = q * 16;
                            let bv: [__m512; NT] = std::array::from_fn(|j| _mm512_loadu_ps(bp[j].add(o)));
                            for (i, si) in s.iter_mut().enumerate() {
                                let av = _mm512_loadu_ps(ap[i].add(o));
                                for j in 0..NT {
                                    si[j] = _mm512_fmadd_ps(av, bv[j], si[j]);
                                }
                            }
                        }
                        if rem > 0 {
                            let o = full * 16;
                            let bv: [__m512; NT] = std::array::from_fn(|j| _mm512_maskz_loadu_ps(tail, bp[j].add(o)));
                            for (i, si) in s.iter_mut().enumerate() {
                                let av = _mm512_maskz_loadu_ps(tail, ap[i].add(o));
                                for j in 0..NT {
                                    si[j] = _mm512_fmadd_ps(av, bv[j], si[j]);
                                }
                            }
                        }
                        // Lanes 4i..4i+nc of `w` go to row i: a masked store from an address
                        // 4i elements before the row touches exactly those nc elements.
                        let w = _mm512_mul_ps(reduce16(&s), al);
                        let cols: __mmask16 = (1u16 << nc) - 1;
                        for i in 0..nr {
                            let (m_i, base) = (cols << (NT * i), c.add((i0 + i) * rsc + j0).wrapping_sub(NT * i));
                            let v = if acc { _mm512_add_ps(w, _mm512_maskz_loadu_ps(m_i, base)) } else { w };
                            _mm512_mask_storeu_ps(base, m_i, v);
                        }
                    }
                }
            }
        }

        /// The 16 horizontal sums of `s[i][j]`, lane `4i + j`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn reduce16(s: &[[__m512; NT]; NT]) -> __m512 {
            let x: [__m512; 16] = std::array::from_fn(|t| s[t / NT][t % NT]);
            // Per 128-bit lane: [x0+x2, y0+y2, x1+x3, y1+y3] for each pair (x, y).
            let t: [__m512; 8] = std::array::from_fn(|p| {
                let (a, b) = (x[2 * p], x[2 * p + 1]);
                _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
            });
            // Per 128-bit lane: the lane's partial sums of 4 consecutive inputs.
            let u: [__m512; 4] = std::array::from_fn(|q| {
                let (a, b) = (_mm512_castps_pd(t[2 * q]), _mm512_castps_pd(t[2 * q + 1]));
                _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)))
            });
            // Sum the four 128-bit lanes: pairs of lanes, then pairs of pairs.
            let half = |a: __m512, b: __m512| {
                _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(a, b), _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b))
            };
            let (v0, v1) = (half(u[0], u[1]), half(u[2], u[3]));
            half(v0, v1)
        }

        /// `C (=|+=) alpha·A·B` with B and C row-major by rows (`cs == 1`), A any strides.
        /// Micro-tiles of up to 8 rows x 32 columns held in 16 zmm accumulators; the last
        /// columns use masked loads and stores.
        ///
        /// # Safety
        /// AVX-512F must be available; all `m x k`, `k x n`, `m x n` elements must be valid,
        /// with C's rows distinct.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn gemm(
            m: usize,
            n: usize,
            k: usize,
            a: *const f32,
            rsa: usize,
            csa: usize,
            b: *const f32,
            rsb: usize,
            c: *mut f32,
            rsc: usize,
            alpha: f32,
            acc: bool,
        ) {
            let mut j = 0;
            while j < n {
                let w = (n - j).min(32);
                let last = w - if w > 16 { 16 } else { 0 };
                let mask: __mmask16 = if last == 16 { 0xFFFF } else { (1u16 << last) - 1 };
                let mut i = 0;
                while i < m {
                    let r = (m - i).min(MR);
                    let (ap, bp, cp) = (a.add(i * rsa), b.add(j), c.add(i * rsc + j));
                    macro_rules! tile {
                        ($($r:literal)*) => {
                            match (r, w > 16) {
                                $(($r, true) => tile::<$r, 2>(k, ap, rsa, csa, bp, rsb, cp, rsc, mask, alpha, acc),
                                  ($r, false) => tile::<$r, 1>(k, ap, rsa, csa, bp, rsb, cp, rsc, mask, alpha, acc),)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    tile!(1 2 3 4 5 6 7 8);
                    i += r;
                }
                j += w;
            }
        }

        #[allow(clippy::too_many_arguments)]
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn tile<const R: usize, const NV: usize>(
            k: usize,
            a: *const f32,
            rsa: usize,
            csa: usize,
            b: *const f32,
            rsb: usize,
            c: *mut f32,
            rsc: usize,
            last_mask: __mmask16,
            alpha: f32,
            acc: bool,
        ) {
            let masks: [__mmask16; NV] = std::array::from_fn(|v| if v + 1 == NV { last_mask } else { 0xFFFF });
            let mut sum = [[_mm512_setzero_ps(); NV]; R];
            for p in 0..k {
                let bp = b.add(p * rsb);
                let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], bp.add(16 * v)));
                let ap = a.add(p * csa);
                for (r, s) in sum.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(r * rsa));
                    for v in 0..NV {
                        s[v] = _mm512_fmadd_ps(av, bv[v], s[v]);
                    }
                }
            }
            let al = _mm512_set1_ps(alpha);
            for (r, s) in sum.iter().enumerate() {
                for v in 0..NV {
                    let cp = c.add(r * rsc + 16 * v);
                    let mut x = if alpha == 1.0 { s[v] } else { _mm512_mul_ps(s[v], al) };
                    if acc {
                        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(masks[v], cp));
                    }
                    _mm512_mask_storeu_ps(cp, masks[v], x);
                }
            }
        }
    }
}
