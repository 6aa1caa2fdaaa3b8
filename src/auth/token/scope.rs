//! The token scope grammar (distribution `docs/spec/auth/scope.md`) and the
//! `access` claim it turns into.
//!
//! `resourcetype[(class)]:resourcename:action[,action]*`. A name may hold a
//! `:` (a `host:port/` prefix), so the name is everything between the first
//! `:` after the type and the *last* `:`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One requested resource scope, e.g. `repository:team/app:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// `repository`, `registry`, …
    pub kind: String,
    /// The optional class, `plugin` in `repository(plugin)`.
    pub class: Option<String>,
    pub name: String,
    /// Non-empty; `*` means every action (`registry:catalog:*`).
    pub actions: Vec<String>,
}

/// Why a scope string is not in the grammar. Safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("empty scope")]
    Empty,
    #[error("scope needs type:name:actions")]
    MissingPart,
    #[error("invalid resource type")]
    BadType,
    #[error("invalid resource name")]
    BadName,
    #[error("invalid action list")]
    BadActions,
}

/// Longest scope we parse: a 255-byte name plus a host, type and actions.
const MAX_SCOPE_LEN: usize = 1024;

/// Parses one scope (no spaces; see [`parse_scope_list`] for lists).
pub fn parse_scope(s: &str) -> Result<Scope, ScopeError> {
    if s.is_empty() {
        return Err(ScopeError::Empty);
    }
    if s.len() > MAX_SCOPE_LEN {
        return Err(ScopeError::BadName);
    }
    let (ty, rest) = s.split_once(':').ok_or(ScopeError::MissingPart)?;
    let (name, actions) = rest.rsplit_once(':').ok_or(ScopeError::MissingPart)?;
    let (kind, class) = parse_type(ty)?;
    if !is_name(name) {
        return Err(ScopeError::BadName);
    }
    let actions: Vec<String> = actions.split(',').map(str::to_owned).collect();
    if !actions.iter().all(|a| is_action(a)) {
        return Err(ScopeError::BadActions);
    }
    Ok(Scope {
        kind,
        class,
        name: name.to_owned(),
        actions,
    })
}

/// Parses a space-separated scope list (the POST `scope` field, or a
/// `WWW-Authenticate` scope). Empty entries (runs of spaces) are skipped.
pub fn parse_scope_list(s: &str) -> Result<Vec<Scope>, ScopeError> {
    s.split(' ')
        .filter(|p| !p.is_empty())
        .map(parse_scope)
        .collect()
}

/// `resourcetypevalue [ '(' resourcetypevalue ')' ]`, values `[a-z0-9]+`.
fn parse_type(ty: &str) -> Result<(String, Option<String>), ScopeError> {
    let value = |v: &str| {
        !v.is_empty()
            && v.len() <= 64
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let (kind, class) = match ty.split_once('(') {
        None => (ty, None),
        Some((kind, rest)) => {
            let class = rest.strip_suffix(')').ok_or(ScopeError::BadType)?;
            (kind, Some(class))
        }
    };
    if !value(kind) || !class.is_none_or(value) {
        return Err(ScopeError::BadType);
    }
    Ok((kind.to_owned(), class.map(str::to_owned)))
}

/// The characters of `[hostname[:port] '/'] component ('/' component)*`.
/// The precise reference grammar is the registry's business (it answers
/// NAME_INVALID); here we only keep out anything that could confuse a
/// header, a log line or the scope grammar itself.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':'))
}

/// `[a-z]+`, or `*` alone.
fn is_action(a: &str) -> bool {
    a == "*" || (!a.is_empty() && a.len() <= 32 && a.bytes().all(|b| b.is_ascii_lowercase()))
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if let Some(class) = &self.class {
            write!(f, "({class})")?;
        }
        write!(f, ":{}:{}", self.name, self.actions.join(","))
    }
}

/// One entry of the JWT `access` claim, as distribution's
/// `token.ResourceActions` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    /// distribution carries the class along but ignores it for decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub name: String,
    /// May be empty: a granted-nothing entry is not an error (the token
    /// server returns the intersection of requested and allowed actions).
    #[serde(default)]
    pub actions: Vec<String>,
}

impl Access {
    /// The entry granting `actions` (usually a subset of what was asked
    /// for) on the resource of `scope`.
    pub fn granted(scope: &Scope, actions: Vec<String>) -> Access {
        Access {
            kind: scope.kind.clone(),
            class: scope.class.clone(),
            name: scope.name.clone(),
            actions,
        }
    }
}

