//! Access tokens and robot accounts (`[auth.tokens]`): named secrets with
//! scopes and an expiry, used as the password wherever one is accepted.
//!
//! The proxy only reads the token file ([`file`]); `portcullis token`
//! writes it, and the watcher reloads it when it changes (a broken file
//! keeps the previous tokens). A token of a person acts as that person,
//! cut down to its [`scopes`]; the authenticator checks that the owner
//! still exists. "Last used" times are kept in memory and written to a
//! file beside the token file by the watcher, at most every
//! `last_used_interval`.

pub mod file;
pub mod scopes;

use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::auth::token::files::{write_atomic, Replace};
use crate::config::AccessTokensConfig;
use file::{HashKey, TokenEntry, TokenFile, TokenFileError};
use scopes::Restriction;

/// One token of the file, checked and compiled.
#[derive(Debug)]
pub struct Token {
    pub entry: TokenEntry,
    /// The user it logs in as (its owner, or `robot$NAME`).
    pub user: String,
    pub restriction: Arc<Restriction>,
    hash: [u8; 32],
    created: SystemTime,
    expires: Option<SystemTime>,
}

/// Why a token was refused (for logs; the client sees a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No token has this id, or the secret does not match it.
    Unknown,
    /// The user name given is not the token's owner (or robot).
    WrongUser,
    Expired,
    /// No expiry, or a longer life than `auth.tokens.max_lifetime`.
    OverLifetime,
    /// A login token whose provider session has not been refreshed for
    /// `auth.oidc.login.max_offline`.
    Suspended,
}

struct Loaded {
    key: Option<HashKey>,
    by_id: HashMap<String, Arc<Token>>,
}

pub struct TokenStore {
    cfg: AccessTokensConfig,
    loaded: ArcSwap<Loaded>,
    last_used: Mutex<LastUsed>,
    /// Login tokens whose provider session could not be refreshed for
    /// too long: refused until a refresh succeeds (set by the login).
    suspended: ArcSwap<HashSet<String>>,
}

/// A token the proxy made (the browser login), with its secret.
pub struct Minted {
    pub entry: TokenEntry,
    pub secret: String,
}

struct LastUsed {
    /// Uses since the last write, by token id.
    pending: HashMap<String, SystemTime>,
    written: Instant,
}

impl TokenStore {
    pub fn new(cfg: &AccessTokensConfig) -> Result<TokenStore, TokenFileError> {
        let loaded = load(cfg)?;
        Ok(TokenStore {
            cfg: cfg.clone(),
            loaded: ArcSwap::from_pointee(loaded),
            last_used: Mutex::new(LastUsed {
                pending: HashMap::new(),
                written: Instant::now(),
            }),
            suspended: ArcSwap::default(),
        })
    }

    pub fn config(&self) -> &AccessTokensConfig {
        &self.cfg
    }

    /// Adds a token for `owner`, vouched for by the OpenID provider
    /// `issuer`, with `groups`, for `lifetime`: the browser login's.
    pub fn mint(
        &self,
        owner: &str,
        issuer: &str,
        groups: Vec<String>,
        lifetime: Duration,
    ) -> Result<Minted, TokenFileError> {
        let key = HashKey::load_or_create(&self.cfg.key_path())?;
        let (secret, id) = file::new_secret();
        let slug: String = owner
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(40)
            .collect();
        let entry = TokenEntry {
            name: format!("login.{slug}.{}", &id[..6]),
            id,
            owner: Some(owner.to_owned()),
            groups,
            issuer: Some(issuer.to_owned()),
            scopes: vec!["**:*".into(), "catalog".into()],
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            expires: Some(expiry_after(lifetime)),
            hash: key.hash(&secret),
        };
        let added = entry.clone();
        TokenFile::update(&self.cfg.path, move |f| {
            f.tokens.push(added);
            Ok(())
        })?;
        self.reload()?;
        Ok(Minted { entry, secret })
    }

    /// Removes the token `id` from the file (and from memory at once).
    pub fn remove(&self, id: &str) -> Result<Option<TokenEntry>, TokenFileError> {
        let removed = TokenFile::update(&self.cfg.path, |f| {
            Ok(f.tokens
                .iter()
                .position(|e| e.id == id)
                .map(|i| f.tokens.remove(i)))
        })?;
        self.reload()?;
        Ok(removed)
    }

