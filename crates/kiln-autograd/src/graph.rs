//! The recorded graph and the backward pass.
//!
//! Each op whose output requires grad leaves one [`Node`]: its backward closure (which owns
//! exactly the arrays it saved) and one edge per input. Running backward consumes each
//! closure, so saved arrays are freed as soon as their gradient has been computed.

use crate::tensor::Tensor;
use kiln_tensor::layout::Dims;
use kiln_tensor::{Array, Error, Result};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Recorded nodes alive in the process (see [`live_nodes`]).
static LIVE_NODES: AtomicUsize = AtomicUsize::new(0);

/// The number of recorded op nodes alive in the whole process: each keeps its saved tensors
/// until backward runs or the graph is dropped. It measures what a forward pass retains (a
/// frozen backbone records nothing); it is global, so concurrent threads add to it.
pub fn live_nodes() -> usize {
    LIVE_NODES.load(Ordering::Relaxed)
}

/// A backward rule: given the gradient of the op's output and which inputs need a gradient,
/// returns one gradient per input (`None` where not needed), each of that input's shape.
pub type BackwardFn = Box<dyn FnOnce(&Array, &[bool]) -> Result<Vec<Option<Array>>> + Send>;

/// Where an input's gradient goes.
pub(crate) enum Edge {
    /// The input needs no gradient.
    None,
    /// A leaf that requires grad: its `.grad` accumulates.
    Leaf(Tensor),
    /// The output of another recorded op.
    Node(Arc<Node>),
}

/// One recorded op.
pub struct Node {
    pub(crate) name: &'static str,
    pub(crate) shape: Dims,
    pub(crate) backward: Mutex<Option<BackwardFn>>,
    pub(crate) edges: SmallVec<[Edge; 2]>,
}

impl Node {
    /// A node; counted by [`live_nodes`] until dropped.
    pub(crate) fn new(name: &'static str, shape: Dims, backward: BackwardFn, edges: SmallVec<[Edge; 2]>) -> Node {
        LIVE_NODES.fetch_add(1, Ordering::Relaxed);
        Node { name, shape, backward: Mutex::new(Some(backward)), edges }
    }

    /// The op's name (`"mul"`, `"matmul"`, ...).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({}, {:?})", self.name, self.shape)
    }
}

impl Drop for Node {
    // Unlink long chains iteratively: a recursive drop of a 100k-op graph would overflow the stack.
    fn drop(&mut self) {
        LIVE_NODES.fetch_sub(1, Ordering::Relaxed);
        let mut stack: Vec<Arc<Node>> = Vec::new();
        for e in self.edges.drain(..) {
            if let Edge::Node(n) = e {
                stack.push(n);
            }
        }
        while let Some(n) = stack.pop() {
            if let Ok(mut node) = Arc::try_unwrap(n) {
                for e in node.edges.drain(..) {
                    if let Edge::Node(n) = e {
                        stack.push(n);
                    }
                }
            }
        }
    }
}

fn accumulate(slot: &mut Option<Array>, g: Array) -> Result<()> {
    match slot {
        None => *slot = Some(g),
        Some(acc) => acc.add_assign(&g)?,
    }
    Ok(())
}

/// Accumulates `g` into a leaf's `.grad`.
pub(crate) fn accumulate_leaf(leaf: &Tensor, g: Array) -> Result<()> {
    if g.shape() != leaf.shape() {
        return Err(Error::op(
            "backward",
            format!("gradient of shape {:?} for a leaf of shape {:?}", g.shape(), leaf.shape()),
        ));
    }
    let mut slot = leaf.grad_slot();
    match &mut *slot {
        // Stored gradients are compact and contiguous, whatever view backward produced.
        None => *slot = Some(g.compact()),
        Some(acc) => acc.add_assign(&g)?,
    }
    Ok(())
}

/// Runs the backward pass from `root` with upstream gradient `grad`.
pub(crate) fn run_backward(root: &Arc<Node>, grad: Array) -> Result<()> {
    // Topological order (reverse post-order of a DFS), iteratively.
    let key = |n: &Arc<Node>| Arc::as_ptr(n) as usize;
    let mut index: FxHashMap<usize, usize> = FxHashMap::default();
    let mut order: Vec<Arc<Node>> = Vec::new();
    let mut stack: Vec<(Arc<Node>, usize)> = vec![(root.clone(), 0)];
    index.insert(key(root), usize::MAX);
    while let Some((node, next)) = stack.pop() {
        let child = node.edges[next..].iter().position(|e| matches!(e, Edge::Node(_))).map(|p| p + next);
        match child {
            Some(i) => {
                let Edge::Node(c) = &node.edges[i] else { unreachable!() };
                let c = c.clone();
                stack.push((node, i + 1));
                if let std::collections::hash_map::Entry::Vacant(v) = index.entry(key(&c)) {
                    v.insert(usize::MAX);
                    stack.push((c, 0));
                }
            }
            None => {
                index.insert(key(&node), order.len());
                order.push(node);
            }
        }
    }
    // Kernels called from outside rayon's pool pay a worker wake-up per parallel region; when
    // some op is big enough to be split, the whole pass moves onto a pool thread (one hand-over
    // for the pass), with the caller's grad mode. Small graphs stay on the calling thread.
    let splits = |n: &Arc<Node>| n.shape.iter().product::<usize>() >= kiln_tensor::parallel::PAR_ELEMS;
    if order.iter().any(splits) {
        return crate::grad_mode::on_pool(|| run_in_order(&order, &index, grad));
    }
    run_in_order(&order, &index, grad)
}

/// Runs the nodes' backward rules in reverse topological `order` (`index`: node address to
/// position), starting from the gradient of the last node (the root).
fn run_in_order(order: &[Arc<Node>], index: &FxHashMap<usize, usize>, grad: Array) -> Result<()> {
    let key = |n: &Arc<Node>| Arc::as_ptr(n) as usize;
    // `order` is post-order: inputs before the ops using them. Walk it backwards.
    let mut grads: Vec<Option<Array>> = (0..order.len()).map(|_| None).collect();
    let root_pos = order.len() - 1;
    grads[root_pos] = Some(grad);
    for pos in (0..order.len()).rev() {
        let node = &order[pos];
        let Some(g) = grads[pos].take() else { continue };
        if g.shape() != node.shape.as_slice() {
            return Err(Error::op(
                node.name,
                format!(
                    "backward produced a gradient of shape {:?} for an output of shape {:?}",
                    g.shape(),
                    node.shape
                ),
            ));
        }
        let f = node.backward.lock().unwrap_or_else(|e| e.into_inner()).take().ok_or_else(|| {
            Error::op(node.name, "backward through the graph a second time: its saved tensors were already freed")
        })?;
        let needs: SmallVec<[bool; 4]> = node.edges.iter().map(|e| !matches!(e, Edge::None)).collect();
        let input_grads = f(&g, &needs)?;
        drop(g);
        if input_grads.len() != node.edges.len() {
            return Err(Error::op(
                node.name,
                format!("backward returned {} gradients for {} inputs", input_grads.len(), node.edges.len()),
            ));
        }
        for (edge, ig) in node.edges.iter().zip(input_grads) {
            let Some(ig) = ig else { continue };
            match edge {
                Edge::None => {}
                Edge::Leaf(t) => accumulate_leaf(t, ig)?,
                Edge::Node(n) => accumulate(&mut grads[index[&key(n)]], ig)?,
            }
        }
    }
    Ok(())
}
