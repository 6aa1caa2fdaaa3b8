//! `[auth.ldap] preset = "active_directory"` against a real Samba AD
//! domain controller (tests/support/samba.rs) over LDAPS, through a real
//! proxy in front of a real registry: sAMAccountName and UPN logins,
//! wrong passwords, disabled accounts, nested groups through
//! LDAP_MATCHING_RULE_IN_CHAIN, and the DC's certificate.
//!
//! The fixture: alice in `Inner` (a member of `Outer`), bob and dave in
//! `Readers`, carol in no group. `Outer` may push `team/**`, `Readers`
//! may pull it.

mod support;

use reqwest::Method;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::samba::{self, SambaDc, ALICE, BOB, CAROL, DAVE};
use support::*;

const PUSH: &str = "/v2/team/app/blobs/uploads/";

fn rules() -> Vec<Rule> {
    vec![
        Rule::groups(&["Outer"]).on(&["team/**"]).pull_push(),
        Rule::groups(&["Readers"]).on(&["team/**"]).pull(),
    ]
}

/// A registry and a proxy whose directory is the DC, with an audit log.
struct Setup {
    _reg: Registry,
    proxy: Proxy,
    audit: PathBuf,
    _logs: tempfile::TempDir,
}

/// [`Setup`] with `ca_file` (or none) and more `[auth.ldap]` lines.
fn proxy_for(dc: &SambaDc, ca_file: Option<&Path>, ldap_extra: &str) -> Setup {
    let logs = temp_dir("portcullis-ad-audit-");
    let audit = logs.path().join("audit.log");
    let mut opts = ProxyOptions::basic(&[])
        .toml(&dc.ldap_toml(ca_file, ldap_extra))
        .rules(&rules());
    // lines of the [log] table the config ends with
    opts.extra_toml = format!(
        "audit_file = {:?}\n{}",
        audit.display().to_string(),
        opts.extra_toml
    );
    let (reg, proxy) = registry_and_proxy(opts);
    Setup {
        _reg: reg,
        proxy,
        audit,
        _logs: logs,
    }
}

/// Whether a log line has `key=value` (tracing quotes strings).
fn has_field(line: &str, key: &str, value: &str) -> bool {
    line.contains(&format!("{key}={value:?}")) || line.contains(&format!("{key}={value} "))
}

/// The access log lines of the proxy for `path` (the `access` target).
fn access_lines(proxy: &Proxy, path: &str) -> Vec<String> {
    proxy
        .log_text()
        .lines()
        .filter(|l| l.contains("access") && has_field(l, "path", path))
        .map(str::to_owned)
        .collect()
}

