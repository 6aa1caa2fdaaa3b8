//! Several registry replicas behind one portcullis: two docker-registry
//! processes sharing one storage directory and `http.secret`; skopeo push
//! and pull keep working while either one is stopped and started again.

mod support;

use std::time::Duration;
use support::*;

fn skopeo_copy(state: &std::path::Path, proxy: &Proxy, from: &str, to: &str, push: bool) {
    let creds = format!("{USER}:{PASS}");
    let cert_dir = proxy.cert_dir();
    let (creds_flag, cert_flag) = if push {
        ("--dest-creds", "--dest-cert-dir")
    } else {
        ("--src-creds", "--src-cert-dir")
    };
    let o = tool_run(
        state,
        "skopeo",
        &[
            "copy",
            creds_flag,
            &creds,
            cert_flag,
            cert_dir.to_str().unwrap(),
            from,
            to,
        ],
        None,
    );
    assert!(
        o.status.success(),
        "skopeo copy {from} -> {to}: {}\n{}",
        out_text(&o),
        proxy.logs()
    );
}

/// Waits until `n` requests in a row succeed: the balancer has noticed
/// which replicas are down.
fn wait_stable(proxy: &Proxy, n: usize) {
    let mut ok = 0;
    wait_until_every(
        "requests succeed on the remaining replica",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let good = proxy
                .req(reqwest::Method::GET, "/v2/")
                .send()
                .is_ok_and(|r| r.status() == 200);
            ok = if good { ok + 1 } else { 0 };
            ok >= n
        },
        || proxy.logs(),
    );
}

#[test]
fn push_and_pull_survive_a_replica_restart() {
    let mut a = Registry::start_with(None, "", &[200]);
    let mut b = Registry::start_with(None, "", &[200]);
    // b serves a's storage: stop it, point its data dir at a's, start again
    b.stop();
    let b_data = b.dir.path().join("data");
    let _ = std::fs::remove_dir_all(&b_data);
    std::fs::create_dir_all(a.dir.path().join("data")).unwrap();
    std::os::unix::fs::symlink(a.dir.path().join("data"), &b_data).unwrap();
    b.start_again();

    let proxy = Proxy::start(
        &a,
        ProxyOptions::default()
            .line_in("upstream", &format!("replicas = [\"{}\"]", b.url()))
            // (two checks of 500 ms: with one of 200 ms, a single slow
            // answer under a loaded CI machine once marked the only
            // replica left down in the middle of a push)
            .health("500ms", 2),
    );
    let state = tempfile::tempdir().unwrap();
    let src = state.path().join("src-oci");
    make_oci_layout(&src, "v1", 3, 11);
    let host = format!("127.0.0.1:{}", proxy.port());
    let oci = format!("oci:{}:v1", src.display());

    // both up
    skopeo_copy(
        state.path(),
        &proxy,
        &oci,
        &format!("docker://{host}/ha/app:v1"),
        true,
    );

    // a down: everything goes to b
    a.stop();
    wait_stable(&proxy, 10);
    skopeo_copy(
        state.path(),
        &proxy,
        &oci,
        &format!("docker://{host}/ha/app:v2"),
        true,
    );
    let out = state.path().join("out1");
    skopeo_copy(
        state.path(),
        &proxy,
        &format!("docker://{host}/ha/app:v1"),
        &format!("oci:{}:v1", out.display()),
        false,
    );

    // a back, b down: everything goes to a, which sees what b stored
    a.start_again();
    b.stop();
    wait_stable(&proxy, 10);
    let out = state.path().join("out2");
    skopeo_copy(
        state.path(),
        &proxy,
        &format!("docker://{host}/ha/app:v2"),
        &format!("oci:{}:v2", out.display()),
        false,
    );
    skopeo_copy(
        state.path(),
        &proxy,
        &oci,
        &format!("docker://{host}/ha/app:v3"),
        true,
    );
    b.start_again();
}

/// `[upstream] replicas` is reloaded like the rest of proxy.toml: a replica
/// added by a reload takes over when the first one stops, and a broken
/// replica list is refused while the old one keeps serving.
#[test]
fn replica_list_is_reloaded_without_a_restart() {
    let mut a = Registry::start();
    let b = Registry::start();
    let proxy = Proxy::start(&a, ProxyOptions::default().health("500ms", 2));
    let ping = || {
        proxy
            .req(reqwest::Method::GET, "/v2/")
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(ping(), 200);
    let text = std::fs::read_to_string(proxy.config_path()).unwrap();
    let single = format!("url = \"{}\"", a.url());
    assert!(text.contains(&single), "{text}");
    let reloads = || {
        proxy
            .logs()
            .matches("config reloaded: new upstream")
            .count()
    };
    let refusals = || {
        proxy
            .logs()
            .matches("keeping the previous configuration")
            .count()
    };

    write_atomic(
        &proxy.config_path(),
        text.replace(&single, &format!("{single}\nreplicas = [\"{}\"]", b.url()))
            .as_bytes(),
    );
    wait_until(
        "the replica list is reloaded",
        Duration::from_secs(15),
        || reloads() == 1,
        || proxy.logs(),
    );

    // a stops: b, added by the reload, serves everything
    a.stop();
    wait_stable(&proxy, 10);
    let digest = push_blob(
        &proxy,
        "ha/reloaded",
        b"lands on the replica added by a reload",
    );
    let on_b = b.send_direct(
        reqwest::Method::HEAD,
        &format!("/v2/ha/reloaded/blobs/{digest}"),
        None,
    );
    assert_eq!(on_b.status(), 200, "the push went to replica b");

    // a broken replica list is refused; b keeps serving
    write_atomic(
        &proxy.config_path(),
        text.replace(
            &single,
            &format!("{single}\nreplicas = [\"ftp://127.0.0.1:1\"]"),
        )
        .as_bytes(),
    );
    wait_until(
        "the broken replica list is refused",
        Duration::from_secs(15),
        || refusals() == 1,
        || proxy.logs(),
    );
    assert_eq!(reloads(), 1, "{}", proxy.logs());
    assert_eq!(ping(), 200, "the previous replicas keep serving");
    a.start_again();
}
