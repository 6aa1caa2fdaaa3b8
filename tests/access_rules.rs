//! Access rules through the proxy in Basic mode, with raw requests against a
//! real registry: read-only users, repositories a user may not see (same
//! answer whether they exist or not), anonymous pull, `${user}` namespaces,
//! `GET /v2/` always asking for credentials; then `check --explain` and the
//! reload of the rules (file change, invalid config, SIGHUP).

mod support;

use reqwest::Method;
use std::time::Duration;
use support::*;

/// Admins first, then the team-a set (personal namespaces with delete).
fn rules() -> Vec<Rule> {
    let mut rules = vec![Rule::users(&["admin"]).all().comment("admins")];
    rules.extend(team_a_rules(&["pull", "push", "delete"]));
    rules
}

fn users() -> Vec<(&'static str, &'static str)> {
    vec![(USER, PASS), BOB, ADMIN]
}

fn start() -> (Registry, Proxy) {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::basic(&users()).rules(&rules()));
    (reg, proxy)
}

/// Status, error codes, challenge, and the body with `repo` replaced by `<repo>`.
fn refusal(
    r: reqwest::blocking::Response,
    repo: &str,
) -> (u16, Vec<String>, Option<String>, String) {
    let status = r.status().as_u16();
    let challenge = header_of(&r, "www-authenticate").map(|c| c.replace(repo, "<repo>"));
    let body = r.bytes().unwrap();
    let codes = error_codes(&body).unwrap_or_else(|e| vec![format!("<{e}>")]);
    let text = String::from_utf8_lossy(&body).replace(repo, "<repo>");
    (status, codes, challenge, text)
}

#[test]
fn base_endpoint_always_needs_credentials_even_with_anonymous_rules() {
    let (_reg, proxy) = start();
    let r = proxy.send_anon(Method::GET, "/v2/");
    let (status, codes, challenge) = status_codes_challenge(r);
    assert_eq!(status, 401, "GET /v2/ without credentials");
    assert_eq!(codes, ["UNAUTHORIZED"]);
    let challenge = challenge.expect("GET /v2/ 401 without WWW-Authenticate");
    // Basic mode with an anonymous rule: Bearer (Docker cannot pull
    // anonymously after a Basic challenge; tests/anonymous_basic.rs)
    let (scheme, params) = challenge_params(&challenge);
    assert_eq!(scheme, "Bearer", "challenge: {challenge}");
    assert!(
        params.get("realm").is_some_and(|r| r.ends_with("/token")),
        "challenge: {challenge}"
    );
    // bob (who may only pull team-a) still logs in
    let r = proxy.send_as(Method::GET, "/v2/", BOB.0, BOB.1);
    assert_eq!(r.status(), 200, "GET /v2/ as bob");
    let r = proxy.send_as(Method::GET, "/v2/", BOB.0, "wrong");
    assert_eq!(r.status(), 401, "GET /v2/ as bob with a wrong password");
}

#[test]
fn read_only_user_pulls_but_cannot_push() {
    let (_reg, proxy) = start();
    let (manifest, digest) = push_image(&proxy, "team-a/app", "v1");

    let r = accept_oci(proxy.req_as(Method::GET, "/v2/team-a/app/manifests/v1", BOB.0, BOB.1));
    assert_eq!(r.status(), 200, "bob pulls team-a/app");
    assert_eq!(r.bytes().unwrap().to_vec(), manifest);

    let r = proxy.send_as(Method::POST, "/v2/team-a/app/blobs/uploads/", BOB.0, BOB.1);
    let (status, codes, challenge) = status_codes_challenge(r);
    assert_eq!(status, 403, "bob starts an upload to team-a/app");
    assert_eq!(codes, ["DENIED"]);
    assert_eq!(challenge, None, "403 DENIED carries no challenge");

    let r = proxy
        .req_as(Method::PUT, "/v2/team-a/app/manifests/v2", BOB.0, BOB.1)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "bob PUTs a manifest");
    let r = proxy.send_as(
        Method::DELETE,
        &format!("/v2/team-a/app/manifests/{digest}"),
        BOB.0,
        BOB.1,
    );
    assert_eq!(r.status(), 403, "bob deletes a manifest");
    // alice may push but not delete
    let r = proxy.send_req(
        Method::DELETE,
        &format!("/v2/team-a/app/manifests/{digest}"),
    );
    assert_eq!(r.status(), 403, "alice deletes a manifest (not granted)");
    let r = accept_oci(proxy.req(Method::GET, "/v2/team-a/app/manifests/v1"));
    assert_eq!(
        r.status(),
        200,
        "the refused delete did not reach the registry"
    );
}