fn audit_lines(audit: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

fn diag(proxy: &Proxy, dc: &SambaDc) -> String {
    format!("{}\n{}", proxy.logs(), dc.log_tail())
}

/// Both names a Windows user types log in, as the same identity (the
/// sAMAccountName); the groups they get from the DC drive pull and push.
#[test]
fn sam_account_name_and_upn_both_log_in_as_one_identity() {
    let dc = SambaDc::start();
    let Setup { proxy, audit, .. } = &proxy_for(&dc, Some(&dc.ca_path()), "");
    let d = || diag(proxy, &dc);
    let alice_upn = samba::upn(ALICE.0);
    let bob_upn = samba::upn(BOB.0);

    for user in [ALICE.0, &alice_upn, BOB.0, &bob_upn] {
        let pw = if user.starts_with("alice") {
            ALICE.1
        } else {
            BOB.1
        };
        assert_eq!(
            proxy.status_as(Method::GET, "/v2/", (user, pw)),
            200,
            "GET /v2/ as {user}\n{}",
            d()
        );
    }
    // each login was checked by the DC: a bind as the user's entry
    assert!(
        dc.binds_as(&samba::dn_of(ALICE.0))
            .iter()
            .any(|s| s == "NT_STATUS_OK"),
        "no successful bind as alice's DN\n{}",
        d()
    );

    // alice (Outer, through Inner) pushes an image, by her UPN
    let by_upn = proxy.v2(Auth::Basic(alice_upn.clone(), ALICE.1.into()));
    let layer = pseudo_random(3000, 11);
    let (_, digest) = by_upn.image("team/app", "v1", b"{\"ad\":\"upn\"}", &layer);
    // ... and by her sAMAccountName
    let by_sam = proxy.v2(Auth::Basic(ALICE.0.into(), ALICE.1.into()));
    by_sam.image("team/app", "v2", b"{\"ad\":\"sam\"}", &layer);

    // bob (Readers) pulls it by either name, and may not push
    for user in [BOB.0, &bob_upn] {
        let r = proxy
            .req_as(Method::GET, "/v2/team/app/manifests/v1", user, BOB.1)
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "pull as {user}\n{}", d());
        assert_eq!(
            header_of(&r, "docker-content-digest").as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(
            proxy.status_as(Method::POST, PUSH, (user, BOB.1)),
            403,
            "push as {user}\n{}",
            d()
        );
    }

    // the logs name the identity, never the UPN typed
    let logs = proxy.log_text();
    assert!(
        !logs.contains(&alice_upn),
        "the UPN reached the logs\n{logs}"
    );
    let pushes = access_lines(proxy, "/v2/team/app/manifests/v1");
    assert!(
        pushes
            .iter()
            .any(|l| has_field(l, "user", "alice") && has_field(l, "status", "201")),
        "no access line of alice's manifest push: {pushes:#?}\n{}",
        d()
    );
    // audit lines are written once the answer is sent: wait for bob's two
    let pulls = |a: &[serde_json::Value]| {
        a.iter()
            .filter(|l| l["action"] == "pull" && l["reference"] == "v1")
            .count()
    };
    wait_until(
        "bob's two pulls of v1 in the audit log",
        Duration::from_secs(5),
        || pulls(&audit_lines(audit)) >= 2,
        || format!("{:#?}", audit_lines(audit)),
    );
    let audit = audit_lines(audit);
    let who = |action: &str, reference: &str| -> Vec<String> {
        audit
            .iter()
            .filter(|l| l["action"] == action && l["reference"] == reference)
            .map(|l| l["user"].as_str().unwrap_or("-").to_owned())
            .collect()
    };
    assert_eq!(who("push", "v1"), ["alice"], "{audit:#?}");
    assert_eq!(who("push", "v2"), ["alice"], "{audit:#?}");
    assert_eq!(who("pull", "v1"), ["bob", "bob"], "{audit:#?}");
}

/// A wrong password is the DC's to refuse (it answers the bind with
/// NT_STATUS_WRONG_PASSWORD), and is a 401; so is an unknown user, and an
/// empty password never reaches the DC.
#[test]
fn wrong_passwords_are_refused() {
    let dc = SambaDc::start();
    let Setup { proxy, .. } = &proxy_for(&dc, Some(&dc.ca_path()), "");
    let d = || diag(proxy, &dc);
    let alice_dn = samba::dn_of(ALICE.0);
    let alice_upn = samba::upn(ALICE.0);
    for (u, p) in [
        (ALICE.0, "Wonder-Land-72!"),
        (alice_upn.as_str(), "wrong"),
        (ALICE.0, BOB.1),
        ("nobody", ALICE.1),
        ("nobody@corp.example.test", ALICE.1),
    ] {
        let r = proxy.send_as(Method::GET, "/v2/", u, p);
        let (status, codes, challenge) = status_codes_challenge(r);
        assert_eq!(status, 401, "{u:?}/{p:?}\n{}", d());
        assert_eq!(codes, ["UNAUTHORIZED"], "{u:?}");
        assert!(
            challenge.is_some_and(|c| c.starts_with("Basic ")),
            "{u:?}: no Basic challenge"
        );
    }
    let binds = dc.binds_as(&alice_dn);
    assert_eq!(
        binds,
        ["NT_STATUS_WRONG_PASSWORD"; 3],
        "the DC judged alice's three wrong passwords\n{}",
        d()
    );
    // an empty password is an unauthenticated bind to AD: never sent
    assert_eq!(proxy.status_as(Method::GET, "/v2/", (ALICE.0, "")), 401);
    assert_eq!(dc.binds_as(&alice_dn).len(), 3, "{}", d());
    // and the right one still works
    assert_eq!(proxy.status_as(Method::GET, "/v2/", ALICE), 200, "{}", d());
    assert_eq!(
        dc.binds_as(&alice_dn).last().map(String::as_str),
        Some("NT_STATUS_OK")
    );
}

/// `samba-tool user disable`: the preset's user filter excludes the
/// account (userAccountControl bit 2), so even the right password is a
/// 401, and the DC is not even asked to check it.
#[test]
fn a_disabled_account_is_refused_with_the_right_password() {
    let dc = SambaDc::start();
    let Setup { proxy, .. } = &proxy_for(&dc, Some(&dc.ca_path()), "");
    let d = || diag(proxy, &dc);
    let dave_dn = samba::dn_of(DAVE.0);
    let dave_upn = samba::upn(DAVE.0);
    let pull = "/v2/team/app/tags/list";
    // enabled, dave (Readers) may pull: the repository is unknown upstream
    assert_eq!(proxy.status_as(Method::GET, pull, DAVE), 404, "{}", d());
    let before = dc.binds_as(&dave_dn);
    assert_eq!(before, ["NT_STATUS_OK"], "{}", d());

    dc.disable_user(DAVE.0);
    // past the verified login's cache_ttl (1s)
    std::thread::sleep(Duration::from_millis(1500));
    for user in [DAVE.0, dave_upn.as_str()] {
        assert_eq!(
            proxy.status_as(Method::GET, "/v2/", (user, DAVE.1)),
            401,
            "disabled {user}\n{}",
            d()
        );
        assert_eq!(
            proxy.status_as(Method::GET, pull, (user, DAVE.1)),
            401,
            "disabled {user}\n{}",
            d()
        );
    }
    assert_eq!(
        dc.binds_as(&dave_dn),
        before,
        "a bind was tried for the disabled account\n{}",
        d()
    );
    // bob, in the same group, is unaffected
    assert_eq!(proxy.status_as(Method::GET, pull, BOB), 404, "{}", d());
}

/// alice is in Inner, Inner in Outer, and only Outer may push: the
/// preset's group search (LDAP_MATCHING_RULE_IN_CHAIN) finds Outer. With
/// a direct-membership group filter instead, the same DC gives her Inner
/// only, and the push is refused: the in-chain rule is what grants it.
#[test]
fn nested_groups_grant_push_through_the_in_chain_rule() {
    let dc = SambaDc::start();
    let Setup { proxy, audit, .. } = &proxy_for(&dc, Some(&dc.ca_path()), "");
    let d = || diag(proxy, &dc);
    assert_eq!(
        proxy.status_as(Method::POST, PUSH, ALICE),
        202,
        "alice, Outer through Inner\n{}",
        d()
    );
    let alice = proxy.v2(Auth::Basic(ALICE.0.into(), ALICE.1.into()));
    alice.image(
        "team/nested",
        "v1",
        b"{\"nested\":1}",
        &pseudo_random(2000, 5),
    );
    // carol is in no group; bob only in Readers
    for (who, creds) in [("carol", CAROL), ("bob", BOB)] {
        assert_eq!(
            proxy.status_as(Method::POST, PUSH, creds),
            403,
            "{who} is not in the chain\n{}",
            d()
        );
    }
    assert_eq!(
        proxy.status_as(Method::GET, "/v2/team/nested/manifests/v1", CAROL),
        403,
        "carol may not pull either\n{}",
        d()
    );
    let pushed: Vec<_> = audit_lines(audit)
        .into_iter()
        .filter(|l| l["action"] == "push" && l["reference"] == "v1")
        .collect();
    assert_eq!(pushed.len(), 1, "{pushed:#?}");
    assert_eq!(pushed[0]["user"], "alice");
    assert_eq!(pushed[0]["repository"], "team/nested");
    let refused = access_lines(proxy, PUSH);
    assert!(
        refused
            .iter()
            .any(|l| has_field(l, "user", "carol") && has_field(l, "status", "403")),
        "{refused:#?}"
    );

    // `check --ldap` lists the groups the rules see
    let o = portcullis(
        &[
            "check",
            "--config",
            proxy.config_path().to_str().unwrap(),
            "--ldap",
            ALICE.0,
            "--password-stdin",
        ],
        Some(&format!("{}\n", ALICE.1)),
    );
    let text = out_text(&o);
    assert!(o.status.success(), "{text}");
    let groups = text
        .lines()
        .find_map(|l| l.strip_prefix("groups: "))
        .unwrap_or_else(|| panic!("no groups line: {text}"));
    let mut groups: Vec<&str> = groups.split(", ").collect();
    groups.sort();
    assert_eq!(groups, ["Inner", "Outer"], "{text}");

    // the control: direct memberships only
    let Setup { proxy: direct, .. } = &proxy_for(
        &dc,
        Some(&dc.ca_path()),
        "group_filter = \"(&(objectClass=group)(member={dn}))\"",
    );
    assert_eq!(
        direct.status_as(Method::POST, PUSH, ALICE),
        403,
        "without the in-chain rule alice is only in Inner\n{}",
        direct.logs()
    );

    // required_group counts nested membership: alice (Outer through
    // Inner) logs in, carol and bob are unknown users
    let Setup { proxy: gated, .. } =
        &proxy_for(&dc, Some(&dc.ca_path()), "required_group = \"Outer\"");
    assert_eq!(
        gated.status_as(Method::GET, "/v2/", ALICE),
        200,
        "{}",
        gated.logs()
    );
    for creds in [CAROL, BOB] {
        assert_eq!(
            gated.status_as(Method::GET, "/v2/", creds),
            401,
            "{} is outside required_group\n{}",
            creds.0,
            gated.logs()
        );
    }
    assert!(
        gated.log_text().contains("reason=\"unknown_user\""),
        "{}",
        gated.logs()
    );
}

/// The preset's `password_changed_attribute` is `pwdLastSet`: a password
/// reset on the DC (`samba-tool user setpassword`) ends the refresh tokens
/// minted before it; the new password gets new ones.
///
/// The old password itself is the DC's business: Samba still accepts it
/// in simple binds for `old password allowed period` (60 minutes by
/// default) after a reset, so it still logs in; that is asserted as the
/// DC's behaviour, not the proxy's.
#[test]
fn a_password_reset_on_the_dc_ends_refresh_tokens() {
    let dc = SambaDc::start();
    let keys = temp_dir("portcullis-ad-keys-");
    let opts = ProxyOptions::token(&[], keys.path())
        .toml(&dc.ldap_toml(Some(&dc.ca_path()), ""))
        .rules(&rules());
    let (_reg, proxy) = registry_and_proxy(opts);
    let d = || diag(&proxy, &dc);
    let scope = ["repository:team/app:pull"];
    let (status, v) = proxy.get_token(Some(BOB), &scope, true);
    assert_eq!(status, 200, "{v}\n{}", d());
    let old = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    assert_eq!(proxy.refresh(&old, "").0, 200, "{}", d());

    let new_pw = "Fresh-Pipes-43!";
    dc.tool(&[
        "user",
        "setpassword",
        BOB.0,
        &format!("--newpassword={new_pw}"),
    ]);
    // past the verified login's cache_ttl (1s)
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        proxy.refresh(&old, "").0,
        401,
        "a refresh token outlived the reset\n{}",
        d()
    );
    let before = dc.binds_as(&samba::dn_of(BOB.0)).len();
    let old_password = proxy.get_token(Some(BOB), &scope, true).0;
    let binds = dc.binds_as(&samba::dn_of(BOB.0));
    assert_eq!(binds.len(), before + 1, "{}", d());
    match binds.last().map(String::as_str) {
        // the DC's old password allowed period: it says OK, so may the proxy
        Some("NT_STATUS_OK") => assert_eq!(old_password, 200, "{}", d()),
        _ => assert_eq!(old_password, 401, "{}", d()),
    }
    let (status, v) = proxy.get_token(Some((BOB.0, new_pw)), &scope, true);
    assert_eq!(status, 200, "{v}\n{}", d());
    let fresh = v["refresh_token"].as_str().expect("refresh_token");
    assert_eq!(proxy.refresh(fresh, "").0, 200, "{}", d());
}

