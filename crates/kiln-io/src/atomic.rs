//! Atomic file replacement: write a temporary file, fsync it, rename it over the target,
//! fsync the directory.

use kiln_tensor::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The temporary file [`write_atomically`] writes before renaming: `<path>.tmp`, in the same
/// directory (a rename is only atomic within one file system).
pub fn temp_path(path: impl AsRef<Path>) -> PathBuf {
    let mut s = path.as_ref().as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Replaces the file at `path` with what `write` writes, atomically: readers, and the file
/// after a crash, see either the old content or the complete new one, never a mix.
///
/// `write` fills `<path>.tmp` (see [`temp_path`]; a stale one left by a crash is
/// overwritten), which is then flushed and fsynced, renamed over `path`, and the directory is
/// fsynced so the rename itself is durable. If `write` or any step fails, the temporary file
/// is removed, `path` is untouched and the error is returned. Two processes must not save to
/// the same path at the same time (they would share the temporary file).
pub fn write_atomically(path: impl AsRef<Path>, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let path = path.as_ref();
    let tmp = temp_path(path);
    let result = write_tmp(&tmp, write).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.display().to_string(), source })
    });
    if let Err(e) = result {
        // Best effort: the error that matters is the one being returned.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path)
}

fn write_tmp(tmp: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let io = |source| Error::Io { path: tmp.display().to_string(), source };
    let file = File::create(tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write(&mut w)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

/// Fsyncs the directory holding `path`, making a rename into it durable (Unix; elsewhere a
/// no-op).
fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
