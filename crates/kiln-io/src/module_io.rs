//! Saving and loading a [`Module`]'s parameters and buffers.

use crate::keymap::LoadOptions;
use crate::safetensors_io::{load_safetensors, save_safetensors};
use kiln_nn::{LoadReport, Module};
use kiln_tensor::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Saves every parameter and buffer of `module` ([`Module::state_dict`], with PyTorch's
/// dotted names) as a safetensors file, atomically. The metadata is `{"format": "pt"}`, which
/// Hugging Face loaders expect of PyTorch-layout files.
///
/// ```
/// use kiln_autograd::Tensor;
/// use kiln_io::{load_module, save_module, LoadOptions};
/// use kiln_nn::{init, Linear, Module};
/// let dir = std::env::temp_dir().join(format!("kiln-io-doc-module-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("fc.safetensors");
/// let fc = Linear::new(3, 2, true, &mut init::rng(0));
/// save_module(&fc, &path)?;
///
/// let mut fresh = Linear::new(3, 2, true, &mut init::rng(1));
/// let report = load_module(&mut fresh, &path, &LoadOptions::new())?;
/// assert!(report.is_clean());
/// assert_eq!(fresh.weight.to_vec_f32()?, fc.weight.to_vec_f32()?);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), kiln_tensor::Error>(())
/// ```
pub fn save_module(module: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let sd = module.state_dict();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    save_safetensors(path, sd.iter().map(|(k, v)| (k.as_str(), v)), Some(meta))
}

/// Loads a safetensors file into `module`: the file's names are renamed and its tensors
/// transformed as `options` says ([`LoadOptions::apply`]), then loaded with
/// [`Module::load_state_dict`] (dtypes converted to the module's). Strict (the default): a
/// missing, unexpected or shape-mismatched name is an error naming the file and every such
/// name, and nothing is loaded. Not strict: every match is loaded and the returned
/// [`LoadReport`] lists the rest.
pub fn load_module(module: &mut dyn Module, path: impl AsRef<Path>, options: &LoadOptions) -> Result<LoadReport> {
    let path = path.as_ref();
    let what = || path.display().to_string();
    let sd = load_safetensors(path)?;
    let sd = options.apply(sd).map_err(|e| Error::Format { what: what(), msg: e.to_string() })?;
    module.load_state_dict(&sd, options.is_strict()).map_err(|e| Error::Format { what: what(), msg: e.to_string() })
}
