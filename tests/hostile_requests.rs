//! Requests an attacker sends, through the proxy to a real registry: a
//! cross-repository mount smuggled in a form body, an odd or missing
//! `Host`, a `Connection` header naming the forwarding headers, IPv4
//! clients on a dual-stack listener. Each was a hole; each stays shut.

mod support;

use reqwest::Method;
use support::*;

fn rules() -> [Rule; 2] {
    [
        Rule::users(&["bob"]).on(&["bob/**"]).pull_push(),
        Rule::users(&["alice"]).all(),
    ]
}

fn start() -> (Registry, Proxy, String) {
    let reg = Registry::start();
    let secret = direct_blob(&reg, "team/secret", &pseudo_random(64 * 1024, 11));
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::basic(&[(USER, PASS), BOB]).rules(&rules()),
    );
    (reg, proxy, secret)
}

/// Bob may not read team/secret's blob through bob/m2, however he asks.
fn assert_not_mounted(proxy: &Proxy, digest: &str, what: &str) {
    let r = proxy.send_as(
        Method::GET,
        &format!("/v2/bob/m2/blobs/{digest}"),
        BOB.0,
        BOB.1,
    );
    assert_eq!(
        r.status(),
        404,
        "{what}: team/secret's layer readable as bob/m2"
    );
}

