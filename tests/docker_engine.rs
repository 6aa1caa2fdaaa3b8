//! The real Docker engine (`dockerd` + the `docker` CLI) through the proxy,
//! in Basic and in token mode: login refused and accepted, push and pull
//! of a multi-layer image built with `docker build`, pull by digest, a
//! pull-only user's push refused with nothing stored (and not retried),
//! logout, the identity token kept by a token-mode login, anonymous pull of
//! a public repository.
//!
//! The engine treats 127.0.0.0/8 registries as insecure and retries over
//! plain HTTP when HTTPS fails, so the message a failed command prints is
//! often the retry's: every refusal is also checked in the proxy's access
//! log.

mod support;

use std::process::Output;
use std::time::Duration;

use support::slapd::*;
use support::*;

/// A registry, a proxy in front of it with the team-a rules (alice pulls
/// and pushes team-a/** and public/**, bob only pulls team-a/**, anyone
/// pulls public/**), and an engine that trusts the proxy's CA.
struct Setup {
    reg: Registry,
    proxy: Proxy,
    _keys: tempfile::TempDir,
    engine: Engine,
}

fn start(mode: Mode) -> Setup {
    start_with(mode, team_a_rules(&["pull", "push"]))
}

/// [`start`] with other rules.
fn start_with(mode: Mode, rules: Vec<Rule>) -> Setup {
    start_on(mode, &[(USER, PASS), BOB], rules, |o| o)
}

/// A setup with these htpasswd users and rules, and `more` config.
fn start_on(
    mode: Mode,
    users: &[(&str, &str)],
    rules: Vec<Rule>,
    more: impl FnOnce(ProxyOptions) -> ProxyOptions,
) -> Setup {
    let reg = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    let opts = match mode {
        Mode::Basic => ProxyOptions::basic(users),
        Mode::Token => ProxyOptions::token(users, keys.path()),
    };
    let proxy = Proxy::start(&reg, more(opts.rules(&rules)));
    let engine = Engine::start();
    engine.trust(&proxy);
    Setup {
        reg,
        proxy,
        _keys: keys,
        engine,
    }
}

impl Setup {
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port())
    }

    /// `HOST/repo` (plus `:tag` or `@digest` as given).
    fn image(&self, repo: &str) -> String {
        format!("{}/{repo}", self.host())
    }

    /// `docker login` of `user` with the right password on stdin, asserting it worked.
    fn login(&self, docker: &Docker, (user, pass): (&str, &str)) {
        let o = docker.login(
            &[],
            user,
            Password::Stdin(&format!("{pass}\n")),
            &self.host(),
        );
        let text = self.ok(&format!("docker login -u {user}"), o);
        assert!(text.contains("Login Succeeded"), "docker login: {text}");
    }

    /// Asserts a run worked (with the proxy's and the engine's logs if not).
    fn ok(&self, what: &str, o: Output) -> String {
        assert!(
            o.status.success(),
            "{what} failed: {}\n{}\n{}",
            out_text(&o),
            self.proxy.logs(),
            self.engine.logs()
        );
        both(&o)
    }

    /// `docker ARGS` as `docker`, asserting it worked; stdout + stderr.
    fn docker_ok(&self, docker: &Docker, args: &[&str]) -> String {
        self.ok(&format!("docker {args:?}"), docker.run(args, None))
    }

    /// `docker push image`, asserting it worked without the engine retrying
    /// a layer (a retry hides a failed request behind seconds of back-off);
    /// stdout + stderr.
    fn push(&self, docker: &Docker, image: &str) -> String {
        let mark = self.mark();
        let out = self.docker_ok(docker, &["push", image]);
        assert!(
            !out.contains("Retrying in"),
            "docker push {image} retried: {out}\naccess log:\n{}\n{}",
            both_lines(&self.access_since(mark)),
            self.engine.logs()
        );
        out
    }

    /// The access-log lines since the first `mark` of them.
    fn access_since(&self, mark: usize) -> Vec<String> {
        access_lines(&self.proxy).split_off(mark)
    }

    fn mark(&self) -> usize {
        access_lines(&self.proxy).len()
    }

    /// The status the registry itself answers for `GET /v2/{path}`.
    fn registry_status(&self, path: &str) -> u16 {
        self.reg
            .direct()
            .get(format!("{}/v2/{path}", self.reg.url()))
            .header(
                "accept",
                "application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.oci.image.manifest.v1+json",
            )
            .send()
            .unwrap()
            .status()
            .as_u16()
    }

    /// The tags the registry itself holds for `repo` (none if it does not
    /// know the repository).
    fn registry_tags(&self, repo: &str) -> Vec<String> {
        let r = self
            .reg
            .direct()
            .get(format!("{}/v2/{repo}/tags/list", self.reg.url()))
            .send()
            .unwrap();
        if r.status() == 404 {
            return Vec::new();
        }
        assert_eq!(r.status(), 200, "tags/list of {repo} in the registry");
        let v: serde_json::Value = r.json().unwrap();
        match &v["tags"] {
            serde_json::Value::Null => Vec::new(),
            tags => strings(tags),
        }
    }
}

