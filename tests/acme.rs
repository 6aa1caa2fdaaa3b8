//! ACME against a real CA (pebble): certificates obtained over http-01
//! and tls-alpn-01, served by SNI beside a file certificate, stored with
//! mode 0600 and reused after a restart; a failing order leaves the
//! fallback serving.

mod support;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use support::pebble::*;
use support::*;

const ISSUE: Duration = Duration::from_secs(60);

fn opts(acme: &str) -> AcmeProxyOptions {
    AcmeProxyOptions::acme(acme)
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o777
}

fn insecure(name: &str, port: u16) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(name, format!("127.0.0.1:{port}").parse().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn http01_certificate_covers_every_name_and_chains_to_the_ca_root() {
    let (reg, ports, pebble) = acme_world(None);
    let proxy = AcmeProxy::start(
        &reg,
        &pebble,
        ports,
        opts(
            r#"challenge = "http-01"
domains = ["registry.test", "docker.registry.test"]"#,
        ),
    );
    let root = pebble.root_pem();
    let der = proxy.wait_for_acme_cert("registry.test", &root, ISSUE);
    let (mut names, _) = names_and_serial(&der);
    names.sort();
    assert_eq!(names, ["docker.registry.test", "registry.test"]);
    let other = verified_chain(ports.tls, "docker.registry.test", &root).unwrap();
    assert_eq!(
        other[0].as_ref(),
        &der[..],
        "one certificate for both names"
    );

    // requests go through over the new certificate
    let c = proxy.client("registry.test", &root);
    let r = get_as_user(&c, &proxy.url("registry.test", "/v2/"));
    assert_eq!(r.status(), 200);

    let log = proxy.log_text();
    assert!(
        log.contains("serving a self-signed fallback"),
        "fallback not logged\n{log}"
    );
    assert!(
        log.contains("http-01 validation request") && log.contains("status=200"),
        "the CA's validation request is not in the log\n{log}"
    );

    // the plain listener: unknown tokens are 404, the rest still redirects
    let plain = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{}", ports.http);
    let r = plain
        .get(format!("{base}/.well-known/acme-challenge/no-such-token"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "text/plain");
    let r = plain.get(format!("{base}/v2/")).send().unwrap();
    assert_eq!(r.status(), 301);

    // state: private files, nothing left of the challenge
    let s = &proxy.state_dir;
    assert_eq!(mode(s) & 0o077, 0, "state_dir is readable by others");
    assert_eq!(mode(&s.join("certificates/registry.test.pem")), 0o600);
    let accounts: Vec<_> = std::fs::read_dir(s.join("accounts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(mode(&accounts[0]), 0o600);
    let left = std::fs::read_dir(s.join("challenges/http-01"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "challenge files left behind");
}

#[test]
fn tls_alpn01_beside_a_file_certificate() {
    let (reg, ports, pebble) = acme_world(None);
    let proxy = AcmeProxy::start(
        &reg,
        &pebble,
        ports,
        opts(
            r#"challenge = "tls-alpn-01"
domains = ["registry.test"]"#,
        )
        .with_file_cert(),
    );
    let root = pebble.root_pem();
    let der = proxy.wait_for_acme_cert("registry.test", &root, ISSUE);
    assert_eq!(names_and_serial(&der).0, ["registry.test"]);
    let log = proxy.log_text();
    assert!(
        log.contains("answered a tls-alpn-01 validation"),
        "no tls-alpn-01 validation in the log\n{log}"
    );
    assert!(
        log.contains("serving the default certificate (tls.cert)"),
        "{log}"
    );
    // the wait for the listener completes a handshake: no error logged
    assert!(!log.contains("handshake eof"), "{log}");

    // other names get the file certificate, chosen by SNI
    let file = verified_chain(ports.tls, "localhost", &proxy.file_ca.pem).unwrap();
    assert_ne!(file[0].as_ref(), &der[..]);
    assert!(verified_chain(ports.tls, "localhost", &root).is_err());

    // HTTP/2 and HTTP/1.1 requests over the ACME certificate
    let c = proxy.client("registry.test", &root);
    let r = get_as_user(&c, &proxy.url("registry.test", "/v2/"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let mut conn = verified_conn(ports.tls, "registry.test", &root).unwrap();
    assert_eq!(get_on(&mut conn, "registry.test", "/v2/"), 200);
}

#[test]
fn restart_reuses_the_stored_account_and_certificate() {
    let (reg, ports, pebble) = acme_world(None);
    let mut proxy = AcmeProxy::start(&reg, &pebble, ports, opts("domains = [\"registry.test\"]"));
    let root = pebble.root_pem();
    let first = proxy.wait_for_acme_cert("registry.test", &root, ISSUE);
    let state = proxy.state_dir.clone();
    let cert_file = state.join("certificates/registry.test.pem");
    let stored = std::fs::read(&cert_file).unwrap();
    let account_files = |s: &std::path::Path| -> Vec<(std::path::PathBuf, Vec<u8>)> {
        std::fs::read_dir(s.join("accounts"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect()
    };
    let accounts = account_files(&state);
    for (p, _) in &accounts {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    assert_eq!(mode(&cert_file), 0o600);
    let orders = pebble.orders();
    assert!(orders >= 1, "{}", pebble.log());
    let log_before = proxy.log_text().len();

    proxy.stop();
    proxy.start_again();
    // the first connection after the restart already gets it
    let served = verified_chain(ports.tls, "registry.test", &root).unwrap();
    assert_eq!(
        served[0].as_ref(),
        &first[..],
        "stored certificate not served"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pebble.orders(), orders, "a new order after the restart");
    assert_eq!(
        verified_chain(ports.tls, "registry.test", &root).unwrap()[0].as_ref(),
        &first[..]
    );
    assert_eq!(std::fs::read(&cert_file).unwrap(), stored);
    assert_eq!(account_files(&state), accounts, "a new account was made");
    let log = proxy.log_text();
    assert!(
        log[log_before..].contains("using the stored ACME certificate"),
        "{log}"
    );
}

#[test]
fn failed_order_keeps_the_fallback_and_the_proxy_answering() {
    let (reg, ports, pebble) = acme_world(None);
    pebble.servfail("broken.test");
    let proxy = AcmeProxy::start(
        &reg,
        &pebble,
        ports,
        opts(
            r#"domains = ["registry.test"]
certificates = [{ domains = ["broken.test"] }]
retry_backoff = "1s"
retry_max_backoff = "2s""#,
        ),
    );
    let root = pebble.root_pem();
    // the good certificate is issued regardless of the broken one
    proxy.wait_for_acme_cert("registry.test", &root, ISSUE);
    wait_until(
        "two failed orders for broken.test",
        ISSUE,
        || {
            proxy
                .log_text()
                .lines()
                .filter(|l| l.contains("certificate order failed") && l.contains("broken.test"))
                .count()
                >= 2
        },
        || proxy.logs(),
    );
    let log = proxy.log_text();
    let failure = log
        .lines()
        .find(|l| l.contains("certificate order failed") && l.contains("broken.test"))
        .unwrap();
    // the CA's problem document is in the error
    assert!(
        failure.contains("urn:ietf:params:acme:error:"),
        "no problem document: {failure}"
    );
    assert!(failure.contains("fallback"), "{failure}");

    // broken.test keeps the self-signed fallback; the proxy keeps answering
    let chain = served_chain(ports.tls, "broken.test").unwrap();
    let (names, _) = names_and_serial(&chain[0]);
    assert!(names.contains(&"localhost".to_string()), "{names:?}");
    let r = insecure("broken.test", ports.tls)
        .get(format!("https://broken.test:{}/v2/", ports.tls))
        .basic_auth(USER, Some(PASS))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}
