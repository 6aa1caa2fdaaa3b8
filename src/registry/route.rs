//! The v2 registry API as typed routes.
//!
//! Every request is parsed here before any auth decision: a path that is not
//! part of the API (or tries to escape it) never reaches the upstream.
//!
//! The order of answers: path tricks (400) and invalid names (400), then
//! answers that depend on the request's syntax alone (a reference that is
//! no valid tag or digest, an upload id the registry never issues, a method
//! a route does not have), all before authentication, as registry:2's router
//! answers a path it does not route; they are the same for every
//! repository, so they reveal nothing. Everything else is authenticated and
//! authorized first, then forwarded.

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

/// What distribution's router takes for a digest (go-digest's
/// `DigestRegexp`): `[a-z0-9]+([.+_-][a-z0-9]+)*` `:` `[a-zA-Z0-9=_-]+`.
/// A reference of this form that is not a valid digest ([`is_digest`]) is
/// routed by the registry and then refused; any other non-digest is not
/// routed at all (a plain 404).
fn has_digest_form(s: &str) -> bool {
    let Some((alg, encoded)) = s.split_once(':') else {
        return false;
    };
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let b = alg.as_bytes();
    let alg_ok = !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&x| alnum(x) || matches!(x, b'.' | b'+' | b'_' | b'-'))
        && !b.windows(2).any(|w| !alnum(w[0]) && !alnum(w[1]));
    alg_ok
        && !encoded.is_empty()
        && encoded
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'=' | b'_' | b'-'))
}

/// A content digest as the registry accepts one (go-digest's `Parse`): an
/// algorithm it implements with its lowercase hex encoding.
fn is_digest(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == len
        && hex
            .bytes()
            .all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x))
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
    /// A manifest reference the registry routes (it has the form of a
    /// digest) but that is no valid tag or digest: answered here, by
    /// method, and never forwarded.
    ManifestBadDigest {
        repo: RepoName,
    },
}

