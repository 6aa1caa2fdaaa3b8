//! The token file and its secrets.
//!
//! A secret is `pcat_<id>_<random>`: a fixed prefix secret scanners can
//! look for (`pcat_[0-9a-f]{12}_[A-Za-z0-9_-]{43}`), the token's public id
//! (12 hex digits) to find its entry, and 32 random bytes. The file keeps
//! only an HMAC-SHA256 of the whole secret under a key kept in another
//! file: the secrets are random, so a fast keyed hash is as strong as a
//! slow one, and costs microseconds instead of a bcrypt per login.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

use crate::auth::token::files::{write_atomic, Replace};

/// What every secret starts with.
pub const PREFIX: &str = "pcat_";
const ID_LEN: usize = 12;
const HASH_SCHEME: &str = "hmac-sha256:";
/// A robot's user name is this prefix and the token's name (as Harbor
/// names robots): it can never be an htpasswd or directory user's.
pub const ROBOT_PREFIX: &str = "robot$";

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: cannot write: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("{path}: the hash key must be 32 bytes of base64 ({reason})")]
    Key { path: PathBuf, reason: String },
}

/// The file: `[[token]]` entries, written by `portcullis token`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenEntry>,
}

/// One token. Times are RFC 3339 (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub id: String,
    /// The person it acts for; none for a robot account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// A robot's groups, or those the provider gave a person who logged
    /// in at `/login` (others' come from their backend).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The OpenID provider that vouches for the owner (a token of the
    /// browser login): the owner is no htpasswd or directory user, and
    /// the token lives as long as the provider session behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub scopes: Vec<String>,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub hash: String,
}

impl TokenEntry {
    /// The user name the token logs in as: its owner's, or `robot$NAME`.
    pub fn user(&self) -> String {
        match &self.owner {
            Some(o) => o.clone(),
            None => format!("{ROBOT_PREFIX}{}", self.name),
        }
    }
}