impl From<Scope> for Access {
    fn from(s: Scope) -> Access {
        Access {
            kind: s.kind,
            class: s.class,
            name: s.name,
            actions: s.actions,
        }
    }
}

/// The granted access as an OAuth `scope` response field: space-separated
/// scopes, entries without actions left out.
pub fn scope_string(access: &[Access]) -> String {
    access
        .iter()
        .filter(|a| !a.actions.is_empty())
        .map(|a| {
            Scope {
                kind: a.kind.clone(),
                class: a.class.clone(),
                name: a.name.clone(),
                actions: a.actions.clone(),
            }
            .to_string()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(kind: &str, class: Option<&str>, name: &str, actions: &[&str]) -> Scope {
        Scope {
            kind: kind.into(),
            class: class.map(Into::into),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn parses_the_spec_examples() {
        let cases = [
            (
                "repository:a/b:pull,push",
                sc("repository", None, "a/b", &["pull", "push"]),
            ),
            (
                "repository(plugin):x:pull",
                sc("repository", Some("plugin"), "x", &["pull"]),
            ),
            (
                "registry:catalog:*",
                sc("registry", None, "catalog", &["*"]),
            ),
            (
                "repository:localhost:5000/team/app:pull",
                sc("repository", None, "localhost:5000/team/app", &["pull"]),
            ),
            (
                "repository:samalba/my-app:push",
                sc("repository", None, "samalba/my-app", &["push"]),
            ),
        ];
        for (text, want) in cases {
            let got = parse_scope(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text, "round trip");
        }
    }

    #[test]
    fn refuses_malformed_scopes() {
        let cases = [
            ("", ScopeError::Empty),
            ("repository", ScopeError::MissingPart),
            ("repository:a", ScopeError::MissingPart),
            ("repository::pull", ScopeError::BadName),
            ("repository:a:", ScopeError::BadActions),
            ("repository:a:pull,", ScopeError::BadActions),
            ("repository:a:,pull", ScopeError::BadActions),
            ("repository:a:PULL", ScopeError::BadActions),
            ("repository:a:pull*", ScopeError::BadActions),
            (":a:pull", ScopeError::BadType),
            ("Repository:a:pull", ScopeError::BadType),
            ("repository(:a:pull", ScopeError::BadType),
            ("repository():a:pull", ScopeError::BadType),
            ("repository(x:a:pull", ScopeError::BadType),
            ("repo-sitory:a:pull", ScopeError::BadType),
            ("repository:a b:pull", ScopeError::BadName),
            ("repository:a\"b:pull", ScopeError::BadName),
            ("repository:a\nb:pull", ScopeError::BadName),
            ("repository:/a:pull", ScopeError::BadName),
            ("repository:a/:pull", ScopeError::BadName),
            ("repository:a//b:pull", ScopeError::BadName),
            ("repository:a%2fb:pull", ScopeError::BadName),
        ];
        for (text, want) in cases {
            assert_eq!(parse_scope(text), Err(want), "{text:?}");
        }
        assert!(parse_scope(&format!("repository:{}:pull", "a".repeat(2000))).is_err());
    }

    #[test]
    fn parses_space_separated_lists() {
        let got =
            parse_scope_list("repository:a:pull  repository:b:push registry:catalog:*").unwrap();
        assert_eq!(
            got,
            vec![
                sc("repository", None, "a", &["pull"]),
                sc("repository", None, "b", &["push"]),
                sc("registry", None, "catalog", &["*"]),
            ]
        );
        assert_eq!(parse_scope_list(""), Ok(vec![]));
        assert_eq!(
            parse_scope_list("repository:a:pull bad"),
            Err(ScopeError::MissingPart)
        );
    }

    #[test]
    fn access_serializes_like_distribution() {
        let a = Access::granted(
            &parse_scope("repository:a/b:pull,push").unwrap(),
            vec!["pull".into()],
        );
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"type":"repository","name":"a/b","actions":["pull"]}"#
        );
        let p: Access =
            serde_json::from_str(r#"{"type":"repository","class":"plugin","name":"x"}"#).unwrap();
        assert_eq!(p.class.as_deref(), Some("plugin"));
        assert!(p.actions.is_empty());
        assert_eq!(
            scope_string(&[a, p, parse_scope("registry:catalog:*").unwrap().into()]),
            "repository:a/b:pull registry:catalog:*"
        );
    }
}
