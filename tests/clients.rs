//! Real registry clients through the proxy: skopeo (copy in and out, login,
//! inspect) and podman (login, push, pull), each with its own state in a temp dir.

mod support;

use reqwest::Method;
use support::*;

#[test]
fn skopeo_copies_a_multi_layer_image_in_and_out() {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let state = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::in_dir(state.path());
    let src = state.path().join("src-oci");
    let image = make_oci_layout(&src, "v1", 3, 1);
    let creds = format!("{USER}:{PASS}");
    let cert_dir = proxy.cert_dir();
    let host = format!("127.0.0.1:{}", proxy.port());
    let dest = format!("docker://{host}/clients/skopeo:v1");

    skopeo.push_layout(&proxy, &creds, &src, "v1", &dest);

    // what the registry itself now holds
    image.assert_stored(&reg, "clients/skopeo", "v1");

    // inspect through the proxy
    let o = skopeo.run(
        &[
            "inspect",
            "--raw",
            "--creds",
            &creds,
            "--cert-dir",
            cert_dir.to_str().unwrap(),
            &dest,
        ],
        None,
    );
    let raw = client_ok("skopeo inspect --raw", o, &proxy);
    assert_eq!(
        sha256_digest(raw.trim_end().as_bytes()),
        image.manifest_digest,
        "manifest via proxy differs:\n{raw}"
    );

    // and out again, into a new layout
    let out = state.path().join("out-oci");
    skopeo.pull_layout(&proxy, &creds, &dest, &out, "v1");
    assert_eq!(
        oci_layer_digests(&out),
        image.layer_digests,
        "layers pulled back"
    );
    for d in &image.layer_digests {
        let f = out
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        assert_eq!(
            sha256_digest(&std::fs::read(&f).unwrap()),
            *d,
            "pulled blob content"
        );
    }

    // with --tls-verify=false instead of a cert dir
    let o = skopeo.run(
        &[
            "copy",
            "--dest-creds",
            &creds,
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{host}/clients/noverify:v1"),
        ],
        None,
    );
    client_ok("skopeo copy --dest-tls-verify=false", o, &proxy);
}

#[test]
fn skopeo_with_wrong_credentials_is_refused() {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let state = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::in_dir(state.path());
    let src = state.path().join("src-oci");
    make_oci_layout(&src, "v1", 2, 2);
    let host = format!("127.0.0.1:{}", proxy.port());
    let o = skopeo.run(
        &[
            "copy",
            "--dest-creds",
            &format!("{USER}:wrong-password"),
            "--dest-cert-dir",
            proxy.cert_dir().to_str().unwrap(),
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{host}/clients/denied:v1"),
        ],
        None,
    );
    assert!(
        !o.status.success(),
        "push with a wrong password succeeded: {}",
        out_text(&o)
    );
    let text = out_text(&o).to_lowercase();
    assert!(
        text.contains("unauthorized")
            || text.contains("401")
            || text.contains("authentication required"),
        "unexpected error: {text}"
    );
    let direct = reg.send_direct(Method::GET, "/v2/clients/denied/tags/list", None);
    assert_eq!(
        direct.status(),
        404,
        "something was stored despite the refusal"
    );
}

#[test]
fn skopeo_login_then_inspect_with_the_auth_file() {
    let (_reg, proxy) = registry_and_proxy(ProxyOptions::default());
    push_image(&proxy, "clients/login", "v1");
    let state = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::in_dir(state.path());
    let auth = state.path().join("skopeo-auth.json");
    let host = format!("127.0.0.1:{}", proxy.port());
    let cert_dir = proxy.cert_dir();

    let authfile = auth.to_str().unwrap();
    let flags = [
        "--authfile",
        authfile,
        "--cert-dir",
        cert_dir.to_str().unwrap(),
    ];
    skopeo.login_wrong_then_right("skopeo login", &flags, (USER, PASS), "wrong", &host, &proxy);
    let saved = std::fs::read_to_string(&auth).unwrap();
    assert!(
        saved.contains(&host),
        "auth file has no entry for {host}: {saved}"
    );

    // with the saved login only; each answer names what was asked for
    for (command, reference, expected) in [
        ("inspect", "clients/login:v1", "\"Digest\""),
        ("list-tags", "clients/login", "\"v1\""),
    ] {
        let image = format!("docker://{host}/{reference}");
        let args = [
            command,
            "--authfile",
            authfile,
            "--tls-verify=false",
            &image,
        ];
        let out = skopeo.ok(
            &format!("skopeo {command} with the auth file"),
            &args,
            None,
            &proxy,
        );
        assert!(out.contains(expected), "skopeo {command}: {out}");
    }
}

#[test]
fn podman_login_push_and_pull() {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let host = format!("127.0.0.1:{}", proxy.port());
    let cert_dir = proxy.cert_dir();
    let cd = cert_dir.to_str().unwrap();

    let pusher = PodmanCli::new();
    let src = pusher.state.path().join("src-oci");
    let image = make_oci_layout(&src, "v1", 3, 3);
    let config_hex = image
        .config_digest
        .trim_start_matches("sha256:")
        .to_string();
    // into podman's storage with skopeo (podman names oci: images after their path)
    let store = pusher.storage_ref("localhost/clients/src:v1");
    let o = Skopeo::in_dir(pusher.state.path()).run(
        &["copy", &format!("oci:{}:v1", src.display()), &store],
        None,
    );
    client_ok("skopeo copy oci: -> containers-storage:", o, &proxy);
    let o = pusher.run(
        &[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "localhost/clients/src:v1",
        ],
        None,
    );
    let out = client_ok("podman image inspect (local)", o, &proxy);
    assert_eq!(out.trim(), config_hex, "image id in podman storage");

    pusher.login_wrong_then_right(
        "podman login",
        &["--cert-dir", cd],
        (USER, PASS),
        "wrong",
        &host,
        &proxy,
    );

    let target = format!("{host}/clients/podman:v2");
    let o = pusher.run(&["tag", &config_hex, &target], None);
    client_ok("podman tag", o, &proxy);
    let o = pusher.run(&["push", "--cert-dir", cd, &target], None);
    client_ok("podman push", o, &proxy);

    // the registry holds an image with the same config (image id)
    let m = reg.stored_manifest("clients/podman", "v2");
    assert_eq!(
        m["config"]["digest"].as_str().unwrap(),
        image.config_digest,
        "config of the pushed image"
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), 3);

    // a second, empty podman pulls it back, over --tls-verify=false
    let puller = PodmanCli::new();
    let o = puller.login(&["--tls-verify=false"], USER, Password::Stdin(PASS), &host);
    client_ok("podman login (puller)", o, &proxy);
    let o = puller.run(&["pull", "--tls-verify=false", &target], None);
    let out = client_ok("podman pull", o, &proxy);
    assert!(out.contains(&config_hex), "pulled image id: {out}");
    let o = puller.run(&["image", "inspect", "--format", "{{.Id}}", &target], None);
    let out = client_ok("podman image inspect", o, &proxy);
    assert_eq!(out.trim(), config_hex);

    // logout: the next pull without credentials is refused
    let o = puller.run(&["logout", &host], None);
    client_ok("podman logout", o, &proxy);
    let o = puller.run(&["pull", "--tls-verify=false", &target], None);
    assert!(
        !o.status.success(),
        "pull after logout succeeded: {}",
        out_text(&o)
    );
}