    /// Gives the login token `id` the groups its provider now reports.
    pub fn set_groups(&self, id: &str, groups: &[String]) -> Result<(), TokenFileError> {
        TokenFile::update(&self.cfg.path, |f| {
            if let Some(e) = f.tokens.iter_mut().find(|e| e.id == id) {
                e.groups = groups.to_vec();
            }
            Ok(())
        })?;
        self.reload().map(|_| ())
    }

    /// The login tokens refused until their session is refreshed again.
    pub fn set_suspended(&self, ids: HashSet<String>) {
        self.suspended.store(Arc::new(ids));
    }

    /// The token `id`'s entry, as loaded.
    pub fn entry(&self, id: &str) -> Option<TokenEntry> {
        self.loaded.load().by_id.get(id).map(|t| t.entry.clone())
    }

    /// The files whose change means a reload.
    pub fn paths(&self) -> Vec<PathBuf> {
        vec![self.cfg.path.clone(), self.cfg.key_path()]
    }

    /// Reads the file again; on error the previous tokens stay.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let loaded = load(&self.cfg)?;
        let n = loaded.by_id.len();
        self.loaded.store(Arc::new(loaded));
        Ok(n)
    }

    pub fn len(&self) -> usize {
        self.loaded.load().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token `secret` is, if `user` may log in with it now.
    pub fn check(&self, user: &str, secret: &str) -> Result<Arc<Token>, TokenRefusal> {
        let loaded = self.loaded.load();
        let (Some(key), Some(id)) = (&loaded.key, file::secret_id(secret)) else {
            return Err(TokenRefusal::Unknown);
        };
        let token = loaded.by_id.get(id).ok_or(TokenRefusal::Unknown)?;
        if !key.matches(secret, &token.hash) {
            return Err(TokenRefusal::Unknown);
        }
        if token.user != user {
            return Err(TokenRefusal::WrongUser);
        }
        self.usable(token)?;
        Ok(Arc::clone(token))
    }

    /// Whether a cached login of token `id` in `groups` is still good:
    /// the token is still in the file and usable (revocation and expiry
    /// do not wait for the cache), and a login token still has these
    /// groups (its refresh rewrites them).
    pub fn still_valid(&self, id: &str, groups: &[String]) -> bool {
        let loaded = self.loaded.load();
        loaded.by_id.get(id).is_some_and(|t| {
            self.usable(t).is_ok() && (t.entry.issuer.is_none() || t.entry.groups == groups)
        })
    }

    /// When the token `id` expires (`None`: never, or not in the file).
    pub fn expiry_of(&self, id: &str) -> Option<SystemTime> {
        self.loaded.load().by_id.get(id)?.expires
    }

    fn usable(&self, token: &Token) -> Result<(), TokenRefusal> {
        if self.suspended.load().contains(&token.entry.id) {
            return Err(TokenRefusal::Suspended);
        }
        let now = SystemTime::now();
        if token.expires.is_some_and(|e| e <= now) {
            return Err(TokenRefusal::Expired);
        }
        if let Some(max) = self.cfg.max_lifetime {
            let life = token
                .expires
                .and_then(|e| e.duration_since(token.created).ok());
            if life.is_none_or(|l| l > max) {
                return Err(TokenRefusal::OverLifetime);
            }
        }
        Ok(())
    }

    /// Notes a use of token `id`: in memory only (no I/O on the request
    /// path); the watcher writes the uses out ([`TokenStore::flush`]).
    pub fn touch(&self, id: &str) {
        if let Ok(mut l) = self.last_used.lock() {
            let now = SystemTime::now();
            match l.pending.get_mut(id) {
                Some(t) => *t = now,
                None => {
                    l.pending.insert(id.to_owned(), now);
                }
            }
        }
    }

    /// Writes the pending "last used" times (merged with the file's). The
    /// watcher calls it on its blocking pool when [`TokenStore::flush_due`],
    /// and at shutdown.
    pub fn flush(&self) {
        let pending = match self.last_used.lock() {
            Ok(mut l) if !l.pending.is_empty() => {
                l.written = Instant::now();
                std::mem::take(&mut l.pending)
            }
            _ => return,
        };
        let path = self.cfg.last_used_path();
        let mut times = read_last_used(&path);
        let known: HashSet<String> = self.loaded.load().by_id.keys().cloned().collect();
        times.retain(|id, _| known.contains(id));
        for (id, t) in pending {
            times.insert(id, humantime::format_rfc3339_seconds(t).to_string());
        }
        let result = serde_json::to_vec_pretty(&times)
            .map_err(std::io::Error::other)
            .and_then(|json| write_atomic(&path, &json, 0o600, Replace::Yes));
        if let Err(e) = result {
            tracing::warn!(target: "auth", path = %path.display(), error = %e, "cannot write the tokens' last-used times");
        }
    }

    /// Whether `flush` is due (for the watcher's rounds).
    pub fn flush_due(&self) -> bool {
        self.last_used.lock().is_ok_and(|l| {
            !l.pending.is_empty() && l.written.elapsed() >= self.cfg.last_used_interval
        })
    }
}

