//! Secrets in the config: inline, from an environment variable, or a file.
//!
//! Keeping a password out of a version-controlled `proxy.toml` must be easy,
//! and a secret must never be printed: `Debug` is redacted.

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "a string, { env = \"VAR\" } or { file = \"/path\" }"
)]
pub enum Secret {
    Inline(String),
    Env { env: String },
    File { file: PathBuf },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("the secret is empty")]
    Empty,
}

impl Secret {
    /// The secret's value; a file's trailing newline is dropped, since
    /// `echo pw > file` and Kubernetes secrets often add one.
    pub fn resolve(&self) -> Result<String, SecretError> {
        let value = match self {
            Secret::Inline(s) => s.clone(),
            Secret::Env { env } => {
                std::env::var(env).map_err(|_| SecretError::EnvMissing(env.clone()))?
            }
            Secret::File { file } => std::fs::read_to_string(file)
                .map_err(|e| SecretError::File {
                    path: file.clone(),
                    reason: e.to_string(),
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(value)
    }
}

/// Serialized (for `check --print` and the docs test) without its value.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Secret::Inline(_) => s.serialize_str("<redacted>"),
            Secret::Env { env } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("env", env)?;
                m.end()
            }
            Secret::File { file } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("file", file)?;
                m.end()
            }
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret(<redacted>)"),
            Secret::Env { env } => write!(f, "Secret(env {env})"),
            Secret::File { file } => write!(f, "Secret(file {})", file.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        s: Secret,
    }

    fn parse(t: &str) -> Result<Secret, toml::de::Error> {
        toml::from_str::<T>(t).map(|t| t.s)
    }

    #[test]
    fn three_forms() {
        assert_eq!(parse(r#"s = "pw""#).unwrap(), Secret::Inline("pw".into()));
        assert_eq!(
            parse(r#"s = { env = "X" }"#).unwrap(),
            Secret::Env { env: "X".into() }
        );
        assert_eq!(
            parse(r#"s = { file = "/f" }"#).unwrap(),
            Secret::File { file: "/f".into() }
        );
        let err = parse(r#"s = { nope = "x" }"#).unwrap_err().to_string();
        assert!(err.contains("{ env = \"VAR\" }"), "{err}");
    }

    #[test]
    fn resolves_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "hunter2\n").unwrap();
        assert_eq!(Secret::File { file: p }.resolve().unwrap(), "hunter2");
        let missing = Secret::Env {
            env: "PORTCULLIS_TEST_UNSET_VAR".into(),
        };
        assert_eq!(
            missing.resolve(),
            Err(SecretError::EnvMissing("PORTCULLIS_TEST_UNSET_VAR".into()))
        );
        assert_eq!(
            Secret::Inline(String::new()).resolve(),
            Err(SecretError::Empty)
        );
    }

    #[test]
    fn debug_is_redacted() {
        let s = format!("{:?}", Secret::Inline("hunter2".into()));
        assert!(!s.contains("hunter2"));
    }
}
