//! The audit trail: who pulled, pushed, mounted or deleted what, who logged
//! in (or was refused) with which kind of credential, which access tokens
//! were made and revoked, when and from where, as JSON lines in a file of
//! its own.
//!
//! Each line is written with one `write` on a file opened with O_APPEND, so
//! concurrent requests never interleave within a line and a reader never
//! sees half a line. Rotation: rename the file and send SIGHUP (or let the
//! size limit rotate it); the next line goes to a fresh file at the path.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Serialize)]
pub struct AuditEvent<'a> {
    pub time: String,
    pub action: &'a str,
    pub user: Option<&'a str>,
    pub client: String,
    pub repository: &'a str,
    /// Tag or digest the client named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a str>,
    /// The content digest the registry answered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<&'a str>,
    /// For a mount, the source repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
    pub status: u16,
    pub bytes: usize,
    /// For login and token events: how the caller proved who it is
    /// (`password`, `token:NAME`, `certificate:SUBJECT`). Never a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// For a refused login: why (`bad_credentials`, `throttled`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

impl<'a> AuditEvent<'a> {
    /// A `token_create` / `token_revoke` line: `portcullis token`'s, and
    /// the browser login's.
    pub fn token(
        action: &'a str,
        user: &'a str,
        token: &str,
        client: String,
        reason: Option<&'a str>,
    ) -> AuditEvent<'a> {
        AuditEvent {
            time: now_rfc3339(),
            action,
            user: Some(user),
            client,
            repository: "",
            reference: None,
            digest: None,
            from: None,
            status: 0,
            bytes: 0,
            credential: Some(format!("token:{token}")),
            reason,
        }
    }
}

pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    file: Mutex<File>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl AuditLog {
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<AuditLog> {
        Ok(AuditLog {
            path: path.to_owned(),
            max_bytes,
            file: Mutex::new(open(path)?),
        })
    }

    /// Reopens the path (after an external rotation).
    pub fn reopen(&self) -> std::io::Result<()> {
        let fresh = open(&self.path)?;
        if let Ok(mut f) = self.file.lock() {
            *f = fresh;
        }
        Ok(())
    }

    pub fn write(&self, event: &AuditEvent<'_>) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        let Ok(mut f) = self.file.lock() else { return };
        if self.max_bytes > 0 && f.metadata().map(|m| m.len()).unwrap_or(0) >= self.max_bytes {
            // size-based rotation: keep one previous file, as path.1
            let old = self.path.with_extension(match self.path.extension() {
                Some(e) => format!("{}.1", e.to_string_lossy()),
                None => "1".to_owned(),
            });
            if std::fs::rename(&self.path, &old).is_ok() {
                if let Ok(fresh) = open(&self.path) {
                    *f = fresh;
                }
            }
        }
        if let Err(e) = f.write_all(&line) {
            tracing::error!(target: "audit", error = %e, "cannot write the audit log");
        }
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: u16) -> AuditEvent<'static> {
        AuditEvent {
            time: now_rfc3339(),
            action: "push",
            user: Some("alice"),
            client: "192.0.2.1".into(),
            repository: "team/app",
            reference: Some("v1"),
            digest: Some("sha256:abc"),
            from: None,
            status,
            bytes: 10,
            credential: None,
            reason: None,
        }
    }

    #[test]
    fn writes_whole_json_lines_and_reopens() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = AuditLog::open(&p, 0).unwrap();
        log.write(&event(201));
        std::fs::rename(&p, d.path().join("audit.log.old")).unwrap();
        log.write(&event(202)); // still to the renamed file until reopened
        log.reopen().unwrap();
        log.write(&event(203));
        let old = std::fs::read_to_string(d.path().join("audit.log.old")).unwrap();
        let new = std::fs::read_to_string(&p).unwrap();
        assert_eq!(old.lines().count(), 2);
        assert_eq!(new.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(new.trim()).unwrap();
        assert_eq!(v["status"], 203);
        assert_eq!(v["user"], "alice");
        assert_eq!(v["repository"], "team/app");
    }

    #[test]
    fn rotates_by_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("audit.log");
        let log = AuditLog::open(&p, 100).unwrap();
        for _ in 0..5 {
            log.write(&event(200));
        }
        assert!(d.path().join("audit.log.1").exists());
        let cur = std::fs::read_to_string(&p).unwrap();
        assert!(cur
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    }
}
