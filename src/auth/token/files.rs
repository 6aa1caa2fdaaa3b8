//! Small file helpers for the key directory: atomic writes and PEM text.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;

/// Whether an atomic write may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replace {
    Yes,
    /// Keep whatever is there: another process may have won the race to
    /// create the file, and its content is the one to use.
    No,
}

/// Writes `data` to `path` through a temporary file in the same directory,
/// so a reader (or a crash) never sees a half-written file. The file has
/// `mode` from the start: a private key is never readable by others, not
/// even for a moment. Returns false if `Replace::No` and `path` existed.
pub(crate) fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    replace: Replace,
) -> io::Result<bool> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".portcullis-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    // the umask may have narrowed the mode; set it exactly
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    let written = match replace {
        Replace::Yes => tmp.persist(path).map(|_| true).map_err(|e| e.error)?,
        Replace::No => match tmp.persist_noclobber(path) {
            Ok(_) => true,
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(e.error),
        },
    };
    // make the rename itself durable
    fs::File::open(dir)?.sync_all()?;
    Ok(written)
}

/// PEM text of one DER object, 64 base64 characters a line.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn writes_with_mode_and_respects_no_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        assert!(write_atomic(&p, b"one", 0o600, Replace::No).unwrap());
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(!write_atomic(&p, b"two", 0o600, Replace::No).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert!(write_atomic(&p, b"three", 0o644, Replace::Yes).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
        // no temporary files left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn pem_lines() {
        let pem = pem_encode("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
    }
}