#[test]
fn forbidden_repository_answers_the_same_whether_it_exists_or_not() {
    let (reg, proxy) = start();
    push_image_direct(&reg, "secret/exists", "v1");
    let blob = direct_blob(&reg, "secret/exists", b"a secret blob");

    // authenticated but not allowed: 403 DENIED, identical for both
    for (what, path_of) in [
        (
            "manifest",
            Box::new(|r: &str| format!("/v2/{r}/manifests/v1")) as Box<dyn Fn(&str) -> String>,
        ),
        ("tags", Box::new(|r: &str| format!("/v2/{r}/tags/list"))),
        (
            "blob",
            Box::new(move |r: &str| format!("/v2/{r}/blobs/{blob}")),
        ),
    ] {
        for (user, pass) in [(USER, PASS), BOB] {
            let a = refusal(
                proxy.send_as(Method::GET, &path_of("secret/exists"), user, pass),
                "secret/exists",
            );
            let b = refusal(
                proxy.send_as(Method::GET, &path_of("secret/missing"), user, pass),
                "secret/missing",
            );
            assert_eq!(
                a.0, 403,
                "{user} GET {what} of an existing forbidden repo: {a:?}"
            );
            assert_eq!(a.1, ["DENIED"], "{user} {what}: {a:?}");
            assert_eq!(
                a, b,
                "{user} {what}: existing vs missing forbidden repository differ"
            );
            let ha = proxy.send_as(Method::HEAD, &path_of("secret/exists"), user, pass);
            let hb = proxy.send_as(Method::HEAD, &path_of("secret/missing"), user, pass);
            assert_eq!(ha.status(), 403, "{user} HEAD {what}");
            assert_eq!(
                ha.status(),
                hb.status(),
                "{user} HEAD {what}: existing vs missing"
            );
        }
        // anonymous: 401 with a challenge, identical for both
        let a = refusal(
            proxy.send_anon(Method::GET, &path_of("secret/exists")),
            "secret/exists",
        );
        let b = refusal(
            proxy.send_anon(Method::GET, &path_of("secret/missing")),
            "secret/missing",
        );
        assert_eq!(a.0, 401, "anonymous GET {what}: {a:?}");
        assert_eq!(a.1, ["UNAUTHORIZED"]);
        assert!(
            a.2.as_deref().is_some_and(|c| c.starts_with("Bearer ")),
            "{a:?}"
        );
        assert_eq!(a, b, "anonymous {what}: existing vs missing differ");
    }
    // the registry did see neither request
    reg.assert_never_asked_for("secret/missing", "a refused request");
}

#[test]
fn anonymous_pull_of_public_but_push_asks_for_login() {
    let (reg, proxy) = start();
    let (manifest, _) = push_image(&proxy, "public/tools", "v1");

    let r = accept_oci(proxy.anon(Method::GET, "/v2/public/tools/manifests/v1"));
    assert_eq!(r.status(), 200, "anonymous pull of public/tools");
    assert_eq!(r.bytes().unwrap().to_vec(), manifest);
    let r = proxy.send_anon(Method::GET, "/v2/public/tools/tags/list");
    assert_eq!(r.status(), 200, "anonymous tags/list of public/tools");

    for (method, path) in [
        (Method::POST, "/v2/public/tools/blobs/uploads/"),
        (Method::PUT, "/v2/public/tools/manifests/v2"),
        (Method::DELETE, "/v2/public/tools/manifests/v1"),
    ] {
        let r = proxy
            .anon(method.clone(), path)
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .unwrap();
        let (status, codes, challenge) = status_codes_challenge(r);
        assert_eq!(status, 401, "anonymous {method} {path}");
        assert_eq!(codes, ["UNAUTHORIZED"], "anonymous {method} {path}");
        assert!(
            challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer realm=")),
            "anonymous {method} {path}: challenge {challenge:?}"
        );
    }
    // anonymous may not see anything else
    push_image_direct(&reg, "team-a/private", "v1");
    let r = proxy.send_anon(Method::GET, "/v2/team-a/private/manifests/v1");
    assert_eq!(r.status(), 401, "anonymous pull of team-a/private");
    // bob (no rule for public) falls through to the anonymous rule: pull only
    let r = proxy.send_as(Method::GET, "/v2/public/tools/tags/list", BOB.0, BOB.1);
    assert_eq!(
        r.status(),
        200,
        "bob pulls public/tools through the anonymous rule"
    );
    let r = proxy.send_as(
        Method::POST,
        "/v2/public/tools/blobs/uploads/",
        BOB.0,
        BOB.1,
    );
    assert_eq!(r.status(), 403, "bob pushes to public/tools");
}