/// The last-used file: token id → RFC 3339 time.
pub fn read_last_used(path: &Path) -> BTreeMap<String, String> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn load(cfg: &AccessTokensConfig) -> Result<Loaded, TokenFileError> {
    let tokens = TokenFile::load(&cfg.path)?;
    let by_id = compile(&tokens).map_err(|reason| TokenFileError::Parse {
        path: cfg.path.clone(),
        reason,
    })?;
    // no key yet is fine while there are no tokens (nothing was created)
    let key = match HashKey::load(&cfg.key_path()) {
        Ok(k) => Some(k),
        Err(_) if by_id.is_empty() => None,
        Err(e) => return Err(e),
    };
    let gauge = &crate::observe::metrics::metrics().access_token_expiry;
    gauge.reset();
    for t in by_id.values() {
        if let Some(e) = t
            .expires
            .and_then(|e| e.duration_since(SystemTime::UNIX_EPOCH).ok())
        {
            gauge
                .with_label_values(&[&t.entry.name])
                .set(e.as_secs_f64());
        }
    }
    Ok(Loaded { key, by_id })
}

/// A valid token name: what `robot$NAME` and scripts can carry.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Checks every entry; the first problem names its token.
pub fn compile(file: &TokenFile) -> Result<HashMap<String, Arc<Token>>, String> {
    let mut by_id = HashMap::new();
    let mut names = HashSet::new();
    for (i, e) in file.tokens.iter().enumerate() {
        let what = format!("token[{i}] ({:?})", e.name);
        if !valid_name(&e.name) {
            return Err(format!(
                "{what}: a name is 1-64 of a-z, 0-9, '.', '_' and '-'"
            ));
        }
        if !names.insert(e.name.clone()) {
            return Err(format!("{what}: a second token of that name"));
        }
        let hash = file::parse_hash(&e.hash)
            .ok_or_else(|| format!("{what}: hash is not hmac-sha256:<64 hex digits>"))?;
        if e.owner.is_some() && e.issuer.is_none() && !e.groups.is_empty() {
            return Err(format!(
                "{what}: groups are for robots; a person's token has its owner's groups"
            ));
        }
        if e.issuer.is_some() && e.owner.is_none() {
            return Err(format!("{what}: a login token (issuer) needs its owner"));
        }
        let restriction = Restriction::parse(&e.scopes).map_err(|r| format!("{what}: {r}"))?;
        let time = |s: &str| {
            humantime::parse_rfc3339(s).map_err(|err| format!("{what}: time {s:?}: {err}"))
        };
        let created = time(&e.created)?;
        let expires = e.expires.as_deref().map(time).transpose()?;
        let token = Token {
            user: e.user(),
            entry: e.clone(),
            restriction: Arc::new(restriction),
            hash,
            created,
            expires,
        };
        if by_id.insert(e.id.clone(), Arc::new(token)).is_some() {
            return Err(format!("{what}: a second token with id {}", e.id));
        }
    }
    Ok(by_id)
}

