//! Change detection for files the proxy serves from (certificates,
//! htpasswd) by content, not by modification time.
//!
//! Content hashes see every kind of replacement: in-place writes, renames
//! over the file, and certbot re-pointing its `live/` symlinks into
//! `archive/`, where timestamps and inotify events on the link itself are
//! unreliable. The files are small, so reading them every few seconds is
//! cheap.

use sha2::{Digest, Sha256};
use std::path::PathBuf;

pub struct FileWatch {
    paths: Vec<PathBuf>,
    last: Option<Vec<Option<[u8; 32]>>>,
}

impl FileWatch {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        FileWatch { paths, last: None }
    }

    /// True when any file's content (or existence) differs from the last
    /// call; the first call records the state and returns true.
    pub fn changed(&mut self) -> bool {
        let now: Vec<Option<[u8; 32]>> = self
            .paths
            .iter()
            .map(|p| std::fs::read(p).ok().map(|b| Sha256::digest(&b).into()))
            .collect();
        if self.last.as_ref() == Some(&now) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_writes_renames_and_symlink_swaps() {
        let d = tempfile::tempdir().unwrap();
        let a1 = d.path().join("a1");
        let a2 = d.path().join("a2");
        let link = d.path().join("live");
        std::fs::write(&a1, "one").unwrap();
        std::fs::write(&a2, "two").unwrap();
        std::os::unix::fs::symlink(&a1, &link).unwrap();
        let mut w = FileWatch::new(vec![link.clone()]);
        assert!(w.changed());
        assert!(!w.changed());
        // certbot style: re-point the symlink
        let tmp = d.path().join("live.tmp");
        std::os::unix::fs::symlink(&a2, &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
        assert!(w.changed());
        assert!(!w.changed());
        std::fs::write(&a2, "three").unwrap();
        assert!(w.changed());
        std::fs::remove_file(&a2).unwrap();
        assert!(w.changed());
    }
}