#[test]
fn personal_namespaces_follow_the_user() {
    let (reg, proxy) = start();
    // alice is the harness's default user (push_image uses her credentials)
    push_image(&proxy, "users/alice/x", "v1");
    let r = proxy.send_req(Method::POST, "/v2/users/bob/x/blobs/uploads/");
    let (status, codes, _) = status_codes_challenge(r);
    assert_eq!(status, 403, "alice pushes to users/bob/x");
    assert_eq!(codes, ["DENIED"]);
    let r = proxy.send_req(Method::GET, "/v2/users/bob/x/tags/list");
    assert_eq!(r.status(), 403, "alice lists users/bob/x");
    // bob's own namespace works for bob, alice's is closed to him
    let r = proxy.send_as(Method::POST, "/v2/users/bob/x/blobs/uploads/", BOB.0, BOB.1);
    assert_eq!(r.status(), 202, "bob pushes to users/bob/x");
    let r = proxy.send_as(Method::GET, "/v2/users/alice/x/tags/list", BOB.0, BOB.1);
    assert_eq!(r.status(), 403, "bob lists users/alice/x");
    // a `${user}` pattern never matches anonymous callers
    let r = proxy.send_anon(Method::GET, "/v2/users/alice/x/tags/list");
    assert_eq!(r.status(), 401, "anonymous lists users/alice/x");
    // alice may delete in her namespace
    let r = proxy.send_req(Method::DELETE, "/v2/users/alice/x/manifests/v1");
    // distribution refuses deleting by tag (only by digest): any non-403 answer
    // means the rule let it through to the registry
    assert_ne!(r.status(), 403, "alice deletes in users/alice/x");
    assert!(
        reg.logged_uris()
            .iter()
            .any(|u| u == "/v2/users/alice/x/manifests/v1"),
        "the delete did not reach the registry"
    );
}

// ---------------------------------------------------------------------------
// check --explain
// ---------------------------------------------------------------------------

#[test]
fn check_explain_names_the_deciding_rule() {
    let (_reg, proxy) = start();
    let cfg = proxy.config_path();
    let cfg = cfg.to_str().unwrap();

    // (user, repository, action), exit code, what the explanation says
    let cases: &[(&str, &str, &str, i32, &[&str])] = &[
        (
            "alice",
            "team-a/app",
            "push",
            0,
            &[
                "rule 2 matches",
                "alice works on team-a",
                "allowed",
                "rule 1 skipped",
            ],
        ),
        (
            "bob",
            "team-a/app",
            "push",
            1,
            &["rule 3 matches", "denied"],
        ),
        ("bob", "secret/x", "pull", 1, &["default deny"]),
        ("-", "public/tools", "pull", 0, &["rule 5 matches"]),
        ("alice", "users/alice/y", "delete", 0, &[]),
        ("alice", "users/bob/y", "pull", 1, &[]),
    ];
    for &(user, repo, action, code, says) in cases {
        let args = ["check", "--config", cfg, "--explain", user, repo, action];
        let o = portcullis(&args, None);
        let text = out_text(&o);
        let case = format!("{user} {action} {repo}");
        assert_eq!(o.status.code(), Some(code), "{case}: exit code: {text}");
        for said in says {
            assert!(text.contains(said), "{case}: no {said:?} in: {text}");
        }
    }
}

// ---------------------------------------------------------------------------
// reload
// ---------------------------------------------------------------------------

/// Replaces the `[[access]]` rules of the proxy's config (atomic rename).
fn rewrite_rules(proxy: &Proxy, rules: &str) {
    let cfg = std::fs::read_to_string(proxy.config_path()).unwrap();
    let head = cfg.split("\n[[access]]").next().unwrap();
    write_atomic(&proxy.config_path(), format!("{head}\n{rules}").as_bytes());
}

fn bob_push_status(proxy: &Proxy) -> u16 {
    proxy
        .send_as(Method::POST, "/v2/team-a/app/blobs/uploads/", BOB.0, BOB.1)
        .status()
        .as_u16()
}

