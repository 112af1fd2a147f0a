//! Gradient checkpointing: the same gradients as without it (dropout included), one recorded
//! node and far fewer retained bytes per checkpoint, nothing recorded under no_grad.
//!
//! The tests share process-wide state (the node count, the allocation count, the default
//! generator), so each holds `LOCK` for its whole run.

use kiln_autograd::gradcheck::uniform;
use kiln_autograd::ops::dropout::dropout_default_rng;
use kiln_autograd::{checkpoint, live_nodes, no_grad, random, Result, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Counts the bytes currently allocated by the process.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A two-layer MLP's parameters: `w1` `[h, i]`, `b1` `[h]`, `w2` `[o, h]`.
#[derive(Clone)]
struct Mlp {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    p_drop: f32,
}

impl Mlp {
    fn new(i: usize, h: usize, o: usize, p_drop: f32, seed: u64) -> Mlp {
        let p = |shape: &[usize], s: u64| Tensor::from_array(uniform(shape, -0.5, 0.5, seed + s)).requires_grad_(true);
        Mlp { w1: p(&[h, i], 1), b1: p(&[h], 2), w2: p(&[o, h], 3), p_drop }
    }

    /// `dropout(tanh(x·w1ᵀ + b1))·w2ᵀ · x[:, :1]`: the second factor uses the input twice.
    fn forward(&self, xs: &[Tensor]) -> Result<Tensor> {
        let x = &xs[0];
        let h = x.try_linear(&self.w1, Some(&self.b1))?.try_tanh()?;
        let h = if self.p_drop > 0.0 { dropout_default_rng(&h, self.p_drop, true)? } else { h };
        h.try_linear(&self.w2, None)?.try_mul(&x.try_narrow(1, 0, 1)?)
    }

    fn params(&self) -> [&Tensor; 3] {
        [&self.w1, &self.b1, &self.w2]
    }

    fn zero_grad(&self) {
        self.params().iter().for_each(|t| t.zero_grad());
    }
}

/// Loss `sum((f(2a)·c)²) + sum(2a)` through `f` checkpointed or not; returns the loss and the
/// gradients of `a` and of the parameters.
fn run(m: &Mlp, a: &Tensor, ckpt: bool) -> (f32, Vec<Vec<f32>>) {
    m.zero_grad();
    a.zero_grad();
    let x = a.mul_scalar(2.0);
    let y = if ckpt {
        let m2 = m.clone();
        checkpoint(move |xs| m2.forward(xs), std::slice::from_ref(&x)).unwrap()
    } else {
        m.forward(std::slice::from_ref(&x)).unwrap()
    };
    if ckpt {
        assert_eq!(y.grad_fn_name(), Some("checkpoint"));
    }
    let c = Tensor::from_array(uniform(y.shape(), 0.5, 1.5, 99));
    let yc = y.try_mul(&c).unwrap();
    let loss = yc.try_mul(&yc).unwrap().sum_all().try_add(&x.sum_all()).unwrap();
    loss.backward().unwrap();
    let mut grads = vec![a.grad().unwrap().to_vec_f32().unwrap()];
    grads.extend(m.params().iter().map(|t| t.grad().unwrap().to_vec_f32().unwrap()));
    (loss.item().unwrap(), grads)
}

/// The parameters' gradients are bit-for-bit equal (the same ops on the same values); the
/// input's may differ in the last bit: its two uses inside `f` are summed before the skip
/// path's gradient is added, instead of one after the other.
fn assert_close(plain: &[Vec<f32>], ckpt: &[Vec<f32>]) {
    for (v, w) in plain[0].iter().zip(&ckpt[0]) {
        assert!((v - w).abs() <= 1e-6 * v.abs().max(1.0), "input gradient: {:?} vs {:?}", plain[0], ckpt[0]);
    }
    assert_eq!(plain[1..], ckpt[1..], "parameter gradients");
}

#[test]
fn gradients_equal_those_without_checkpointing() {
    let _g = serial();
    let m = Mlp::new(3, 6, 2, 0.0, 10);
    let a = Tensor::from_array(uniform(&[4, 3], -1.0, 1.0, 11)).requires_grad_(true);
    let (plain_loss, plain) = run(&m, &a, false);
    let (ckpt_loss, ckpt) = run(&m, &a, true);
    assert_eq!(plain_loss, ckpt_loss);
    assert_close(&plain, &ckpt);
    // The gradient of a is not trivially the skip path's 2: the MLP contributes.
    assert!(plain[0].iter().any(|&g| (g - 2.0).abs() > 1e-3));
    // Everything was freed: the checkpoint node and the recomputed graph.
    assert_eq!(live_nodes(), 0);
}

#[test]
fn dropout_inside_draws_the_same_masks_when_recomputed() {
    let _g = serial();
    let m = Mlp::new(3, 64, 2, 0.5, 20);
    let a = Tensor::from_array(uniform(&[8, 3], -1.0, 1.0, 21)).requires_grad_(true);
    random::manual_seed(5);
    let (plain_loss, plain) = run(&m, &a, false);
    let after_plain = random::rng_state();
    random::manual_seed(5);
    let (ckpt_loss, ckpt) = run(&m, &a, true);
    assert_eq!(plain_loss, ckpt_loss);
    assert_close(&plain, &ckpt);
    // Backward put the generator back where the forward pass left it.
    assert_eq!(random::rng_state(), after_plain);
    // Another seed gives other masks, so the equality above is not vacuous.
    random::manual_seed(6);
    let (_, other) = run(&m, &a, true);
    assert_ne!(plain[1], other[1]);
}

#[test]
fn a_checkpoint_records_one_node_and_retains_far_fewer_bytes() {
    let _g = serial();
    let m = Mlp::new(32, 256, 8, 0.1, 30);
    let a = Tensor::from_array(uniform(&[64, 32], -1.0, 1.0, 31)).requires_grad_(true);
    let measure = |ckpt: bool| -> (usize, isize) {
        let (nodes0, bytes0) = (live_nodes(), ALLOCATED.load(Ordering::Relaxed));
        let y = if ckpt {
            let m2 = m.clone();
            checkpoint(move |xs| m2.forward(xs), std::slice::from_ref(&a)).unwrap()
        } else {
            m.forward(std::slice::from_ref(&a)).unwrap()
        };
        let retained = (live_nodes() - nodes0, ALLOCATED.load(Ordering::Relaxed) - bytes0);
        y.sum_all().backward().unwrap();
        drop(y);
        assert_eq!(live_nodes(), nodes0);
        retained
    };
    let (plain_nodes, plain_bytes) = measure(false);
    let (ckpt_nodes, ckpt_bytes) = measure(true);
    assert_eq!(ckpt_nodes, 1);
    // linear, tanh, dropout, linear, narrow, mul at least.
    assert!(plain_nodes >= 6, "{plain_nodes}");
    // The plain graph keeps at least the [64, 256] hidden activations (tanh output, dropout
    // mask, dropout output: 3 × 64 KiB); the checkpoint keeps its [64, 8] output and a few
    // small allocations.
    let hidden = (64 * 256 * 4) as isize;
    assert!(plain_bytes >= 3 * hidden, "plain graph retains {plain_bytes} bytes");
    assert!(ckpt_bytes < hidden / 8, "checkpoint retains {ckpt_bytes} bytes");
}

#[test]
fn under_no_grad_nothing_is_recorded() {
    let _g = serial();
    let m = Mlp::new(3, 4, 2, 0.0, 40);
    let a = Tensor::from_array(uniform(&[2, 3], -1.0, 1.0, 41)).requires_grad_(true);
    let m2 = m.clone();
    let before = live_nodes();
    let y = no_grad(|| checkpoint(move |xs| m2.forward(xs), std::slice::from_ref(&a))).unwrap();
    assert!(y.is_leaf() && !y.requires_grad());
    assert_eq!(live_nodes(), before);
    assert_eq!(y.to_vec_f32().unwrap(), no_grad(|| m.forward(std::slice::from_ref(&a))).unwrap().to_vec_f32().unwrap());
}

#[test]
fn inputs_not_requiring_grad_run_plainly_and_parameters_still_get_gradients() {
    let _g = serial();
    let m = Mlp::new(3, 4, 2, 0.0, 50);
    let x = Tensor::from_array(uniform(&[2, 3], -1.0, 1.0, 51));
    let m2 = m.clone();
    let y = checkpoint(move |xs| m2.forward(xs), std::slice::from_ref(&x)).unwrap();
    // Not checkpointed: the plain graph of f, through which the parameters train.
    assert_ne!(y.grad_fn_name(), Some("checkpoint"));
    y.sum_all().backward().unwrap();
    let got: Vec<Vec<f32>> = m.params().iter().map(|t| t.grad().unwrap().to_vec_f32().unwrap()).collect();
    m.zero_grad();
    m.forward(std::slice::from_ref(&x)).unwrap().sum_all().backward().unwrap();
    let want: Vec<Vec<f32>> = m.params().iter().map(|t| t.grad().unwrap().to_vec_f32().unwrap()).collect();
    assert_eq!(got, want);
}

/// A non-grad i64 input (indices) passes through; the gradient has the closed form of
/// `sum(x[idx]²)`: `2·x` at each picked row, counted per pick.
#[test]
fn non_grad_inputs_of_any_dtype_pass_through() {
    let _g = serial();
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]).unwrap().requires_grad_(true);
    let idx = Tensor::from_vec_i64(vec![2, 0, 2], &[3]).unwrap();
    let y = checkpoint(|xs| xs[0].try_index_select(0, &xs[1]), &[x.clone(), idx]).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), vec![5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
    y.try_mul(&y).unwrap().sum_all().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![2.0, 4.0, 0.0, 0.0, 20.0, 24.0]);
}