/// The lines of `lines` with `field=value` for each pair.
fn matching<'l>(lines: &'l [String], fields: &[(&str, &str)]) -> Vec<&'l String> {
    lines
        .iter()
        .filter(|l| fields.iter().all(|(k, v)| log_field(l, k) == Some(*v)))
        .collect()
}

/// The lines with status `status` (and `path` starting with `path`).
fn with_status<'l>(lines: &'l [String], status: &str, path: &str) -> Vec<&'l String> {
    lines
        .iter()
        .filter(|l| log_field(l, "status") == Some(status))
        .filter(|l| log_field(l, "path").is_some_and(|p| p.starts_with(path)))
        .collect()
}

/// The digest in `docker push`'s `TAG: digest: sha256:… size: N` line.
fn pushed_digest(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split_once(" digest: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in the push output: {output}"))
        .to_string()
}

fn both_lines(lines: &[String]) -> String {
    lines.join("\n")
}

/// A wrong password is refused (the proxy answered 401, nothing 200), the
/// right one on stdin is accepted and kept in `$DOCKER_CONFIG`.
fn login_refused_then_accepted(mode: Mode) {
    let s = start(mode);
    let docker = s.engine.client();
    let mark = s.mark();
    let o = docker.login(&[], USER, Password::Arg("not-the-password"), &s.host());
    assert_failed("docker login with a wrong password", &o);
    assert!(
        !both(&o).contains("Login Succeeded"),
        "wrong password: {}",
        out_text(&o)
    );
    let lines = s.access_since(mark);
    // the credentials go to /v2/ in Basic mode, to /token in token mode
    let checked = match mode {
        Mode::Basic => "/v2/",
        Mode::Token => "/token",
    };
    assert!(
        !with_status(&lines, "401", checked).is_empty(),
        "no 401 for {checked} in the access log of the refused login:\n{}",
        both_lines(&lines)
    );
    // whose login failed: the name given, on the refused request's line
    // (/v2/ or /token: these rules' anonymous one brings token challenges)
    assert!(
        !matching(&lines, &[("user", USER), ("status", "401")]).is_empty(),
        "the refused login's 401 does not name {USER}:\n{}",
        both_lines(&lines)
    );
    assert!(
        with_status(&lines, "200", "/").is_empty(),
        "something answered 200 during the refused login:\n{}",
        both_lines(&lines)
    );
    assert!(
        docker.auth_entry(&s.host()).is_none(),
        "a refused login left credentials: {}",
        docker.config_json()
    );

    let mark = s.mark();
    s.login(&docker, (USER, PASS));
    let lines = s.access_since(mark);
    assert!(
        !matching(
            &lines,
            &[("user", USER), ("path", "/v2/"), ("status", "200")]
        )
        .is_empty(),
        "the accepted login: no GET /v2/ 200 as {USER}:\n{}",
        both_lines(&lines)
    );
    if mode == Mode::Token {
        assert!(
            !matching(
                &lines,
                &[("user", USER), ("path", "/token"), ("status", "200")]
            )
            .is_empty(),
            "the accepted login: no /token 200 as {USER}:\n{}",
            both_lines(&lines)
        );
    }
    assert!(
        docker.auth_entry(&s.host()).is_some(),
        "no auths entry for {} after the login: {}",
        s.host(),
        docker.config_json()
    );
}

in_both_modes!(login_refused_then_accepted: login_refused_then_accepted_basic, login_refused_then_accepted_token);