impl Route {
    /// A short, bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags { .. } => "tags",
            Route::Manifest { .. } | Route::ManifestBadDigest { .. } => "manifest",
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
            | Route::Referrers { repo, .. }
            | Route::ManifestBadDigest { repo } => Some(repo),
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
            // the catalog has GET only (the registry answers 405 to HEAD;
            // the proxy answers the catalog itself)
            Route::Catalog if method == M::GET => need(Action::Catalog),
            // HEAD of a tag list goes to the registry (405) after the
            // access check, as a refusal must not depend on the method
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
            // the registry routes every method of the upload collection to
            // its upload handler, which finds no upload
            Route::UploadStart { .. } => Err(RouteError::UploadUnknown),
            Route::Upload { .. }
                if read || method == M::PATCH || method == M::PUT || method == M::DELETE =>
            {
                need(Action::Push)
            }
            // as the registry answers, once it took the reference for a
            // tag: nothing by that name, a manifest that cannot be stored
            // under it, a deletion that needs a digest
            Route::ManifestBadDigest { .. } if read => Err(RouteError::ManifestUnknown),
            Route::ManifestBadDigest { .. } if method == M::PUT => {
                Err(RouteError::ReferenceInvalid)
            }
            Route::ManifestBadDigest { .. } if method == M::DELETE => {
                Err(RouteError::DigestInvalid)
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
    /// A manifest pushed under a reference that is no tag or digest.
    #[error("invalid tag or digest")]
    ReferenceInvalid,
    /// A manifest reference that is no tag or digest, to read: no such
    /// manifest can exist.
    #[error("manifest unknown")]
    ManifestUnknown,
    /// A blob path whose last segment is not of the form of a digest.
    #[error("blob unknown")]
    BlobUnknown,
    /// Of the form of a digest, but not one the registry accepts.
    #[error("invalid digest")]
    DigestInvalid,
    /// An upload id of a form the registry never issues, or a method the
    /// upload collection does not have.
    #[error("blob upload unknown")]
    UploadUnknown,
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
}

/// Refuses paths that could mean something else to the upstream than to us.
///
/// No v2 path needs percent-encoding (names, tags, digests and upload ids
/// are restricted alphabets), so any `%` is refused rather than decoded: a
/// decoder disagreement is exactly what path tricks exploit.
pub fn check_path_safety(path: &str) -> Result<(), RouteError> {
    let Some(rest) = path.as_bytes().strip_prefix(b"/") else {
        return Err(RouteError::Malformed);
    };
    // every segment but a trailing one non-empty (no `//`), none a dot
    // segment: one loop over the bytes that counts each segment's length
    // and dots, as it runs on every request
    let dot_segment = |len: usize, dots: usize| len == dots && (1..=2).contains(&dots);
    let (mut len, mut dots) = (0usize, 0usize);
    for &b in rest {
        if b == b'/' {
            if len == 0 || dot_segment(len, dots) {
                return Err(RouteError::Malformed);
            }
            (len, dots) = (0, 0);
        } else if UNSAFE_PATH_BYTE[usize::from(b)] {
            return Err(RouteError::Malformed);
        } else {
            len += 1;
            dots += usize::from(b == b'.');
        }
    }
    if dot_segment(len, dots) {
        return Err(RouteError::Malformed);
    }
    Ok(())
}

/// `%`, the backslash, controls, space, DEL and every non-ASCII byte.
static UNSAFE_PATH_BYTE: [bool; 256] = {
    let mut table = [true; 256];
    let mut b = 0x21;
    while b < 0x7f {
        table[b] = b == b'%' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

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
    // The name is what precedes the route's last segments: sliced off the
    // path, not collected and joined again.
    let mut tail = rest.rsplitn(3, '/');
    let (Some(last), Some(kind), Some(name)) = (tail.next(), tail.next(), tail.next()) else {
        return Err(RouteError::NotFound);
    };
    if kind == "tags" && last == "list" {
        let repo = RepoName::parse(name)?;
        return Ok(Route::Tags { repo });
    }
    if let (Some((name, "blobs")), "uploads") = (name.rsplit_once('/'), kind) {
        let repo = RepoName::parse(name)?;
        if !is_upload_id(last) {
            return Err(RouteError::UploadUnknown);
        }
        return Ok(Route::Upload {
            repo,
            id: last.to_owned(),
        });
    }
    match kind {
        "manifests" => {
            let repo = RepoName::parse(name)?;
            if is_tag(last) || is_digest(last) {
                return Ok(Route::Manifest {
                    repo,
                    reference: last.to_owned(),
                });
            }
            if has_digest_form(last) {
                return Ok(Route::ManifestBadDigest { repo });
            }
            Err(RouteError::ManifestUnknown)
        }
        "blobs" | "referrers" => {
            let repo = RepoName::parse(name)?;
            if !is_digest(last) {
                // the spec asks 400 for a referrers digest of bad syntax
                return Err(if kind == "referrers" || has_digest_form(last) {
                    RouteError::DigestInvalid
                } else {
                    RouteError::BlobUnknown
                });
            }
            let digest = last.to_owned();
            Ok(if kind == "blobs" {
                Route::Blob { repo, digest }
            } else {
                Route::Referrers { repo, digest }
            })
        }
        _ => Err(RouteError::NotFound),
    }
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
    }

    #[test]
    fn invalid_references_as_the_registry_routes_them() {
        use http::Method as M;
        // not routed by the registry: 404 whatever the method
        for p in [
            "/v2/a/manifests/-x",
            "/v2/a/manifests/.x",
            "/v2/a/manifests/A:x",
        ] {
            assert_eq!(parse(p, None), Err(RouteError::ManifestUnknown), "{p}");
        }
        for p in [
            "/v2/a/blobs/latest",
            "/v2/a/blobs/sha256:",
            "/v2/a/blobs/a..b:x",
        ] {
            assert_eq!(parse(p, None), Err(RouteError::BlobUnknown), "{p}");
        }
        // routed, then refused
        for p in ["/v2/a/blobs/sha256:xyz", "/v2/a/referrers/latest"] {
            assert_eq!(parse(p, None), Err(RouteError::DigestInvalid), "{p}");
        }
        let m = parse("/v2/a/manifests/sha256:xyz", None).unwrap();
        assert_eq!(m, Route::ManifestBadDigest { repo: repo("a") });
        assert_eq!(m.required(&M::GET), Err(RouteError::ManifestUnknown));
        assert_eq!(m.required(&M::HEAD), Err(RouteError::ManifestUnknown));
        assert_eq!(m.required(&M::PUT), Err(RouteError::ReferenceInvalid));
        assert_eq!(m.required(&M::DELETE), Err(RouteError::DigestInvalid));
        assert_eq!(m.required(&M::POST), Err(RouteError::MethodNotAllowed));
        // names are checked first
        assert_eq!(
            parse("/v2/A/manifests/.x", None),
            Err(RouteError::NameInvalid)
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/a.b", None),
            Err(RouteError::UploadUnknown)
        );
        let u = parse("/v2/a/blobs/uploads/", None).unwrap();
        assert_eq!(u.required(&M::GET), Err(RouteError::UploadUnknown));
        let c = parse("/v2/_catalog", None).unwrap();
        assert_eq!(c.required(&M::HEAD), Err(RouteError::MethodNotAllowed));
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
        assert!(is_digest(&format!("sha384:{}{}", &D[7..], &D[7..39])));
        assert!(is_digest(&format!("sha512:{}{}", &D[7..], &D[7..])));
        assert!(!is_digest(&D.to_uppercase()));
        assert!(!is_digest(&D.replace("sha256", "sha257")));
        assert!(!is_digest("sha512+b64.x:0123456789abcdef0123456789abcdef"));
        assert!(!is_digest("sha256:xyz"));
        assert!(!is_digest("sha256:0123"));
        assert!(!is_digest(":0123456789abcdef0123456789abcdef"));
        for form in ["sha256:xyz", "a.b+c:x=", "sha512+b64.x:AB_-"] {
            assert!(has_digest_form(form), "{form}");
        }
        for not in [
            "sha256:", ":x", "a..b:x", ".a:x", "a.:x", "A:x", "a:x/y", "a:x.y",
        ] {
            assert!(!has_digest_form(not), "{not}");
        }
        assert!(is_tag("latest"));
        assert!(is_tag(&"a".repeat(128)));
        assert!(!is_tag(&"a".repeat(129)));
        assert!(!is_tag(".hidden"));
    }

    /// The single pass agrees with the plain statement of the rule on
    /// every path of up to four segments over a hostile alphabet.
    #[test]
    fn path_safety_agrees_with_the_plain_rule() {
        fn plain(path: &str) -> bool {
            path.starts_with('/')
                && !path.contains("//")
                && !path
                    .bytes()
                    .any(|b| b == b'%' || b == b'\\' || !(0x21..0x7f).contains(&b))
                && !path.split('/').any(|seg| seg == "." || seg == "..")
        }
        let parts = [
            "", "/", ".", "..", "v2", "a.b", "...", "%2e", "\\", " ", "\u{e9}", "x\u{7f}",
        ];
        let mut paths = vec![String::new()];
        for _ in 0..4 {
            let mut longer = Vec::new();
            for p in &paths {
                for part in parts {
                    longer.push(format!("{p}/{part}"));
                    longer.push(format!("{p}{part}"));
                }
            }
            paths.extend(longer);
            paths.sort();
            paths.dedup();
        }
        assert!(paths.len() > 10_000, "{}", paths.len());
        for p in &paths {
            assert_eq!(check_path_safety(p).is_ok(), plain(p), "{p:?}");
        }
    }
}
