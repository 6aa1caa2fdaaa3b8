//! Token mode through the proxy with raw requests: the token endpoint (GET
//! and the OAuth2 POST form, refresh tokens, partial grants, docker login
//! without scope), bearer tokens on `/v2/` (tampered, wrong repository),
//! anonymous pulls, and a push that outlives its access token.

mod support;

use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

struct Setup {
    reg: Registry,
    proxy: Proxy,
    _keys: tempfile::TempDir,
}

fn start_with(token_extra: &str) -> Setup {
    let reg = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::token_with(&[(USER, PASS), BOB], keys.path(), token_extra)
            .rules(&team_a_rules(&["pull", "push", "delete"])),
    );
    Setup {
        reg,
        proxy,
        _keys: keys,
    }
}

fn start() -> Setup {
    start_with("")
}

/// `access` of a token as {"type:name" → sorted actions}.
fn access_of(token: &str) -> BTreeMap<String, Vec<String>> {
    let claims = jwt_claims(token);
    let mut out = BTreeMap::new();
    for a in claims["access"].as_array().expect("access array") {
        let mut actions: Vec<String> = strings(&a["actions"]);
        actions.sort();
        out.insert(
            format!(
                "{}:{}",
                a["type"].as_str().unwrap(),
                a["name"].as_str().unwrap()
            ),
            actions,
        );
    }
    out
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn post_form(proxy: &Proxy, form: &[(&str, &str)]) -> (u16, Value) {
    proxy.post_token(form)
}

#[test]
fn get_token_with_two_scopes_and_offline_refresh_token() {
    let s = start();
    let (status, v) = s.proxy.get_token(
        Some((USER, PASS)),
        &["repository:team-a/a:pull", "repository:team-a/b:push"],
        false,
    );
    assert_eq!(status, 200, "GET /token: {v}\n{}", s.proxy.logs());
    for f in ["token", "access_token", "expires_in", "issued_at"] {
        assert!(v.get(f).is_some(), "token response without {f}: {v}");
    }
    assert!(
        v.get("refresh_token").is_none(),
        "refresh_token without offline_token: {v}"
    );
    assert_eq!(
        v["token"], v["access_token"],
        "token and access_token differ"
    );
    assert!(v["expires_in"].as_u64().unwrap() > 0);
    let issued = v["issued_at"].as_str().unwrap();
    assert!(
        issued.len() == 20 && issued.ends_with('Z') && issued.as_bytes()[10] == b'T',
        "issued_at not RFC 3339: {issued}"
    );
    let token = v["token"].as_str().unwrap();
    let claims = jwt_claims(token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iss"], "portcullis");
    assert_eq!(claims["aud"], "container-registry");
    let exp = claims["exp"].as_u64().unwrap();
    let iat = claims["iat"].as_u64().unwrap();
    assert_eq!(
        exp - iat,
        v["expires_in"].as_u64().unwrap(),
        "exp - iat = expires_in"
    );
    let access = access_of(token);
    assert_eq!(
        access.get("repository:team-a/a"),
        Some(&strs(&["pull"])),
        "{access:?}"
    );
    assert_eq!(
        access.get("repository:team-a/b"),
        Some(&strs(&["push"])),
        "{access:?}"
    );

    // the token works on /v2/ for what it grants
    let r = s.proxy.send_bearer(Method::GET, "/v2/", token);
    assert_eq!(r.status(), 200, "GET /v2/ with the token");
    let r = s
        .proxy
        .send_bearer(Method::POST, "/v2/team-a/b/blobs/uploads/", token);
    assert_eq!(r.status(), 202, "push with the token");

    let (status, v) = s
        .proxy
        .get_token(Some((USER, PASS)), &["repository:team-a/a:pull"], true);
    assert_eq!(status, 200, "{v}");
    let refresh = v["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("offline_token=true without refresh_token: {v}"));
    // a refresh token is not an access token
    let r = s.proxy.send_bearer(Method::GET, "/v2/", refresh);
    assert_eq!(r.status(), 401, "a refresh token used as a bearer token");
}

#[test]
fn post_password_and_refresh_token_grants() {
    let s = start();
    let (status, v) = post_form(
        &s.proxy,
        &[
            ("grant_type", "password"),
            ("username", USER),
            ("password", PASS),
            ("service", "container-registry"),
            ("client_id", "portcullis-tests"),
            ("access_type", "offline"),
            ("scope", "repository:team-a/app:pull,push"),
        ],
    );
    assert_eq!(
        status,
        200,
        "POST grant_type=password: {v}\n{}",
        s.proxy.logs()
    );
    let access = v["access_token"].as_str().expect("access_token");
    assert_eq!(
        access_of(access).get("repository:team-a/app"),
        Some(&strs(&["pull", "push"]))
    );
    let refresh = v["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("access_type=offline without refresh_token: {v}"))
        .to_string();

    let (status, v) = post_form(
        &s.proxy,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", "container-registry"),
            ("client_id", "portcullis-tests"),
            (
                "scope",
                "repository:team-a/app:pull repository:team-a/other:pull",
            ),
        ],
    );
    assert_eq!(status, 200, "POST grant_type=refresh_token: {v}");
    let t = v["access_token"].as_str().expect("access_token");
    let claims = jwt_claims(t);
    assert_eq!(claims["sub"], "alice", "refreshed token's subject");
    let access = access_of(t);
    assert_eq!(access.get("repository:team-a/app"), Some(&strs(&["pull"])));
    assert_eq!(
        access.get("repository:team-a/other"),
        Some(&strs(&["pull"]))
    );
    let r = s
        .proxy
        .send_bearer(Method::GET, "/v2/team-a/app/tags/list", t);
    // the repository does not exist: the registry's 404, not an auth refusal
    assert_eq!(
        r.status(),
        404,
        "refreshed token on /v2/team-a/app/tags/list"
    );

    // an access token is not a refresh token
    let (status, v) = post_form(
        &s.proxy,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t),
            ("service", "container-registry"),
        ],
    );
    assert_eq!(status, 401, "an access token used as a refresh token: {v}");

    // wrong passwords, both forms
    let (status, v) = post_form(
        &s.proxy,
        &[
            ("grant_type", "password"),
            ("username", USER),
            ("password", "wrong"),
            ("service", "container-registry"),
        ],
    );
    assert_eq!(status, 401, "POST with a wrong password: {v}");
    let (status, v) = s.proxy.get_token(
        Some((USER, "wrong")),
        &["repository:team-a/app:pull"],
        false,
    );
    assert_eq!(status, 401, "GET with a wrong password: {v}");
    let (status, v) = s.proxy.get_token(
        Some(("nobody", "x")),
        &["repository:team-a/app:pull"],
        false,
    );
    assert_eq!(status, 401, "GET for an unknown user: {v}");
}

#[test]
fn partial_grant_is_the_intersection_and_login_gets_empty_access() {
    let s = start();
    let (status, v) = s.proxy.get_token(
        Some(BOB),
        &[
            "repository:team-a/app:pull,push,delete",
            "repository:secret/x:pull",
        ],
        false,
    );
    assert_eq!(status, 200, "a partial grant is a token, not an error: {v}");
    let token = v["token"].as_str().unwrap();
    let access = access_of(token);
    assert_eq!(
        access.get("repository:team-a/app"),
        Some(&strs(&["pull"])),
        "bob asked pull,push,delete, may pull: {access:?}"
    );
    assert!(
        access
            .get("repository:secret/x")
            .is_none_or(|a| a.is_empty()),
        "nothing on secret/x: {access:?}"
    );
    // and the push with it is refused with insufficient_scope
    let r = s
        .proxy
        .send_bearer(Method::POST, "/v2/team-a/app/blobs/uploads/", token);
    let (st, codes, challenge) = status_codes_challenge(r);
    assert_eq!(st, 401, "push with a pull-only token");
    assert_eq!(
        codes,
        ["UNAUTHORIZED"],
        "insufficient scope is 401 UNAUTHORIZED"
    );
    let challenge = challenge.expect("challenge");
    assert_challenge(
        &challenge,
        "Bearer",
        &[
            ("error", "insufficient_scope"),
            ("scope", "repository:team-a/app:push"),
        ],
    );

    // docker login: no scope → a token with empty access that works on /v2/
    let r = s
        .proxy
        .client()
        .get(s.proxy.url(
            "/token?account=alice&client_id=docker&offline_token=true&service=container-registry",
        ))
        .basic_auth(USER, Some(PASS))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    let t = v["token"].as_str().unwrap();
    let claims = jwt_claims(t);
    assert!(
        claims.get("access").is_none() || claims["access"].as_array().is_some_and(|a| a.is_empty()),
        "docker login token grants something: {claims}"
    );
    assert!(v.get("refresh_token").is_some(), "offline_token=true: {v}");
    let r = s.proxy.send_bearer(Method::GET, "/v2/", t);
    assert_eq!(r.status(), 200, "GET /v2/ with the login token");
    let r = s
        .proxy
        .send_bearer(Method::GET, "/v2/team-a/app/tags/list", t);
    assert_eq!(r.status(), 401, "the login token grants no pull");
}

#[test]
fn tampered_token_and_token_for_another_repository() {
    let s = start();
    let token = s
        .proxy
        .token(Some((USER, PASS)), &["repository:team-a/a:pull,push"]);
    let bad = tamper_jwt(&token);
    assert_ne!(bad, token);
    let r = s.proxy.send_bearer(Method::GET, "/v2/", &bad);
    let (status, codes, challenge) = status_codes_challenge(r);
    assert_eq!(status, 401, "tampered token on /v2/");
    let challenge = challenge.expect("challenge");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(codes, ["UNAUTHORIZED"]);
    // also on a repository route
    let r = s
        .proxy
        .send_bearer(Method::GET, "/v2/team-a/a/tags/list", &bad);
    assert_eq!(r.status(), 401);
    assert!(
        header_of(&r, "www-authenticate").is_some_and(|c| c.contains("error=\"invalid_token\""))
    );
    // garbage
    let r = s.proxy.send_bearer(Method::GET, "/v2/", "not.a.jwt");
    assert_eq!(r.status(), 401);

    // valid for A, used on B
    let r = s
        .proxy
        .send_bearer(Method::GET, "/v2/team-a/b/tags/list", &token);
    let (status, _codes, challenge) = status_codes_challenge(r);
    assert_eq!(status, 401, "token for team-a/a on team-a/b");
    let challenge = challenge.expect("challenge");
    let realm = s.proxy.url("/token");
    assert_challenge(
        &challenge,
        "Bearer",
        &[
            ("error", "insufficient_scope"),
            ("scope", "repository:team-a/b:pull"),
            ("realm", &realm),
            ("service", "container-registry"),
        ],
    );
    // and with that token, team-a/a itself is fine (the registry's 404)
    let r = s
        .proxy
        .send_bearer(Method::GET, "/v2/team-a/a/tags/list", &token);
    assert_eq!(r.status(), 404, "token for team-a/a on team-a/a");
}

#[test]
fn base_needs_credentials_and_anonymous_pull_of_public() {
    let s = start();
    // alice pushes public/tools with a token
    let token = s
        .proxy
        .token(Some((USER, PASS)), &["repository:public/tools:pull,push"]);
    let (manifest, _digest) = push_image_with_token(&s.proxy, "public/tools", "v1", &token);

    // GET /v2/ without credentials: 401 with a Bearer challenge
    let r = s.proxy.send_anon(Method::GET, "/v2/");
    let (status, codes, challenge) = status_codes_challenge(r);
    assert_eq!(status, 401, "GET /v2/ without credentials in token mode");
    assert_eq!(codes, ["UNAUTHORIZED"]);
    let challenge = challenge.expect("challenge");
    let realm = s.proxy.url("/token");
    let params = [("realm", realm.as_str()), ("service", "container-registry")];
    assert_challenge(&challenge, "Bearer", &params);

    // anonymous token for the public repository
    let (status, v) = s
        .proxy
        .get_token(None, &["repository:public/tools:pull,push"], false);
    assert_eq!(status, 200, "anonymous GET /token: {v}");
    let anon = v["token"].as_str().unwrap();
    assert_eq!(
        access_of(anon).get("repository:public/tools"),
        Some(&strs(&["pull"])),
        "anonymous token: pull only"
    );
    assert_eq!(jwt_claims(anon)["sub"], "", "anonymous token's subject");
    let r = accept_oci(
        s.proxy
            .bearer(Method::GET, "/v2/public/tools/manifests/v1", anon),
    );
    assert_eq!(r.status(), 200, "pull with the anonymous token");
    assert_eq!(r.bytes().unwrap().to_vec(), manifest);
    // an anonymous token never logs in
    let r = s.proxy.send_bearer(Method::GET, "/v2/", anon);
    assert_eq!(r.status(), 401, "GET /v2/ with an anonymous token");

    // without any token, the anonymous rule also serves the pull directly
    // (docs: only requests that no anonymous rule allows get a 401)
    let r = accept_oci(s.proxy.anon(Method::GET, "/v2/public/tools/manifests/v1"));
    assert_eq!(
        r.status(),
        200,
        "anonymous pull of public/tools without a token (an anonymous rule allows it)"
    );
    assert_eq!(r.bytes().unwrap().to_vec(), manifest);

    // push without credentials asks for login with the push scope
    let r = s
        .proxy
        .send_anon(Method::POST, "/v2/public/tools/blobs/uploads/");
    let (status, codes, challenge) = status_codes_challenge(r);
    assert_eq!(status, 401, "anonymous push");
    assert_eq!(codes, ["UNAUTHORIZED"]);
    let challenge = challenge.expect("challenge");
    assert_challenge(
        &challenge,
        "Bearer",
        &[("scope", "repository:public/tools:push")],
    );
    // with the anonymous token: insufficient scope
    let r = s
        .proxy
        .send_bearer(Method::POST, "/v2/public/tools/blobs/uploads/", anon);
    assert_eq!(r.status(), 401, "push with an anonymous token");
    // nothing else for anonymous callers
    push_image_direct(&s.reg, "team-a/hidden", "v1");
    let (_, v) = s
        .proxy
        .get_token(None, &["repository:team-a/hidden:pull"], false);
    let t = v["token"].as_str().unwrap();
    assert!(access_of(t)
        .get("repository:team-a/hidden")
        .is_none_or(|a| a.is_empty()));
    let r = s
        .proxy
        .send_anon(Method::GET, "/v2/team-a/hidden/manifests/v1");
    assert_eq!(r.status(), 401, "anonymous pull of team-a/hidden");
}

#[test]
fn forbidden_repository_answers_the_same_whether_it_exists_or_not() {
    let s = start();
    push_image_direct(&s.reg, "secret/exists", "v1");
    let norm = |r: reqwest::blocking::Response, repo: &str| {
        let status = r.status().as_u16();
        let challenge = header_of(&r, "www-authenticate").map(|c| c.replace(repo, "<repo>"));
        let body = r.bytes().unwrap();
        let codes = error_codes(&body).unwrap_or_else(|e| vec![e]);
        (
            status,
            codes,
            challenge,
            String::from_utf8_lossy(&body).replace(repo, "<repo>"),
        )
    };
    for creds in [Some((USER, PASS)), Some(BOB), None] {
        let ta = s.proxy.token(creds, &["repository:secret/exists:pull"]);
        let tb = s.proxy.token(creds, &["repository:secret/missing:pull"]);
        assert!(access_of(&ta)
            .get("repository:secret/exists")
            .is_none_or(|a| a.is_empty()));
        let a = norm(
            s.proxy
                .send_bearer(Method::GET, "/v2/secret/exists/manifests/v1", &ta),
            "secret/exists",
        );
        let b = norm(
            s.proxy
                .send_bearer(Method::GET, "/v2/secret/missing/manifests/v1", &tb),
            "secret/missing",
        );
        assert_eq!(a.0, 401, "{creds:?}: {a:?}");
        assert_eq!(a, b, "{creds:?}: existing vs missing forbidden repository");
        // Basic credentials on /v2/ in token mode: same answer for both too
        if let Some((u, p)) = creds {
            let a = norm(
                s.proxy
                    .send_as(Method::GET, "/v2/secret/exists/manifests/v1", u, p),
                "secret/exists",
            );
            let b = norm(
                s.proxy
                    .send_as(Method::GET, "/v2/secret/missing/manifests/v1", u, p),
                "secret/missing",
            );
            assert!(a.0 == 401 || a.0 == 403, "{a:?}");
            assert_eq!(a, b, "{u} with Basic: existing vs missing");
        }
    }
}

#[test]
fn personal_namespace_tokens() {
    let s = start();
    let (_, v) = s.proxy.get_token(
        Some((USER, PASS)),
        &[
            "repository:users/alice/x:pull,push",
            "repository:users/bob/x:pull,push",
        ],
        false,
    );
    let t = v["token"].as_str().unwrap();
    let access = access_of(t);
    assert_eq!(
        access.get("repository:users/alice/x"),
        Some(&strs(&["pull", "push"]))
    );
    assert!(
        access
            .get("repository:users/bob/x")
            .is_none_or(|a| a.is_empty()),
        "{access:?}"
    );
    push_image_with_token(&s.proxy, "users/alice/x", "v1", t);
    let r = s
        .proxy
        .send_bearer(Method::POST, "/v2/users/bob/x/blobs/uploads/", t);
    assert_eq!(r.status(), 401, "alice's token on users/bob/x");
}

/// Pushes a one-layer image with a bearer token; returns (manifest, digest).
fn push_image_with_token(proxy: &Proxy, repo: &str, tag: &str, token: &str) -> (Vec<u8>, String) {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"t":"{tag}"}}"#
    );
    let layer = pseudo_random(3000, 11);
    proxy
        .v2(Auth::Bearer(token.into()))
        .image(repo, tag, config.as_bytes(), &layer)
}

