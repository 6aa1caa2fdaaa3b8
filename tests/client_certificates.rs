//! Client certificates (`[tls.client_auth]`, mutual TLS) with real
//! clients: curl and reqwest presenting certificates of a test CA, a
//! handshake refused without one (required mode), for an expired one, one
//! of another CA and a revoked one (CRL); the certificate's user in the
//! access log and before the rules (groups from the OU, a rule that asks
//! for `credential = "certificate"`); CA and CRL files reloaded; skopeo,
//! podman and the Docker engine pushing and pulling with only a
//! certificate. Tests named `clients_*` run in the nextest group `clients`,
//! `docker_*` in `docker`.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use support::*;

/// A registry, a proxy whose client certificates come from `ca`, and the
/// directory the CA and client files are in.
struct Mtls {
    reg: Registry,
    proxy: Proxy,
    ca: Ca,
    dir: tempfile::TempDir,
}

/// `mode` (`required`/`optional`) and more `[tls.client_auth]` lines.
fn start(mode: &str, extra: &str, rules: &[Rule]) -> Mtls {
    start_ca(
        Ca::new("portcullis client CA"),
        temp_dir("portcullis-mtls-"),
        mode,
        extra,
        rules,
    )
}

/// [`start`] with this client CA, its files in `dir`.
fn start_ca(ca: Ca, dir: tempfile::TempDir, mode: &str, extra: &str, rules: &[Rule]) -> Mtls {
    start_tweaked(ca, dir, mode, extra, rules, |o| o)
}

/// [`start_ca`], with the proxy's options changed by `tweak`.
fn start_tweaked(
    ca: Ca,
    dir: tempfile::TempDir,
    mode: &str,
    extra: &str,
    rules: &[Rule],
    tweak: impl FnOnce(ProxyOptions) -> ProxyOptions,
) -> Mtls {
    fs::write(dir.path().join("client-ca.pem"), &ca.pem).unwrap();
    // the harness's probe: a certificate of its own
    let probe = ca.client_cert_with(&ClientSpec {
        serial: 1000,
        ..ClientSpec::new("harness-probe")
    });
    let table = format!(
        "[tls.client_auth]\nca_file = \"{}\"\nmode = \"{mode}\"\n{extra}\n",
        dir.path().join("client-ca.pem").display()
    );
    let mut opts = ProxyOptions::basic(&[(USER, PASS), BOB]).toml(&table);
    if !rules.is_empty() {
        opts = opts.rules(rules);
    }
    let (reg, proxy) = registry_and_proxy(tweak(opts.client_identity(&probe)));
    Mtls {
        reg,
        proxy,
        ca,
        dir,
    }
}

impl Mtls {
    /// Writes `leaf` as NAME.cert and NAME.key; their paths.
    fn files(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        let c = self.dir.path().join(format!("{name}.cert"));
        let k = self.dir.path().join(format!("{name}.key"));
        fs::write(&c, &leaf.cert_pem).unwrap();
        fs::write(&k, &leaf.key_pem).unwrap();
        (c, k)
    }

    /// curl `GET path` presenting `cert` (written as `name`): the status,
    /// or curl's error when there was no HTTP answer (a refused handshake).
    fn curl(&self, path: &str, cert: Option<(&str, &Leaf)>, extra: &[&str]) -> Result<u16, String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "--cacert"])
            .arg(self.proxy.ca_pem_path());
        if let Some((name, leaf)) = cert {
            let (c, k) = self.files(name, leaf);
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        let o = cmd
            .args(extra)
            .arg(self.proxy.url(path))
            .output()
            .expect("run curl");
        let code = String::from_utf8_lossy(&o.stdout).trim().to_string();
        match (o.status.success(), code.parse::<u16>()) {
            (true, Ok(c)) if c != 0 => Ok(c),
            _ => Err(format!("{} (http_code {code})", out_text(&o))),
        }
    }

    /// A v2 client presenting `leaf` (none: no certificate) with `auth`.
    fn v2(&self, leaf: Option<&Leaf>, auth: Auth) -> V2<'_> {
        V2 {
            client: self.proxy.client_with_identity(leaf),
            base: self.proxy.base(),
            auth,
            logs_of: Some(&self.proxy),
        }
    }

    /// The access-log lines of `path` (exact).
    fn access_of(&self, path: &str) -> Vec<String> {
        access_lines(&self.proxy)
            .into_iter()
            .filter(|l| log_field(l, "path") == Some(path))
            .collect()
    }
}

