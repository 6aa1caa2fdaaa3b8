//! registry:2 (the Debian docker-registry) with its own `auth.token`
//! trusting portcullis: realm = the proxy's token endpoint, service and
//! issuer = portcullis's defaults, rootcertbundle = the `token-bundle.pem`
//! portcullis writes into `auth.token.key_dir` at start.
//!
//! 1. A client that reaches the registry directly needs a token from the
//!    proxy's `/token`; tokens of another key are refused, and the
//!    registry enforces the token's `access` (what the proxy's rules gave).
//! 2. Through the proxy with `upstream.token_auth = true`: the proxy strips
//!    the client's credentials and presents a token of its own, so pushes
//!    and pulls through the proxy work against the token-checking registry.

mod support;

use reqwest::Method;
use support::*;

fn rules() -> [Rule; 3] {
    [
        Rule::users(&["admin"]).all(),
        Rule::users(&["alice"]).on(&["trust/**"]).pull_push(),
        Rule::users(&["bob"]).on(&["trust/**"]).pull(),
    ]
}

/// The registry's `auth.token` section pointing at `proxy`.
fn registry_auth_yaml(proxy: &Proxy, key_dir: &std::path::Path) -> String {
    let bundle = key_dir.join("token-bundle.pem");
    assert!(
        bundle.exists(),
        "the proxy did not write {} (files: {:?})",
        bundle.display(),
        std::fs::read_dir(key_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    format!(
        "auth:\n  token:\n    realm: {realm}\n    service: container-registry\n    issuer: portcullis\n    rootcertbundle: {bundle}\n",
        realm = proxy.url("/token"),
        bundle = bundle.display()
    )
}

/// POST + PUT of a blob straight to the registry with a bearer token.
/// Returns the status of the first refused step, or 201.
fn direct_push_blob(reg: &Registry, repo: &str, token: &str, data: &[u8]) -> (u16, String) {
    let v2 = V2 {
        auth: Auth::Bearer(token.into()),
        ..reg.v2()
    };
    match v2.try_blob(repo, data) {
        Ok(digest) => (201, digest),
        Err(refused) => refused,
    }
}

#[test]
fn registry_trusts_tokens_from_the_proxy_token_endpoint() {
    let keys = tempfile::tempdir().unwrap();
    let reg_port = free_port();
    // the proxy's upstream is the token-checking registry (started below,
    // once the proxy has written its certificate bundle)
    let mut opts = ProxyOptions::token(&[(USER, PASS), BOB], keys.path()).rules(&rules());
    opts.upstream_url = Some(format!("http://127.0.0.1:{reg_port}"));
    let proxy = Proxy::start_upstream(&format!("http://127.0.0.1:{reg_port}"), opts);
    let reg = Registry::start_with(
        Some(reg_port),
        &registry_auth_yaml(&proxy, keys.path()),
        &[401],
    );

    // without a token the registry sends clients to the proxy's /token
    let r = reg.send_direct(Method::GET, "/v2/", None);
    assert_eq!(r.status(), 401, "registry GET /v2/ without a token");
    let c = header_of(&r, "www-authenticate").expect("registry challenge");
    let realm = proxy.url("/token");
    assert_challenge(
        &c,
        "Bearer",
        &[("realm", &realm), ("service", "container-registry")],
    );

    // alice's token from the proxy: the registry accepts it
    let token = proxy.token(Some((USER, PASS)), &["repository:trust/app:pull,push"]);
    let r = reg.send_direct(Method::GET, "/v2/", Some(&token));
    assert_eq!(
        r.status(),
        200,
        "registry GET /v2/ with the proxy's token: {:?}\n{}",
        r.text(),
        tail(&reg.dir.path().join("registry.log"), 20)
    );
    let data = b"pushed directly with a portcullis token";
    let (st, body) = direct_push_blob(&reg, "trust/app", &token, data);
    assert_eq!(
        st,
        201,
        "direct push with alice's token: {body}\n{}",
        tail(&reg.dir.path().join("registry.log"), 20)
    );
    let r = reg.send_direct(
        Method::GET,
        &format!("/v2/trust/app/blobs/{}", sha256_digest(data)),
        Some(&token),
    );
    assert_eq!(r.status(), 200, "direct pull with alice's token");
    assert_eq!(r.bytes().unwrap().as_ref(), data);

    // the registry enforces the token's access: bob's token only pulls
    let bob = proxy.token(Some(BOB), &["repository:trust/app:pull,push"]);
    let r = reg.send_direct(
        Method::GET,
        &format!("/v2/trust/app/blobs/{}", sha256_digest(data)),
        Some(&bob),
    );
    assert_eq!(r.status(), 200, "direct pull with bob's token");
    let (st, body) = direct_push_blob(&reg, "trust/app", &bob, b"bob was here");
    assert_eq!(st, 401, "direct push with bob's pull-only token: {body}");
    // a token for another repository does not open this one
    let other = proxy.token(Some((USER, PASS)), &["repository:trust/other:pull"]);
    let r = reg.send_direct(Method::GET, "/v2/trust/app/tags/list", Some(&other));
    assert_eq!(r.status(), 401, "token for trust/other on trust/app");
    // a tampered token is refused
    let r = reg
        .direct()
        .get(format!("{}/v2/", reg.url()))
        .bearer_auth(tamper_jwt(&token))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "tampered token at the registry");

    // a token of another key (another portcullis, same issuer and service)
    let other_keys = tempfile::tempdir().unwrap();
    let stranger = Proxy::start(
        &reg,
        ProxyOptions::token(&[(USER, PASS)], other_keys.path()).rules(&rules()),
    );
    let foreign = stranger.token(Some((USER, PASS)), &["repository:trust/app:pull,push"]);
    assert_eq!(jwt_claims(&foreign)["iss"], jwt_claims(&token)["iss"]);
    let r = reg.send_direct(Method::GET, "/v2/", Some(&foreign));
    assert_eq!(r.status(), 401, "registry accepted a token of another key");
    let (st, _) = direct_push_blob(&reg, "trust/app", &foreign, b"foreign");
    assert_eq!(st, 401, "push with a token of another key");
    // and the proxy refuses the stranger's token too
    let r = proxy.send_bearer(Method::GET, "/v2/", &foreign);
    assert_eq!(r.status(), 401, "the proxy accepted a token of another key");
}

#[test]
fn proxy_presents_its_own_tokens_to_a_token_checking_registry() {
    let keys = tempfile::tempdir().unwrap();
    let reg_port = free_port();
    let up = format!("http://127.0.0.1:{reg_port}");
    let opts = ProxyOptions::token(&[(USER, PASS), BOB, ADMIN], keys.path()).rules(&rules());
    let opts = opts.line_in("upstream", "token_auth = true");
    let proxy = Proxy::start_upstream(&up, opts);
    let reg = Registry::start_with(
        Some(reg_port),
        &registry_auth_yaml(&proxy, keys.path()),
        &[401],
    );
    let reg_log = || tail(&reg.dir.path().join("registry.log"), 20);

    // seed the registry directly, with a token from the proxy
    let seed = proxy.token(Some((USER, PASS)), &["repository:trust/seeded:pull,push"]);
    let seeded = pseudo_random(50_000, 4);
    let (st, body) = direct_push_blob(&reg, "trust/seeded", &seed, &seeded);
    assert_eq!(st, 201, "seeding the registry: {body}\n{}", reg_log());
    let seeded_digest = sha256_digest(&seeded);

    // 1. pulls through the proxy: client token, and Basic credentials
    let bob = proxy.token(Some(BOB), &["repository:trust/seeded:pull"]);
    let r = proxy
        .bearer(
            Method::GET,
            &format!("/v2/trust/seeded/blobs/{seeded_digest}"),
            &bob,
        )
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "bob's token, GET blob through the proxy\n{}\n--- registry\n{}",
        proxy.logs(),
        reg_log()
    );
    assert_eq!(sha256_digest(&r.bytes().unwrap()), seeded_digest);
    let r = proxy.send_as(
        Method::HEAD,
        &format!("/v2/trust/seeded/blobs/{seeded_digest}"),
        BOB.0,
        BOB.1,
    );
    assert_eq!(
        r.status(),
        200,
        "bob with Basic, HEAD blob through the proxy"
    );

    // 2. the catalog: the proxy pages through the registry's catalog itself,
    // so it needs a token for that too
    let r = proxy.send_as(Method::GET, "/v2/_catalog", ADMIN.0, ADMIN.1);
    assert_eq!(
        r.status(),
        200,
        "catalog through the proxy: {:?}\n{}\n--- registry\n{}",
        r.text(),
        proxy.logs(),
        reg_log()
    );
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["trust/seeded"]));

    // a direct client without a token is still refused
    let r = reg
        .direct()
        .get(format!(
            "{}/v2/trust/seeded/blobs/{seeded_digest}",
            reg.url()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "direct client without a token");

    // 3. pushes through the proxy. registry:2 requires pull AND push on the
    // repository for POST/PATCH/PUT of uploads and manifests (distribution's
    // registry/handlers/app.go appendAccessRecords), so the proxy's minted
    // token must carry both for a push route.
    let token = proxy.token(Some((USER, PASS)), &["repository:trust/app:pull,push"]);
    let data = pseudo_random(100_000, 3);
    let digest = sha256_digest(&data);
    let r = proxy.send_bearer(Method::POST, "/v2/trust/app/blobs/uploads/", &token);
    assert_eq!(
        r.status(),
        202,
        "POST upload through the proxy (alice's token grants pull,push): {:?} {:?}\n{}\n--- registry\n{}",
        header_of(&r, "www-authenticate"),
        r.text(),
        proxy.logs(),
        reg_log()
    );
    let loc = absolute(&proxy, &header_of(&r, "location").unwrap());
    assert_points_at_proxy("upload Location", &loc, &proxy, reg_port);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = proxy
        .client()
        .put(format!("{loc}{sep}digest={digest}"))
        .bearer_auth(&token)
        .body(data.clone())
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "PUT blob through the proxy: {:?}",
        r.text()
    );
    let r = proxy
        .bearer(
            Method::GET,
            &format!("/v2/trust/app/blobs/{digest}"),
            &token,
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "GET blob through the proxy");
    assert_eq!(sha256_digest(&r.bytes().unwrap()), digest);
    // a whole image with Basic credentials (accepted in token mode)
    let (manifest, _d) = push_image(&proxy, "trust/basic", "v1");
    let r = accept_oci(proxy.req_as(Method::GET, "/v2/trust/basic/manifests/v1", BOB.0, BOB.1));
    assert_eq!(
        r.status(),
        200,
        "bob pulls the pushed image through the proxy"
    );
    assert_eq!(r.bytes().unwrap().to_vec(), manifest);
}
