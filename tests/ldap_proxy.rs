//! LDAP through the proxy: directory users log in with docker-style Basic
//! credentials, their groups drive the access rules, an htpasswd robot and
//! LDAP humans share one chain, and an unreachable directory fails closed.

mod support;

use reqwest::Method;
use std::time::Duration;
use support::slapd::*;
use support::*;

/// Groups drive access: ci-pushers push `team/*`, devs pull it, the
/// robot may do anything.
fn rules() -> Vec<Rule> {
    vec![
        Rule::groups(&["ci-pushers"]).on(&["team/*"]).pull_push(),
        Rule::groups(&["devs"]).on(&["team/*"]).pull(),
        Rule::users(&["robot"]).all(),
    ]
}

/// The htpasswd file holds the CI robot; people come from LDAP.
fn options(slapd: &Slapd) -> ProxyOptions {
    ProxyOptions::basic(&[ROBOT])
        .ldap(&slapd.ldap_config())
        .rules(&rules())
}

#[test]
fn directory_groups_drive_access_and_outage_fails_closed() {
    let reg = Registry::start();
    let mut slapd = Slapd::start();
    let proxy = Proxy::start(&reg, options(&slapd));

    // bob is in ci-pushers: may push to team/*
    assert_eq!(
        proxy.status_as(
            Method::POST,
            "/v2/team/app/blobs/uploads/",
            ("bob", "bob-pw")
        ),
        202,
        "{}",
        proxy.logs()
    );
    // alice is in devs: may pull, not push
    assert_eq!(
        proxy.status_as(Method::GET, "/v2/team/app/tags/list", ALICE),
        404
    );
    assert_eq!(
        proxy.status_as(Method::POST, "/v2/team/app/blobs/uploads/", ALICE),
        403
    );
    // the htpasswd robot in the same chain
    assert_eq!(
        proxy.status_as(
            Method::POST,
            "/v2/other/x/blobs/uploads/",
            ("robot", "robot-pw")
        ),
        202
    );
    // wrong password, unknown user, empty password, injection: plain 401
    for (u, p) in [
        ("alice", "nope"),
        ("nobody", "x"),
        ("alice", ""),
        ("*", "x"),
        ("*)(uid=*", "alice-pw"),
    ] {
        assert_eq!(proxy.status_as(Method::GET, "/v2/", (u, p)), 401, "{u:?}");
    }

    // directory down: a login that needs it is refused (fail closed) with
    // 503, never allowed
    slapd.stop();
    let s = proxy.status_as(Method::GET, "/v2/", ("carol", "carol-pw"));
    assert_eq!(s, 503, "{}", proxy.logs());
    // the robot does not need the directory
    assert_eq!(
        proxy.status_as(Method::GET, "/v2/", ("robot", "robot-pw")),
        200
    );
    // back: logins work again without a restart
    slapd.start_again();
    wait_until(
        "LDAP logins work again",
        Duration::from_secs(20),
        || proxy.status_as(Method::GET, "/v2/", ("carol", "carol-pw")) == 200,
        || proxy.logs(),
    );
}

/// The directory matches names loosely (`BOB`, ` bob`, fullwidth `ｂｏｂ`
/// all find bob's entry); the identity is the directory's own `uid`, so a
/// rule naming `bob` holds for every spelling.
#[test]
fn every_spelling_of_a_directory_name_is_the_same_identity() {
    let reg = Registry::start();
    let slapd = Slapd::start();
    // bob is banned before the group rule that would let ci-pushers push
    let mut banned = vec![Rule::users(&["bob"]).may(&[]).comment("bob is banned")];
    banned.extend(rules());
    let opts = ProxyOptions::basic(&[ROBOT])
        .ldap(&slapd.ldap_config())
        .rules(&banned);
    let proxy = Proxy::start(&reg, opts);
    let push = "/v2/team/app/blobs/uploads/";
    assert_eq!(proxy.status_as(Method::POST, push, ("bob", "bob-pw")), 403);
    for spelling in ["BOB", "Bob", "bob ", " bob", "ｂｏｂ"] {
        let got = proxy.status_as(Method::POST, push, (spelling, "bob-pw"));
        assert!(
            got == 403 || got == 401,
            "{spelling:?} got {got}: a spelling escaped the ban\n{}",
            proxy.logs()
        );
    }
    // the access log names the directory's spelling, not the typed one
    let logs = proxy.logs();
    assert!(!logs.contains("BOB"), "{logs}");
    assert!(
        logs.contains("user=\"bob\"") || logs.contains("user=bob "),
        "{logs}"
    );
    // `check --ldap` names the identity a spelling stands for
    let config = proxy.config_path();
    let o = portcullis(
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--ldap",
            "BOB",
            "--password-stdin",
        ],
        Some("bob-pw\n"),
    );
    let text = out_text(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("identity: bob\n"), "{text}");
    // another ci-pusher is unaffected
    assert_eq!(
        proxy.status_as(Method::GET, "/v2/team/app/tags/list", ALICE),
        404
    );
}

/// A directory password reset ends the refresh tokens minted before it:
/// slapd's ppolicy overlay keeps `pwdChangedTime`, which the refresh
/// token's fingerprint covers.
#[test]
fn a_directory_password_change_ends_refresh_tokens() {
    let reg = Registry::start();
    let slapd = Slapd::start_with(SlapdOptions {
        ppolicy: true,
        ..Default::default()
    });
    let keys = tempfile::tempdir().unwrap();
    let opts = ProxyOptions::token(&[ROBOT], keys.path())
        .ldap(&slapd.ldap_config())
        .rules(&rules());
    let proxy = Proxy::start(&reg, opts);
    let scope = ["repository:team/app:pull"];
    let (status, v) = proxy.get_token(Some(("alice", "alice-pw")), &scope, true);
    assert_eq!(status, 200, "{v}\n{}", proxy.logs());
    let old = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    let refresh = |token: &str| proxy.refresh(token, "").0;
    assert_eq!(refresh(&old), 200, "{}", proxy.logs());
    slapd.set_password("uid=alice,ou=people,dc=example,dc=org", "alice-new-pw");
    assert_eq!(refresh(&old), 401, "{}", proxy.logs());
    let (status, v) = proxy.get_token(Some(("alice", "alice-new-pw")), &scope, true);
    assert_eq!(status, 200, "{v}");
    assert_eq!(refresh(v["refresh_token"].as_str().unwrap()), 200);
}