fn alice_basic() -> Auth {
    Auth::Basic(USER.into(), PASS.into())
}

#[test]
fn a_valid_certificate_is_the_user_without_a_password() {
    let rules = [
        Rule::users(&["alice"]).on(&["team-a/**"]).pull_push(),
        Rule::groups(&["builders"]).on(&["ci/**"]).pull_push(),
        Rule::users(&["bob"]).on(&["team-a/**"]).pull(),
    ];
    let m = start("required", "groups_from = [\"ou\"]", &rules);
    let alice = m.ca.client_cert("alice");

    // curl: GET /v2/ with the certificate alone, and the log names alice
    assert_eq!(m.curl("/v2/", Some(("alice", &alice)), &[]), Ok(200));
    // (the access line is written after the answer: wait for it)
    wait_until(
        "the access line of alice's GET /v2/",
        WAIT,
        || {
            m.access_of("/v2/")
                .iter()
                .any(|l| log_field(l, "user") == Some("alice"))
        },
        || m.proxy.logs(),
    );
    let lines = m.access_of("/v2/");
    assert!(
        lines
            .iter()
            .any(|l| log_field(l, "user") == Some("alice") && log_field(l, "status") == Some("200")),
        "no access line of alice's GET /v2/: {lines:#?}"
    );

    // reqwest: alice pushes and pulls team-a without a password
    let v2 = m.v2(Some(&alice), Auth::None);
    let digest = v2.blob("team-a/app", b"pushed with a certificate");
    let r = v2
        .request(Method::GET, &format!("/v2/team-a/app/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), b"pushed with a certificate");
    // she is not a builder
    let refused = v2.try_blob("ci/app", b"not hers");
    assert_eq!(refused.map_err(|(st, _)| st), Err(403));

    // the OU makes carol a builder (carol is in no htpasswd file)
    let carol = m.ca.client_cert_with(&ClientSpec {
        organizational_units: &["builders"],
        serial: 2,
        ..ClientSpec::new("carol")
    });
    m.v2(Some(&carol), Auth::None).blob("ci/app", b"a build");
    let lines = access_lines(&m.proxy);
    assert!(
        lines.iter().any(|l| log_field(l, "user") == Some("carol")),
        "carol is not in the access log: {lines:#?}"
    );

    // credentials sent with the request decide: bob's password on alice's
    // connection is bob (who may only pull team-a) ...
    let as_bob = m.v2(Some(&alice), Auth::Basic(BOB.0.into(), BOB.1.into()));
    assert_eq!(
        as_bob
            .try_blob("team-a/app", b"bob may not")
            .map_err(|(st, _)| st),
        Err(403)
    );
    // ... and a wrong password is refused, not replaced by the certificate
    let wrong = m.v2(Some(&alice), Auth::Basic(USER.into(), "wrong".into()));
    let r = wrong.request(Method::GET, "/v2/").send().unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn required_mode_refuses_handshakes_without_a_valid_certificate() {
    let (ca, dir) = (
        Ca::new("portcullis client CA"),
        temp_dir("portcullis-mtls-"),
    );
    let crl = dir.path().join("crl.pem");
    fs::write(&crl, ca.crl(&[66])).unwrap();
    let extra = format!("crl_files = [\"{}\"]", crl.display());
    let m = start_ca(ca, dir, "required", &extra, &[]);
    let other_ca = Ca::new("another CA");

    let valid = m.ca.client_cert("alice");
    assert_eq!(m.curl("/v2/", Some(("valid", &valid)), &[]), Ok(200));

    let none = m.curl("/v2/", None, &["-u", &format!("{USER}:{PASS}")]);
    assert!(none.is_err(), "no certificate, yet an answer: {none:?}");
    let expired = m.ca.client_cert_with(&ClientSpec {
        expired: true,
        serial: 3,
        ..ClientSpec::new("alice")
    });
    let r = m.curl("/v2/", Some(("expired", &expired)), &[]);
    assert!(r.is_err(), "an expired certificate was accepted: {r:?}");
    let foreign = other_ca.client_cert("alice");
    let r = m.curl("/v2/", Some(("foreign", &foreign)), &[]);
    assert!(
        r.is_err(),
        "a certificate of another CA was accepted: {r:?}"
    );
    let revoked = m.ca.client_cert_with(&ClientSpec {
        serial: 66,
        ..ClientSpec::new("alice")
    });
    let r = m.curl("/v2/", Some(("revoked", &revoked)), &[]);
    assert!(r.is_err(), "a revoked certificate was accepted: {r:?}");

    // reqwest: the handshake fails too
    let r = m
        .proxy
        .client_with_identity(None)
        .get(m.proxy.url("/v2/"))
        .basic_auth(USER, Some(PASS))
        .send();
    assert!(r.is_err(), "reqwest without a certificate: {r:?}");

    // each refusal is logged with its reason (lines written after the
    // client saw the handshake fail, and after the valid answer: wait)
    wait_until(
        "three refusals and the valid request's access line",
        WAIT,
        || {
            let logs = m.proxy.log_text();
            logs.matches("client certificate refused").count() >= 3
                && m.access_of("/v2/").len() >= 2
        },
        || m.proxy.logs(),
    );
    let logs = m.proxy.log_text();
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("client certificate refused"))
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:#?}");
    for reason in ["Revoked", "UnknownIssuer"] {
        assert!(
            refusals.iter().any(|l| l.contains(reason)),
            "no refusal says {reason}: {refusals:#?}"
        );
    }
    // nothing of them reached the access log
    assert_eq!(m.access_of("/v2/").len(), 1 + 1, "the probe's and valid's");
}

#[test]
fn optional_mode_takes_passwords_and_refuses_bad_certificates() {
    let m = start("optional", "", &[]);
    let creds = format!("{USER}:{PASS}");
    assert_eq!(m.curl("/v2/", None, &["-u", &creds]), Ok(200));
    assert_eq!(m.curl("/v2/", None, &[]), Ok(401));
    let alice = m.ca.client_cert("alice");
    assert_eq!(m.curl("/v2/", Some(("alice", &alice)), &[]), Ok(200));
    let foreign = Ca::new("another CA").client_cert("alice");
    let r = m.curl("/v2/", Some(("foreign", &foreign)), &["-u", &creds]);
    assert!(
        r.is_err(),
        "optional mode accepted a foreign certificate: {r:?}"
    );
    // a certificate without the name user_from asks for: 401
    let m2 = start("optional", "user_from = \"san_uri\"", &[]);
    let no_uri = m2.ca.client_cert("alice");
    assert_eq!(m2.curl("/v2/", Some(("no-uri", &no_uri)), &[]), Ok(401));
    let spiffe = m2.ca.client_cert_with(&ClientSpec {
        uris: &["spiffe://example.org/ci"],
        serial: 9,
        ..ClientSpec::new("ignored")
    });
    assert_eq!(m2.curl("/v2/", Some(("spiffe", &spiffe)), &[]), Ok(200));
    // (the access line is written after the answer: wait for it)
    wait_until(
        "the access line naming the SPIFFE ID",
        WAIT,
        || {
            m2.access_of("/v2/")
                .iter()
                .any(|l| log_field(l, "user") == Some("spiffe://example.org/ci"))
        },
        || format!("{:#?}", m2.access_of("/v2/")),
    );
}

#[test]
fn a_rule_can_require_a_certificate() {
    let rules = [
        Rule::users(&["alice"])
            .on(&["team-a/**"])
            .pull_push()
            .credential("certificate"),
        Rule::users(&["alice"]).on(&["team-a/**"]).pull(),
    ];
    let m = start("optional", "", &rules);
    let alice = m.ca.client_cert("alice");
    let with_cert = m.v2(Some(&alice), Auth::None);
    let digest = with_cert.blob("team-a/app", b"only with the certificate");
    let with_password = m.v2(None, alice_basic());
    assert_eq!(
        with_password
            .try_blob("team-a/app", b"with the password")
            .map_err(|(st, _)| st),
        Err(403),
        "a password pushed where the rule asks for a certificate"
    );
    // the second rule still lets the password pull
    let r = with_password
        .request(Method::GET, &format!("/v2/team-a/app/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        m.reg
            .direct()
            .get(format!("{}/v2/team-a/app/blobs/{digest}", m.reg.url()))
            .send()
            .unwrap()
            .status(),
        200,
        "the registry holds the blob pushed with the certificate"
    );
}

#[test]
fn new_ca_and_crl_files_are_loaded_and_broken_ones_keep_the_old() {
    let (ca, dir) = (
        Ca::new("portcullis client CA"),
        temp_dir("portcullis-mtls-"),
    );
    let crl_path = dir.path().join("crl.pem");
    fs::write(&crl_path, ca.crl(&[])).unwrap();
    let extra = format!("crl_files = [\"{}\"]", crl_path.display());
    let m = start_ca(ca, dir, "required", &extra, &[]);
    let five = m.ca.client_cert_with(&ClientSpec {
        serial: 5,
        ..ClientSpec::new("alice")
    });
    assert_eq!(m.curl("/v2/", Some(("five", &five)), &[]), Ok(200));

    // revoke 5: refused once the watcher took the new list
    fs::write(&crl_path, m.ca.crl(&[5])).unwrap();
    wait_until(
        "the revocation of serial 5 takes effect",
        Duration::from_secs(10),
        || m.curl("/v2/", Some(("five", &five)), &[]).is_err(),
        || m.proxy.logs(),
    );

    // a broken CA file: the previous verifier keeps serving, the log says why
    let ca_path = m.dir.path().join("client-ca.pem");
    fs::write(&ca_path, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    wait_until(
        "the broken CA file is reported",
        Duration::from_secs(10),
        || m.proxy.log_text().contains("do not load"),
        || m.proxy.logs(),
    );
    assert!(
        m.proxy.log_text().contains("tls.client_auth.ca_file"),
        "{}",
        m.proxy.logs()
    );
    let six = m.ca.client_cert_with(&ClientSpec {
        serial: 6,
        ..ClientSpec::new("alice")
    });
    assert_eq!(m.curl("/v2/", Some(("six", &six)), &[]), Ok(200));

    // a new CA (its CRL too): its certificates in, the old CA's out
    let next = Ca::new("next client CA");
    fs::write(&crl_path, next.crl(&[])).unwrap();
    fs::write(&ca_path, &next.pem).unwrap();
    let newer = next.client_cert("alice");
    wait_until(
        "the new CA is trusted",
        Duration::from_secs(10),
        || m.curl("/v2/", Some(("newer", &newer)), &[]) == Ok(200),
        || m.proxy.logs(),
    );
    let r = m.curl("/v2/", Some(("six", &six)), &[]);
    assert!(r.is_err(), "the replaced CA's certificate still in: {r:?}");
}

/// A `certs.d`-style directory for containers/image: `ca.crt` (the proxy's
/// CA), `client.cert` and `client.key`.
fn cert_dir(m: &Mtls, leaf: &Leaf) -> tempfile::TempDir {
    let d = temp_dir("portcullis-mtls-certs-");
    fs::write(d.path().join("ca.crt"), &m.proxy.ca.pem).unwrap();
    fs::write(d.path().join("client.cert"), &leaf.cert_pem).unwrap();
    fs::write(d.path().join("client.key"), &leaf.key_pem).unwrap();
    d
}

/// skopeo copies a new OCI image (from `seed`) to `repo:v1` with only the
/// client certificate in `cd`, and the registry holds it: the reference
/// pushed to, and the image.
fn skopeo_push_with_certificate(
    m: &Mtls,
    skopeo: &Skopeo,
    state: &Path,
    cd: &str,
    repo: &str,
    seed: u64,
) -> (String, OciImage) {
    let src = state.join("src-oci");
    let image = make_oci_layout(&src, "v1", 2, seed);
    let dest = format!("docker://127.0.0.1:{}/{repo}:v1", m.proxy.port());
    let from = format!("oci:{}:v1", src.display());
    let args = [
        "copy",
        "--dest-no-creds",
        "--dest-cert-dir",
        cd,
        &from,
        &dest,
    ];
    skopeo.ok(
        "skopeo copy with a client certificate",
        &args,
        None,
        &m.proxy,
    );
    image.assert_stored(&m.reg, repo, "v1");
    (dest, image)
}

#[test]
fn clients_skopeo_and_podman_push_with_only_a_certificate() {
    let rules = [Rule::users(&["alice"])
        .on(&["clients/**"])
        .pull_push()
        .credential("certificate")];
    let m = start("required", "", &rules);
    let host = format!("127.0.0.1:{}", m.proxy.port());
    let alice = m.ca.client_cert("alice");
    let certs = cert_dir(&m, &alice);
    let cd = certs.path().to_str().unwrap();

    // skopeo: an OCI layout in, and out again, with no credentials at all
    let state = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::in_dir(state.path());
    let (dest, image) =
        skopeo_push_with_certificate(&m, &skopeo, state.path(), cd, "clients/skopeo", 11);
    let out = state.path().join("out-oci");
    let to = format!("oci:{}:v1", out.display());
    let args = ["copy", "--src-no-creds", "--src-cert-dir", cd, &dest, &to];
    skopeo.ok("skopeo copy back", &args, None, &m.proxy);
    assert_eq!(oci_layer_digests(&out), image.layer_digests);

    // without the certificate (only the CA): the handshake is refused
    let ca_only = temp_dir("portcullis-mtls-ca-only-");
    fs::write(ca_only.path().join("ca.crt"), &m.proxy.ca.pem).unwrap();
    let ca_dir = ca_only.path().to_str().unwrap();
    let o = skopeo.run(
        &["inspect", "--no-creds", "--cert-dir", ca_dir, &dest],
        None,
    );
    assert_failed("skopeo inspect without a client certificate", &o);

    // podman: into its storage, then pushed with --cert-dir only
    let podman = PodmanCli::new();
    let psrc = podman.state.path().join("src-oci");
    let pimage = make_oci_layout(&psrc, "v1", 2, 12);
    let store = podman.storage_ref("localhost/clients/src:v1");
    let o = Skopeo::in_dir(podman.state.path()).run(
        &["copy", &format!("oci:{}:v1", psrc.display()), &store],
        None,
    );
    client_ok("skopeo copy oci: -> containers-storage:", o, &m.proxy);
    let target = format!("{host}/clients/podman:v1");
    podman.ok(
        "podman tag",
        &["tag", "localhost/clients/src:v1", &target],
        None,
        &m.proxy,
    );
    podman.ok(
        "podman push with a client certificate",
        &["push", "--cert-dir", cd, &target],
        None,
        &m.proxy,
    );
    let stored = m.reg.stored_manifest("clients/podman", "v1");
    assert_eq!(
        stored["config"]["digest"].as_str(),
        Some(pimage.config_digest.as_str()),
        "{stored}"
    );
    let pushes: Vec<String> = access_lines(&m.proxy)
        .into_iter()
        .filter(|l| log_field(l, "method") == Some("PUT"))
        .collect();
    assert!(
        !pushes.is_empty() && pushes.iter().all(|l| log_field(l, "user") == Some("alice")),
        "pushes not all alice's: {pushes:#?}"
    );
}

/// Token mode: a client that sends no credentials to the token endpoint
/// but presents a certificate gets a token for the certificate's user,
/// and skopeo with only a `--cert-dir` is served as that user.
#[test]
fn clients_skopeo_in_token_mode_gets_a_token_for_its_certificate() {
    let rules = [Rule::users(&["alice"])
        .on(&["clients/**"])
        .pull_push()
        .credential("certificate")];
    let dir = temp_dir("portcullis-mtls-");
    let keys = dir.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let m = start_tweaked(
        Ca::new("portcullis client CA"),
        dir,
        "required",
        "",
        &rules,
        |o| {
            o.line_in("auth", "mode = \"token\"")
                .toml(&token_toml(&keys, ""))
        },
    );
    let alice = m.ca.client_cert("alice");

    // the endpoint: no credentials, alice's certificate -> alice's token
    let r = m
        .proxy
        .client_with_identity(Some(&alice))
        .get(
            m.proxy
                .url("/token?service=container-registry&scope=repository:clients/app:pull,push"),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", m.proxy.logs());
    let v: serde_json::Value = r.json().unwrap();
    let claims = jwt_claims(v["token"].as_str().unwrap());
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(
        claims["access"][0]["actions"],
        serde_json::json!(["pull", "push"]),
        "{claims}"
    );
    // a certificate is presented again at every handshake: no refresh token
    assert!(v.get("refresh_token").is_none(), "{v}");

    // skopeo with only a certificate
    let certs = cert_dir(&m, &alice);
    let state = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::in_dir(state.path());
    let cd = certs.path().to_str().unwrap();
    skopeo_push_with_certificate(&m, &skopeo, state.path(), cd, "clients/token-mode", 13);
    // a request without credentials is the certificate's user in token
    // mode too: skopeo is never challenged, so it needs no token at all
    let pushes: Vec<String> = access_lines(&m.proxy)
        .into_iter()
        .filter(|l| log_field(l, "path").is_some_and(|p| p.starts_with("/v2/clients/token-mode/")))
        .collect();
    assert!(
        !pushes.is_empty() && pushes.iter().all(|l| log_field(l, "user") == Some("alice")),
        "skopeo's requests are not all alice's: {pushes:#?}"
    );
}

fn jwt_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The name the engine knows the proxy by: `::1` in its `/etc/hosts`.
/// (It treats registries on 127.0.0.0/8 as insecure, and for those reads
/// no `certs.d`, so it would present no certificate there.)
const ENGINE_NAME: &str = "pc-mtls-registry";

#[test]
fn docker_engine_pulls_and_pushes_with_a_certificate() {
    let rules = [Rule::users(&["alice"]).on(&["team-a/**"]).pull_push()];
    let m = start_tweaked(
        Ca::new("portcullis client CA"),
        temp_dir("portcullis-mtls-"),
        "required",
        "",
        &rules,
        |o| {
            let mut o = o.listen_host("[::1]");
            o.server_names = vec!["::1".into(), ENGINE_NAME.into()];
            o
        },
    );
    let engine = Engine::start_with_hosts(&[("::1", ENGINE_NAME)]);
    let host = format!("{ENGINE_NAME}:{}", m.proxy.port());
    let alice = m.ca.client_cert("alice");
    engine.trust_with_client_cert(&host, &m.proxy.ca.pem, (&alice.cert_pem, &alice.key_pem));

    let docker = engine.client();
    let tag = format!("{host}/team-a/app:1");
    let id = docker.build_scratch(&tag, 2, 21);
    let out = docker.stdout_ok(&["push", &tag]);
    assert!(!out.contains("Retrying in"), "docker push retried: {out}");
    let stored = m.reg.stored_manifest("team-a/app", "1");
    assert_eq!(
        stored["layers"].as_array().map(Vec::len),
        Some(2),
        "{stored}"
    );
    assert!(
        docker.auth_entry(&host).is_none(),
        "the engine has no login for the proxy"
    );
    docker.stdout_ok(&["rmi", &tag]);
    assert!(!docker.has_image(&id));
    docker.stdout_ok(&["pull", &tag]);
    assert_eq!(docker.image_id(&tag), id, "image ID after the pull");
    let lines = access_lines(&m.proxy);
    let manifest_put = lines
        .iter()
        .filter(|l| log_field(l, "method") == Some("PUT"))
        .filter(|l| log_field(l, "path") == Some("/v2/team-a/app/manifests/1"))
        .collect::<Vec<_>>();
    assert!(
        manifest_put
            .iter()
            .any(|l| log_field(l, "user") == Some("alice") && log_field(l, "status") == Some("201")),
        "{lines:#?}"
    );
    // and without the certificate the engine gets nowhere
    let other = format!("{host}/team-a/other:1");
    docker.stdout_ok(&["tag", &tag, &other]);
    fs::remove_file(
        Path::new("/etc/docker/certs.d")
            .join(&host)
            .join("client.cert"),
    )
    .unwrap();
    fs::remove_file(
        Path::new("/etc/docker/certs.d")
            .join(&host)
            .join("client.key"),
    )
    .unwrap();
    let o = docker.run(&["push", &other], None);
    assert_failed("docker push without the client certificate", &o);
    assert!(
        m.reg
            .direct()
            .get(format!("{}/v2/team-a/other/tags/list", m.reg.url()))
            .send()
            .unwrap()
            .status()
            == 404,
        "pushed without a certificate"
    );
}
