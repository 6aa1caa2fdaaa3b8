//! The LDAP backend's connections against a real slapd: TLS (ldaps:// and
//! StartTLS with a test CA), failing closed when the directory is down or
//! hangs, coming back without a restart, failover, and callers on several
//! tokio runtimes (as Pingora has).

mod support;

use std::time::{Duration, Instant};

use portcullis::auth::authentication::ldap::{LdapBackend, LdapError, LdapVerdict};
use portcullis::config::ldap::LdapConfig;
use portcullis::config::Secret;
use support::slapd::*;

fn config(urls: &[String]) -> LdapConfig {
    let mut c = LdapConfig::new(urls.iter().map(|u| u.parse().unwrap()).collect(), BASE_DN);
    c.bind_dn = Some(SERVICE_DN.into());
    c.bind_password = Some(Secret::Inline(SERVICE_PW.into()));
    c.connect_timeout = Duration::from_secs(1);
    c.timeout = Duration::from_secs(1);
    c
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn auth(
    rt: &tokio::runtime::Runtime,
    b: &LdapBackend,
    user: &str,
    pw: &str,
) -> Result<LdapVerdict, LdapError> {
    rt.block_on(b.authenticate(user, pw))
}

fn assert_alice(rt: &tokio::runtime::Runtime, b: &LdapBackend, what: &str) {
    match auth(rt, b, "alice", "alice-pw") {
        Ok(LdapVerdict::Authenticated { groups, .. }) => assert_eq!(groups, ["devs"], "{what}"),
        other => panic!("{what}: {other:?}"),
    }
}

/// A loopback port nothing listens on.
fn closed_port_url() -> String {
    format!("ldap://127.0.0.1:{}", support::free_port())
}

#[test]
fn callers_on_different_runtimes_share_the_pool() {
    let slapd = Slapd::start();
    let backend = LdapBackend::new(&config(&[slapd.url()])).unwrap();
    let accepted = || slapd.log().matches(" ACCEPT from IP=").count();
    let before = accepted();
    let first = rt();
    assert_alice(&first, &backend, "first runtime");
    let second = rt();
    assert_alice(&second, &backend, "second runtime");
    // the runtime that made the first request is gone; the pooled
    // connections belong to the backend and keep working
    drop(first);
    assert_alice(&second, &backend, "after the first runtime ended");
    let third = rt();
    assert_alice(&third, &backend, "third runtime");
    // one service connection and one bind connection did all of it
    assert_eq!(accepted() - before, 2, "{}", slapd.log());
}

#[test]
fn ldaps_with_the_test_ca() {
    let slapd = Slapd::start();
    let mut cfg = config(&[slapd.ldaps_url()]);
    cfg.ca_file = Some(slapd.ca_path());
    let b = LdapBackend::new(&cfg).unwrap();
    assert_alice(&rt(), &b, "ldaps");
    assert!(slapd.log().contains("TLS established"), "{}", slapd.log());
}

#[test]
fn starttls_with_the_test_ca() {
    let slapd = Slapd::start();
    let mut cfg = config(&[slapd.url()]);
    cfg.starttls = true;
    cfg.ca_file = Some(slapd.ca_path());
    let b = LdapBackend::new(&cfg).unwrap();
    assert_alice(&rt(), &b, "starttls");
    assert!(
        slapd.log().contains("EXT oid=1.3.6.1.4.1.1466.20037"),
        "{}",
        slapd.log()
    );
}

#[test]
fn untrusted_certificate_fails_closed() {
    let slapd = Slapd::start();
    let other = Slapd::start();
    // system roots do not know the test CA; nor does another test CA
    for ca in [None, Some(other.ca_path())] {
        for starttls in [false, true] {
            let url = if starttls {
                slapd.url()
            } else {
                slapd.ldaps_url()
            };
            let mut cfg = config(&[url]);
            cfg.starttls = starttls;
            cfg.ca_file = ca.clone();
            let b = LdapBackend::new(&cfg).unwrap();
            let e = auth(&rt(), &b, "alice", "alice-pw").unwrap_err();
            assert!(
                matches!(e, LdapError::Unreachable(_)),
                "{ca:?} {starttls}: {e}"
            );
        }
    }
}

#[test]
fn bad_ca_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let mut cfg = config(&["ldaps://127.0.0.1:1".into()]);
    cfg.ca_file = Some(path);
    let e = LdapBackend::new(&cfg).err().unwrap();
    assert!(matches!(e, LdapError::CaFile { .. }), "{e}");
    cfg.ca_file = Some(dir.path().join("missing.pem"));
    assert!(matches!(
        LdapBackend::new(&cfg).err().unwrap(),
        LdapError::CaFile { .. }
    ));
}

#[test]
fn stopped_directory_fails_closed_then_recovers() {
    let mut slapd = Slapd::start();
    let rt = rt();
    let b = LdapBackend::new(&config(&[slapd.url()])).unwrap();
    assert_alice(&rt, &b, "before the outage");
    slapd.stop();
    for _ in 0..3 {
        let t = Instant::now();
        let e = auth(&rt, &b, "alice", "alice-pw").unwrap_err();
        assert!(e.is_outage(), "{e}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        // nothing else gets in either
        assert!(auth(&rt, &b, "alice", "wrong").is_err());
        assert!(rt.block_on(b.lookup("alice")).is_err());
    }
    slapd.start_again();
    assert_alice(&rt, &b, "after slapd came back");
    assert_eq!(
        auth(&rt, &b, "alice", "wrong").unwrap(),
        LdapVerdict::BadPassword
    );
}

#[test]
fn hanging_directory_times_out() {
    let slapd = Slapd::start();
    let rt = rt();
    let b = LdapBackend::new(&config(&[slapd.url()])).unwrap();
    assert_alice(&rt, &b, "before the hang");
    slapd.pause();
    let t = Instant::now();
    let e = auth(&rt, &b, "alice", "alice-pw").unwrap_err();
    let took = t.elapsed();
    slapd.resume();
    assert!(matches!(e, LdapError::Timeout { .. }), "{e}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_alice(&rt, &b, "after the hang");
}

#[test]
fn fails_over_to_the_next_url() {
    let mut a = Slapd::start();
    let b = Slapd::start();
    let rt = rt();
    // a closed port first
    let backend = LdapBackend::new(&config(&[closed_port_url(), b.url()])).unwrap();
    assert_alice(&rt, &backend, "closed port, then b");
    // two servers: a serves while it is up, b when it is not
    let backend = LdapBackend::new(&config(&[a.url(), b.url()])).unwrap();
    let b_binds = b.binds_as(SERVICE_DN);
    assert_alice(&rt, &backend, "a up");
    assert_eq!(b.binds_as(SERVICE_DN), b_binds, "b used while a was up");
    a.stop();
    assert_alice(&rt, &backend, "a down");
    assert!(b.binds_as(SERVICE_DN) > b_binds);
    a.start_again();
    assert_alice(&rt, &backend, "a back");
    // every server down: an error, not a login
    let dead = LdapBackend::new(&config(&[closed_port_url(), closed_port_url()])).unwrap();
    let e = auth(&rt, &dead, "alice", "alice-pw").unwrap_err();
    assert!(matches!(e, LdapError::Unreachable(_)), "{e}");
}
