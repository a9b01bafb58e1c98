//! End-to-end and conformance tests of vodsource against real services. The tests are in
//! `tests/`; this library holds what several test binaries share.

pub mod clips;
pub mod lake;

use std::path::{Path, PathBuf};

/// A folder under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh folder.
    ///
    /// # Panics
    /// When the folder cannot be created (a test setup failure).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("vodsource-test-{}", uuid::Uuid::now_v7().simple()));
        #[allow(clippy::expect_used)]
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
