//! Files the lab tests hand to the agent: written whole, in directories that
//! go when the test ends.
use std::path::{Path, PathBuf};

/// Writes `text` to `dir/name` by rename, as a controller would, so the
/// agent never reads half a file.
pub fn write_atomically(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A fresh directory, removed when the test ends, however it ends.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// An empty `netpol-<label>-<pid>` under the system's temporary directory.
    pub fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("netpol-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
