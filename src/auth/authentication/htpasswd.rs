//! htpasswd files with bcrypt entries, as `htpasswd -B` writes them.
//!
//! Only bcrypt is accepted: MD5-crypt (`$apr1$`), SHA1, crypt and plain
//! entries are weak and refused at load, naming the line and the user, so an
//! operator learns about them instead of having logins silently fail.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HtpasswdError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("line {line}: not of the form user:hash")]
    Syntax { line: usize },
    #[error(
        "line {line} (user {user:?}): unsupported {kind} entry; only bcrypt is accepted \
         (recreate it with `htpasswd -B` or `portcullis user add`)"
    )]
    Unsupported {
        line: usize,
        user: String,
        kind: &'static str,
    },
    #[error("line {line} (user {user:?}): malformed bcrypt hash")]
    Malformed { line: usize, user: String },
    #[error("line {line}: user {user:?} is already defined on line {first}")]
    Duplicate {
        line: usize,
        first: usize,
        user: String,
    },
}

/// The users of one htpasswd file and their bcrypt hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Htpasswd {
    users: HashMap<String, String>,
}

impl Htpasswd {
    pub fn parse(text: &str) -> Result<Self, HtpasswdError> {
        let mut users = HashMap::new();
        let mut first_line = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let entry = raw.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let (user, hash) = entry
                .split_once(':')
                .filter(|(u, h)| !u.is_empty() && !h.is_empty())
                .ok_or(HtpasswdError::Syntax { line })?;
            check_hash(user, hash, line)?;
            if let Some(&first) = first_line.get(user) {
                return Err(HtpasswdError::Duplicate {
                    line,
                    first,
                    user: user.to_owned(),
                });
            }
            first_line.insert(user.to_owned(), line);
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Htpasswd { users })
    }

    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|e| HtpasswdError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    /// User names, sorted.
    pub fn users(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.users.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The bcrypt cost most entries use, so the dummy hash verified for
    /// unknown users costs what a real one does.
    pub fn typical_cost(&self) -> Option<u32> {
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for h in self.users.values() {
            if let Some(c) = h.get(4..6).and_then(|c| c.parse().ok()) {
                *counts.entry(c).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|&(c, n)| (n, c))
            .map(|(c, _)| c)
    }
}

fn check_hash(user: &str, hash: &str, line: usize) -> Result<(), HtpasswdError> {
    let unsupported = |kind| HtpasswdError::Unsupported {
        line,
        user: user.to_owned(),
        kind,
    };
    if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        let cost_ok = hash
            .get(4..6)
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| (4..=31).contains(&c));
        if hash.len() == 60 && hash.as_bytes()[6] == b'$' && cost_ok {
            return Ok(());
        }
        return Err(HtpasswdError::Malformed {
            line,
            user: user.to_owned(),
        });
    }
    Err(if hash.starts_with("$apr1$") {
        unsupported("MD5 ($apr1$)")
    } else if hash.starts_with("{SHA}") {
        unsupported("SHA1 ({SHA})")
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        unsupported("SHA-crypt")
    } else if hash.starts_with('$') {
        unsupported("unknown crypt")
    } else {
        unsupported("crypt or plain-text")
    })
}

/// Adds or replaces `user` in the file at `path` (created if missing),
/// keeping every other line as it was. Written atomically with mode 0600.
pub fn set_user(path: &Path, user: &str, hash: &str) -> Result<(), HtpasswdError> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_whitespace) {
        return Err(HtpasswdError::Syntax { line: 0 });
    }
    let text = read_existing(path)?;
    let mut lines: Vec<String> = Vec::new();
    let mut replaced = false;
    for line in text.lines() {
        if line.split_once(':').is_some_and(|(u, _)| u.trim() == user) {
            if !replaced {
                lines.push(format!("{user}:{hash}"));
                replaced = true;
            }
        } else {
            lines.push(line.to_owned());
        }
    }
    if !replaced {
        lines.push(format!("{user}:{hash}"));
    }
    write_atomic(path, &lines)
}