/// LDAPS is verified. Without `ca_file` the system roots do not know the
/// DC's CA: every directory login fails closed (503, never a login), the
/// log and `check --ldap` say why, and the proxy keeps serving.
#[test]
fn ldaps_without_the_dcs_ca_fails_closed() {
    let dc = SambaDc::start();
    let Setup { proxy, .. } = &proxy_for(&dc, None, "");
    let d = || diag(proxy, &dc);
    for creds in [ALICE, BOB] {
        let r = proxy.send_as(Method::GET, "/v2/", creds.0, creds.1);
        assert_eq!(r.status(), 503, "{}\n{}", creds.0, d());
    }
    assert_eq!(proxy.status_as(Method::POST, PUSH, ALICE), 503, "{}", d());
    // nothing reached the DC's authentication
    assert!(dc.binds_as(&samba::dn_of(ALICE.0)).is_empty(), "{}", d());
    assert!(
        dc.binds_as(&samba::dn_of(samba::SERVICE.0)).is_empty(),
        "{}",
        d()
    );
    let logs = proxy.log_text();
    assert!(
        logs.contains("LDAP server unavailable") && logs.contains("UnknownIssuer"),
        "no clear certificate error in the log\n{}",
        d()
    );
    let o = portcullis(
        &[
            "check",
            "--config",
            proxy.config_path().to_str().unwrap(),
            "--ldap",
            ALICE.0,
        ],
        None,
    );
    let text = out_text(&o);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("directory error") && text.contains("UnknownIssuer"),
        "{text}"
    );
}

/// The certificate Samba generates names the DC only in its CN, without
/// a subjectAltName: trusting its CA (`private/tls/ca.pem`) is not
/// enough, the name check refuses it (rustls, like browsers, reads no
/// CN). Logins fail closed; a DC needs a certificate with its name (or
/// address) in subjectAltName, as an enterprise CA issues them.
#[test]
fn samba_autogenerated_certificate_is_refused_by_name() {
    let dc = SambaDc::start_with(samba::DcTls::Autogenerated);
    let ca = dc.ca_path();
    assert!(ca.exists(), "{}", ca.display());
    let Setup { proxy, .. } = &proxy_for(&dc, Some(&ca), "");
    let d = || diag(proxy, &dc);
    assert_eq!(proxy.status_as(Method::GET, "/v2/", ALICE), 503, "{}", d());
    assert!(dc.binds_as(&samba::dn_of(ALICE.0)).is_empty(), "{}", d());
    let logs = proxy.log_text();
    assert!(
        logs.contains("LDAP server unavailable")
            && logs.contains("certificate not valid for name \"127.77.3.89\""),
        "no clear certificate error in the log\n{}",
        d()
    );
}
