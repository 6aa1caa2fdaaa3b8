//! The revocation list of issued tokens: access and refresh tokens are
//! signed and stateless, so one that must stop working before its `exp`
//! (a revoked access token's, a removed user's, a leaked one) is named
//! here, by token id (`jti`), by subject or by the access token it was
//! minted with, and refused by the gate and the token endpoint.
//!
//! The file is JSON, written atomically by the CLI (`portcullis token
//! revoke`, `portcullis user remove --config`) and reloaded by the
//! proxy's watcher, so a revocation takes effect within
//! `server.watch_interval` (at once on SIGHUP). An entry lives only as
//! long as the tokens it can match (`until`: the revocation time plus the
//! longest lifetime the config issues), so the list stays bounded by the
//! number of revocations in one such lifetime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::files::{write_atomic, Replace};
use super::jwt::Claims;

/// What one entry revokes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One token, by its `jti`.
    Jti(String),
    /// Every token of this subject issued at or before the revocation.
    Subject(String),
    /// Every token minted from this access token (its id, as `token
    /// show` prints it) at or before the revocation.
    AccessToken(String),
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(flatten)]
    pub target: Target,
    /// When it was revoked (RFC 3339): tokens issued later are not.
    pub at: String,
    /// When the entry may go: no token it matches is still valid.
    pub until: String,
    /// Why, for whoever reads the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationFile {
    #[serde(default)]
    pub revoked: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: entry {index}: {reason}")]
    Entry {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

impl RevocationFile {
    /// A missing file is an empty list: nothing was ever revoked.
    pub fn load(path: &Path) -> Result<RevocationFile, RevocationError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RevocationFile::default())
            }
            Err(e) => {
                return Err(RevocationError::Read {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })
            }
        };
        serde_json::from_str(&text).map_err(|e| RevocationError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Adds `target`, revoked now and kept for `keep` (the longest
    /// lifetime a matching token can have), drops the entries no token
    /// can match any more, and writes the file atomically.
    pub fn revoke(
        path: &Path,
        target: Target,
        keep: Duration,
        reason: Option<String>,
    ) -> Result<(), RevocationError> {
        let mut file = RevocationFile::load(path)?;
        let now = SystemTime::now();
        file.revoked
            .retain(|e| parse_time(&e.until).is_ok_and(|until| until > unix_ms(now)));
        file.revoked.push(Entry {
            target,
            at: humantime::format_rfc3339_millis(now).to_string(),
            until: humantime::format_rfc3339_seconds(now + keep + super::jwt::LEEWAY).to_string(),
            reason,
        });
        let err = |reason: String| RevocationError::Write {
            path: path.to_owned(),
            reason,
        };
        let mut body = serde_json::to_string_pretty(&file).map_err(|e| err(e.to_string()))?;
        body.push('\n');
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        write_atomic(path, body.as_bytes(), 0o644, Replace::Yes).map_err(|e| err(e.to_string()))?;
        Ok(())
    }
}

/// The list as the gate checks it: lookups by `jti`, subject and access
/// token, each with the time (Unix ms) up to which tokens are refused.
#[derive(Debug, Default)]
pub struct Revocations {
    jti: HashMap<String, u64>,
    subjects: HashMap<String, u64>,
    access_tokens: HashMap<String, u64>,
}

impl Revocations {
    /// Compiles the file's entries, skipping those past `until` at `now_ms`.
    pub fn compile(
        file: &RevocationFile,
        path: &Path,
        now_ms: u64,
    ) -> Result<Self, RevocationError> {
        let mut r = Revocations::default();
        for (index, e) in file.revoked.iter().enumerate() {
            let bad = |reason: String| RevocationError::Entry {
                path: path.to_owned(),
                index,
                reason,
            };
            let at = parse_time(&e.at).map_err(|m| bad(format!("at: {m}")))?;
            let until = parse_time(&e.until).map_err(|m| bad(format!("until: {m}")))?;
            if until <= now_ms {
                continue;
            }
            let (map, key) = match &e.target {
                Target::Jti(j) => (&mut r.jti, j),
                Target::Subject(s) => (&mut r.subjects, s),
                Target::AccessToken(t) => (&mut r.access_tokens, t),
            };
            // the latest revocation of a key covers the earlier ones
            let slot = map.entry(key.clone()).or_insert(at);
            *slot = (*slot).max(at);
        }
        Ok(r)
    }

    pub fn len(&self) -> usize {
        self.jti.len() + self.subjects.len() + self.access_tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Why `claims` are revoked, if they are: issued at or before the
    /// revocation, to the millisecond for tokens that say (`iat_ms`); a
    /// token with whole seconds only counts from the start of its second.
    pub fn refuses(&self, claims: &Claims) -> Option<&'static str> {
        if self.jti.contains_key(&claims.jti) {
            return Some("revoked_jti");
        }
        let issued = issued_ms(claims);
        if self
            .subjects
            .get(&claims.sub)
            .is_some_and(|&at| issued <= at)
        {
            return Some("revoked_subject");
        }
        if let Some(tid) = &claims.tid {
            if self.access_tokens.get(tid).is_some_and(|&at| issued <= at) {
                return Some("revoked_access_token");
            }
        }
        None
    }
}

fn issued_ms(claims: &Claims) -> u64 {
    claims.iat_ms.unwrap_or(claims.iat.saturating_mul(1000))
}

/// The list the proxy holds, swapped whole on reload; a file that does not
/// load keeps the previous list.
///
/// Besides the file, subjects the proxy itself saw go (users removed from
/// the htpasswd file, or given another password, by any tool) are held in
/// memory for `keep`, the longest lifetime of a token it issues.
pub struct RevocationList {
    path: PathBuf,
    current: ArcSwap<Revocations>,
    keep: Duration,
    /// subject → (revoked at, until), Unix ms; read on every bearer
    /// request without a lock, replaced whole on the rare change
    seen: ArcSwap<HashMap<String, (u64, u64)>>,
    /// The file's entries as last loaded (what `[cluster]` shares).
    entries: ArcSwap<Vec<Entry>>,
    /// Entries the other replicas of a `[cluster]` revoked.
    shared: ArcSwap<Revocations>,
}

impl RevocationList {
    pub fn load(path: &Path, keep: Duration) -> Result<RevocationList, RevocationError> {
        let list = RevocationList {
            path: path.to_owned(),
            current: ArcSwap::from_pointee(Revocations::default()),
            keep: keep + super::jwt::LEEWAY,
            seen: ArcSwap::from_pointee(HashMap::new()),
            entries: ArcSwap::from_pointee(Vec::new()),
            shared: ArcSwap::from_pointee(Revocations::default()),
        };
        list.reload()?;
        Ok(list)
    }

    /// What this process revoked and still holds: the file's entries and
    /// the subjects it saw go, as entries (for `[cluster]` to share).
    pub fn local_entries(&self) -> Vec<Entry> {
        let now = unix_ms(SystemTime::now());
        let time = |ms: u64| {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        };
        let mut v: Vec<Entry> = self.entries.load().iter().cloned().collect();
        v.extend(
            self.seen
                .load()
                .iter()
                .filter(|(_, &(_, until))| until > now)
                .map(|(sub, &(at, until))| Entry {
                    target: Target::Subject(sub.clone()),
                    at: time(at),
                    until: time(until),
                    reason: Some("user changed".into()),
                }),
        );
        v
    }

    /// Replaces the entries of the other replicas (a `[cluster]` sync);
    /// entries that do not parse are skipped.
    pub fn set_shared(&self, entries: Vec<Entry>) -> usize {
        let now = unix_ms(SystemTime::now());
        let file = RevocationFile {
            revoked: entries
                .into_iter()
                .filter(|e| parse_time(&e.at).is_ok() && parse_time(&e.until).is_ok())
                .collect(),
        };
        let compiled = Revocations::compile(&file, Path::new("cluster"), now).unwrap_or_default();
        let n = compiled.len();
        self.shared.store(std::sync::Arc::new(compiled));
        n
    }

    /// Revokes, in memory, the tokens issued to `subjects` until now.
    pub fn revoke_subjects(&self, subjects: &[String]) {
        let now = unix_ms(SystemTime::now());
        let until = now + self.keep.as_millis() as u64;
        self.seen.rcu(|seen| {
            let mut next: HashMap<String, (u64, u64)> = seen
                .iter()
                .filter(|(_, &(_, u))| u > now)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            next.extend(subjects.iter().map(|s| (s.clone(), (now, until))));
            next
        });
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again; returns how many keys are revoked.
    pub fn reload(&self) -> Result<usize, RevocationError> {
        let file = RevocationFile::load(&self.path)?;
        let compiled = Revocations::compile(&file, &self.path, unix_ms(SystemTime::now()))?;
        let n = compiled.len();
        self.current.store(std::sync::Arc::new(compiled));
        self.entries.store(std::sync::Arc::new(file.revoked));
        Ok(n)
    }

    pub fn refuses(&self, claims: &Claims) -> Option<&'static str> {
        if let Some(reason) = self.current.load().refuses(claims) {
            return Some(reason);
        }
        if let Some(reason) = self.shared.load().refuses(claims) {
            return Some(reason);
        }
        let seen = self.seen.load();
        let &(at, until) = seen.get(&claims.sub)?;
        (issued_ms(claims) <= at && until > unix_ms(SystemTime::now())).then_some("user_changed")
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An RFC 3339 time (fractions allowed) in Unix ms.
fn parse_time(s: &str) -> Result<u64, String> {
    humantime::parse_rfc3339(s)
        .map(unix_ms)
        .map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: &str, iat: u64, tid: Option<&str>) -> Claims {
        Claims {
            iss: "i".into(),
            sub: sub.into(),
            aud: "a".into(),
            exp: iat + 300,
            nbf: iat,
            iat,
            jti: jti.into(),
            access: Vec::new(),
            token_use: None,
            groups: Vec::new(),
            cfp: None,
            tid: tid.map(str::to_owned),
            iat_ms: None,
        }
    }

    fn entry(target: Target, at: u64, until: u64) -> Entry {
        let t = |s: u64| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
        };
        Entry {
            target,
            at: t(at),
            until: t(until),
            reason: None,
        }
    }

    fn compiled(entries: Vec<Entry>, now: u64) -> Revocations {
        let file = RevocationFile { revoked: entries };
        Revocations::compile(&file, Path::new("r.json"), now * 1000).unwrap()
    }

    const T: u64 = 1_800_000_000;

    #[test]
    fn a_subject_is_revoked_for_tokens_issued_until_then_only() {
        let r = compiled(vec![entry(Target::Subject("alice".into()), T, T + 900)], T);
        assert_eq!(
            r.refuses(&claims("alice", "j1", T - 10, None)),
            Some("revoked_subject")
        );
        assert_eq!(
            r.refuses(&claims("alice", "j2", T, None)),
            Some("revoked_subject")
        );
        assert_eq!(r.refuses(&claims("alice", "j3", T + 1, None)), None);
        assert_eq!(r.refuses(&claims("bob", "j4", T - 10, None)), None);
    }

    #[test]
    fn milliseconds_tell_the_tokens_of_the_revocations_second_apart() {
        let mut r = Revocations::default();
        r.subjects.insert("alice".into(), T * 1000 + 500);
        let at = |ms: Option<u64>| Claims {
            iat_ms: ms,
            ..claims("alice", "j", T, None)
        };
        assert_eq!(
            r.refuses(&at(Some(T * 1000 + 400))),
            Some("revoked_subject")
        );
        assert_eq!(
            r.refuses(&at(Some(T * 1000 + 600))),
            None,
            "issued after, same second"
        );
        // without milliseconds, the start of its second: before
        assert_eq!(r.refuses(&at(None)), Some("revoked_subject"));
    }

    #[test]
    fn jti_and_access_token_entries() {
        let r = compiled(
            vec![
                entry(Target::Jti("leaked".into()), T, T + 900),
                entry(Target::AccessToken("0123abcd4567".into()), T, T + 900),
            ],
            T,
        );
        assert_eq!(
            r.refuses(&claims("bob", "leaked", T + 5, None)),
            Some("revoked_jti")
        );
        assert_eq!(r.refuses(&claims("bob", "other", T + 5, None)), None);
        let minted = claims("robot$ci", "j", T - 1, Some("0123abcd4567"));
        assert_eq!(r.refuses(&minted), Some("revoked_access_token"));
        // a token of the same name made later has another id
        let newer = claims("robot$ci", "j", T - 1, Some("89abcdef0123"));
        assert_eq!(r.refuses(&newer), None);
    }

    #[test]
    fn expired_entries_are_dropped_and_the_latest_revocation_wins() {
        let r = compiled(
            vec![
                entry(Target::Subject("old".into()), T - 1000, T - 1),
                entry(Target::Subject("alice".into()), T - 500, T + 100),
                entry(Target::Subject("alice".into()), T - 100, T + 500),
            ],
            T,
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r.refuses(&claims("old", "j", T - 2000, None)), None);
        assert!(r.refuses(&claims("alice", "j", T - 200, None)).is_some());
    }

    #[test]
    fn subjects_seen_going_are_revoked_in_memory_until_then() {
        let dir = tempfile::tempdir().unwrap();
        let list =
            RevocationList::load(&dir.path().join("none.json"), Duration::from_secs(60)).unwrap();
        let now = unix_ms(SystemTime::now()) / 1000;
        assert_eq!(list.refuses(&claims("alice", "j", now - 5, None)), None);
        list.revoke_subjects(&["alice".to_owned()]);
        assert_eq!(
            list.refuses(&claims("alice", "j", now - 5, None)),
            Some("user_changed")
        );
        assert_eq!(list.refuses(&claims("bob", "j", now - 5, None)), None);
        // a login after the change is good
        assert_eq!(list.refuses(&claims("alice", "j", now + 2, None)), None);
        // a reload of the file keeps what was seen
        list.reload().unwrap();
        assert_eq!(
            list.refuses(&claims("alice", "j", now - 5, None)),
            Some("user_changed")
        );
    }

    #[test]
    fn the_file_round_trips_prunes_and_names_a_bad_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("revoked.json");
        assert!(RevocationFile::load(&path).unwrap().revoked.is_empty());
        RevocationFile::revoke(
            &path,
            Target::Subject("alice".into()),
            Duration::from_secs(60),
            None,
        )
        .unwrap();
        RevocationFile::revoke(
            &path,
            Target::Jti("j1".into()),
            Duration::from_secs(60),
            Some("leaked in a CI log".into()),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"subject\": \"alice\""), "{text}");
        assert!(text.contains("leaked in a CI log"), "{text}");
        let list = RevocationList::load(&path, Duration::from_secs(60)).unwrap();
        assert_eq!(list.current.load().len(), 2);

        // an entry past `until` is dropped on the next write
        let mut f = RevocationFile::load(&path).unwrap();
        f.revoked[0].until = "2001-01-01T00:00:00Z".into();
        std::fs::write(&path, serde_json::to_string(&f).unwrap()).unwrap();
        RevocationFile::revoke(
            &path,
            Target::Jti("j2".into()),
            Duration::from_secs(60),
            None,
        )
        .unwrap();
        let f = RevocationFile::load(&path).unwrap();
        let targets: Vec<_> = f.revoked.iter().map(|e| e.target.clone()).collect();
        assert_eq!(
            targets,
            vec![Target::Jti("j1".into()), Target::Jti("j2".into())]
        );

        // a broken file says where, and the list keeps what it had
        std::fs::write(
            &path,
            r#"{"revoked":[{"jti":"x","at":"yesterday","until":"2999-01-01T00:00:00Z"}]}"#,
        )
        .unwrap();
        let e = list.reload().unwrap_err().to_string();
        assert!(e.contains("entry 0: at: \"yesterday\""), "{e}");
        assert_eq!(list.current.load().len(), 2);
    }
}
