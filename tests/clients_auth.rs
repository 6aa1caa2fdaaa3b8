//! Access rules with real clients (skopeo, podman) in Basic and token mode:
//! login, push where allowed, a read-only user's push refused with
//! "denied", a forbidden repository failing the same way whether it exists
//! or not, anonymous pull of a public repository, `${user}` namespaces.

mod support;

use std::process::Output;
use support::*;

struct Setup {
    reg: Registry,
    proxy: Proxy,
    _keys: tempfile::TempDir,
    state: tempfile::TempDir,
    src: std::path::PathBuf,
}

fn start(mode: Mode) -> Setup {
    let reg = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    let users = [(USER, PASS), BOB];
    let opts = match mode {
        Mode::Basic => ProxyOptions::basic(&users).rules(&team_a_rules(&["pull", "push"])),
        Mode::Token => {
            ProxyOptions::token(&users, keys.path()).rules(&team_a_rules(&["pull", "push"]))
        }
    };
    let proxy = Proxy::start(&reg, opts);
    let state = tempfile::Builder::new()
        .prefix("portcullis-clients-auth-")
        .tempdir()
        .unwrap();
    let src = state.path().join("src-oci");
    make_oci_layout(&src, "v1", 1, 5);
    Setup {
        reg,
        proxy,
        _keys: keys,
        state,
        src,
    }
}

impl Setup {
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port())
    }

    fn cert_dir(&self) -> String {
        self.proxy.cert_dir().display().to_string()
    }

    fn skopeo(&self, args: &[&str]) -> Output {
        Skopeo::in_dir(self.state.path()).run(args, None)
    }

    /// skopeo login with `--password` into the auth file `auth`.
    fn skopeo_login(&self, auth: &str, (user, pass): (&str, &str)) -> Output {
        let flags = ["--authfile", auth, "--cert-dir", &self.cert_dir()];
        Skopeo::in_dir(self.state.path()).login(&flags, user, Password::Arg(pass), &self.host())
    }

    /// skopeo copy of the local OCI layout to `repo:v1` as `creds`.
    fn skopeo_push(&self, creds: &str, repo: &str) -> Output {
        self.skopeo(&[
            "copy",
            "--dest-creds",
            creds,
            "--dest-cert-dir",
            &self.cert_dir(),
            &format!("oci:{}:v1", self.src.display()),
            &format!("docker://{}/{repo}:v1", self.host()),
        ])
    }

    /// skopeo inspect of `repo:v1` as `creds` (None: no credentials at all).
    fn skopeo_inspect(&self, creds: Option<&str>, repo: &str) -> Output {
        let image = format!("docker://{}/{repo}:v1", self.host());
        let cd = self.cert_dir();
        let mut args = vec!["inspect", "--raw", "--cert-dir", &cd];
        match creds {
            Some(c) => args.extend(["--creds", c]),
            None => args.push("--no-creds"),
        }
        args.push(&image);
        self.skopeo(&args)
    }

    fn ok(&self, what: &str, o: Output) -> String {
        client_ok(what, o, &self.proxy)
    }

    fn in_registry(&self, repo: &str) -> bool {
        self.reg
            .direct()
            .get(format!("{}/v2/{repo}/tags/list", self.reg.url()))
            .send()
            .unwrap()
            .status()
            == 200
    }
}

fn alice() -> String {
    format!("{USER}:{PASS}")
}

fn bob() -> String {
    format!("{}:{}", BOB.0, BOB.1)
}

