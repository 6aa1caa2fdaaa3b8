//! The state directory: what survives a restart and what replicas share.
//!
//! ```text
//! state_dir/                       0700
//!   accounts/<directory>.json      account key and URL, one per CA directory
//!   certificates/<name>.pem        chain, then its private key
//!   challenges/http-01/<token>     key authorizations while an order runs
//!   challenges/tls-alpn-01/<name>.pem
//! ```
//!
//! Every file is written to a temporary file in the same directory with
//! mode 0600 and renamed into place, so a reader (a restart, a follower
//! replica) sees the old content or the new, never half of it. A
//! certificate and its key live in one file for the same reason.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: &Path) -> Self {
        StateDir {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the directory (0700) if needed: a state directory that
    /// cannot be made is a configuration error, better found at start.
    pub fn ensure(&self) -> Result<(), StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|source| StateError::Write {
                path: self.root.clone(),
                source,
            })
    }

    /// For `portcullis check`, leaving nothing behind (a probe file is
    /// created and removed at once): a renewing replica must be able to
    /// create files here (or create the directory), a follower must be able
    /// to list it.
    pub fn check(&self, writable: bool) -> Result<(), StateError> {
        let read_err = |source| StateError::Read {
            path: self.root.clone(),
            source,
        };
        if !writable {
            return std::fs::read_dir(&self.root).map(drop).map_err(read_err);
        }
        // the directory, or the nearest ancestor `ensure` would create it in
        let mut dir = self.root.as_path();
        while !dir.exists() {
            match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
                _ => {
                    dir = Path::new(".");
                    break;
                }
            }
        }
        if !dir.is_dir() {
            return Err(StateError::Invalid {
                path: dir.to_owned(),
                reason: "not a directory".into(),
            });
        }
        tempfile::Builder::new()
            .prefix(".check-")
            .tempfile_in(dir)
            .map(drop)
            .map_err(|source| StateError::Write {
                path: dir.to_owned(),
                source,
            })
    }

    /// The account file of a CA directory: staging and production (or
    /// two CAs) keep separate accounts side by side.
    pub fn account_path(&self, directory_url: &str) -> PathBuf {
        let without_scheme = directory_url
            .split_once("://")
            .map_or(directory_url, |(_, rest)| rest);
        self.root
            .join("accounts")
            .join(format!("{}.json", file_safe(without_scheme)))
    }

    pub fn cert_path(&self, name: &str) -> PathBuf {
        self.root
            .join("certificates")
            .join(format!("{}.pem", file_safe(name)))
    }

    /// `None` for a token that is not base64url (it names a file).
    pub fn http01_path(&self, token: &str) -> Option<PathBuf> {
        let ok = !token.is_empty()
            && token.len() <= 256
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| self.root.join("challenges/http-01").join(token))
    }

    pub fn alpn01_path(&self, domain: &str) -> PathBuf {
        self.root
            .join("challenges/tls-alpn-01")
            .join(format!("{}.pem", file_safe(domain)))
    }

    /// Reads a file that may not exist yet.
    pub fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, StateError> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Read {
                path: path.to_owned(),
                source: e,
            }),
        }
    }

    /// Replaces `path` atomically with a 0600 file holding `content`.
    pub fn write(&self, path: &Path, content: &[u8]) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        // tempfile creates the file with mode 0600
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(err)?;
        tmp.write_all(content).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
        tmp.persist(path).map_err(|e| err(e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Removes a file; one that is already gone is fine.
    pub fn remove(&self, path: &Path) {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(target: "acme", path = %path.display(), error = %e, "cannot remove a challenge file");
            }
        }
    }
}

/// Keeps letters, digits, `.` and `-`; anything else becomes `_`.
fn file_safe(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    if out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::new(&dir.path().join("state"));
        let p = s.cert_path("registry.example.com");
        assert_eq!(s.read(&p).unwrap(), None);
        s.write(&p, b"one").unwrap();
        s.write(&p, b"two").unwrap();
        assert_eq!(s.read(&p).unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let d = std::fs::metadata(p.parent().unwrap()).unwrap();
        assert_eq!(d.mode() & 0o077, 0, "directory readable by others");
        // no temporary files left behind
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let s = StateDir::new(Path::new("/state"));
        assert_eq!(
            s.account_path("https://127.0.0.1:14000/dir"),
            Path::new("/state/accounts/127.0.0.1_14000_dir.json")
        );
        assert_eq!(s.http01_path("../../etc/passwd"), None);
        assert_eq!(s.http01_path(""), None);
        assert_eq!(
            s.http01_path("aB-_9"),
            Some(PathBuf::from("/state/challenges/http-01/aB-_9"))
        );
        assert_eq!(
            s.cert_path("../x"),
            Path::new("/state/certificates/_.._x.pem")
        );
    }
}
