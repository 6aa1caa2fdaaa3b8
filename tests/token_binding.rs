//! What a token stands for after it is issued (token mode, real registry):
//! a grant that depended on the client's network does not travel with the
//! token to another address; a rule removed on reload stops tokens already
//! out; a refresh token dies with the password it was minted with.

mod support;

use std::net::IpAddr;
use std::time::Duration;
use support::*;

fn rules() -> [Rule; 2] {
    [
        Rule::users(&["alice"])
            .on(&["internal/**"])
            .from(&["127.0.0.2/32"])
            .pull()
            .comment("internal images only from the build host"),
        Rule::users(&["alice"]).on(&["team/**"]).pull_push(),
    ]
}

fn start() -> (Registry, Proxy, tempfile::TempDir) {
    let reg = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::token(&[(USER, PASS)], keys.path()).rules(&rules()),
    );
    (reg, proxy, keys)
}

fn token_from(proxy: &Proxy, from: IpAddr, scope: &str) -> String {
    let r = proxy
        .client_from(from)
        .get(proxy.url(&proxy.token_path(&[scope], false)))
        .basic_auth(USER, Some(PASS))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", proxy.logs());
    let v: serde_json::Value = r.json().unwrap();
    v["token"].as_str().unwrap().to_owned()
}

fn status_from(proxy: &Proxy, from: IpAddr, path: &str, token: &str) -> u16 {
    proxy
        .client_from(from)
        .get(proxy.url(path))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn a_network_bound_grant_is_checked_where_the_token_is_used() {
    let (reg, proxy, _keys) = start();
    push_image_direct(&reg, "internal/base", "v1");
    let build_host: IpAddr = "127.0.0.2".parse().unwrap();
    let elsewhere: IpAddr = "127.0.0.3".parse().unwrap();
    let token = token_from(&proxy, build_host, "repository:internal/base:pull");
    let claims = jwt_claims(&token);
    assert_eq!(claims["access"][0]["actions"][0], "pull", "{claims}");
    let path = "/v2/internal/base/tags/list";
    assert_eq!(status_from(&proxy, build_host, path, &token), 200);
    // the same token from another address: refused, as Basic would be
    assert_eq!(
        status_from(&proxy, elsewhere, path, &token),
        401,
        "{}",
        proxy.logs()
    );
    // grants without networks work from anywhere
    let team = token_from(&proxy, elsewhere, "repository:team/x:pull");
    assert_eq!(
        status_from(&proxy, build_host, "/v2/team/x/tags/list", &team),
        404
    );
}

#[test]
fn a_rule_removed_on_reload_stops_tokens_already_issued() {
    let (reg, proxy, _keys) = start();
    push_image_direct(&reg, "team/app", "v1");
    let from: IpAddr = "127.0.0.1".parse().unwrap();
    let token = token_from(&proxy, from, "repository:team/app:pull");
    let path = "/v2/team/app/tags/list";
    assert_eq!(status_from(&proxy, from, path, &token), 200);
    let config = std::fs::read_to_string(proxy.config_path()).unwrap();
    let without = config.replace(
        "repositories = [\"team/**\"]",
        "repositories = [\"other/**\"]",
    );
    assert_ne!(config, without);
    write_atomic(&proxy.config_path(), without.as_bytes());
    wait_until(
        "the reloaded rules refuse the old token",
        Duration::from_secs(20),
        || status_from(&proxy, from, path, &token) == 401,
        || proxy.logs(),
    );
}

fn refresh(proxy: &Proxy, refresh_token: &str) -> (u16, serde_json::Value) {
    proxy.refresh(refresh_token, "repository:team/app:pull")
}

#[test]
fn a_password_change_ends_refresh_tokens_minted_before_it() {
    let (_reg, proxy, _keys) = start();
    let (status, v) = proxy.get_token(Some((USER, PASS)), &["repository:team/app:pull"], true);
    assert_eq!(status, 200, "{v}");
    let old = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    assert_eq!(refresh(&proxy, &old).0, 200, "{}", proxy.logs());
    // the password is reset (htpasswd rewritten, reloaded on change)
    let new_pass = "a-new-password-after-the-leak";
    let file = proxy.htpasswd_path();
    let line = format!("{}\n", htpasswd_line(&["-B"], USER, new_pass));
    write_atomic(&file, line.as_bytes());
    wait_until(
        "the new password is in force",
        Duration::from_secs(20),
        || proxy.get_token(Some((USER, new_pass)), &[], false).0 == 200,
        || proxy.logs(),
    );
    let (status, v) = refresh(&proxy, &old);
    assert_eq!(status, 401, "a refresh token from before the reset: {v}");
    // a refresh token of the new password works
    let (_, v) = proxy.get_token(Some((USER, new_pass)), &["repository:team/app:pull"], true);
    let fresh = v["refresh_token"].as_str().expect("refresh_token");
    assert_eq!(refresh(&proxy, fresh).0, 200);
}

#[test]
fn a_network_bound_grant_in_basic_mode_for_comparison() {
    let reg = Registry::start();
    push_image_direct(&reg, "internal/base", "v1");
    let proxy = Proxy::start(&reg, ProxyOptions::basic(&[(USER, PASS)]).rules(&rules()));
    let path = "/v2/internal/base/tags/list";
    for (from, want) in [("127.0.0.2", 200), ("127.0.0.3", 403)] {
        let s = proxy
            .client_from(from.parse().unwrap())
            .get(proxy.url(path))
            .basic_auth(USER, Some(PASS))
            .send()
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(s, want, "from {from}");
    }
}
