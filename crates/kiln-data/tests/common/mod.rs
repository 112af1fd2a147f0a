//! Shared test helpers: where the real data lives.

#![allow(dead_code)]

use std::path::PathBuf;

/// The shared assets directory: `KILN_ASSETS_DIR` if set (then it must exist), else
/// `../shared/assets` beside the checkout when present. `None` (with a printed note) when
/// neither exists: tests that need real data then skip.
pub fn assets(test: &str) -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("KILN_ASSETS_DIR") {
        let dir = PathBuf::from(dir);
        assert!(dir.is_dir(), "KILN_ASSETS_DIR={} is not a directory", dir.display());
        return Some(dir);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets");
    if beside.is_dir() {
        Some(beside)
    } else {
        eprintln!("{test}: shared assets not found (set KILN_ASSETS_DIR or place them at ../shared/assets); skipping");
        None
    }
}
