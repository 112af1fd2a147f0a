//! [`Tensor`]: an [`Array`] that records the ops applied to it.

use crate::grad_mode::is_grad_enabled;
use crate::graph::{self, BackwardFn, Edge, Node};
use kiln_tensor::layout::Dims;
use kiln_tensor::{Array, DType, Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// An n-d array that records the ops applied to it, so gradients can flow back.
///
/// Cloning is cheap (a reference count): clones are the same tensor, sharing data and
/// gradient. An op records itself only when grad mode is on and some input requires grad.
///
/// ```
/// use kiln_autograd::Tensor;
/// let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3])?.requires_grad_(true);
/// let y = (&x * &x).sum_all();
/// y.backward()?;
/// assert_eq!(x.grad().unwrap().to_vec_f32()?, vec![2.0, 4.0, 6.0]);
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor {
    inner: Arc<Inner>,
}

struct Inner {
    shape: Dims,
    data: RwLock<Array>,
    requires_grad: AtomicBool,
    grad_fn: Option<Arc<Node>>,
    grad: Mutex<Option<Array>>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}", self.data())?;
        if let Some(n) = &self.inner.grad_fn {
            write!(f, ", grad_fn={}", n.name)?;
        } else if self.requires_grad() {
            write!(f, ", requires_grad")?;
        }
        write!(f, ")")
    }
}

impl From<Array> for Tensor {
    fn from(a: Array) -> Tensor {
        Tensor::from_array(a)
    }
}

impl Tensor {
    // ---------------------------------------------------------------- construction

    /// A leaf tensor over `data` that does not require grad.
    pub fn from_array(data: Array) -> Tensor {
        Tensor::make(data, false, None)
    }

    fn make(data: Array, requires_grad: bool, grad_fn: Option<Arc<Node>>) -> Tensor {
        Tensor {
            inner: Arc::new(Inner {
                shape: Dims::from_slice(data.shape()),
                data: RwLock::new(data),
                requires_grad: AtomicBool::new(requires_grad),
                grad_fn,
                grad: Mutex::new(None),
            }),
        }
    }

