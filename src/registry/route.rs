//! The v2 registry API as typed routes.
//!
//! Every request is parsed here before any auth decision: a path that is not
//! part of the API (or tries to escape it) never reaches the upstream.

use std::fmt;

/// A repository name that satisfies the distribution grammar
/// (`path-component ("/" path-component)*`, lowercase, at most 255 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName(String);

impl RepoName {
    /// Validates `name` against the distribution reference grammar.
    pub fn parse(name: &str) -> Result<Self, RouteError> {
        if name.is_empty() || name.len() > 255 {
            return Err(RouteError::NameInvalid);
        }
        if name.split('/').all(is_path_component) {
            Ok(RepoName(name.to_owned()))
        } else {
            Err(RouteError::NameInvalid)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` is one path component of a name (no `/`): what a user
    /// name must be to stand for `${user}` in a repository pattern.
    pub fn is_component(s: &str) -> bool {
        s.len() <= 255 && is_path_component(s)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run: ".", "_", "__" or one or more "-"
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A content digest, `algorithm:hex` (e.g. `sha256:…`).
fn is_digest(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let alg_ok = !alg.is_empty()
        && alg.as_bytes()[0].is_ascii_alphabetic()
        && alg
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'-' | b'_' | b'+' | b'.'));
    alg_ok && hex.len() >= 32 && hex.bytes().all(|x| x.is_ascii_hexdigit())
}

/// A tag, `[\w][\w.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// An upload session id as distribution issues them (UUIDs; be lenient on the
/// exact form but never allow separators or dots).
fn is_upload_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|x| x.is_ascii_alphanumeric() || x == b'-' || x == b'_')
}

/// What a request needs to be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
    Catalog,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Catalog => "catalog",
        }
    }
}

/// A request of the v2 API, with the repository it touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v2/`: the API version check `docker login` starts with.
    Base,
    Catalog,
    Tags {
        repo: RepoName,
    },
    Manifest {
        repo: RepoName,
        reference: String,
    },
    Blob {
        repo: RepoName,
        digest: String,
    },
    /// `POST /v2/<name>/blobs/uploads/`, optionally a cross-repository mount.
    UploadStart {
        repo: RepoName,
        mount_from: Option<RepoName>,
    },
    Upload {
        repo: RepoName,
        id: String,
    },
    Referrers {
        repo: RepoName,
        digest: String,
    },
}

impl Route {
    /// A short, bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags { .. } => "tags",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::UploadStart { .. } | Route::Upload { .. } => "upload",
            Route::Referrers { .. } => "referrers",
        }
    }

    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags { repo }
            | Route::Manifest { repo, .. }
            | Route::Blob { repo, .. }
            | Route::UploadStart { repo, .. }
            | Route::Upload { repo, .. }
            | Route::Referrers { repo, .. } => Some(repo),
        }
    }

    /// The manifest reference or blob digest, for the audit trail.
    pub fn reference(&self) -> Option<&str> {
        match self {
            Route::Manifest { reference, .. } => Some(reference),
            Route::Blob { digest, .. } | Route::Referrers { digest, .. } => Some(digest),
            _ => None,
        }
    }

    /// The actions a request needs: on its own repository, and for a mount
    /// also `pull` on the source repository.
    pub fn required(
        &self,
        method: &http::Method,
    ) -> Result<Vec<(Option<&RepoName>, Action)>, RouteError> {
        use http::Method as M;
        let read = method == M::GET || method == M::HEAD;
        let need = |a: Action| Ok(vec![(self.repo(), a)]);
        match self {
            Route::Base if read => Ok(Vec::new()),
            Route::Catalog if read => need(Action::Catalog),
            Route::Tags { .. } | Route::Referrers { .. } if read => need(Action::Pull),
            Route::Manifest { .. } | Route::Blob { .. } if read => need(Action::Pull),
            Route::Manifest { .. } if method == M::PUT => need(Action::Push),
            Route::Manifest { .. } | Route::Blob { .. } if method == M::DELETE => {
                need(Action::Delete)
            }
            Route::UploadStart { mount_from, .. } if method == M::POST => {
                let mut v = vec![(self.repo(), Action::Push)];
                if let Some(from) = mount_from {
                    v.push((Some(from), Action::Pull));
                }
                Ok(v)
            }
            Route::Upload { .. }
                if read || method == M::PATCH || method == M::PUT || method == M::DELETE =>
            {
                need(Action::Push)
            }
            _ => Err(RouteError::MethodNotAllowed),
        }
    }
}

/// Why a request is not a v2 API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Path tricks: `..`, `//`, percent-encoding, backslashes, control bytes.
    #[error("malformed request path")]
    Malformed,
    #[error("not part of the registry API")]
    NotFound,
    #[error("invalid repository name")]
    NameInvalid,
    #[error("invalid tag or digest")]
    ReferenceInvalid,
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
}

