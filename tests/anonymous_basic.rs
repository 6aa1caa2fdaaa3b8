//! Basic mode with a rule that grants anonymous pulls, driven the way the
//! Docker engine drives a registry (its distribution client): it pings
//! `GET /v2/`, registers every challenge it gets, and then runs the handler
//! of *each* challenged scheme. A `Basic` challenge without stored
//! credentials is "no basic auth credentials" and the pull stops, whatever
//! else is offered; so the proxy must challenge with `Bearer` only, and
//! `docker login` must still have its password checked (at the token
//! endpoint) — never a 200 on `/v2/` for an anonymous caller.

mod support;

use reqwest::Method;
use support::*;

fn start() -> (Registry, Proxy) {
    let rules = vec![
        Rule::users(&[USER]).all(),
        Rule::anonymous().on(&["public/**"]).pull(),
    ];
    registry_and_proxy(ProxyOptions::basic(&[(USER, PASS)]).rules(&rules))
}

/// Every `WWW-Authenticate` header of `r`.
fn challenges(r: &reqwest::blocking::Response) -> Vec<String> {
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// A token from the token endpoint (200 required).
fn token_of(proxy: &Proxy, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let (status, body) = proxy.get_token(creds, scopes, false);
    assert_eq!(status, 200, "token for {scopes:?}: {body}");
    body["token"].as_str().expect("token").to_string()
}

/// The status of `method path` with `token`.
fn with_token(proxy: &Proxy, method: Method, path: &str, token: &str) -> u16 {
    let r = proxy.anon(method, path).bearer_auth(token).send().unwrap();
    r.status().as_u16()
}

#[test]
fn an_anonymous_docker_pull_gets_a_bearer_challenge_and_an_anonymous_token() {
    let (_reg, proxy) = start();
    let (manifest, _) = push_image(&proxy, "public/tools", "v1");

    // the ping: 401, Bearer only (a Basic challenge would stop the engine)
    let r = proxy.send_anon(Method::GET, "/v2/");
    assert_eq!(r.status(), 401, "GET /v2/ without credentials");
    let all = challenges(&r);
    assert_eq!(all.len(), 1, "one challenge: {all:?}");
    let (scheme, params) = challenge_params(&all[0]);
    assert_eq!(scheme, "Bearer", "{all:?}");
    let realm = params.get("realm").expect("realm").clone();
    assert!(realm.ends_with("/token"), "realm {realm}");

    // the pull: an anonymous token for the scope the manifest asks for
    // (anonymous pulls of public/** are allowed without any token too)
    let r = accept_oci(proxy.anon(Method::GET, "/v2/public/tools/manifests/v1"));
    assert_eq!(r.status(), 200);
    let token = token_of(&proxy, None, &["repository:public/tools:pull"]);
    let r = accept_oci(
        proxy
            .anon(Method::GET, "/v2/public/tools/manifests/v1")
            .bearer_auth(&token),
    );
    assert_eq!(r.status(), 200, "pull with the anonymous token");
    assert_eq!(r.bytes().unwrap().to_vec(), manifest);

    // the anonymous token grants nothing beyond the rules
    let token = token_of(&proxy, None, &["repository:team/app:pull,push"]);
    let status = with_token(&proxy, Method::POST, "/v2/team/app/blobs/uploads/", &token);
    assert_eq!(status, 401, "push with an anonymous token");
}

#[test]
fn docker_login_still_checks_the_password() {
    let (_reg, proxy) = start();
    // docker login: the token endpoint with Basic credentials
    let (status, _) = proxy.get_token(Some((USER, "wrong")), &[], false);
    assert_eq!(status, 401, "login with a wrong password");
    let token = token_of(&proxy, Some((USER, PASS)), &[]);
    let status = with_token(&proxy, Method::GET, "/v2/", &token);
    assert_eq!(status, 200, "GET /v2/ with the login's token");
    // and Basic credentials keep working on every request (curl, scripts)
    let r = proxy.send_as(Method::GET, "/v2/", USER, PASS);
    assert_eq!(r.status(), 200, "GET /v2/ with Basic credentials");
    let r = proxy.send_as(Method::GET, "/v2/", USER, "wrong");
    assert_eq!(r.status(), 401, "GET /v2/ with a wrong Basic password");
}

#[test]
fn without_anonymous_rules_basic_mode_challenges_with_basic() {
    let rules = vec![Rule::users(&[USER]).all()];
    let (_reg, proxy) = registry_and_proxy(ProxyOptions::basic(&[(USER, PASS)]).rules(&rules));
    let r = proxy.send_anon(Method::GET, "/v2/");
    assert_eq!(r.status(), 401);
    let all = challenges(&r);
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(all[0].starts_with("Basic "), "{all:?}");
    // and no token endpoint is served
    let (status, _) = proxy.get_token(Some((USER, PASS)), &[], false);
    assert_eq!(status, 404, "the token endpoint in plain Basic mode");
}
