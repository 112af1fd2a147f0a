//! Training checkpoints: model, optimizer, scheduler, counters and generator states in one
//! safetensors file, written atomically.
//!
//! Layout of the file (see docs/io.md):
//!
//! * tensors `model.<name>` (the model's state dict), `optimizer.<key>` (the optimizer's state
//!   dict: moments, step counts, group rates) and `scheduler.base_lrs` (f32, one per group);
//! * metadata `kind` = `kiln.checkpoint`, `version` = `1`, `step` and `epoch` (decimal),
//!   `scheduler` = `{"last_step": N}`, `rng` = the default generator's state (hex of
//!   [`GeneratorState::to_bytes`]), `generators` = a JSON object of named generator states
//!   (hex), `extra` = a JSON object of the user's strings. Optional parts are absent when
//!   unset.

use crate::atomic::write_atomically;
use crate::safetensors_io::{read_safetensors, write_safetensors};
use kiln_autograd::random::{self, GeneratorState};
use kiln_nn::Module;
use kiln_optim::{LrScheduler, Optimizer, SchedulerState, StateDict};
use kiln_tensor::{Array, Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The `kind` metadata of a checkpoint file.
pub const CHECKPOINT_KIND: &str = "kiln.checkpoint";
/// The layout version written (files of a later version are refused).
pub const CHECKPOINT_VERSION: u32 = 1;

/// Everything needed to resume training bit for bit. Build it with [`Checkpoint::capture`]
/// (or field by field), write it with [`save_checkpoint`], read it with [`load_checkpoint`]
/// and apply it with [`Checkpoint::restore`].
///
/// ```
/// use kiln_autograd::Tensor;
/// use kiln_io::{load_checkpoint, save_checkpoint, Checkpoint};
/// use kiln_nn::{init, Linear};
/// use kiln_optim::{AdamW, LrScheduler, Optimizer, StepLR};
/// let dir = std::env::temp_dir().join(format!("kiln-io-doc-ckpt-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("ckpt.safetensors");
///
/// let fc = Linear::new(3, 2, true, &mut init::rng(0));
/// let mut opt = AdamW::new(kiln_nn::Module::named_parameters(&fc), 1e-2);
/// let mut sched = StepLR::new(&mut opt, 10, 0.5)?;
/// // ... train ...
/// save_checkpoint(&path, &Checkpoint::capture(&fc, &opt, Some(&sched), 100, 3)?)?;
///
/// let ckpt = load_checkpoint(&path)?;
/// ckpt.restore(&fc, &mut opt, Some(&mut sched))?;
/// assert_eq!((ckpt.step, ckpt.epoch), (100, 3));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), kiln_tensor::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// The model's state dict (parameters and buffers).
    pub model: BTreeMap<String, Array>,
    /// The optimizer's state dict, if saved.
    pub optimizer: Option<StateDict>,
    /// The scheduler's state, if saved.
    pub scheduler: Option<SchedulerState>,
    /// The number of optimizer steps taken.
    pub step: u64,
    /// The number of epochs completed.
    pub epoch: u64,
    /// The default generator's state ([`random::rng_state`]), if saved.
    pub rng: Option<GeneratorState>,
    /// Other generators by a name of the caller's choosing, e.g. the state of a dropout layer
    /// built with its own seed ([`kiln_nn::Dropout::generator_state`]).
    pub generators: BTreeMap<String, GeneratorState>,
    /// The caller's own strings (stored as a JSON object under the `extra` metadata key).
    pub extra: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Captures `model`'s state dict, `optimizer`'s state dict, `scheduler`'s state (against
    /// `optimizer`) and the default generator's state, with the given counters. Add other
    /// generators to [`Checkpoint::generators`] yourself.
    pub fn capture(
        model: &dyn Module,
        optimizer: &dyn Optimizer,
        scheduler: Option<&dyn LrScheduler>,
        step: u64,
        epoch: u64,
    ) -> Result<Checkpoint> {
        Ok(Checkpoint {
            model: model.state_dict(),
            optimizer: Some(optimizer.state_dict()?),
            scheduler: scheduler.map(|s| s.state_dict(optimizer)),
            step,
            epoch,
            rng: Some(random::rng_state()),
            generators: BTreeMap::new(),
            extra: BTreeMap::new(),
        })
    }

    /// Loads the checkpoint into `model` (strictly: every name must match), `optimizer` and
    /// `scheduler` (each only when the checkpoint holds its state) and restores the default
    /// generator (when saved). Named [`Checkpoint::generators`] are restored by the caller.
    /// The model is checked before anything is loaded; an optimizer or scheduler state that
    /// does not fit is an error after the model has been loaded.
    pub fn restore(
        &self,
        model: &dyn Module,
        optimizer: &mut dyn Optimizer,
        scheduler: Option<&mut dyn LrScheduler>,
    ) -> Result<()> {
        model.load_state_dict(&self.model, true)?;
        if let Some(sd) = &self.optimizer {
            optimizer.load_state_dict(sd)?;
        }
        if let (Some(st), Some(s)) = (&self.scheduler, scheduler) {
            s.load_state_dict(st, optimizer)?;
        }
        if let Some(rng) = &self.rng {
            random::set_rng_state(rng);
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Writes `ckpt` to `path` as one safetensors file (layout in the [module docs](self)),
/// atomically ([`write_atomically`]): if the save fails or the process dies part-way, the
/// previous file at `path` is intact.
pub fn save_checkpoint(path: impl AsRef<Path>, ckpt: &Checkpoint) -> Result<()> {
    let path = path.as_ref();
    let (tensors, meta) = layout(ckpt)?;
    let what = path.display().to_string();
    write_atomically(path, |w| write_safetensors(w, &what, tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(&meta)))
}

/// Writes `ckpt` in [`save_checkpoint`]'s format to `w` (not atomically: see
/// [`write_atomically`]); `what` names the destination in errors.
pub fn write_checkpoint(w: &mut dyn Write, what: &str, ckpt: &Checkpoint) -> Result<()> {
    let (tensors, meta) = layout(ckpt)?;
    write_safetensors(w, what, tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(&meta))
}

/// A checkpoint file's tensors (named) and metadata.
type FileParts = (Vec<(String, Array)>, BTreeMap<String, String>);

/// The tensors and metadata of a checkpoint file.
fn layout(ckpt: &Checkpoint) -> Result<FileParts> {
    let mut tensors: Vec<(String, Array)> = Vec::new();
    tensors.extend(ckpt.model.iter().map(|(k, v)| (format!("model.{k}"), v.clone())));
    if let Some(o) = &ckpt.optimizer {
        tensors.extend(o.iter().map(|(k, v)| (format!("optimizer.{k}"), v.clone())));
    }
    let mut meta = BTreeMap::new();
    meta.insert("kind".to_string(), CHECKPOINT_KIND.to_string());
    meta.insert("version".to_string(), CHECKPOINT_VERSION.to_string());
    meta.insert("step".to_string(), ckpt.step.to_string());
    meta.insert("epoch".to_string(), ckpt.epoch.to_string());
    if let Some(s) = &ckpt.scheduler {
        let n = s.base_lrs.len();
        tensors.push(("scheduler.base_lrs".to_string(), Array::from_vec(s.base_lrs.clone(), &[n])?));
        meta.insert("scheduler".to_string(), serde_json::json!({ "last_step": s.last_step }).to_string());
    }
    if let Some(r) = &ckpt.rng {
        meta.insert("rng".to_string(), hex(&r.to_bytes()));
    }
    if !ckpt.generators.is_empty() {
        let g: serde_json::Map<String, Value> =
            ckpt.generators.iter().map(|(k, v)| (k.clone(), Value::String(hex(&v.to_bytes())))).collect();
        meta.insert("generators".to_string(), Value::Object(g).to_string());
    }
    if !ckpt.extra.is_empty() {
        let e: serde_json::Map<String, Value> =
            ckpt.extra.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        meta.insert("extra".to_string(), Value::Object(e).to_string());
    }
    Ok((tensors, meta))
}

/// Reads a checkpoint written by [`save_checkpoint`]. Errors, naming the file, on a malformed
/// file, a file that is not a kiln checkpoint (`kind`), one of a later version, or a tensor or
/// metadata entry that does not fit the layout.
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let loaded = read_safetensors(path)?;
    let err = |msg: String| Error::Format { what: path.display().to_string(), msg };
    let meta = &loaded.metadata;
    match meta.get("kind") {
        Some(k) if k == CHECKPOINT_KIND => {}
        other => return Err(err(format!("not a kiln checkpoint (metadata kind is {other:?})"))),
    }
    let version: u32 = meta
        .get("version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err("missing or bad checkpoint version".into()))?;
    if version > CHECKPOINT_VERSION {
        return Err(err(format!("checkpoint version {version} is newer than this kiln reads ({CHECKPOINT_VERSION})")));
    }
    let counter = |key: &str| -> Result<u64> {
        meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| err(format!("missing or bad {key} counter")))
    };
    let mut ckpt = Checkpoint { step: counter("step")?, epoch: counter("epoch")?, ..Checkpoint::default() };

    let mut optimizer = StateDict::new();
    let mut base_lrs = None;
    for (name, a) in loaded.tensors {
        if let Some(k) = name.strip_prefix("model.") {
            ckpt.model.insert(k.to_string(), a);
        } else if let Some(k) = name.strip_prefix("optimizer.") {
            optimizer.insert(k.to_string(), a);
        } else if name == "scheduler.base_lrs" {
            base_lrs = Some(a.to_vec::<f32>().map_err(|e| err(format!("scheduler.base_lrs: {e}")))?);
        } else {
            return Err(err(format!("unexpected tensor {name:?} in a checkpoint")));
        }
    }
    // Only an optimizer that had state leaves entries (its group rates at the least).
    if !optimizer.is_empty() {
        ckpt.optimizer = Some(optimizer);
    }
    match (meta.get("scheduler"), base_lrs) {
        (None, None) => {}
        (Some(s), Some(base_lrs)) => {
            let v: Value = serde_json::from_str(s).map_err(|e| err(format!("scheduler metadata: {e}")))?;
            let last_step = v
                .get("last_step")
                .and_then(Value::as_u64)
                .and_then(|t| usize::try_from(t).ok())
                .ok_or_else(|| err(format!("scheduler metadata has no last_step: {s}")))?;
            ckpt.scheduler = Some(SchedulerState { last_step, base_lrs });
        }
        _ => return Err(err("scheduler metadata and scheduler.base_lrs must come together".into())),
    }
    let state = |what: &str, s: &str| -> Result<GeneratorState> {
        let bytes = unhex(s).ok_or_else(|| err(format!("{what}: not a hex string")))?;
        GeneratorState::from_bytes(&bytes).map_err(|e| err(format!("{what}: {e}")))
    };
    if let Some(r) = meta.get("rng") {
        ckpt.rng = Some(state("rng", r)?);
    }
    let json_strings = |key: &str| -> Result<BTreeMap<String, String>> {
        let Some(s) = meta.get(key) else { return Ok(BTreeMap::new()) };
        let v: BTreeMap<String, String> =
            serde_json::from_str(s).map_err(|e| err(format!("{key} metadata is not a JSON object of strings: {e}")))?;
        Ok(v)
    };
    for (name, s) in json_strings("generators")? {
        let st = state(&format!("generator {name:?}"), &s)?;
        ckpt.generators.insert(name, st);
    }
    ckpt.extra = json_strings("extra")?;
    Ok(ckpt)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(super::hex(&b), "0001abff");
        assert_eq!(super::unhex("0001abff").unwrap(), b);
        assert!(super::unhex("0g").is_none() && super::unhex("abc").is_none() && super::unhex("é1").is_none());
    }
}