/// alice pushes a 3-layer image built with `docker build`; after `docker
/// rmi` a pull by tag and a pull by digest give the same image ID; the
/// registry holds the pushed manifest; no answer of the proxy was a 5xx.
fn push_rmi_pull(mode: Mode) {
    let s = start(mode);
    let docker = s.engine.client();
    s.login(&docker, (USER, PASS));
    let tagged = s.image("team-a/app:1");
    let id = docker.build_scratch(&tagged, 3, 1);
    let mark = s.mark();
    let out = s.push(&docker, &tagged);
    let digest = pushed_digest(&out);

    // the registry itself holds it: the tag, the manifest with the 3 layers
    assert_eq!(s.registry_tags("team-a/app"), ["1"]);
    let m = s.reg.stored_manifest("team-a/app", "1");
    assert_eq!(
        m["layers"].as_array().map(Vec::len),
        Some(3),
        "layers of the stored manifest: {m}"
    );
    assert_eq!(
        s.registry_status(&format!("team-a/app/manifests/{digest}")),
        200,
        "the pushed digest {digest} is not in the registry"
    );
    let repo_digest = docker.inspect("{{index .RepoDigests 0}}", &tagged);
    assert_eq!(repo_digest, format!("{}@{digest}", s.image("team-a/app")));

    s.docker_ok(&docker, &["rmi", &tagged]);
    assert!(!docker.has_image(&id), "{id} still there after docker rmi");
    s.docker_ok(&docker, &["pull", &tagged]);
    assert_eq!(docker.image_id(&tagged), id, "image ID after the pull");

    s.docker_ok(&docker, &["rmi", &tagged]);
    assert!(!docker.has_image(&id), "{id} still there after docker rmi");
    s.docker_ok(&docker, &["pull", &repo_digest]);
    assert_eq!(
        docker.image_id(&repo_digest),
        id,
        "image ID after the pull by digest"
    );

    let lines = s.access_since(mark);
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| log_field(l, "status").is_some_and(|st| st.starts_with('5')))
        .collect();
    assert!(
        errors.is_empty(),
        "5xx answers during push and pull: {errors:#?}"
    );
}

in_both_modes!(push_rmi_pull: push_rmi_pull_basic, push_rmi_pull_token);

/// Directory accounts (a real slapd): bob (group ci-pushers) logs in with
/// `docker login` and pushes, alice (group devs) pulls what he pushed and
/// may not push; the rules go by their directory groups. The htpasswd file
/// holds only a robot, so every login here is checked against LDAP.
fn ldap_accounts_log_in_push_and_pull(mode: Mode) {
    let slapd = Slapd::start();
    let rules = vec![
        Rule::groups(&["ci-pushers"]).on(&["team/*"]).pull_push(),
        Rule::groups(&["devs"]).on(&["team/*"]).pull(),
    ];
    let ldap = slapd.ldap_config();
    let s = start_on(mode, &[("robot", "robot-pw")], rules, |o| o.ldap(&ldap));
    let bob = s.engine.client();
    let o = bob.login(&[], "bob", Password::Arg("not-bob-pw"), &s.host());
    assert_failed("docker login of bob with a wrong password", &o);
    s.login(&bob, ("bob", "bob-pw"));
    assert!(
        slapd.binds_as("uid=bob,ou=people,dc=example,dc=org") > 0,
        "{}",
        slapd.log()
    );
    let app = s.image("team/app:1");
    let id = bob.build_scratch(&app, 2, 7);
    let mark = s.mark();
    s.push(&bob, &app);
    assert!(
        !matching(&s.access_since(mark), &[("user", "bob"), ("status", "201")]).is_empty(),
        "bob's push: no 201 as bob"
    );
    assert_eq!(s.registry_tags("team/app"), ["1"]);

    let alice = s.engine.client();
    s.login(&alice, ALICE);
    s.docker_ok(&alice, &["pull", &app]);
    assert_eq!(alice.image_id(&app), id, "alice's pull of bob's push");
    let mine = s.image("team/app:alice");
    s.docker_ok(&alice, &["tag", &app, &mine]);
    let o = alice.run(&["push", &mine], None);
    assert_failed("alice's push (devs only pull)", &o);
    assert_eq!(s.registry_tags("team/app"), ["1"]);
}