impl TokenFile {
    /// Reads the file; a missing file is an empty one (no tokens yet).
    pub fn load(path: &Path) -> Result<TokenFile, TokenFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokenFile::default()),
            Err(e) => {
                return Err(TokenFileError::Read {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
            }
        };
        toml::from_str(&text).map_err(|e| TokenFileError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Loads, changes and saves the file under an exclusive lock (of a
    /// `.lock` file beside it), so the proxy's login and `portcullis
    /// token` never lose each other's changes.
    pub fn update<T>(
        path: &Path,
        change: impl FnOnce(&mut TokenFile) -> Result<T, String>,
    ) -> Result<T, TokenFileError> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let err = |reason: String| TokenFileError::Write {
            path: lock_path.clone(),
            reason,
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| err(e.to_string()))?;
        lock.lock().map_err(|e| err(e.to_string()))?;
        let mut file = TokenFile::load(path)?;
        let out = change(&mut file).map_err(|reason| TokenFileError::Parse {
            path: path.to_owned(),
            reason,
        })?;
        super::compile(&file).map_err(|reason| TokenFileError::Parse {
            path: path.to_owned(),
            reason,
        })?;
        file.save(path)?;
        // (the lock is released when `lock` is dropped)
        Ok(out)
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), TokenFileError> {
        let err = |reason: String| TokenFileError::Write {
            path: path.to_owned(),
            reason,
        };
        let body = toml::to_string(self).map_err(|e| err(e.to_string()))?;
        let text = format!(
            "# portcullis access tokens: edit with `portcullis token`. Only hashes\n\
             # of the secrets are kept; this file and its key file stay 0600.\n\n{body}"
        );
        write_atomic(path, text.as_bytes(), 0o600, Replace::Yes).map_err(|e| err(e.to_string()))?;
        Ok(())
    }
}

/// The HMAC key of the secrets' hashes.
pub struct HashKey([u8; 32]);

impl HashKey {
    pub fn load(path: &Path) -> Result<HashKey, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokenFileError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| TokenFileError::Key {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| TokenFileError::Key {
            path: path.to_owned(),
            reason: format!("{} bytes", b.len()),
        })?;
        Ok(HashKey(key))
    }

    /// The key at `path`, made (0600) if there is none yet.
    pub fn load_or_create(path: &Path) -> Result<HashKey, TokenFileError> {
        let key: [u8; 32] = rand::random();
        let text = base64::engine::general_purpose::STANDARD.encode(key) + "\n";
        write_atomic(path, text.as_bytes(), 0o600, Replace::No).map_err(|e| {
            TokenFileError::Write {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        })?;
        HashKey::load(path)
    }

    /// `hmac-sha256:<hex>` of a secret, as the file stores it.
    pub fn hash(&self, secret: &str) -> String {
        format!("{HASH_SCHEME}{}", hex(&self.mac(secret)))
    }

    fn mac(&self, secret: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `secret` is the one `stored` (`hmac-sha256:<hex>`) was made
    /// of, compared in constant time.
    pub fn matches(&self, secret: &str, stored: &[u8; 32]) -> bool {
        self.mac(secret).ct_eq(stored).into()
    }
}

/// The 32 bytes of a stored `hmac-sha256:<hex>` hash.
pub fn parse_hash(stored: &str) -> Option<[u8; 32]> {
    let hex = stored.strip_prefix(HASH_SCHEME)?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new secret and its id.
pub fn new_secret() -> (String, String) {
    let id = hex(&rand::random::<[u8; ID_LEN / 2]>());
    let random =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    (format!("{PREFIX}{id}_{random}"), id)
}

/// The id of something shaped like a secret; `None` for anything else
/// (a password), which then goes to the password backends.
pub fn secret_id(password: &str) -> Option<&str> {
    let rest = password.strip_prefix(PREFIX)?;
    let (id, random) = rest.split_once('_')?;
    let well_formed = id.len() == ID_LEN
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && random.len() == 43
        && random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognisable_and_hash_one_way() {
        let (secret, id) = new_secret();
        assert!(secret.starts_with("pcat_"));
        assert_eq!(secret_id(&secret), Some(id.as_str()));
        assert_eq!(secret.len(), 5 + 12 + 1 + 43);
        let (other, _) = new_secret();
        assert_ne!(secret, other);
        for not in [
            "hunter2",
            "pcat_",
            "pcat_abc_def",
            &secret[..secret.len() - 1],
        ] {
            assert_eq!(secret_id(not), None, "{not}");
        }
        let key = HashKey([7; 32]);
        let stored = key.hash(&secret);
        assert!(stored.starts_with("hmac-sha256:"));
        assert!(!stored.contains(&secret[18..]));
        let bytes = parse_hash(&stored).unwrap();
        assert!(key.matches(&secret, &bytes));
        assert!(!key.matches(&other, &bytes));
        assert!(!HashKey([8; 32]).matches(&secret, &bytes), "another key");
        assert_eq!(parse_hash("sha256:00"), None);
    }

    #[test]
    fn the_file_round_trips_with_mode_0600_and_no_secret() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        assert!(TokenFile::load(&path).unwrap().tokens.is_empty());
        let key = HashKey::load_or_create(&dir.path().join("k")).unwrap();
        let (secret, id) = new_secret();
        let entry = TokenEntry {
            name: "ci".into(),
            id,
            owner: None,
            groups: vec!["ci".into()],
            issuer: None,
            scopes: vec!["team/**:push".into()],
            created: "2026-12-02T00:00:00Z".into(),
            expires: None,
            hash: key.hash(&secret),
        };
        assert_eq!(entry.user(), "robot$ci");
        let file = TokenFile {
            tokens: vec![entry.clone()],
        };
        file.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!std::fs::read_to_string(&path)
            .unwrap()
            .contains(&secret[18..]));
        assert_eq!(TokenFile::load(&path).unwrap().tokens, [entry]);
        // the key is made once, then kept
        let again = HashKey::load_or_create(&dir.path().join("k")).unwrap();
        assert_eq!(again.0, key.0);
        std::fs::write(&path, "[[token]]\nname = 1\n").unwrap();
        assert!(matches!(
            TokenFile::load(&path),
            Err(TokenFileError::Parse { .. })
        ));
    }
}