/// A client error message with the repository name and request-specific
/// noise taken out, so the errors for two repositories can be compared.
fn normalized_error(o: &Output, repo: &str) -> String {
    let text = String::from_utf8_lossy(&o.stderr).replace(repo, "<repo>");
    // skopeo prefixes a timestamp on some lines: keep the message only
    text.lines()
        .map(|l| match l.find("msg=") {
            Some(i) => l[i..].to_string(),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn skopeo_rules(mode: Mode) {
    let s = start(mode);

    // login with a wrong and the right password
    let auth = s.state.path().join("login-auth.json");
    let auth = auth.to_str().unwrap();
    let o = s.skopeo_login(auth, (USER, "wrong"));
    assert_failed(&format!("{mode:?}: login with a wrong password"), &o);
    s.ok(
        &format!("{mode:?}: skopeo login"),
        s.skopeo_login(auth, (USER, PASS)),
    );
    // bob logs in too (he may not push, but his password is right)
    let bob_auth = s.state.path().join("bob-auth.json");
    let o = s.skopeo_login(bob_auth.to_str().unwrap(), BOB);
    s.ok(&format!("{mode:?}: skopeo login as bob"), o);

    // alice pushes to team-a and to public
    s.ok(
        &format!("{mode:?}: alice pushes team-a/app"),
        s.skopeo_push(&alice(), "team-a/app"),
    );
    assert!(s.in_registry("team-a/app"));
    s.ok(
        &format!("{mode:?}: alice pushes public/tools"),
        s.skopeo_push(&alice(), "public/tools"),
    );

    // bob may pull team-a/app but not push
    s.ok(
        &format!("{mode:?}: bob inspects team-a/app"),
        s.skopeo_inspect(Some(&bob()), "team-a/app"),
    );
    let o = s.skopeo_push(&bob(), "team-a/bob-pushed");
    assert_failed(&format!("{mode:?}: bob's push"), &o);
    let text = both(&o).to_lowercase();
    assert!(
        text.contains("denied"),
        "{mode:?}: bob's refused push does not say \"denied\": {}",
        out_text(&o)
    );
    assert!(
        !s.in_registry("team-a/bob-pushed"),
        "bob's push reached the registry"
    );

    // a forbidden repository: same failure whether it exists or not
    push_image_direct(&s.reg, "secret/exists", "v1");
    let a = s.skopeo_inspect(Some(&alice()), "secret/exists");
    let b = s.skopeo_inspect(Some(&alice()), "secret/missing");
    assert_failed(&format!("{mode:?}: alice inspects secret/exists"), &a);
    assert_failed(&format!("{mode:?}: alice inspects secret/missing"), &b);
    let (ea, eb) = (
        normalized_error(&a, "secret/exists"),
        normalized_error(&b, "secret/missing"),
    );
    assert_eq!(
        ea, eb,
        "{mode:?}: skopeo fails differently for an existing and a missing forbidden repository"
    );
    assert_eq!(a.status.code(), b.status.code());
    // and, for comparison, a missing repository alice may see fails otherwise
    let c = s.skopeo_inspect(Some(&alice()), "team-a/missing");
    assert!(!c.status.success());
    assert_ne!(
        normalized_error(&c, "team-a/missing"),
        ea,
        "{mode:?}: the forbidden answer looks like a plain not-found"
    );

    // ${user}: alice pushes users/alice/x, not users/bob/x
    s.ok(
        &format!("{mode:?}: alice pushes users/alice/x"),
        s.skopeo_push(&alice(), "users/alice/x"),
    );
    let o = s.skopeo_push(&alice(), "users/bob/x");
    assert!(!o.status.success(), "{mode:?}: alice pushed users/bob/x");
    assert!(refused_text(&o), "{mode:?}: {}", out_text(&o));
    assert!(!s.in_registry("users/bob/x"));
    // anonymous pull of public/tools, no credentials at all (last: in Basic
    // mode containers/image sends `Authorization: Basic Og==`, an empty user
    // and password, for a client without credentials)
    let out = s.state.path().join("anon-out");
    let o = s.skopeo(&[
        "copy",
        "--src-no-creds",
        "--src-cert-dir",
        &s.cert_dir(),
        &format!("docker://{}/public/tools:v1", s.host()),
        &format!("oci:{}:v1", out.display()),
    ]);
    s.ok(
        &format!("{mode:?}: anonymous skopeo copy of public/tools"),
        o,
    );
    assert_eq!(oci_layer_digests(&out), oci_layer_digests(&s.src));
    // anonymous push to it asks for credentials
    let o = s.skopeo(&[
        "copy",
        "--dest-no-creds",
        "--dest-cert-dir",
        &s.cert_dir(),
        &format!("oci:{}:v1", s.src.display()),
        &format!("docker://{}/public/anon:v1", s.host()),
    ]);
    assert_failed(&format!("{mode:?}: anonymous push"), &o);
    let text = both(&o).to_lowercase();
    assert!(
        text.contains("unauthorized") || text.contains("authentication required"),
        "{mode:?}: anonymous push error: {}",
        out_text(&o)
    );
    assert!(!s.in_registry("public/anon"));
    // anonymous inspect of team-a is refused
    let o = s.skopeo_inspect(None, "team-a/app");
    assert!(
        !o.status.success(),
        "{mode:?}: anonymous inspect of team-a/app"
    );
}

in_both_modes!(skopeo_rules: skopeo_basic_mode, skopeo_token_mode);

fn podman_rules(mode: Mode) {
    let s = start(mode);
    let host = s.host();
    let cd = s.cert_dir();
    let pod = PodmanCli::new();
    let o = Skopeo::in_dir(pod.state.path()).run(
        &[
            "copy",
            &format!("oci:{}:v1", s.src.display()),
            &pod.storage_ref("localhost/src:v1"),
        ],
        None,
    );
    s.ok("skopeo copy oci: -> containers-storage:", o);

    let login = |user: &str, pass: &str| {
        let stdin = format!("{pass}\n");
        pod.login(&["--cert-dir", &cd], user, Password::Stdin(&stdin), &host)
    };
    let pull = |repo: &str| {
        let image = format!("{host}/{repo}:v1");
        pod.run(&["pull", "--cert-dir", &cd, &image], None)
    };
    let o = login(USER, "wrong");
    assert!(
        !o.status.success(),
        "{mode:?}: podman login with a wrong password"
    );
    s.ok(&format!("{mode:?}: podman login alice"), login(USER, PASS));

    for repo in ["team-a/podman", "users/alice/podman"] {
        let target = format!("{host}/{repo}:v1");
        s.ok(
            "podman tag",
            pod.run(&["tag", "localhost/src:v1", &target], None),
        );
        s.ok(
            &format!("{mode:?}: podman push {repo}"),
            pod.run(&["push", "--cert-dir", &cd, &target], None),
        );
        assert!(s.in_registry(repo), "{repo} not in the registry");
    }
    let target = format!("{host}/users/bob/podman:v1");
    s.ok(
        "podman tag",
        pod.run(&["tag", "localhost/src:v1", &target], None),
    );
    let o = pod.run(&["push", "--cert-dir", &cd, &target], None);
    assert!(
        !o.status.success(),
        "{mode:?}: alice pushed users/bob/podman"
    );
    assert!(refused_text(&o), "{mode:?}: {}", out_text(&o));

    // bob: pull yes, push no
    s.ok(&format!("{mode:?}: podman login bob"), login(BOB.0, BOB.1));
    let o = pull("team-a/podman");
    s.ok(&format!("{mode:?}: bob pulls team-a/podman"), o);
    let target = format!("{host}/team-a/by-bob:v1");
    s.ok(
        "podman tag",
        pod.run(&["tag", "localhost/src:v1", &target], None),
    );
    let o = pod.run(&["push", "--cert-dir", &cd, &target], None);
    assert!(!o.status.success(), "{mode:?}: bob's podman push succeeded");
    assert!(
        both(&o).to_lowercase().contains("denied"),
        "{mode:?}: bob's refused push: {}",
        out_text(&o)
    );
    assert!(!s.in_registry("team-a/by-bob"));

    // forbidden existing vs missing: the same failure
    push_image_direct(&s.reg, "secret/exists", "v1");
    let a = pull("secret/exists");
    let b = pull("secret/missing");
    assert!(!a.status.success() && !b.status.success());
    let norm = |o: &Output, repo: &str| {
        normalized_error(o, repo)
            .lines()
            .filter(|l| !l.starts_with("Trying to pull"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        norm(&a, "secret/exists"),
        norm(&b, "secret/missing"),
        "{mode:?}: podman fails differently for existing and missing forbidden repos"
    );

    // anonymous pull of a public image after logout
    s.ok(
        "alice pushes public/podman",
        s.skopeo_push(&alice(), "public/podman"),
    );
    s.ok("podman logout", pod.run(&["logout", &host], None));
    let o = pull("public/podman");
    s.ok(
        &format!("{mode:?}: anonymous podman pull of public/podman"),
        o,
    );
    let o = pull("team-a/podman");
    assert!(
        !o.status.success(),
        "{mode:?}: anonymous podman pull of team-a/podman"
    );
}

in_both_modes!(podman_rules: podman_basic_mode, podman_token_mode);