#[test]
fn nested_checkpoints_and_backward_under_no_grad() {
    let _g = serial();
    let w = Tensor::from_vec(vec![0.5, -1.5], &[2]).unwrap().requires_grad_(true);
    let x = Tensor::from_vec(vec![2.0, 3.0], &[2]).unwrap().requires_grad_(true);
    let w1 = w.clone();
    // y = (x·w)·w = x·w², checkpointed inside a checkpoint.
    let y = checkpoint(
        move |xs| {
            let w3 = w1.clone();
            let inner = checkpoint(move |ys| ys[0].try_mul(&w3), xs)?;
            inner.try_mul(&w1)
        },
        std::slice::from_ref(&x),
    )
    .unwrap();
    let loss = y.sum_all();
    // The recomputation records even when backward is called inside no_grad.
    no_grad(|| loss.backward()).unwrap();
    // d/dx = w², d/dw = 2·x·w.
    assert_eq!(x.grad().unwrap().to_vec_f32().unwrap(), vec![0.25, 2.25]);
    assert_eq!(w.grad().unwrap().to_vec_f32().unwrap(), vec![2.0, -9.0]);
    drop((y, loss));
    assert_eq!(live_nodes(), 0);
}

#[test]
fn errors_are_results() {
    let _g = serial();
    let x = Tensor::ones(&[2, 3]).requires_grad_(true);
    // An error of f in the forward pass.
    let err = checkpoint(|xs| xs[0].try_matmul(&xs[0]), std::slice::from_ref(&x)).unwrap_err().to_string();
    assert!(err.contains("matmul"), "{err}");
    // An integer result cannot be differentiated.
    let err = checkpoint(|xs| xs[0].try_argmax(Some(1), false), std::slice::from_ref(&x)).unwrap_err().to_string();
    assert!(err.contains("f32"), "{err}");
    // A function that computes something else the second time is caught in backward.
    let calls = AtomicUsize::new(0);
    let y = checkpoint(
        move |xs| {
            let n = if calls.fetch_add(1, Ordering::Relaxed) == 0 { 3 } else { 2 };
            xs[0].try_narrow(1, 0, n)
        },
        std::slice::from_ref(&x),
    )
    .unwrap();
    let err = y.sum_all().backward().unwrap_err().to_string();
    assert!(err.contains("checkpoint") && err.contains("same"), "{err}");
}