/// A robot account's access token as the `docker login` password: the
/// engine pushes with it and pulls back the same image; a push outside
/// the token's scopes is refused; after `portcullis token revoke` the
/// engine's stored credentials stop working.
fn robot_token_logs_in_and_pushes(mode: Mode) {
    let rules = vec![
        Rule::groups(&["ci"]).on(&["team-a/**"]).all(),
        Rule::users(&["alice"]).on(&["team-a/**"]).pull_push(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let table = format!("[auth.tokens]\npath = \"{}\"\n", tokens.display());
    let s = start_on(mode, &[(USER, PASS)], rules, |o| o.toml(&table));
    let config = s.proxy.config_path().display().to_string();
    let o = portcullis(
        &[
            "token",
            "create",
            "--config",
            &config,
            "--robot",
            "--name",
            "builder",
            "--group",
            "ci",
            "--scope",
            "team-a/app:pull,push",
            "--expires",
            "1h",
        ],
        None,
    );
    assert!(o.status.success(), "token create: {o:?}");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let secret = out.split_whitespace().last().unwrap().to_string();
    let robot = s.engine.client();
    wait_until(
        "the proxy loaded the token file",
        Duration::from_secs(10),
        // (the key file, written first, may trigger a reload of its own
        // that finds no token yet)
        || s.proxy.log_text().contains("token file reloaded tokens=1"),
        || s.proxy.logs(),
    );
    s.login(&robot, ("robot$builder", &secret));
    let app = s.image("team-a/app:1");
    let id = robot.build_scratch(&app, 2, 11);
    s.push(&robot, &app);
    s.docker_ok(&robot, &["rmi", &app]);
    s.docker_ok(&robot, &["pull", &app]);
    assert_eq!(robot.image_id(&app), id, "the robot's pull");
    // the group's rule allows team-a/**, the token only team-a/app
    let other = s.image("team-a/other:1");
    s.docker_ok(&robot, &["tag", &app, &other]);
    assert_failed(
        "push outside the token's scopes",
        &robot.run(&["push", &other], None),
    );
    assert_eq!(s.registry_tags("team-a/other"), Vec::<String>::new());

    let o = portcullis(&["token", "revoke", "--config", &config, "builder"], None);
    assert!(o.status.success(), "token revoke: {o:?}");
    s.docker_ok(&robot, &["rmi", &app]);
    wait_until(
        "the revoked token's pull is refused",
        Duration::from_secs(20),
        || !robot.run(&["pull", &app], None).status.success(),
        || s.proxy.logs(),
    );
}

in_both_modes!(robot_token_logs_in_and_pushes:
    robot_token_logs_in_and_pushes_basic,
    robot_token_logs_in_and_pushes_token);

in_both_modes!(ldap_accounts_log_in_push_and_pull:
    ldap_accounts_log_in_push_and_pull_basic,
    ldap_accounts_log_in_push_and_pull_token);

/// bob may only pull team-a/**: he pulls alice's image, but his pushes (a
/// new repository, a new tag of alice's) are refused by the proxy and
/// nothing reaches the registry's storage.
fn pull_only_user_cannot_push(mode: Mode) {
    let s = start(mode);
    let alice = s.engine.client();
    s.login(&alice, (USER, PASS));
    let app = s.image("team-a/app:1");
    let id = alice.build_scratch(&app, 2, 2);
    s.push(&alice, &app);
    s.docker_ok(&alice, &["rmi", &app]);

    let bob = s.engine.client();
    s.login(&bob, BOB);
    s.docker_ok(&bob, &["pull", &app]);
    assert_eq!(bob.image_id(&app), id, "bob's pull");

    let reg_mark = s.reg.logged_uris().len();
    for target in [s.image("team-a/bob-app:1"), s.image("team-a/app:bob")] {
        s.docker_ok(&bob, &["tag", &app, &target]);
        let mark = s.mark();
        let o = bob.run(&["push", &target], None);
        assert_failed(&format!("bob's push of {target}"), &o);
        let lines = s.access_since(mark);
        let refused: Vec<&String> = lines
            .iter()
            .filter(|l| matches!(log_field(l, "status"), Some("401" | "403")))
            .collect();
        assert!(
            !refused.is_empty(),
            "bob's push of {target}: no 401/403 in the access log:\n{}",
            both_lines(&lines)
        );
        let stored: Vec<&String> = lines
            .iter()
            .filter(|l| matches!(log_field(l, "status"), Some("201" | "202")))
            .collect();
        assert!(
            stored.is_empty(),
            "bob's push of {target} got upload/manifest answers: {stored:#?}"
        );
    }

    // what reached the registry, before this test's own checks ask it
    let uris = s.reg.logged_uris().split_off(reg_mark);
    let reached: Vec<&String> = uris
        .iter()
        .filter(|u| u.contains("/blobs/uploads") || u.contains("/manifests/"))
        .collect();
    assert!(
        reached.is_empty(),
        "bob's refused pushes reached the registry: {reached:?}"
    );
    assert_eq!(s.registry_tags("team-a/bob-app"), Vec::<String>::new());
    assert_eq!(s.registry_status("team-a/bob-app/manifests/1"), 404);
    assert_eq!(s.registry_tags("team-a/app"), ["1"]);
    assert_eq!(s.registry_status("team-a/app/manifests/bob"), 404);
}

in_both_modes!(pull_only_user_cannot_push: pull_only_user_cannot_push_basic, pull_only_user_cannot_push_token);

/// A refused layer upload ends the push at once: the engine does not retry
/// it (dockerd logs `Upload failed, retrying: …` for each retry, and backs
/// off 5, 10, 15 then 20 s). It retries any error it does not recognise as
/// final. The rules here have no anonymous rule, so Basic mode is plain
/// Basic (Basic challenges, no token endpoint) and the upload `POST` is
/// answered 403 `DENIED`; its detail names the refused access, as
/// `registry:2`'s refusals do. Without it (a null detail and the code's
/// stock message) the engine's registry client decodes the error as a
/// bare code, which its retry logic does not take for a denial: the push
/// was retried for about 50 s. In token mode the refusal is a 401 with an
/// `insufficient_scope` challenge, which is final.
fn refused_push_is_not_retried(mode: Mode) {
    let rules: Vec<Rule> = team_a_rules(&["pull", "push"])
        .into_iter()
        .filter(|r| !r.is_anonymous())
        .collect();
    let s = start_with(mode, rules);
    let bob = s.engine.client();
    s.login(&bob, BOB);
    let image = s.image("team-a/bob-app:1");
    bob.build_scratch(&image, 1, 6);
    let mark = s.mark();
    let o = bob.run(&["push", &image], None);
    assert_failed("bob's push", &o);
    let lines = s.access_since(mark);
    assert!(
        !with_status(
            &lines,
            if mode == Mode::Basic { "403" } else { "401" },
            "/v2/team-a/bob-app/blobs/uploads/"
        )
        .is_empty(),
        "bob's push: the upload was not refused:\n{}",
        both_lines(&lines)
    );
    let retries: Vec<String> = s
        .engine
        .log_text()
        .lines()
        .filter(|l| l.contains("Upload failed, retrying"))
        .map(str::to_string)
        .collect();
    let posts = matching(
        &lines,
        &[
            ("method", "POST"),
            ("path", "/v2/team-a/bob-app/blobs/uploads/"),
        ],
    );
    assert!(
        retries.is_empty(),
        "the engine retried the refused upload ({} POSTs of the upload):\n{}\naccess log:\n{}",
        posts.len(),
        retries.join("\n"),
        both_lines(&lines)
    );
}

in_both_modes!(refused_push_is_not_retried:
    refused_push_is_not_retried_basic,
    refused_push_is_not_retried_token);

/// After `docker logout` the credentials are gone from `$DOCKER_CONFIG` and
/// a pull of a team-a image is refused (401/403 in the access log).
fn logout_forgets_the_credentials(mode: Mode) {
    let s = start(mode);
    let docker = s.engine.client();
    s.login(&docker, (USER, PASS));
    let app = s.image("team-a/app:1");
    docker.build_scratch(&app, 1, 3);
    s.push(&docker, &app);
    s.docker_ok(&docker, &["rmi", &app]);

    let out = s.docker_ok(&docker, &["logout", &s.host()]);
    assert!(out.contains("Removing login credentials"), "logout: {out}");
    assert!(
        docker.auth_entry(&s.host()).is_none(),
        "credentials left after logout: {}",
        docker.config_json()
    );

    let mark = s.mark();
    let o = docker.run(&["pull", &app], None);
    assert_failed("pull of team-a/app after logout", &o);
    let lines = s.access_since(mark);
    assert!(
        lines
            .iter()
            .any(|l| matches!(log_field(l, "status"), Some("401" | "403"))),
        "pull after logout: no 401/403 in the access log:\n{}",
        both_lines(&lines)
    );
    assert!(
        with_status(&lines, "200", "/v2/team-a/").is_empty(),
        "pull after logout: team-a answered 200:\n{}",
        both_lines(&lines)
    );
    assert!(
        lines.iter().all(|l| log_field(l, "user") == Some("-")),
        "a request after logout was authenticated:\n{}",
        both_lines(&lines)
    );
}

in_both_modes!(logout_forgets_the_credentials: logout_forgets_the_credentials_basic, logout_forgets_the_credentials_token);

/// In token mode `docker login` keeps an identity token (the refresh token
/// the endpoint returns for `offline_token=true`) in `$DOCKER_CONFIG`, not
/// the password, and a push then works on that token alone.
#[test]
fn token_login_keeps_an_identity_token_not_the_password() {
    use base64::Engine as _;
    let s = start(Mode::Token);
    let docker = s.engine.client();
    s.login(&docker, (USER, PASS));
    let entry = docker
        .auth_entry(&s.host())
        .unwrap_or_else(|| panic!("no auths entry: {}", docker.config_json()));
    let token = entry["identitytoken"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| panic!("no identitytoken in the auths entry: {entry}"));
    let claims = jwt_claims(token);
    assert_eq!(claims["sub"], USER, "identity token claims: {claims}");
    let b64 = base64::engine::general_purpose::STANDARD;
    let file = std::fs::read_to_string(docker.config_path()).unwrap();
    for secret in [
        PASS.to_string(),
        b64.encode(PASS),
        b64.encode(format!("{USER}:{PASS}")),
    ] {
        assert!(
            !file.contains(&secret),
            "config.json holds the password ({secret}): {file}"
        );
    }
    if let Some(auth) = entry["auth"].as_str() {
        let decoded = b64.decode(auth).expect("auth is base64");
        assert_eq!(
            String::from_utf8_lossy(&decoded),
            format!("{USER}:"),
            "auth of the entry: the user name only"
        );
    }

    // the push authenticates with the identity token (the refresh grant)
    let app = s.image("team-a/app:1");
    docker.build_scratch(&app, 1, 4);
    let mark = s.mark();
    s.push(&docker, &app);
    let lines = s.access_since(mark);
    assert!(
        !matching(
            &lines,
            &[
                ("method", "POST"),
                ("path", "/token"),
                ("status", "200"),
                ("user", USER)
            ]
        )
        .is_empty(),
        "the push did not use the refresh grant (POST /token 200 as {USER}):\n{}",
        both_lines(&lines)
    );
    assert_eq!(s.registry_tags("team-a/app"), ["1"]);
}

/// alice pushes public/base:1; after `docker logout` and `docker rmi` an
/// anonymous pull gets the same image (the anonymous rule for public/**).
fn anonymous_pull_of_public(mode: Mode) {
    let s = start(mode);
    let docker = s.engine.client();
    s.login(&docker, (USER, PASS));
    let base = s.image("public/base:1");
    let id = docker.build_scratch(&base, 2, 5);
    s.push(&docker, &base);
    s.docker_ok(&docker, &["logout", &s.host()]);
    s.docker_ok(&docker, &["rmi", &base]);
    assert!(!docker.has_image(&id), "{id} still there after docker rmi");

    let mark = s.mark();
    let o = docker.run(&["pull", &base], None);
    let lines = s.access_since(mark);
    assert!(
        o.status.success(),
        "anonymous pull of {base}: {}\naccess log:\n{}\n{}",
        out_text(&o),
        both_lines(&lines),
        s.engine.logs()
    );
    assert_eq!(
        docker.image_id(&base),
        id,
        "image ID after the anonymous pull"
    );
    assert!(
        !matching(
            &lines,
            &[
                ("user", "-"),
                ("path", "/v2/public/base/manifests/1"),
                ("status", "200")
            ]
        )
        .is_empty(),
        "no anonymous GET of the manifest answered 200:\n{}",
        both_lines(&lines)
    );
}

in_both_modes!(anonymous_pull_of_public:
    anonymous_pull_of_public_basic,
    anonymous_pull_of_public_token);
