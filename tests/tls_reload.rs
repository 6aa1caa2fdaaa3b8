//! Certificates are re-read from disk while serving: new connections get the
//! new certificate without a restart; a broken pair keeps the old one.

mod support;

use std::time::Duration;
use support::*;

#[test]
fn serves_the_configured_certificate() {
    let (_reg, proxy) = registry_and_proxy(ProxyOptions::default());
    assert_eq!(
        proxy.served_cert().unwrap(),
        proxy.leaf.der,
        "initial certificate"
    );
    // a client that does not trust the test CA must fail the handshake
    let untrusting = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(true)
        .build()
        .unwrap();
    assert!(
        untrusting.get(proxy.url("/v2/")).send().is_err(),
        "handshake succeeded without trusting the CA"
    );
}

#[test]
fn replaced_files_are_served_to_new_connections_without_restart() {
    let (_reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let pid = proxy.pid();
    assert_eq!(proxy.served_cert().unwrap(), proxy.leaf.der);

    // an open HTTP/2 connection from before the renewal
    let old_client = proxy.new_client(false);
    assert_eq!(get_as_user(&old_client, &proxy.url("/v2/")).status(), 200);

    let second = proxy.ca.leaf("portcullis-test-renewed-1");
    proxy.replace_cert_atomic(&second.cert_pem, &second.key_pem);
    proxy.wait_for_cert(&second.der, "renamed-in cert/key");

    // in place (truncate + write), as some tools do
    let third = proxy.ca.leaf("portcullis-test-renewed-2");
    std::fs::write(proxy.key_path(), &third.key_pem).unwrap();
    std::fs::write(proxy.cert_path(), &third.cert_pem).unwrap();
    proxy.wait_for_cert(&third.der, "cert/key rewritten in place");

    assert_eq!(proxy.pid(), pid, "proxy restarted");
    // requests keep working on the pre-existing connection and on new ones
    assert_eq!(get_as_user(&old_client, &proxy.url("/v2/")).status(), 200);
    assert_eq!(
        get_as_user(&proxy.new_client(true), &proxy.url("/v2/")).status(),
        200
    );
}

#[test]
fn certbot_symlink_renewal_is_picked_up() {
    let reg = Registry::start();
    let opts = ProxyOptions {
        certbot_layout: true,
        ..Default::default()
    };
    let proxy = Proxy::start(&reg, opts);
    assert!(std::fs::symlink_metadata(proxy.cert_path())
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(proxy.served_cert().unwrap(), proxy.leaf.der);

    for n in 2..=3 {
        let renewed = proxy.ca.leaf(&format!("portcullis-test-certbot-{n}"));
        proxy.certbot_renew(n, &renewed.cert_pem, &renewed.key_pem);
        proxy.wait_for_cert(
            &renewed.der,
            &format!("certbot renewal to fullchain{n}.pem"),
        );
        let r = get_as_user(&proxy.new_client(false), &proxy.url("/v2/"));
        assert_eq!(r.status(), 200);
    }
}

#[test]
fn broken_pairs_keep_the_old_certificate() {
    let (_reg, mut proxy) = registry_and_proxy(ProxyOptions::default());
    let good = proxy.leaf.clone();

    let check_old_kept = |proxy: &mut Proxy, what: &str| {
        // many watch intervals (200 ms) for the watcher to see the change
        std::thread::sleep(Duration::from_secs(2));
        assert!(proxy.is_running(), "{what}: proxy exited\n{}", proxy.logs());
        let served = proxy
            .served_cert()
            .unwrap_or_else(|e| panic!("{what}: handshake failed: {e}\n{}", proxy.logs()));
        assert_eq!(
            served, good.der,
            "{what}: the old certificate must still be served"
        );
        let r = get_as_user(&proxy.new_client(true), &proxy.url("/v2/"));
        assert_eq!(r.status(), 200, "{what}");
    };

    // garbage certificate, valid key
    write_atomic(
        &proxy.cert_path(),
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    );
    check_old_kept(&mut proxy, "garbage cert");

    // not PEM at all
    write_atomic(&proxy.cert_path(), b"hello, I am not a certificate\n");
    check_old_kept(&mut proxy, "non-PEM cert");

    // a valid certificate with a key that does not belong to it
    let other = proxy.ca.leaf("portcullis-test-other");
    let mismatched = proxy.ca.leaf("portcullis-test-mismatch");
    write_atomic(&proxy.key_path(), other.key_pem.as_bytes());
    write_atomic(&proxy.cert_path(), mismatched.cert_pem.as_bytes());
    check_old_kept(&mut proxy, "key not matching the cert");

    // empty key file
    write_atomic(&proxy.key_path(), b"");
    check_old_kept(&mut proxy, "empty key");

    // the watcher still works afterwards
    let fixed = proxy.ca.leaf("portcullis-test-fixed");
    proxy.replace_cert_atomic(&fixed.cert_pem, &fixed.key_pem);
    proxy.wait_for_cert(&fixed.der, "valid pair after broken ones");
}