#[test]
fn a_mount_in_a_form_body_is_refused() {
    let (_reg, proxy, secret) = start();
    // the direct way is refused, as it always was
    let r = proxy.send_as(
        Method::POST,
        &format!("/v2/bob/m2/blobs/uploads/?mount={secret}&from=team/secret"),
        BOB.0,
        BOB.1,
    );
    assert_eq!(r.status(), 403);

    let form = format!("mount={secret}&from=team%2Fsecret");
    for (what, query, content_type, body) in [
        ("urlencoded body", "", "application/x-www-form-urlencoded", form.clone()),
        (
            "urlencoded body, odd spelling",
            "",
            "Application/X-WWW-Form-URLEncoded ; charset=utf-8",
            form.clone(),
        ),
        (
            "readable from in the query, the secret one in the body",
            "?from=bob%2Fa",
            "application/x-www-form-urlencoded",
            form.clone(),
        ),
        (
            "multipart body",
            "",
            "multipart/form-data; boundary=XyZ",
            format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"mount\"\r\n\r\n{secret}\r\n\
                 --XyZ\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nteam/secret\r\n--XyZ--\r\n"
            ),
        ),
    ] {
        let r = proxy
            .req_as(
                Method::POST,
                &format!("/v2/bob/m2/blobs/uploads/{query}"),
                BOB.0,
                BOB.1,
            )
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let codes = error_codes(&r.bytes().unwrap());
        assert_eq!(status, 415, "{what}: {codes:?}\n{}", proxy.logs());
        assert_eq!(codes, Ok(vec!["UNSUPPORTED".to_string()]), "{what}");
        assert_not_mounted(&proxy, &secret, what);
    }
    // a form body is refused on the other upload steps too
    let r = proxy.send_as(Method::POST, "/v2/bob/m2/blobs/uploads/", BOB.0, BOB.1);
    assert_eq!(r.status(), 202);
    let loc = absolute(&proxy, &header_of(&r, "location").unwrap());
    let r = proxy
        .client()
        .put(format!("{loc}&digest={secret}"))
        .basic_auth(BOB.0, Some(BOB.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("digest={secret}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    // ordinary pushes still work
    push_blob(&proxy, "bob/ok", b"a small layer");
}

#[test]
fn duplicate_query_keys_reach_the_registry_as_the_proxy_read_them() {
    let (reg, proxy, secret) = start();
    // bob may mount from his own repository; a second `from` must not
    // become the registry's source
    let mine = push_blob(&proxy, "bob/a", b"bob's own layer");
    assert_ne!(mine, secret);
    let r = proxy.send_as(
        Method::POST,
        &format!("/v2/bob/m2/blobs/uploads/?mount={secret}&from=bob%2Fa&from=team%2Fsecret"),
        BOB.0,
        BOB.1,
    );
    // not in bob/a: the registry starts an upload instead of mounting
    assert_eq!(r.status(), 202, "{}", proxy.logs());
    assert_not_mounted(&proxy, &secret, "duplicate from");
    let forwarded: Vec<String> = reg
        .logged_uris()
        .into_iter()
        .filter(|u| u.contains("/v2/bob/m2/blobs/uploads/?"))
        .collect();
    assert!(!forwarded.is_empty(), "{}", reg.registry_log());
    for u in forwarded {
        assert!(!u.contains("secret"), "the registry was sent {u}");
    }
}

#[test]
fn an_odd_or_missing_host_never_leaks_the_registry_address() {
    let (reg, proxy, _) = start();
    let upstream_port = reg.port().to_string();
    let auth = format!("{USER}:{PASS}");
    for (what, args) in [
        ("a space", vec!["--http1.1", "-H", "Host: evil host"]),
        ("a slash", vec!["--http1.1", "-H", "Host: a/b"]),
        ("empty", vec!["--http1.1", "-H", "Host:"]),
        (
            "trailing slash",
            vec!["--http1.1", "-H", "Host: host:5443/"],
        ),
        (
            "HTTP/1.0 without Host",
            vec!["--http1.0", "--no-alpn", "-H", "Host:"],
        ),
    ] {
        let mut a = vec!["-X", "POST", "-u", &auth];
        a.extend(args.iter().copied());
        let r = proxy.curl("/v2/team/x/blobs/uploads/", &a);
        assert_eq!(r.status, 400, "{what}: {r:?}");
        for (name, value) in &r.headers {
            assert!(
                !value.contains(&upstream_port),
                "{what}: {name}: {value} names the registry"
            );
        }
    }
    // an ordinary client gets an upload URL on the proxy
    let r = proxy.curl("/v2/team/x/blobs/uploads/", &["-X", "POST", "-u", &auth]);
    assert_eq!(r.status, 202);
    let loc = r.header("location").unwrap();
    assert!(!loc.contains(&upstream_port), "{loc}");
}

#[test]
fn a_connection_header_naming_forwarding_headers_gets_an_answer() {
    let (_reg, proxy, _) = start();
    let auth = format!("{USER}:{PASS}");
    for named in [
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "keep-alive, X-Forwarded-For",
    ] {
        let conn = format!("Connection: {named}");
        // a registry-style refusal, for anonymous callers too
        for creds in [&["-u", auth.as_str()][..], &[]] {
            let mut args = vec!["--http1.1", "-H", &conn];
            args.extend_from_slice(creds);
            let r = proxy.curl("/v2/team/x/tags/list", &args);
            assert_eq!(r.status, 400, "Connection: {named}: {r:?}");
            assert_eq!(
                error_codes(&r.body),
                Ok(vec!["UNSUPPORTED".to_string()]),
                "{named}: {}",
                r.text()
            );
        }
    }
    let errors: Vec<String> = proxy
        .logs()
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_owned)
        .collect();
    assert!(errors.is_empty(), "error lines:\n{}", errors.join("\n"));
}

#[test]
fn ipv4_clients_of_a_dual_stack_listener_match_ipv4_rules() {
    let reg = Registry::start();
    push_image_direct(&reg, "internal/base", "v1");
    let rules = [
        Rule::users(&["bob"])
            .from(&["127.0.0.2/32"])
            .may(&[])
            .comment("nothing from the quarantined host"),
        Rule::users(&["bob"])
            .on(&["internal/**"])
            .from(&["127.0.0.0/8"])
            .pull(),
    ];
    let opts = ProxyOptions::basic(&[BOB])
        .rules(&rules)
        .listen_host("[::]");
    let proxy = Proxy::start(&reg, opts);
    let get = |from: &str| {
        proxy
            .client_from(from.parse().unwrap())
            .get(proxy.url("/v2/internal/base/tags/list"))
            .basic_auth(BOB.0, Some(BOB.1))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get("127.0.0.1"), 200, "{}", proxy.logs());
    assert_eq!(get("127.0.0.2"), 403, "{}", proxy.logs());
    let logs = proxy.logs();
    assert!(!logs.contains("::ffff:"), "{logs}");
    assert!(
        reg.registry_log().lines().all(|l| !l.contains("::ffff:")),
        "X-Forwarded-For"
    );
}