/// Refuses paths that could mean something else to the upstream than to us.
///
/// No v2 path needs percent-encoding (names, tags, digests and upload ids
/// are restricted alphabets), so any `%` is refused rather than decoded: a
/// decoder disagreement is exactly what path tricks exploit.
pub fn check_path_safety(path: &str) -> Result<(), RouteError> {
    if !path.starts_with('/')
        || path.contains("//")
        || path
            .bytes()
            .any(|b| b == b'%' || b == b'\\' || !(0x21..0x7f).contains(&b))
        || path.split('/').any(|seg| seg == "." || seg == "..")
    {
        return Err(RouteError::Malformed);
    }
    Ok(())
}

/// Parses a `/v2/...` path (without the query) into a route.
/// `query` is consulted only for `mount=`/`from=` of upload starts.
pub fn parse(path: &str, query: Option<&str>) -> Result<Route, RouteError> {
    check_path_safety(path)?;
    if path == "/v2/" || path == "/v2" {
        return Ok(Route::Base);
    }
    let rest = path.strip_prefix("/v2/").ok_or(RouteError::NotFound)?;
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    // Upload start keeps its trailing slash: `<name>/blobs/uploads/`.
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        let repo = RepoName::parse(name)?;
        let mount_from = match query_param(query, "from") {
            Some(from) if query_param(query, "mount").is_some() => Some(RepoName::parse(&from)?),
            _ => None,
        };
        return Ok(Route::UploadStart { repo, mount_from });
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        let repo = RepoName::parse(&segs[..n - 2].join("/"))?;
        return Ok(Route::Tags { repo });
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let repo = RepoName::parse(&segs[..n - 3].join("/"))?;
        let id = segs[n - 1];
        if !is_upload_id(id) {
            return Err(RouteError::NotFound);
        }
        return Ok(Route::Upload {
            repo,
            id: id.to_owned(),
        });
    }
    if n >= 3 {
        let name = segs[..n - 2].join("/");
        let last = segs[n - 1];
        match segs[n - 2] {
            "manifests" => {
                let repo = RepoName::parse(&name)?;
                if !(is_tag(last) || is_digest(last)) {
                    return Err(RouteError::ReferenceInvalid);
                }
                return Ok(Route::Manifest {
                    repo,
                    reference: last.to_owned(),
                });
            }
            "blobs" | "referrers" => {
                let repo = RepoName::parse(&name)?;
                if !is_digest(last) {
                    return Err(RouteError::ReferenceInvalid);
                }
                let digest = last.to_owned();
                return Ok(if segs[n - 2] == "blobs" {
                    Route::Blob { repo, digest }
                } else {
                    Route::Referrers { repo, digest }
                });
            }
            _ => {}
        }
    }
    Err(RouteError::NotFound)
}

