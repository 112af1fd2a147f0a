//! [`checkpoint`]: gradient checkpointing (activation recomputation), PyTorch's
//! `torch.utils.checkpoint.checkpoint` in its reentrant form.
//!
//! A checkpointed function keeps none of its intermediate values for backward: its forward
//! pass runs without recording, and the graph gets one node holding only the function and its
//! inputs. When backward reaches that node, the function runs again with recording on (the
//! default random generator put back where it was, so dropout draws the same masks), a nested
//! backward pass goes through the recomputed graph, and the gradients of the inputs flow on.
//! The price is one more forward pass of the function per backward.

use crate::grad_mode::{enable_grad, is_grad_enabled, no_grad};
use crate::random::{self, GeneratorState};
use crate::tensor::Tensor;
use kiln_tensor::{Array, DType, Error, Result};

const OP: &str = "checkpoint";

/// Runs `f(inputs)` without keeping its intermediate values for backward; they are recomputed
/// when the gradient is needed.
///
/// With grad mode on and some input requiring grad, `f` runs under [`no_grad`] on detached
/// copies of `inputs`, so nothing inside is recorded, and the result is attached to the graph
/// by a single node whose inputs are `inputs`. Its backward restores the state the default
/// random generator ([`crate::random`]) had before the forward pass, runs `f` again with
/// recording on over fresh leaf copies of the inputs, backpropagates the incoming gradient
/// through that graph, restores the generator, and returns the copies' gradients. Tensors that
/// `f` captures (parameters) receive their gradients in that nested backward pass.
///
/// Otherwise (under [`no_grad`], or when no input requires grad) `f(inputs)` just runs as is.
///
/// `f` must compute the same thing both times: it may draw random numbers from the default
/// generator only (a generator of its own is not rewound), and the tensors it captures should
/// be leaves (parameters): a captured tensor that is the output of a recorded op would be
/// backpropagated through by the nested pass, outside the outer one. Pass such tensors in
/// `inputs` instead. Inputs that do not require grad (masks, indices) may be of any dtype.
///
/// ```
/// use kiln_autograd::{checkpoint, live_nodes, Tensor};
/// let w = Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3])?.requires_grad_(true);
/// let x = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3])?.requires_grad_(true);
/// let w2 = w.clone();
/// let y = checkpoint(move |xs| xs[0].try_mul(&w2)?.try_tanh()?.try_mul(&w2), &[x.clone()])?;
/// assert_eq!(y.grad_fn_name(), Some("checkpoint"));
/// y.sum_all().backward()?;
/// assert!(x.grad().is_some() && w.grad().is_some());
/// # Ok::<(), kiln_autograd::Error>(())
/// ```
pub fn checkpoint<F>(f: F, inputs: &[Tensor]) -> Result<Tensor>
where
    F: Fn(&[Tensor]) -> Result<Tensor> + Send + 'static,
{
    if !is_grad_enabled() || !inputs.iter().any(Tensor::requires_grad) {
        return f(inputs);
    }
    let rng = random::rng_state();
    let detached: Vec<Tensor> = inputs.iter().map(Tensor::detach).collect();
    let out = no_grad(|| f(&detached))?;
    drop(detached);
    let out = out.data();
    if out.dtype() != DType::F32 {
        return Err(Error::op(
            OP,
            format!("the function must return an f32 tensor to differentiate, got {}", out.dtype()),
        ));
    }
    // The inputs' values are all the node keeps (besides `f` itself).
    let saved: Vec<Array> = inputs.iter().map(Tensor::data).collect();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    Ok(Tensor::from_op(out, OP, &refs, move |g, needs| recompute(&f, &saved, &rng, g, needs)))
}

/// The checkpoint's backward: `f` again, with recording, then a nested backward pass.
fn recompute<F>(f: &F, saved: &[Array], rng: &GeneratorState, g: &Array, needs: &[bool]) -> Result<Vec<Option<Array>>>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let leaves = saved
        .iter()
        .zip(needs)
        .map(|(a, &need)| {
            let t = Tensor::from_array(a.clone());
            if need {
                t.try_requires_grad_(true)?;
            }
            Ok(t)
        })
        .collect::<Result<Vec<Tensor>>>()?;
    // Replay the forward pass's random draws, then leave the generator as it was found.
    let current = random::rng_state();
    random::set_rng_state(rng);
    let out = enable_grad(|| f(&leaves));
    random::set_rng_state(&current);
    let out = out?;
    if out.shape() != g.shape() {
        return Err(Error::op(
            OP,
            format!(
                "the recomputed output has shape {:?}, the forward pass gave {:?}: the function must compute the same \
                 thing both times",
                out.shape(),
                g.shape()
            ),
        ));
    }
    // An output that does not depend on anything requiring grad has no gradient to pass on.
    if out.requires_grad() {
        out.backward_with(g.clone())?;
    }
    drop(out);
    Ok(leaves.iter().zip(needs).map(|(t, &need)| if need { t.grad() } else { None }).collect())
}
