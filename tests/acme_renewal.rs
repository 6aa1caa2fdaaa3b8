//! ACME renewal against pebble issuing short-lived certificates: the new
//! certificate is swapped in without a restart while open connections
//! keep working; a CA outage keeps the old certificate and backs off;
//! a follower replica installs what the renewing one stores.

mod support;

use std::time::Duration;
use support::pebble::*;
use support::*;

const ISSUE: Duration = Duration::from_secs(60);

/// Renew half-way through a 20 s lifetime, retry quickly.
const SHORT: &str = r#"domains = ["registry.test"]
renew_remaining_share = 0.5
retry_backoff = "1s"
retry_max_backoff = "4s""#;

fn serial(der: &[u8]) -> String {
    names_and_serial(der).1
}

#[test]
fn renewal_swaps_the_certificate_without_restart() {
    let (reg, ports, pebble) = acme_world(Some(20));
    let proxy = AcmeProxy::start(&reg, &pebble, ports, AcmeProxyOptions::acme(SHORT));
    let pid = proxy.pid();
    let root = pebble.root_pem();
    let first = proxy.wait_for_acme_cert("registry.test", &root, ISSUE);

    // a connection opened before the renewal
    let mut old = verified_conn(ports.tls, "registry.test", &root).unwrap();
    assert_eq!(
        old.conn.peer_certificates().unwrap()[0].as_ref(),
        &first[..]
    );
    assert_eq!(get_on(&mut old, "registry.test", "/v2/"), 200);

    // new connections get the renewed certificate
    let mut renewed = Vec::new();
    wait_until(
        "a renewed certificate on new connections",
        ISSUE,
        || match verified_chain(ports.tls, "registry.test", &root) {
            Ok(chain) if serial(&chain[0]) != serial(&first) => {
                renewed = chain[0].to_vec();
                true
            }
            _ => false,
        },
        || proxy.logs(),
    );
    assert_eq!(names_and_serial(&renewed).0, ["registry.test"]);

    // the old connection still works, on the certificate it negotiated
    assert_eq!(get_on(&mut old, "registry.test", "/v2/"), 200);
    assert_eq!(proxy.pid(), pid, "the proxy restarted");
    let log = proxy.log_text();
    assert!(log.contains("renewing the certificate"), "{log}");
    let stored = std::fs::read(proxy.state_dir.join("certificates/registry.test.pem")).unwrap();
    let stored = String::from_utf8(stored).unwrap();
    assert!(
        stored.contains("PRIVATE KEY"),
        "the stored file lacks its key"
    );
}

#[test]
fn ca_outage_keeps_the_old_certificate_and_recovers() {
    let (reg, ports, mut pebble) = acme_world(Some(20));
    let mut proxy = AcmeProxy::start(&reg, &pebble, ports, AcmeProxyOptions::acme(SHORT));
    let root = pebble.root_pem();
    let first = proxy.wait_for_acme_cert("registry.test", &root, ISSUE);
    pebble.stop();

    // renewal falls due with the CA gone: failures back off, 1 s, 2 s, 4 s
    let failures = |p: &AcmeProxy| {
        p.log_text()
            .lines()
            .filter(|l| l.contains("certificate order failed"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    wait_until(
        "three failed renewals",
        ISSUE,
        || failures(&proxy).len() >= 3,
        || proxy.logs(),
    );
    let f = failures(&proxy);
    for (line, (n, wait)) in f.iter().zip([(1, 1), (2, 2), (3, 4)]) {
        assert!(
            line.contains(&format!("failures={n}")) && line.contains(&format!("retry_in_s={wait}")),
            "backoff: {line}"
        );
        assert!(
            line.contains("still serving the current certificate"),
            "{line}"
        );
    }
    // the old certificate is still served, and the proxy answers
    let served = served_chain(ports.tls, "registry.test").unwrap();
    assert_eq!(
        served[0].as_ref(),
        &first[..],
        "the old certificate is gone"
    );
    assert!(proxy.is_running());

    // the CA comes back (a fresh pebble: new root, no memory of our account)
    pebble.start_again();
    let root2 = pebble.root_pem();
    assert_ne!(root, root2);
    let second = proxy.wait_for_acme_cert("registry.test", &root2, ISSUE);
    assert_ne!(serial(&second), serial(&first));
    let log = proxy.log_text();
    assert!(
        log.contains("the CA no longer knows the stored account"),
        "{log}"
    );
}

#[test]
fn a_follower_installs_what_the_renewing_replica_stores() {
    let (reg, ports, pebble) = acme_world(None);
    let shared = tempfile::tempdir().unwrap();
    let state = shared.path().join("acme");
    let follower_ports = AcmePorts::new();
    let follower = AcmeProxy::start(
        &reg,
        &pebble,
        follower_ports,
        AcmeProxyOptions::acme("domains = [\"registry.test\"]\nrole = \"follow\"")
            .state_dir(state.clone()),
    );
    let renewer = AcmeProxy::start(
        &reg,
        &pebble,
        ports,
        AcmeProxyOptions::acme("domains = [\"registry.test\"]").state_dir(state),
    );
    let root = pebble.root_pem();
    let issued = renewer.wait_for_acme_cert("registry.test", &root, ISSUE);
    let seen = follower.wait_for_acme_cert("registry.test", &root, Duration::from_secs(20));
    assert_eq!(seen, issued);
    let log = follower.log_text();
    assert!(
        log.contains("installed the certificate the renewing replica stored"),
        "{log}"
    );
    assert!(!log.contains("ordering the first certificate"), "{log}");
}