// ---------------------------------------------------------------------------
// a push longer than the token's lifetime
// ---------------------------------------------------------------------------

#[test]
fn long_push_outlives_its_token_with_refresh() {
    let s = start_with("lifetime = \"5s\"");
    let proxy = &s.proxy;
    let repo = "team-a/long";
    let scope = format!("repository:{repo}:pull,push");
    let (status, v) = proxy.get_token(Some((USER, PASS)), &[&scope], true);
    assert_eq!(status, 200, "{v}\n{}", proxy.logs());
    assert_eq!(
        v["expires_in"].as_u64(),
        Some(5),
        "lifetime = \"5s\" gives expires_in {} (clamped?)",
        v["expires_in"]
    );
    let mut token = v["token"].as_str().unwrap().to_string();
    let refresh = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_string();
    let exp = jwt_claims(&token)["exp"].as_u64().unwrap();

    let r = proxy.send_bearer(Method::POST, &format!("/v2/{repo}/blobs/uploads/"), &token);
    assert_eq!(r.status(), 202, "POST upload");
    let mut location = absolute(proxy, &header_of(&r, "location").unwrap());

    // PATCH a 16 KiB chunk every 1.5 s until the token is refused (at the
    // latest after its lifetime plus the proxy's 30 s clock-skew leeway),
    // refresh, send one more chunk on the same session, then finish.
    let mut sent: Vec<u8> = Vec::new();
    let mut refreshed = 0;
    let deadline = exp + 30 + 10;
    let mut seed = 1u64;
    let mut chunk = pseudo_random(16 * 1024, seed);
    loop {
        assert!(
            now() <= deadline,
            "no PATCH was refused by {deadline} (token exp {exp}): expiry is not enforced\n{}",
            proxy.logs()
        );
        let r = proxy
            .client()
            .patch(&location)
            .bearer_auth(&token)
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{}-{}", sent.len(), sent.len() + chunk.len() - 1),
            )
            .body(chunk.clone())
            .send()
            .unwrap();
        match r.status().as_u16() {
            202 => {
                location = absolute(proxy, &header_of(&r, "location").expect("PATCH Location"));
                sent.extend_from_slice(&chunk);
                seed += 1;
                chunk = pseudo_random(16 * 1024, seed);
                if refreshed > 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1500));
            }
            401 => {
                let c = header_of(&r, "www-authenticate").unwrap_or_default();
                assert!(
                    c.contains("error=\"invalid_token\""),
                    "PATCH refused without invalid_token: {c}"
                );
                assert!(
                    now() >= exp,
                    "token refused before its exp {exp} (now {})",
                    now()
                );
                assert_eq!(refreshed, 0, "the refreshed token was refused too");
                let (st, v) = post_form(
                    proxy,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &refresh),
                        ("service", "container-registry"),
                        ("client_id", "portcullis-tests"),
                        ("scope", &scope),
                    ],
                );
                assert_eq!(st, 200, "refresh: {v}\n{}", proxy.logs());
                token = v["access_token"].as_str().unwrap().to_string();
                refreshed += 1;
            }
            other => panic!(
                "PATCH at offset {}: {other} {:?}\n{}",
                sent.len(),
                r.text(),
                proxy.logs()
            ),
        }
    }
    assert!(
        sent.len() >= 2 * 16 * 1024,
        "chunks before and after the refresh"
    );
    let digest = sha256_digest(&sent);
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = proxy
        .client()
        .put(format!("{location}{sep}digest={digest}"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "PUT ?digest= after the refresh: {:?}",
        r.text()
    );
    let r = proxy.send_bearer(Method::GET, &format!("/v2/{repo}/blobs/{digest}"), &token);
    assert_eq!(r.status(), 200, "GET the blob");
    let body = r.bytes().unwrap();
    assert_eq!(sha256_digest(&body), digest, "pulled blob digest");
    assert_eq!(body.len(), sent.len());
}
