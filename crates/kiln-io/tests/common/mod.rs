//! Helpers shared by kiln-io's integration tests.
#![allow(dead_code)] // each test file uses only some of them

use std::io::Write;
use std::path::PathBuf;

/// A fresh, empty folder under cargo's test temp dir.
pub fn fresh_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kiln-io-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A writer that fails after `left` bytes, like a full disk or a process killed mid-save.
pub struct FailAfter<'a> {
    pub inner: &'a mut dyn Write,
    pub left: usize,
}

impl Write for FailAfter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("injected failure mid-save"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        self.inner.write(&buf[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