#[test]
fn rules_reload_on_change_keep_old_on_invalid_and_on_sighup() {
    let (_reg, proxy) = start();
    assert_eq!(bob_push_status(&proxy), 403, "bob may not push at first");

    // 1. the file changes: bob may push team-a now
    let rules = rules_toml(&rules());
    let bob_rw = rules.replace(
        "users = [\"bob\"]\nrepositories = [\"team-a/**\"]\nactions = [\"pull\"]",
        "users = [\"bob\"]\nrepositories = [\"team-a/**\"]\nactions = [\"pull\", \"push\"]",
    );
    assert_ne!(bob_rw, rules);
    rewrite_rules(&proxy, &bob_rw);
    wait_until_every(
        "bob's new push rule applies",
        WAIT,
        Duration::from_millis(200),
        || bob_push_status(&proxy) == 202,
        || proxy.logs(),
    );

    // 2. an invalid config (unknown action) keeps the rules in force
    let invalid = rules.replace("actions = [\"pull\"]", "actions = [\"pul\"]");
    assert_ne!(invalid, rules);
    rewrite_rules(&proxy, &invalid);
    wait_until_every(
        "the invalid config is noticed",
        WAIT,
        Duration::from_millis(200),
        || {
            proxy
                .log_text()
                .contains("config changed but is invalid; keeping the previous")
        },
        || proxy.logs(),
    );
    assert_eq!(
        bob_push_status(&proxy),
        202,
        "the previous rules keep serving"
    );
    assert!(proxy.is_running_ref(), "the proxy is still running");
    // `check` reports the invalid action
    let o = portcullis(
        &["check", "--config", proxy.config_path().to_str().unwrap()],
        None,
    );
    assert!(
        !o.status.success(),
        "check of the invalid config: {}",
        out_text(&o)
    );
    assert!(out_text(&o).contains("actions"), "{}", out_text(&o));

    // 3. SIGHUP reloads (the rules go back to bob = read-only)
    let reloads_before = proxy.log_text().matches("config reloaded").count();
    rewrite_rules(&proxy, &rules);
    proxy.sighup();
    wait_until_every(
        "bob is read-only again after SIGHUP",
        WAIT,
        Duration::from_millis(200),
        || bob_push_status(&proxy) == 403,
        || proxy.logs(),
    );
    wait_until(
        "SIGHUP is logged",
        WAIT,
        || proxy.log_text().contains("SIGHUP: reloading"),
        || proxy.logs(),
    );
    assert!(
        proxy.log_text().matches("config reloaded").count() > reloads_before,
        "no reload logged\n{}",
        proxy.logs()
    );
    // a SIGHUP with nothing changed reloads too, and does not stop the proxy
    let before = proxy.log_text().matches("SIGHUP: reloading").count();
    proxy.sighup();
    wait_until(
        "second SIGHUP is logged",
        WAIT,
        || proxy.log_text().matches("SIGHUP: reloading").count() > before,
        || proxy.logs(),
    );
    let r = proxy.send_req(Method::GET, "/v2/");
    assert_eq!(r.status(), 200, "the proxy serves after SIGHUP");
    assert_eq!(bob_push_status(&proxy), 403);
}

/// containers/image (skopeo, podman, buildah) without credentials answers a
/// Basic challenge with `Authorization: Basic Og==` — an empty user name and
/// password. That is an anonymous client, not a failed login: it must get
/// what the anonymous rules allow, and must not count toward throttling.
#[test]
fn empty_basic_credentials_are_anonymous() {
    let (_reg, proxy) = start();
    push_image(&proxy, "public/tools", "v1");
    let statuses: Vec<u16> = (0..12)
        .map(|_| {
            proxy
                .anon(Method::GET, "/v2/public/tools/manifests/v1")
                .header("authorization", "Basic Og==")
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert!(
        statuses.iter().all(|&s| s == 200),
        "12 x GET public/tools with `Authorization: Basic Og==` (what skopeo sends without credentials): {statuses:?}\n{}",
        proxy.logs()
    );
    // still refused where anonymous callers may not go, with a challenge
    let r = proxy
        .anon(Method::POST, "/v2/public/tools/blobs/uploads/")
        .header("authorization", "Basic Og==")
        .send()
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "anonymous push with empty Basic credentials"
    );
    // and the real user from the same address is not throttled
    let r = proxy.send_req(Method::GET, "/v2/");
    assert_eq!(r.status(), 200, "alice after 12 empty-credential requests");
}
