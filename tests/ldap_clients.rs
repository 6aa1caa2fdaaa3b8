//! LDAP accounts with real clients, and directory changes over time:
//! skopeo and podman log in with directory users and push or pull as their
//! groups allow; a group membership changed in the directory takes effect
//! once the cached login expires (`auth.ldap.cache_ttl`), in both
//! directions.

mod support;

use reqwest::Method;
use std::time::{Duration, Instant};
use support::slapd::*;
use support::*;

const CI_PUSHERS_DN: &str = "cn=ci-pushers,ou=groups,dc=example,dc=org";

/// First match decides: ci-pushers push to `team/*`; ci-pushers and devs
/// pull `team/*` and `releases/*` (so ci-pushers may only pull
/// `releases/*`); the htpasswd robot may do anything.
fn rules() -> [Rule; 3] {
    [
        Rule::groups(&["ci-pushers"]).on(&["team/*"]).pull_push(),
        Rule::groups(&["ci-pushers", "devs"])
            .on(&["team/*", "releases/*"])
            .pull(),
        Rule::users(&["robot"]).all(),
    ]
}

/// The directory (search-then-bind, groups by `member`) after the
/// htpasswd robot; `cache_ttl` sets `auth.ldap.cache_ttl`.
fn options(slapd: &Slapd, cache_ttl: Option<&str>) -> ProxyOptions {
    let ldap = slapd
        .ldap_config()
        .timeouts("3s", "2s")
        .cache_ttl(cache_ttl);
    ProxyOptions::basic(&[ROBOT]).ldap(&ldap).rules(&rules())
}

