//! Gradient checkpointing of one transformer block ([`checkpoint_block`]), used by the
//! models' `set_gradient_checkpointing` option.

use kiln_autograd::random::GeneratorState;
use kiln_autograd::{checkpoint, is_grad_enabled, Result, Tensor};
use kiln_nn::{Dropout, Linear, Module};
use std::sync::atomic::{AtomicBool, Ordering};

/// `forward(block, inputs)` through [`kiln_autograd::checkpoint`]: the block's intermediate
/// values are recomputed in backward instead of being kept.
///
/// The closure holds a clone of `block` (sharing its parameters). Dropout that draws from the
/// default generator is replayed by `checkpoint` itself; dropout layers with a generator of
/// their own (GPT's, LoRA adapters') are rewound here: their states before the forward pass
/// are put back for the recomputation, then the states found at that time are restored.
/// Runs `forward` directly when nothing would be recorded.
pub(crate) fn checkpoint_block<M, F>(block: &M, inputs: &[Tensor], forward: F) -> Result<Tensor>
where
    M: Module + Clone + Send + 'static,
    F: Fn(&M, &[Tensor]) -> Result<Tensor> + Send + 'static,
{
    if !is_grad_enabled() || !inputs.iter().any(Tensor::requires_grad) {
        return forward(block, inputs);
    }
    let block = block.clone();
    let dropouts = own_generator_dropouts(&block);
    let before = states(&dropouts);
    let first = AtomicBool::new(true);
    checkpoint(
        move |xs| {
            if first.swap(false, Ordering::Relaxed) {
                return forward(&block, xs);
            }
            let now = states(&dropouts);
            set_states(&dropouts, &before)?;
            let out = forward(&block, xs);
            set_states(&dropouts, &now)?;
            out
        },
        inputs,
    )
}

/// Every dropout layer in `m` with a generator of its own (clones sharing that generator),
/// LoRA adapters' included.
fn own_generator_dropouts(m: &dyn Module) -> Vec<Dropout> {
    let mut out = Vec::new();
    m.visit_modules("", &mut |_, sub| {
        let Some(any) = sub.as_any() else { return };
        let d = match (any.downcast_ref::<Dropout>(), any.downcast_ref::<Linear>()) {
            (Some(d), _) => Some(d),
            (_, Some(l)) => l.lora().and_then(|a| a.dropout()),
            _ => None,
        };
        if let Some(d) = d.filter(|d| d.generator_state().is_some()) {
            out.push(d.clone());
        }
    });
    out
}

fn states(dropouts: &[Dropout]) -> Vec<Option<GeneratorState>> {
    dropouts.iter().map(Dropout::generator_state).collect()
}

fn set_states(dropouts: &[Dropout], states: &[Option<GeneratorState>]) -> Result<()> {
    for (d, s) in dropouts.iter().zip(states) {
        if let Some(s) = s {
            d.set_generator_state(s)?;
        }
    }
    Ok(())
}