    /// A contiguous f32 tensor of `shape` over `data`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_array(Array::from_vec(data, shape)?))
    }

    /// A contiguous i64 tensor (indices, targets, token ids).
    pub fn from_vec_i64(data: Vec<i64>, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_array(Array::from_vec(data, shape)?))
    }

    /// A 0-d f32 tensor.
    pub fn scalar(v: f32) -> Tensor {
        Tensor::from_array(Array::scalar(v))
    }
    /// Zeros of `shape`.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::from_array(Array::zeros(shape))
    }
    /// Ones of `shape`.
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::from_array(Array::ones(shape))
    }
    /// `shape` filled with `v`.
    pub fn full(shape: &[usize], v: f32) -> Tensor {
        Tensor::from_array(Array::full(shape, v))
    }

    /// The output of a differentiable op: records `backward` (the op's backward rule) when
    /// grad mode is on and any of `inputs` requires grad; otherwise drops it unrun, so
    /// nothing it captured is retained. This, or [`Tensor::non_differentiable`], is the only
    /// way an op can produce a tensor: an op cannot be differentiable without a backward.
    pub fn from_op<F>(data: Array, name: &'static str, inputs: &[&Tensor], backward: F) -> Tensor
    where
        F: FnOnce(&Array, &[bool]) -> Result<Vec<Option<Array>>> + Send + 'static,
    {
        if !is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return Tensor::from_array(data);
        }
        let edges = inputs
            .iter()
            .map(|t| match (&t.inner.grad_fn, t.requires_grad()) {
                (Some(n), _) => Edge::Node(n.clone()),
                (None, true) => Edge::Leaf((*t).clone()),
                (None, false) => Edge::None,
            })
            .collect();
        let node = Arc::new(Node::new(name, Dims::from_slice(data.shape()), Box::new(backward) as BackwardFn, edges));
        Tensor::make(data, true, Some(node))
    }

    /// The output of an op that has no gradient (argmax, comparisons, integer results).
    pub fn non_differentiable(data: Array) -> Tensor {
        Tensor::from_array(data)
    }

    // ---------------------------------------------------------------- inspection

    /// Dimension sizes.
    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }
    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.inner.shape.len()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.inner.shape.iter().product()
    }
    /// Size of dim `dim` (negative counts from the end).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.shape()[kiln_tensor::normalize_dim("size", dim, self.rank())?])
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.data().dtype()
    }
    /// The values (a cheap, shared handle: no copy).
    pub fn data(&self) -> Array {
        self.inner.data.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// The values as a row-major f32 `Vec`.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.data().to_vec_f32()
    }
    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        self.data().item()
    }

    /// True when gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.inner.requires_grad.load(Ordering::Relaxed)
    }
    /// True for tensors not produced by a recorded op.
    pub fn is_leaf(&self) -> bool {
        self.inner.grad_fn.is_none()
    }
    /// The name of the op that produced this tensor, if it was recorded.
    pub fn grad_fn_name(&self) -> Option<&'static str> {
        self.inner.grad_fn.as_ref().map(|n| n.name())
    }

    /// Marks a leaf as requiring grad (PyTorch's `requires_grad_`). Returns `self` for chaining.
    /// Panics on a non-leaf or a non-f32 tensor; see [`Tensor::try_requires_grad_`].
    #[track_caller]
    pub fn requires_grad_(self, requires_grad: bool) -> Tensor {
        if let Err(e) = self.try_requires_grad_(requires_grad) {
            panic!("{e}");
        }
        self
    }

    /// Fallible [`Tensor::requires_grad_`].
    pub fn try_requires_grad_(&self, requires_grad: bool) -> Result<()> {
        if !self.is_leaf() {
            return Err(Error::op("requires_grad_", "only leaf tensors can change requires_grad; use detach() first"));
        }
        if requires_grad && self.dtype() != DType::F32 {
            return Err(Error::op(
                "requires_grad_",
                format!("only f32 tensors can require grad, this one is {}", self.dtype()),
            ));
        }
        self.inner.requires_grad.store(requires_grad, Ordering::Relaxed);
        Ok(())
    }

    /// The accumulated gradient of a leaf, if any.
    pub fn grad(&self) -> Option<Array> {
        self.grad_slot().clone()
    }
    /// Clears the accumulated gradient (PyTorch's `grad = None`).
    pub fn zero_grad(&self) {
        *self.grad_slot() = None;
    }
    /// Replaces the accumulated gradient (for optimizers and gradient clipping).
    pub fn set_grad(&self, grad: Option<Array>) -> Result<()> {
        if let Some(g) = &grad {
            if g.shape() != self.shape() {
                return Err(Error::op(
                    "set_grad",
                    format!("gradient of shape {:?} for a tensor of shape {:?}", g.shape(), self.shape()),
                ));
            }
        }
        *self.grad_slot() = grad;
        Ok(())
    }
    pub(crate) fn grad_slot(&self) -> MutexGuard<'_, Option<Array>> {
        self.inner.grad.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new leaf sharing this tensor's data, cut from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor::from_array(self.data())
    }

    /// Replaces the values in place (same shape), e.g. to load weights. Not recorded.
    pub fn set_data(&self, data: Array) -> Result<()> {
        if data.shape() != self.shape() {
            return Err(Error::op(
                "set_data",
                format!("new data of shape {:?} for a tensor of shape {:?}", data.shape(), self.shape()),
            ));
        }
        *self.inner.data.write().unwrap_or_else(|e| e.into_inner()) = data;
        Ok(())
    }

    /// Mutates the values in place (optimizer steps). The buffer is updated without a copy
    /// when nothing else shares it; otherwise it is copied first, so arrays saved for a
    /// backward pass are never changed under it. Not recorded.
    pub fn update_data<R>(&self, f: impl FnOnce(&mut Array) -> R) -> R {
        let mut guard = self.inner.data.write().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// True when `self` and `other` are the same tensor (clones of one another).
    pub fn same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    // ---------------------------------------------------------------- backward

    /// Backpropagates from this one-element tensor (a loss), accumulating into the `.grad` of
    /// every leaf that requires grad. Frees the graph's saved tensors as it goes.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::op(
                "backward",
                format!(
                    "grad can be implicitly created only for one-element outputs, got shape {:?}; use backward_with",
                    self.shape()
                ),
            ));
        }
        self.backward_with(Array::ones(self.shape()))
    }

    /// Backpropagates from this tensor with upstream gradient `grad` (same shape).
    pub fn backward_with(&self, grad: Array) -> Result<()> {
        if grad.shape() != self.shape() {
            return Err(Error::op(
                "backward",
                format!("gradient of shape {:?} for an output of shape {:?}", grad.shape(), self.shape()),
            ));
        }
        grad.expect_dtype("backward", DType::F32)?;
        match &self.inner.grad_fn {
            Some(node) => graph::run_backward(node, grad),
            None if self.requires_grad() => graph::accumulate_leaf(self, grad),
            None => Err(Error::op("backward", "the tensor does not require grad and has no grad_fn")),
        }
    }
}
