//! The provider sessions behind the browser login's access tokens: each
//! token's refresh token, kept in a 0600 file beside the token file
//! (`<auth.tokens.path>.sessions.json`), so the background refresh can
//! ask the provider, every `refresh_interval`, whether the person is still
//! who they were.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::auth::token::files::{write_atomic, Replace};

/// One token's session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// The token's name (for logs).
    pub token: String,
    /// The user the token logs in as.
    pub user: String,
    /// The ID token's `sub`: a refresh must be for the same person.
    pub subject: String,
    /// Absent when the provider gave none: the token then lives only
    /// until `max_offline` after its login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The last successful login or refresh (RFC 3339).
    pub refreshed: String,
}

impl Session {
    pub fn refreshed_at(&self) -> SystemTime {
        humantime::parse_rfc3339(&self.refreshed).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SessionsError {
    path: PathBuf,
    reason: String,
}

/// The file, by token id, and the lock that keeps writers in order.
pub struct Sessions {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Sessions {
    pub fn new(tokens_path: &Path) -> Sessions {
        let mut p = tokens_path.as_os_str().to_owned();
        p.push(".sessions.json");
        Sessions {
            path: PathBuf::from(p),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The right to refresh, for one round: `None` while another process
    /// (a replica sharing the file) holds it. Refresh tokens rotate, so
    /// two processes refreshing the same session would spend it twice and
    /// the provider would end the grant.
    pub fn refresh_turn(&self) -> Result<Option<std::fs::File>, SessionsError> {
        let mut p = self.path.as_os_str().to_owned();
        p.push(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(PathBuf::from(p))
            .map_err(|e| self.err(e.to_string()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(self.err(e.to_string())),
        }
    }

    /// Every session; a missing file has none.
    pub fn all(&self) -> Result<BTreeMap<String, Session>, SessionsError> {
        let _g = self.lock.lock();
        self.read()
    }

    /// Changes the file: `change` gets every session by token id.
    pub fn update(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, Session>),
    ) -> Result<(), SessionsError> {
        let _g = self.lock.lock();
        let mut all = self.read()?;
        change(&mut all);
        let body = serde_json::to_vec_pretty(&all).map_err(|e| self.err(e.to_string()))?;
        write_atomic(&self.path, &body, 0o600, Replace::Yes)
            .map_err(|e| self.err(e.to_string()))?;
        Ok(())
    }

    fn read(&self) -> Result<BTreeMap<String, Session>, SessionsError> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| self.err(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(self.err(e.to_string())),
        }
    }

    fn err(&self, reason: String) -> SessionsError {
        SessionsError {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Never shows the refresh token.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("token", &self.token)
            .field("user", &self.user)
            .field("refreshed", &self.refreshed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn sessions_round_trip_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sessions::new(&dir.path().join("tokens.toml"));
        assert!(s.all().unwrap().is_empty());
        let session = Session {
            token: "login.alice.abcdef".into(),
            user: "alice".into(),
            subject: "alice".into(),
            refresh_token: Some("the-refresh-secret".into()),
            refreshed: "2026-12-02T10:00:00Z".into(),
        };
        s.update(|all| {
            all.insert("abcdef012345".into(), session.clone());
        })
        .unwrap();
        assert_eq!(s.all().unwrap()["abcdef012345"], session);
        assert_eq!(std::fs::metadata(s.path()).unwrap().mode() & 0o777, 0o600);
        assert!(s.path().ends_with("tokens.toml.sessions.json"));
        assert!(!format!("{session:?}").contains("the-refresh-secret"));
        // one refresher at a time, across processes (a second handle here)
        let turn = s.refresh_turn().unwrap();
        assert!(turn.is_some());
        assert!(Sessions::new(&dir.path().join("tokens.toml"))
            .refresh_turn()
            .unwrap()
            .is_none());
        drop(turn);
        assert!(s.refresh_turn().unwrap().is_some());
    }
}