/// Tags of `repo` as the robot sees them through the proxy (None: 404).
fn tags(proxy: &Proxy, repo: &str) -> Option<Vec<String>> {
    let r = proxy
        .client()
        .get(proxy.url(&format!("/v2/{repo}/tags/list")))
        .basic_auth(ROBOT.0, Some(ROBOT.1))
        .send()
        .unwrap();
    match r.status().as_u16() {
        404 => None,
        200 => {
            let v: serde_json::Value = r.json().unwrap();
            let mut t: Vec<String> = v["tags"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            t.sort();
            Some(t)
        }
        s => panic!("robot: tags/list of {repo}: {s}\n{}", proxy.logs()),
    }
}

#[test]
fn skopeo_and_podman_with_directory_accounts() {
    let reg = Registry::start();
    let slapd = Slapd::start();
    let proxy = Proxy::start(&reg, options(&slapd, None));
    let host = format!("127.0.0.1:{}", proxy.port());
    let cert_dir = proxy.cert_dir().display().to_string();
    let state = tempfile::Builder::new()
        .prefix("portcullis-ldap-clients-")
        .tempdir()
        .unwrap();
    let skopeo = Skopeo::in_dir(state.path());
    let src = state.path().join("src-oci");
    let image = make_oci_layout(&src, "v1", 3, 7);
    let auth = state.path().join("bob-auth.json");
    let authfile = auth.to_str().unwrap();

    // skopeo login as bob (ci-pushers): a wrong directory password first
    skopeo.login_wrong_then_right(
        "skopeo login as bob (LDAP)",
        &["--authfile", authfile, "--cert-dir", &cert_dir],
        BOB,
        "not-bobs-password",
        &host,
        &proxy,
    );
    let saved = std::fs::read_to_string(&auth).unwrap();
    assert!(saved.contains(&host), "no entry for {host}: {saved}");

    // with the saved login: push of a 3-layer image to team/app
    let from = format!("oci:{}:v1", src.display());
    let copy_to = |repo: &str| {
        let dest = format!("docker://{host}/{repo}:v1");
        skopeo.run(
            &[
                "copy",
                "--authfile",
                authfile,
                "--dest-cert-dir",
                &cert_dir,
                &from,
                &dest,
            ],
            None,
        )
    };
    client_ok(
        "skopeo copy as bob to team/app",
        copy_to("team/app"),
        &proxy,
    );
    assert_eq!(tags(&proxy, "team/app"), Some(vec!["v1".to_string()]));
    image.assert_stored(&reg, "team/app", "v1");

    // releases/*: ci-pushers may only pull there, so bob's push is denied
    let o = copy_to("releases/app");
    assert!(
        !o.status.success(),
        "bob pushed to releases/app: {}",
        out_text(&o)
    );
    assert!(refused_text(&o), "not a denial: {}", out_text(&o));
    assert_eq!(tags(&proxy, "releases/app"), None, "bob's push was stored");

    // podman as alice (devs: pull only)
    let podman = PodmanCli::new();
    podman.login_wrong_then_right(
        "podman login as alice (LDAP)",
        &["--cert-dir", &cert_dir],
        ALICE,
        "not-alices-password",
        &host,
        &proxy,
    );
    let pulled = format!("{host}/team/app:v1");
    let o = podman.run(&["pull", "--cert-dir", &cert_dir, &pulled], None);
    let out = client_ok("podman pull as alice", o, &proxy);
    let config_hex = image.config_digest.trim_start_matches("sha256:");
    assert!(out.contains(config_hex), "pulled image id: {out}");
    let o = podman.run(&["image", "inspect", "--format", "{{.Id}}", &pulled], None);
    let out = client_ok("podman image inspect", o, &proxy);
    assert_eq!(out.trim(), config_hex, "image id of the pulled image");

    // and alice's push is denied, even of an image the registry has
    let target = format!("{host}/team/alice:v1");
    client_ok(
        "podman tag",
        podman.run(&["tag", &pulled, &target], None),
        &proxy,
    );
    let o = podman.run(&["push", "--cert-dir", &cert_dir, &target], None);
    assert!(
        !o.status.success(),
        "alice (devs) pushed to team/alice: {}",
        out_text(&o)
    );
    assert!(refused_text(&o), "not a denial: {}", out_text(&o));
    assert_eq!(tags(&proxy, "team/alice"), None, "alice's push was stored");
    assert_eq!(tags(&proxy, "team/app"), Some(vec!["v1".to_string()]));
}

fn set_ci_pusher(slapd: &Slapd, member: bool) {
    let op = if member { "add" } else { "delete" };
    slapd.ldapmodify(&format!(
        "dn: {CI_PUSHERS_DN}\nchangetype: modify\n{op}: member\nmember: {ALICE_DN}\n"
    ));
}

#[test]
fn group_change_in_the_directory_takes_effect_after_the_cache_ttl() {
    let ttl = Duration::from_secs(3);
    let reg = Registry::start();
    let slapd = Slapd::start();
    let proxy = Proxy::start(&reg, options(&slapd, Some("3s")));
    let upload = "/v2/team/app/blobs/uploads/";
    // the time each push attempt was sent, and its status
    let push = || {
        let sent = Instant::now();
        (sent, proxy.status_as(Method::POST, upload, ALICE))
    };

    // alice is in devs only: she may pull team/app, not push
    let (cached_at, s) = push();
    assert_eq!(s, 403, "{}", proxy.logs());
    assert_eq!(
        proxy.status_as(Method::GET, "/v2/team/app/tags/list", ALICE),
        404
    );

    set_ci_pusher(&slapd, true);
    // The login was cached no earlier than `cached_at`: an answer complete
    // within the TTL of that comes from the cache, with the old groups.
    let (_, s) = push();
    if cached_at.elapsed() < ttl {
        assert_eq!(s, 403, "the cached groups were not used\n{}", proxy.logs());
    } else {
        eprintln!("note: too slow to see the cached refusal (status {s})");
    }
    let mut granted_at = None;
    wait_until_every(
        "alice's push allowed once the cached login expired",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let (sent, s) = push();
            assert!(s == 403 || s == 202, "unexpected status {s}");
            if s == 202 {
                granted_at = Some(sent);
            }
            s == 202
        },
        || proxy.logs(),
    );
    let granted_at = granted_at.unwrap();

    // and back: out of ci-pushers, refused again once the TTL has passed
    set_ci_pusher(&slapd, false);
    let (_, s) = push();
    if granted_at.elapsed() < ttl {
        assert_eq!(s, 202, "the cached groups were not used\n{}", proxy.logs());
    } else {
        eprintln!("note: too slow to see the cached grant (status {s})");
    }
    wait_until_every(
        "alice's push refused once the cached login expired",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let (_, s) = push();
            assert!(s == 403 || s == 202, "unexpected status {s}");
            s == 403
        },
        || proxy.logs(),
    );
    // still a devs member: pulls keep working; the robot is unaffected
    assert_eq!(
        proxy.status_as(Method::GET, "/v2/team/app/tags/list", ALICE),
        404
    );
    assert_eq!(proxy.status_as(Method::POST, upload, ROBOT), 202);
}
