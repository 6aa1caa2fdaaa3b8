//! Paths outside the v2 API and path tricks are answered by the proxy itself
//! and never reach the registry. Raw paths are sent with `curl --path-as-is`
//! (reqwest would normalise them), over HTTP/1.1 and HTTP/2.

mod support;

use support::*;

/// Paths outside /v2/; each contains no marker, so they are checked by exact URI.
const OUTSIDE: &[&str] = &[
    "/",
    "/v1/_ping",
    "/v2x/out01z/tags/list",
    "/debug/vars",
    "/index.html",
    "/V2/",
    "/metrics-out02z",
];

/// Path tricks; each contains a unique marker `qNNz` that must never show up in the registry's log.
const TRICKS: &[&str] = &[
    "/v2/../q01z/tags/list",
    "/v2/q02z/../q02zb/tags/list",
    "/v2/q03z/%2e%2e/q03zb/manifests/x",
    "/v2/q04z/%2E%2e/q04zb/manifests/x",
    "/v2/q05z%2fq05zb/manifests/latest",
    "/v2/q06z%2Fq06zb/tags/list",
    "/v2/q07z//q07zb/manifests/latest",
    "//v2/q08z/tags/list",
    "/v2/q09z/./q09zb/tags/list",
    "/v2/q10z/..%2fq10zb/tags/list",
    "/v2/q11z/%2e%2e%2fq11zb/tags/list",
    "/v2/q12z/manifests/..",
    "/v2/q13z/..%5cq13zb/tags/list",
    "/v2/q14z%00/tags/list",
    "/v2/q15z/blobs/uploads/../../q15zb/tags/list",
    "/v2/%2e%2e/q16z/tags/list",
    "/v2/q17z/%2e/q17zb/tags/list",
];

fn creds() -> String {
    format!("{USER}:{PASS}")
}

fn assert_never_forwarded(reg: &Registry, proxy: &Proxy) {
    // a control request that must be forwarded; once it is logged, every
    // earlier (sequential) request would have been logged too
    let control = proxy.curl("/v2/control00/tags/list", &["-u", &creds()]);
    assert_eq!(control.status, 404, "control request: {control:?}");
    wait_until(
        "control request in the registry log",
        WAIT,
        || {
            reg.logged_uris()
                .iter()
                .any(|u| u == "/v2/control00/tags/list")
        },
        || reg.registry_log(),
    );
    let uris = reg.logged_uris();
    for t in TRICKS {
        let marker = &t[t.find('q').unwrap()..t.find('q').unwrap() + 4];
        let hit: Vec<&String> = uris
            .iter()
            .filter(|u| u.to_ascii_lowercase().contains(marker))
            .collect();
        assert!(hit.is_empty(), "{t} reached the registry as {hit:?}");
    }
    for o in OUTSIDE {
        let hit: Vec<&String> = uris
            .iter()
            .filter(|u| u.as_str() == *o || u.contains("out0"))
            .collect();
        assert!(hit.is_empty(), "{o} reached the registry as {hit:?}");
    }
}

#[test]
fn outside_the_v2_api_is_404_with_json_error_and_not_forwarded() {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    for proto in ["--http1.1", "--http2"] {
        for path in OUTSIDE {
            for auth in [true, false] {
                let c = creds();
                let mut args = vec![proto];
                if auth {
                    args.extend(["-u", c.as_str()]);
                }
                let r = proxy.curl(path, &args);
                assert_eq!(r.status, 404, "{proto} GET {path} (auth {auth}): {r:?}");
                assert!(
                    error_codes(&r.body).is_ok(),
                    "{proto} GET {path}: body is not a registry error: {:?}",
                    r.text()
                );
                assert_common_headers(&format!("404 {path}"), |h| r.header(h).map(str::to_string));
            }
        }
    }
    assert_never_forwarded(&reg, &proxy);
}

#[test]
fn path_tricks_are_refused_and_never_reach_the_registry() {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let c = creds();
    for proto in ["--http1.1", "--http2"] {
        for path in TRICKS {
            let r = proxy.curl(path, &[proto, "-u", &c]);
            assert!(
                r.status == 400 || r.status == 404,
                "{proto} GET {path}: expected 400 or 404, got {} {:?}",
                r.status,
                r.text()
            );
            let r = proxy.curl(path, &[proto, "-u", &c, "-X", "DELETE"]);
            assert!(
                r.status == 400 || r.status == 404,
                "{proto} DELETE {path}: expected 400 or 404, got {} {:?}",
                r.status,
                r.text()
            );
        }
    }
    assert!(
        proxy.curl("/v2/", &["-u", &c]).status == 200,
        "proxy still healthy"
    );
    assert_never_forwarded(&reg, &proxy);
}

#[test]
fn path_tricks_are_refused_before_authentication() {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    for path in TRICKS {
        let r = proxy.curl(path, &["--http1.1"]);
        assert!(
            r.status == 400 || r.status == 404,
            "GET {path} without credentials: expected 400 or 404 (refused before auth), got {} {:?}",
            r.status,
            r.text()
        );
    }
    assert_never_forwarded(&reg, &proxy);
}

#[test]
fn invalid_repository_names_are_not_forwarded() {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let c = creds();
    for path in [
        "/v2/BADq90z/tags/list",  // upper case
        "/v2/-q91z/tags/list",    // leading separator
        "/v2/q92z-/tags/list",    // trailing separator
        "/v2/q93z..x/tags/list",  // double dot inside a component
        "/v2/q94z%20x/tags/list", // space
    ] {
        let r = proxy.curl(path, &["-u", &c]);
        assert!(
            r.status == 400 || r.status == 404,
            "GET {path}: expected 400 or 404, got {} {:?}",
            r.status,
            r.text()
        );
    }
    let control = proxy.curl("/v2/control01/tags/list", &["-u", &c]);
    assert_eq!(control.status, 404);
    wait_until(
        "control request logged",
        WAIT,
        || reg.logged_uris().iter().any(|u| u.contains("control01")),
        || reg.registry_log(),
    );
    let uris = reg.logged_uris();
    for m in ["q90z", "q91z", "q92z", "q93z", "q94z"] {
        assert!(
            !uris.iter().any(|u| u.to_ascii_lowercase().contains(m)),
            "{m} reached the registry: {uris:?}"
        );
    }
}