/// The expiry of a token made now for `lifetime`, as the file writes it.
pub fn expiry_after(lifetime: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + lifetime).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store over a file of the entries `make` writes with the store's
    /// own key (each entry with its secret).
    fn store_with(
        max: Option<Duration>,
        make: impl FnOnce(&HashKey) -> Vec<(TokenEntry, String)>,
    ) -> (tempfile::TempDir, TokenStore, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AccessTokensConfig {
            path: dir.path().join("tokens.toml"),
            key_file: None,
            max_lifetime: max,
            last_used_interval: Duration::from_secs(3600),
        };
        let key = HashKey::load_or_create(&cfg.key_path()).unwrap();
        let (tokens, secrets) = make(&key).into_iter().unzip();
        TokenFile { tokens }.save(&cfg.path).unwrap();
        let store = TokenStore::new(&cfg).unwrap();
        (dir, store, secrets)
    }

    fn entry(
        key: &HashKey,
        name: &str,
        owner: Option<&str>,
        expires: Option<&str>,
    ) -> (TokenEntry, String) {
        let (secret, id) = file::new_secret();
        let e = TokenEntry {
            name: name.into(),
            id,
            owner: owner.map(str::to_owned),
            groups: Vec::new(),
            issuer: None,
            scopes: vec!["team/**:pull".into()],
            created: "2026-01-01T00:00:00Z".into(),
            expires: expires.map(str::to_owned),
            hash: key.hash(&secret),
        };
        (e, secret)
    }

    #[test]
    fn a_token_logs_in_as_its_owner_until_it_expires() {
        let (_dir, store, s) = store_with(None, |key| {
            vec![
                entry(key, "live", Some("alice"), Some("2999-01-01T00:00:00Z")),
                entry(key, "old", Some("alice"), Some("2026-01-02T00:00:00Z")),
                entry(key, "ci", None, None),
            ]
        });
        assert_eq!(store.check("alice", &s[0]).unwrap().entry.name, "live");
        assert_eq!(
            store.check("bob", &s[0]).unwrap_err(),
            TokenRefusal::WrongUser
        );
        assert_eq!(
            store.check("alice", &s[1]).unwrap_err(),
            TokenRefusal::Expired
        );
        assert_eq!(store.check("robot$ci", &s[2]).unwrap().user, "robot$ci");
        let mut forged = s[0].clone();
        forged.replace_range(20..21, if &forged[20..21] == "A" { "B" } else { "A" });
        assert_eq!(
            store.check("alice", &forged).unwrap_err(),
            TokenRefusal::Unknown
        );
        assert_eq!(
            store.check("alice", "a password").unwrap_err(),
            TokenRefusal::Unknown
        );
    }

    #[test]
    fn max_lifetime_refuses_tokens_without_expiry_or_living_longer() {
        let (_dir, store, s) = store_with(Some(Duration::from_secs(86400 * 30)), |key| {
            vec![
                entry(key, "forever", Some("alice"), None),
                entry(key, "long", Some("alice"), Some("2999-01-01T00:00:00Z")),
            ]
        });
        assert_eq!(
            store.check("alice", &s[0]).unwrap_err(),
            TokenRefusal::OverLifetime
        );
        assert_eq!(
            store.check("alice", &s[1]).unwrap_err(),
            TokenRefusal::OverLifetime
        );
    }

    #[test]
    fn a_broken_file_keeps_the_previous_tokens() {
        let mut kept = None;
        let (dir, store, s) = store_with(None, |key| {
            let e = entry(key, "ci", None, None);
            kept = Some(e.0.clone());
            vec![e]
        });
        let e = kept.unwrap();
        TokenFile {
            tokens: vec![e.clone(), e],
        }
        .save(&dir.path().join("tokens.toml"))
        .unwrap();
        let err = store.reload().unwrap_err().to_string();
        assert!(err.contains("a second token of that name"), "{err}");
        assert!(store.check("robot$ci", &s[0]).is_ok());
    }

    #[test]
    fn uses_are_written_by_flush_not_by_touch() {
        let (dir, store, s) = store_with(None, |key| vec![entry(key, "ci", None, None)]);
        let id = store.check("robot$ci", &s[0]).unwrap().entry.id.clone();
        store.touch(&id);
        let path = dir.path().join("tokens.toml.last-used");
        assert!(!path.exists(), "a use wrote the file");
        store.flush();
        assert!(read_last_used(&path).contains_key(&id));
    }
}
