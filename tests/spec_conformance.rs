//! The proxy's answers compared with the bare registry's (distribution 2.8,
//! `reg.direct()`) for the same request, where the proxy answers itself:
//! references that are not a valid tag or digest, methods a route does not
//! have, upload ids it refuses. Each case says whether the proxy must answer
//! as the registry does, or (where the registry's router has no error body,
//! or the registry answers with an error of its own making) as the OCI
//! distribution spec asks. Cases the proxy answers itself must never reach
//! the upstream.

mod support;

use reqwest::Method;
use support::*;

const H64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// What the proxy must answer, compared with the bare registry's answer.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Forwarded: the registry's answer passes through.
    Forwarded,
    /// Answered by the proxy as the registry answers: same status, and the
    /// same error code where the registry's body has one.
    Same,
    /// The registry's router does not route the path and answers a
    /// plain-text 404 without error code; the proxy answers 404 with
    /// this code of the spec.
    NotRouted(&'static str),
    /// The registry answers `registry` (status, code; `None` for a body
    /// without code) and the proxy `proxy`, which is what the spec asks.
    Spec {
        registry: (u16, Option<&'static str>),
        proxy: (u16, &'static str),
    },
}

struct Case {
    method: Method,
    path: String,
    expect: Expect,
}

fn case(method: Method, path: impl Into<String>, expect: Expect) -> Case {
    Case {
        method,
        path: path.into(),
        expect,
    }
}

#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    /// The error codes of a registry-style JSON body; `None` otherwise
    /// (plain text, empty, HEAD).
    codes: Option<Vec<String>>,
}

fn answer(r: reqwest::blocking::Response) -> Answer {
    let status = r.status().as_u16();
    let body = r.bytes().unwrap_or_default();
    Answer {
        status,
        codes: error_codes(&body).ok(),
    }
}

fn codes(c: &str) -> Option<Vec<String>> {
    Some(vec![c.to_string()])
}

/// A registry behind the proxy, a second bare one to compare with, both
/// holding `app:1`.
fn setup() -> (Registry, Proxy, Registry) {
    let upstream = Registry::start();
    let bare = Registry::start();
    push_image_direct(&upstream, "app", "1");
    push_image_direct(&bare, "app", "1");
    let proxy = Proxy::start(&upstream, ProxyOptions::default());
    (upstream, proxy, bare)
}

/// Sends every case to the proxy (as a user allowed everything) and to the
/// bare registry; returns one line per case that differs from its
/// expectation, and checks that what the proxy answered itself never
/// reached the upstream.
fn check(cases: &[Case]) -> Vec<String> {
    let (upstream, proxy, bare) = setup();
    let logged_before = upstream.registry_log().len();
    let direct = bare.direct();
    let mut failures = Vec::new();
    for c in cases {
        let what = format!("{} {}", c.method, c.path);
        let mut p = proxy.req(c.method.clone(), &c.path);
        let mut d = direct.request(c.method.clone(), format!("{}{}", bare.url(), c.path));
        if c.method == Method::PUT || c.method == Method::PATCH {
            p = p.header("content-type", "application/octet-stream");
            d = d.header("content-type", "application/octet-stream");
        }
        let (p, d) = (answer(p.send().unwrap()), answer(d.send().unwrap()));
        let expected = match c.expect {
            Expect::Forwarded | Expect::Same => Answer {
                status: d.status,
                codes: d.codes.clone(),
            },
            Expect::NotRouted(code) => {
                if d.status != 404 || d.codes.is_some() {
                    failures.push(format!("{what}: the registry routed it: {d:?}"));
                }
                Answer {
                    status: 404,
                    codes: codes(code),
                }
            }
            Expect::Spec { registry, proxy } => {
                let registry = Answer {
                    status: registry.0,
                    codes: registry.1.and_then(codes),
                };
                if d != registry {
                    failures.push(format!(
                        "{what}: the registry answers {d:?}, the case expects {registry:?}"
                    ));
                }
                Answer {
                    status: proxy.0,
                    codes: codes(proxy.1),
                }
            }
        };
        let matches = p.status == expected.status
            && (c.method == Method::HEAD || expected.codes.is_none() || p.codes == expected.codes);
        if !matches {
            failures.push(format!(
                "{what}: proxy {p:?}, registry {d:?}, expected {:?} {expected:?}",
                c.expect
            ));
        }
    }
    // a control request, forwarded after all the others: once it is in the
    // log, every earlier one that was forwarded is too
    let control = "/v2/control00/tags/list";
    assert_eq!(
        proxy.req(Method::GET, control).send().unwrap().status(),
        404
    );
    wait_until(
        "control request in the registry log",
        WAIT,
        || upstream.logged_uris().iter().any(|u| u == control),
        || upstream.registry_log(),
    );
    let logged = forwarded_requests(&upstream.registry_log()[logged_before..]);
    for c in cases {
        let forwarded = logged.contains(&(c.method.to_string(), c.path.clone()));
        let should = matches!(c.expect, Expect::Forwarded);
        if forwarded != should {
            failures.push(format!(
                "{} {}: forwarded to the upstream: {forwarded}, expected {should}",
                c.method, c.path
            ));
        }
    }
    failures
}

/// Method and URI of every request in the registry's access log
/// (`127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 …`).
fn forwarded_requests(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| {
            let request = l[l.find("] \"")? + 3..].split('"').next()?;
            let mut parts = request.split(' ');
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

fn assert_all(cases: &[Case]) {
    let failures = check(cases);
    assert!(
        failures.is_empty(),
        "{} differences in {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Neither a tag (`[\w][\w.-]{0,127}`) nor of the form of a digest
/// (`[a-z0-9]+([.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+`): the registry's router
/// does not route them.
fn unroutable() -> Vec<String> {
    vec![
        ".INVALID_MANIFEST_NAME".into(),
        "-x".into(),
        "a".repeat(129),
        format!("SHA256:{H64}"),
        "sha256:".into(),
        "a..b:x".into(),
    ]
}

/// Of the form of a digest, but not one (unknown algorithm, bad length,
/// not lowercase hex): the registry routes them, then refuses them.
fn bad_digests() -> Vec<String> {
    vec![
        "sha256:xyz".into(),
        "sha256:0123".into(),
        "sha256:ab=c".into(),
        format!("sha256:{}", &H64[..32]),
        format!("sha256:{}", H64.to_uppercase()),
        format!("sha512:{H64}"),
        format!("sha256+x:{H64}"),
        "foo:0123456789abcdef0123456789abcdef".into(),
        "a:b".into(),
    ]
}

#[test]
fn invalid_manifest_references_are_answered_as_the_registry_or_the_spec_answers() {
    use Method as M;
    let mut cases = Vec::new();
    for r in unroutable() {
        for m in [M::GET, M::HEAD, M::PUT, M::DELETE, M::POST] {
            let path = format!("/v2/app/manifests/{r}");
            cases.push(case(m, path, Expect::NotRouted("MANIFEST_UNKNOWN")));
        }
    }
    for r in bad_digests() {
        let path = format!("/v2/app/manifests/{r}");
        // the registry takes it for a tag and fails to read it: 500
        let unknown = Expect::Spec {
            registry: (500, Some("UNKNOWN")),
            proxy: (404, "MANIFEST_UNKNOWN"),
        };
        cases.push(case(M::GET, &path, unknown));
        let unknown = Expect::Spec {
            registry: (500, None),
            proxy: (404, "MANIFEST_UNKNOWN"),
        };
        cases.push(case(M::HEAD, &path, unknown));
        // 400 MANIFEST_INVALID, 400 DIGEST_INVALID, 405
        cases.push(case(M::PUT, &path, Expect::Same));
        cases.push(case(M::DELETE, &path, Expect::Same));
        cases.push(case(M::POST, &path, Expect::Same));
    }
    // valid references are still the registry's to answer
    for r in [
        "1".to_string(),
        "nope".into(),
        format!("sha256:{H64}"),
        format!("sha384:{H64}{}", &H64[..32]),
        format!("sha512:{H64}{H64}"),
    ] {
        let path = format!("/v2/app/manifests/{r}");
        cases.push(case(M::GET, &path, Expect::Forwarded));
    }
    assert_all(&cases);
}

#[test]
fn invalid_blob_digests_are_answered_as_the_registry_answers() {
    use Method as M;
    let mut cases = Vec::new();
    for r in unroutable().into_iter().chain(["latest".to_string()]) {
        for m in [M::GET, M::HEAD, M::DELETE, M::PUT] {
            let path = format!("/v2/app/blobs/{r}");
            cases.push(case(m, path, Expect::NotRouted("BLOB_UNKNOWN")));
        }
    }
    for r in bad_digests() {
        // 400 DIGEST_INVALID, whatever the method
        for m in [M::GET, M::HEAD, M::DELETE, M::PUT, M::POST] {
            cases.push(case(m, format!("/v2/app/blobs/{r}"), Expect::Same));
        }
    }
    for r in [
        format!("sha256:{H64}"),
        format!("sha384:{H64}{}", &H64[..32]),
    ] {
        cases.push(case(
            M::GET,
            format!("/v2/app/blobs/{r}"),
            Expect::Forwarded,
        ));
    }
    assert_all(&cases);
}

#[test]
fn upload_ids_and_methods_are_answered_as_the_registry_or_the_spec_answers() {
    use Method as M;
    let mut cases = Vec::new();
    // ids the registry routes but the proxy refuses (dots, `=`): the
    // registry says BLOB_UPLOAD_INVALID for an id it does not know; the
    // spec's code for an upload never started is BLOB_UPLOAD_UNKNOWN
    for id in ["a.b", "a=b", "x.."] {
        for m in [M::GET, M::PATCH, M::PUT, M::DELETE] {
            let e = Expect::Spec {
                registry: (404, Some("BLOB_UPLOAD_INVALID")),
                proxy: (404, "BLOB_UPLOAD_UNKNOWN"),
            };
            cases.push(case(m, format!("/v2/app/blobs/uploads/{id}"), e));
        }
    }
    // an unknown but well-formed id is the registry's to answer
    let id = "6f1c3a2e-0b6d-4c1e-9f3a-1b2c3d4e5f60";
    cases.push(case(
        M::GET,
        format!("/v2/app/blobs/uploads/{id}"),
        Expect::Forwarded,
    ));
    // the upload collection answers only POST; the registry answers 404
    // BLOB_UPLOAD_UNKNOWN to the other methods
    for m in [M::GET, M::HEAD, M::PUT, M::PATCH, M::DELETE] {
        cases.push(case(m, "/v2/app/blobs/uploads/", Expect::Same));
    }
    // the catalog and tag lists have only GET; a HEAD of a tag list is
    // checked against the access rules, then answered by the registry
    for m in [M::HEAD, M::POST, M::PUT, M::DELETE] {
        cases.push(case(m.clone(), "/v2/_catalog", Expect::Same));
        let e = if m == M::HEAD {
            Expect::Forwarded
        } else {
            Expect::Same
        };
        cases.push(case(m, "/v2/app/tags/list", e));
    }
    // methods a manifest or blob does not have
    let d = format!("sha256:{H64}");
    cases.push(case(M::POST, "/v2/app/manifests/1", Expect::Same));
    cases.push(case(M::PATCH, "/v2/app/manifests/1", Expect::Same));
    cases.push(case(M::PUT, format!("/v2/app/blobs/{d}"), Expect::Same));
    cases.push(case(M::PATCH, format!("/v2/app/blobs/{d}"), Expect::Same));
    // referrers: distribution 2.8 has no such API (404 for every path); the
    // spec asks a registry that has it for 400 on a digest of bad syntax
    for r in ["sha256:xyz", ".bad"] {
        let e = Expect::Spec {
            registry: (404, None),
            proxy: (400, "DIGEST_INVALID"),
        };
        cases.push(case(M::GET, format!("/v2/app/referrers/{r}"), e));
    }
    assert_all(&cases);
}

/// The registry's router answers a path it does not route before any
/// authentication: so does the proxy, for every answer that depends on the
/// request's syntax alone (the same for every repository, existing or not,
/// allowed or not). Everything else still needs credentials first.
#[test]
fn syntax_only_answers_come_before_auth_and_reveal_nothing() {
    let (_upstream, proxy, _bare) = setup();
    let anon = |m: Method, p: &str| answer(proxy.anon(m, p).send().unwrap());
    for repo in ["app", "never-pushed", "secret/x"] {
        for (m, path, status, code) in [
            (
                Method::GET,
                format!("/v2/{repo}/manifests/.INVALID_MANIFEST_NAME"),
                404,
                "MANIFEST_UNKNOWN",
            ),
            (
                Method::GET,
                format!("/v2/{repo}/manifests/sha256:xyz"),
                404,
                "MANIFEST_UNKNOWN",
            ),
            (
                Method::GET,
                format!("/v2/{repo}/blobs/latest"),
                404,
                "BLOB_UNKNOWN",
            ),
            (
                Method::GET,
                format!("/v2/{repo}/blobs/sha256:xyz"),
                400,
                "DIGEST_INVALID",
            ),
            (
                Method::GET,
                format!("/v2/{repo}/manifests/1"),
                401,
                "UNAUTHORIZED",
            ),
            (
                Method::GET,
                format!("/v2/{repo}/blobs/sha256:{H64}"),
                401,
                "UNAUTHORIZED",
            ),
            (
                Method::GET,
                format!("/v2/{repo}/tags/list"),
                401,
                "UNAUTHORIZED",
            ),
        ] {
            let a = anon(m.clone(), &path);
            assert_eq!(
                a,
                Answer {
                    status,
                    codes: codes(code)
                },
                "anonymous {m} {path}"
            );
        }
    }
}