/// Removes `user`; returns whether it was there.
pub fn remove_user(path: &Path, user: &str) -> Result<bool, HtpasswdError> {
    let text = read_existing(path)?;
    let before = text.lines().count();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.split_once(':').is_none_or(|(u, _)| u.trim() != user))
        .map(str::to_owned)
        .collect();
    if lines.len() == before {
        return Ok(false);
    }
    write_atomic(path, &lines)?;
    Ok(true)
}

fn read_existing(path: &Path) -> Result<String, HtpasswdError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(HtpasswdError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Writes a temp file beside `path`, fsyncs it and renames it over `path`,
/// so a reader (the proxy's watcher) never sees a half-written file.
fn write_atomic(path: &Path, lines: &[String]) -> Result<(), HtpasswdError> {
    let err = |e: std::io::Error| HtpasswdError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    for l in lines {
        writeln!(tmp, "{l}").map_err(err)?;
    }
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // `htpasswd -nbB -C 4 alice secret`
    const ALICE: &str = "alice:$2y$04$Q2cg8Vd0d7FW8pWl1eX1SOvtw4rTO0q1c5kN2G7eQ7Jb9jRj8gwXu";

    #[test]
    fn parses_bcrypt_variants_and_skips_comments() {
        let h = Htpasswd::parse(&format!(
            "# robots\n{ALICE}\n\nbob:$2b$05$Q2cg8Vd0d7FW8pWl1eX1SOvtw4rTO0q1c5kN2G7eQ7Jb9jRj8gwXu\n"
        ))
        .unwrap();
        assert_eq!(h.users(), ["alice", "bob"]);
        assert!(h.hash_of("alice").unwrap().starts_with("$2y$04$"));
        assert_eq!(h.hash_of("carol"), None);
    }

    #[test]
    fn refuses_weak_formats_naming_line_and_user() {
        let e = Htpasswd::parse(&format!("{ALICE}\nbob:$apr1$abc$def\n")).unwrap_err();
        assert_eq!(
            e,
            HtpasswdError::Unsupported {
                line: 2,
                user: "bob".into(),
                kind: "MD5 ($apr1$)"
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("line 2") && msg.contains("\"bob\""), "{msg}");
        assert!(matches!(
            Htpasswd::parse("c:{SHA}abc=").unwrap_err(),
            HtpasswdError::Unsupported {
                kind: "SHA1 ({SHA})",
                ..
            }
        ));
        assert!(matches!(
            Htpasswd::parse("c:plain").unwrap_err(),
            HtpasswdError::Unsupported { .. }
        ));
        assert!(matches!(
            Htpasswd::parse("c:$2y$04$short").unwrap_err(),
            HtpasswdError::Malformed { .. }
        ));
        assert_eq!(
            Htpasswd::parse("nocolon").unwrap_err(),
            HtpasswdError::Syntax { line: 1 }
        );
    }

    #[test]
    fn refuses_duplicates() {
        let e = Htpasswd::parse(&format!("{ALICE}\n{ALICE}\n")).unwrap_err();
        assert_eq!(
            e,
            HtpasswdError::Duplicate {
                line: 2,
                first: 1,
                user: "alice".into()
            }
        );
    }

    #[test]
    fn typical_cost() {
        let h = Htpasswd::parse(ALICE).unwrap();
        assert_eq!(h.typical_cost(), Some(4));
        assert_eq!(Htpasswd::default().typical_cost(), None);
    }

    #[test]
    fn edits_keep_other_lines_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("htpasswd");
        std::fs::write(&p, format!("# keep me\n{ALICE}\n")).unwrap();
        let hash = "$2y$04$Q2cg8Vd0d7FW8pWl1eX1SOvtw4rTO0q1c5kN2G7eQ7Jb9jRj8gwXu";
        set_user(&p, "bob", hash).unwrap();
        set_user(&p, "alice", hash).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, format!("# keep me\nalice:{hash}\nbob:{hash}\n"));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(remove_user(&p, "alice").unwrap());
        assert!(!remove_user(&p, "alice").unwrap());
        assert_eq!(Htpasswd::load(&p).unwrap().users(), ["bob"]);
        assert!(set_user(&p, "a:b", hash).is_err());
    }
}