/// The first value of `key` in a query string, percent-decoded.
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn parses_every_route() {
        assert_eq!(parse("/v2/", None), Ok(Route::Base));
        assert_eq!(parse("/v2/_catalog", None), Ok(Route::Catalog));
        assert_eq!(
            parse("/v2/team/app/tags/list", None),
            Ok(Route::Tags {
                repo: repo("team/app")
            })
        );
        assert_eq!(
            parse("/v2/app/manifests/v1.2-rc_3", None),
            Ok(Route::Manifest {
                repo: repo("app"),
                reference: "v1.2-rc_3".into()
            })
        );
        assert_eq!(
            parse(&format!("/v2/a/b/c/blobs/{D}"), None),
            Ok(Route::Blob {
                repo: repo("a/b/c"),
                digest: D.into()
            })
        );
        assert_eq!(
            parse("/v2/app/blobs/uploads/", None),
            Ok(Route::UploadStart {
                repo: repo("app"),
                mount_from: None
            })
        );
        assert_eq!(
            parse(
                "/v2/app/blobs/uploads/6f1c3a2e-0b6d-4c1e-9f3a-1b2c3d4e5f60",
                None
            ),
            Ok(Route::Upload {
                repo: repo("app"),
                id: "6f1c3a2e-0b6d-4c1e-9f3a-1b2c3d4e5f60".into()
            })
        );
        assert_eq!(
            parse(&format!("/v2/app/referrers/{D}"), None),
            Ok(Route::Referrers {
                repo: repo("app"),
                digest: D.into()
            })
        );
    }

    #[test]
    fn names_may_contain_api_words() {
        assert_eq!(
            parse("/v2/manifests/blobs/manifests/latest", None),
            Ok(Route::Manifest {
                repo: repo("manifests/blobs"),
                reference: "latest".into()
            })
        );
        assert_eq!(
            parse("/v2/tags/list/tags/list", None),
            Ok(Route::Tags {
                repo: repo("tags/list")
            })
        );
    }

    #[test]
    fn mount_needs_pull_on_source() {
        let r = parse(
            "/v2/b/blobs/uploads/",
            Some(&format!("mount={D}&from=team%2Fa")),
        )
        .unwrap();
        assert_eq!(
            r,
            Route::UploadStart {
                repo: repo("b"),
                mount_from: Some(repo("team/a"))
            }
        );
        let need = r.required(&http::Method::POST).unwrap();
        assert_eq!(
            need,
            vec![
                (Some(&repo("b")), Action::Push),
                (Some(&repo("team/a")), Action::Pull)
            ]
        );
        // `from` without `mount` is not a mount
        let r = parse("/v2/b/blobs/uploads/", Some("from=a")).unwrap();
        assert_eq!(
            r,
            Route::UploadStart {
                repo: repo("b"),
                mount_from: None
            }
        );
        // an invalid source name is refused
        assert_eq!(
            parse(
                "/v2/b/blobs/uploads/",
                Some(&format!("mount={D}&from=..%2Fx"))
            ),
            Err(RouteError::NameInvalid)
        );
    }

    #[test]
    fn actions_by_method() {
        use http::Method as M;
        let m = parse("/v2/a/manifests/latest", None).unwrap();
        assert_eq!(m.required(&M::GET).unwrap()[0].1, Action::Pull);
        assert_eq!(m.required(&M::HEAD).unwrap()[0].1, Action::Pull);
        assert_eq!(m.required(&M::PUT).unwrap()[0].1, Action::Push);
        assert_eq!(m.required(&M::DELETE).unwrap()[0].1, Action::Delete);
        assert_eq!(m.required(&M::POST), Err(RouteError::MethodNotAllowed));
        let u = parse("/v2/a/blobs/uploads/abc", None).unwrap();
        assert_eq!(u.required(&M::PATCH).unwrap()[0].1, Action::Push);
        assert_eq!(
            parse("/v2/", None).unwrap().required(&M::GET).unwrap(),
            vec![]
        );
        assert_eq!(
            parse("/v2/", None).unwrap().required(&M::POST),
            Err(RouteError::MethodNotAllowed)
        );
        let c = parse("/v2/_catalog", None).unwrap();
        assert_eq!(c.required(&M::GET).unwrap(), vec![(None, Action::Catalog)]);
    }

    #[test]
    fn refuses_path_tricks() {
        for p in [
            "/v2/../etc/passwd",
            "/v2/a/../b/manifests/x",
            "/v2/a/./manifests/x",
            "/v2/a/%2e%2e/b/manifests/x",
            "/v2/a%2fb/manifests/x",
            "/v2//a/manifests/x",
            "/v2/a\\b/manifests/x",
            "/v2/a b/manifests/x",
            "v2/a/manifests/x",
        ] {
            assert_eq!(parse(p, None), Err(RouteError::Malformed), "{p}");
        }
    }

    #[test]
    fn refuses_non_api_and_bad_names() {
        assert_eq!(parse("/", None), Err(RouteError::NotFound));
        assert_eq!(parse("/v1/", None), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/a", None), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/a/whatever/x", None), Err(RouteError::NotFound));
        assert_eq!(
            parse("/v2/A/manifests/x", None),
            Err(RouteError::NameInvalid)
        );
        assert_eq!(
            parse("/v2/a-/manifests/x", None),
            Err(RouteError::NameInvalid)
        );
        assert_eq!(
            parse("/v2/a/manifests/-x", None),
            Err(RouteError::ReferenceInvalid)
        );
        assert_eq!(
            parse("/v2/a/blobs/latest", None),
            Err(RouteError::ReferenceInvalid)
        );
    }

    #[test]
    fn name_grammar() {
        for ok in [
            "a",
            "a0",
            "a.b",
            "a_b",
            "a__b",
            "a---b",
            "my-org/my.app_x/v2",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "A", ".a", "a.", "a..b", "a___b", "a_-b", "a/", "/a", "a//b",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
    }

    #[test]
    fn digests_and_tags() {
        assert!(is_digest(D));
        assert!(is_digest("sha512+b64.x:0123456789abcdef0123456789abcdef"));
        assert!(!is_digest("sha256:xyz"));
        assert!(!is_digest("sha256:0123"));
        assert!(!is_digest(":0123456789abcdef0123456789abcdef"));
        assert!(is_tag("latest"));
        assert!(is_tag(&"a".repeat(128)));
        assert!(!is_tag(&"a".repeat(129)));
        assert!(!is_tag(".hidden"));
    }
}
