//! Access tokens and robot accounts (`[auth.tokens]`), made with the real
//! `portcullis token` commands and used through a real proxy and registry:
//! a token acts as its owner cut down to its scopes, a robot with its own
//! groups; revocation, expiry, owner removal and a broken token file take
//! effect on reload; the secret is shown once and stored nowhere.

mod support;

use reqwest::Method;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use support::*;

struct Setup {
    _reg: Registry,
    proxy: Proxy,
    dir: tempfile::TempDir,
}

/// alice pulls and pushes team/**, bob pulls it, group ci pushes it.
fn start(token_mode: bool) -> Setup {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = vec![
        Rule::users(&["alice"]).on(&["team/**"]).pull_push(),
        Rule::users(&["bob"]).on(&["team/**"]).pull(),
        Rule::groups(&["ci"]).on(&["team/**"]).pull_push(),
    ];
    let users = [(USER, PASS), BOB];
    let opts = match token_mode {
        false => ProxyOptions::basic(&users),
        true => ProxyOptions::token(&users, dir.path()),
    };
    let tokens = dir.path().join("tokens.toml");
    let opts = opts.rules(&rules).toml(&format!(
        "[auth.tokens]\npath = \"{}\"\nmax_lifetime = \"30d\"\nlast_used_interval = \"1s\"\n",
        tokens.display()
    ));
    let mut opts = opts;
    // a line of the [log] table the harness config ends with
    opts.extra_toml = format!(
        "audit_file = {:?}\n{}",
        dir.path().join("audit.log").display().to_string(),
        opts.extra_toml
    );
    let proxy = Proxy::start(&reg, opts);
    Setup {
        _reg: reg,
        proxy,
        dir,
    }
}

impl Setup {
    fn config(&self) -> String {
        self.proxy.config_path().display().to_string()
    }

    fn tokens_file(&self) -> PathBuf {
        self.dir.path().join("tokens.toml")
    }

    /// `portcullis token ARGS --config …`: (exit ok, stdout, stderr).
    fn token(&self, args: &[&str]) -> (bool, String, String) {
        let config = self.config();
        let mut all = vec!["token", args[0], "--config", &config];
        all.extend_from_slice(&args[1..]);
        let o = portcullis(&all, None);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// `token create ARGS`; the secret, the last word of its output.
    fn create(&self, args: &[&str]) -> String {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.token(&all);
        assert!(ok, "token create {args:?}: {out}{err}");
        let secret = out.split_whitespace().last().unwrap().to_string();
        assert!(secret.starts_with("pcat_"), "{out}");
        secret
    }

    /// A robot `name` in `group` with one scope, for a day; its secret.
    fn robot(&self, name: &str, group: &str, scope: &str) -> String {
        self.create(&[
            "--robot",
            "--name",
            name,
            "--group",
            group,
            "--scope",
            scope,
            "--expires",
            "1d",
        ])
    }

    fn status(&self, method: Method, path: &str, user: &str, pass: &str) -> u16 {
        self.proxy.status_as(method, path, (user, pass))
    }

    /// Polls until `user`/`pass` on `GET /v2/` gets `want` (a reload).
    fn wait_login(&self, user: &str, pass: &str, want: u16) {
        wait_until(
            &format!("GET /v2/ as {user} answers {want}"),
            Duration::from_secs(10),
            || self.status(Method::GET, "/v2/", user, pass) == want,
            || self.proxy.logs(),
        );
    }
}

const UPLOAD: &str = "/v2/team/app/blobs/uploads/";

#[test]
fn a_token_acts_as_its_owner_within_its_scopes_until_revoked() {
    let s = start(false);
    let secret = s.create(&[
        "--owner",
        "alice",
        "--name",
        "ci-pull",
        "--scope",
        "team/**:pull",
        "--expires",
        "7d",
    ]);
    s.wait_login(USER, &secret, 200);
    // pull is in its scopes (the registry answers: the repository is unknown)
    assert_eq!(
        s.status(Method::GET, "/v2/team/app/tags/list", USER, &secret),
        404
    );
    // push is alice's right, not the token's
    assert_eq!(s.status(Method::POST, UPLOAD, USER, &secret), 403);
    assert_eq!(s.status(Method::POST, UPLOAD, USER, PASS), 202);
    // a token is its owner's: not bob's, whose rules would not matter
    assert_eq!(s.status(Method::GET, "/v2/", "bob", &secret), 401);

    // stored as a hash only, 0600; listed without the secret
    let file = std::fs::read_to_string(s.tokens_file()).unwrap();
    assert!(
        file.contains("ci-pull") && file.contains("hmac-sha256:"),
        "{file}"
    );
    assert!(
        !file.contains(&secret[18..]),
        "the secret is in the token file"
    );
    for f in [s.tokens_file(), s.dir.path().join("tokens.toml.key")] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    // last used: written within last_used_interval (1s) of a use
    wait_until(
        "token list shows a last-used time",
        Duration::from_secs(10),
        || {
            s.status(Method::GET, "/v2/", USER, &secret);
            let (_, out, _) = s.token(&["list"]);
            out.lines()
                .any(|l| l.starts_with("ci-pull\t") && !l.ends_with("never"))
        },
        || s.token(&["list"]).1,
    );
    let (ok, out, _) = s.token(&["list"]);
    assert!(ok && out.contains("ci-pull\talice\tteam/**:pull"), "{out}");
    let (ok, shown, _) = s.token(&["show", "ci-pull"]);
    assert!(
        ok && shown.contains("user: alice") && shown.contains("expires: 20"),
        "{shown}"
    );
    assert!(!out.contains(&secret[18..]) && !shown.contains(&secret[18..]));
    assert!(
        !s.proxy.log_text().contains(&secret[18..]),
        "the secret is in the proxy's log"
    );

    // a name taken, a bad scope: refused with the reason
    let (ok, _, err) = s.token(&[
        "create",
        "--owner",
        "alice",
        "--name",
        "ci-pull",
        "--scope",
        "x:pull",
        "--expires",
        "1d",
    ]);
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, _, err) = s.token(&[
        "create",
        "--owner",
        "alice",
        "--name",
        "other",
        "--scope",
        "x:write",
        "--expires",
        "1d",
    ]);
    assert!(!ok && err.contains("unknown action"), "{err}");

    let (ok, _, err) = s.token(&["revoke", "ci-pull"]);
    assert!(ok, "{err}");
    s.wait_login(USER, &secret, 401);
    assert_eq!(
        s.status(Method::GET, "/v2/", USER, PASS),
        200,
        "the password still works"
    );
}

#[test]
fn a_robot_logs_in_with_its_own_groups_and_scopes() {
    let s = start(false);
    let secret = s.create(&[
        "--robot",
        "--name",
        "deployer",
        "--group",
        "ci",
        "--scope",
        "team/**:pull,push",
        "--expires",
        "1d",
    ]);
    s.wait_login("robot$deployer", &secret, 200);
    assert_eq!(
        s.status(Method::POST, UPLOAD, "robot$deployer", &secret),
        202
    );
    assert_eq!(
        s.status(
            Method::GET,
            "/v2/other/app/tags/list",
            "robot$deployer",
            &secret
        ),
        403
    );
    assert_eq!(
        s.status(Method::GET, "/v2/", "deployer", &secret),
        401,
        "the robot's name is robot$NAME"
    );
    let (_, shown, _) = s.token(&["show", "deployer"]);
    assert!(
        shown.contains("kind: robot") && shown.contains("groups: ci"),
        "{shown}"
    );
}

#[test]
fn expiry_owner_removal_and_max_lifetime() {
    let s = start(false);
    // max_lifetime = 30d: no expiry, or a longer one, is refused
    let (ok, _, err) = s.token(&[
        "create",
        "--owner",
        "alice",
        "--name",
        "forever",
        "--scope",
        "team/**:pull",
    ]);
    assert!(!ok && err.contains("max_lifetime"), "{err}");
    let (ok, _, err) = s.token(&[
        "create",
        "--owner",
        "alice",
        "--name",
        "long",
        "--scope",
        "team/**:pull",
        "--expires",
        "60d",
    ]);
    assert!(
        !ok && err.contains("longer than auth.tokens.max_lifetime"),
        "{err}"
    );
    // an owner the htpasswd file does not know
    let (ok, _, err) = s.token(&[
        "create",
        "--owner",
        "carol",
        "--name",
        "c",
        "--scope",
        "team/**:pull",
        "--expires",
        "1d",
    ]);
    assert!(!ok && err.contains("no user carol"), "{err}");

    let short = s.create(&[
        "--owner",
        "alice",
        "--name",
        "short",
        "--scope",
        "team/**:pull",
        "--expires",
        "3s",
    ]);
    s.wait_login(USER, &short, 200);
    s.wait_login(USER, &short, 401);

    let bobs = s.create(&[
        "--owner",
        "bob",
        "--name",
        "bobs",
        "--scope",
        "team/**:pull",
        "--expires",
        "1d",
    ]);
    s.wait_login("bob", &bobs, 200);
    let htpasswd = s.proxy.htpasswd_path().display().to_string();
    let o = portcullis(&["user", "remove", "--file", &htpasswd, "bob"], None);
    assert!(o.status.success(), "{o:?}");
    s.wait_login("bob", &bobs, 401);
}

#[test]
fn a_broken_token_file_keeps_the_previous_tokens() {
    let s = start(false);
    let secret = s.robot("ci", "ci", "team/**:pull");
    s.wait_login("robot$ci", &secret, 200);
    let good = std::fs::read_to_string(s.tokens_file()).unwrap();
    std::fs::write(s.tokens_file(), format!("{good}\n[[token]]\nname = \"half")).unwrap();
    wait_until(
        "the broken token file is reported",
        Duration::from_secs(10),
        || {
            s.proxy
                .log_text()
                .contains("token file changed but does not load")
        },
        || s.proxy.logs(),
    );
    assert_eq!(s.status(Method::GET, "/v2/", "robot$ci", &secret), 200);
    let (ok, _, err) = s.token(&["list"]);
    assert!(!ok && err.contains("tokens.toml"), "{err}");
}

/// In token mode a token is a password at the token endpoint: the JWT it
/// gets is cut down to the token's scopes, and no refresh token is minted
/// (the client keeps the access token, so its revocation applies at once).
#[test]
fn the_token_endpoint_grants_a_token_no_more_than_its_scopes() {
    let s = start(true);
    let secret = s.create(&[
        "--owner",
        "alice",
        "--name",
        "ci",
        "--scope",
        "team/**:pull",
        "--expires",
        "1d",
    ]);
    let url = s.proxy.url(
        "/token?service=container-registry&scope=repository:team/app:pull,push&offline_token=true&client_id=test",
    );
    let got = |pass: &str| -> serde_json::Value {
        wait_for(
            "a token from /token",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                let r = s
                    .proxy
                    .client()
                    .get(&url)
                    .basic_auth(USER, Some(pass))
                    .send()
                    .map_err(|e| e.to_string())?;
                match r.status().as_u16() {
                    200 => r.json().map_err(|e| e.to_string()),
                    st => Err(format!("status {st}")),
                }
            },
            || s.proxy.logs(),
        )
    };
    let with_token = got(&secret);
    let with_password = got(PASS);
    let access = |v: &serde_json::Value| {
        let jwt = v["token"].as_str().unwrap().to_string();
        let claims = jwt.split('.').nth(1).unwrap().to_string();
        let bytes = base64_url_decode(&claims);
        let c: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        c["access"][0]["actions"].clone()
    };
    assert_eq!(access(&with_token), serde_json::json!(["pull"]));
    assert_eq!(access(&with_password), serde_json::json!(["pull", "push"]));
    assert!(with_token.get("refresh_token").is_none(), "{with_token}");
    assert!(
        with_password.get("refresh_token").is_some(),
        "{with_password}"
    );
}

fn base64_url_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .unwrap()
}

/// skopeo pushes and pulls with a robot's token as `--creds`, and is
/// refused outside the token's scopes.
#[test]
fn skopeo_copies_with_a_robot_token() {
    let s = start(false);
    let secret = s.create(&[
        "--robot",
        "--name",
        "mirror",
        "--group",
        "ci",
        "--scope",
        "team/app:pull,push",
        "--expires",
        "1d",
    ]);
    s.wait_login("robot$mirror", &secret, 200);
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_oci_layout(&src, "v1", 2, 21);
    let skopeo = Skopeo::in_dir(work.path());
    let creds = format!("robot$mirror:{secret}");
    let host = format!("127.0.0.1:{}", s.proxy.port());
    skopeo.push_layout(
        &s.proxy,
        &creds,
        &src,
        "v1",
        &format!("docker://{host}/team/app:v1"),
    );
    skopeo.pull_layout(
        &s.proxy,
        &creds,
        &format!("docker://{host}/team/app:v1"),
        &work.path().join("out"),
        "v1",
    );
    let cert_dir = s.proxy.cert_dir().display().to_string();
    let o = skopeo.run(
        &[
            "copy",
            "--dest-creds",
            &creds,
            "--dest-cert-dir",
            &cert_dir,
            &format!("oci:{}:v1", src.display()),
            &format!("docker://{host}/team/other:v1"),
        ],
        None,
    );
    assert_failed("skopeo push outside the token's scopes", &o);
}

/// Every login, accepted or refused, is an audit event with the user, the
/// client and the kind of credential; so are token create and revoke. No
/// secret is ever in the file.
#[test]
fn logins_and_token_changes_are_audited() {
    let s = start(false);
    let secret = s.robot("ci", "ci", "team/**:pull");
    s.wait_login("robot$ci", &secret, 200);
    assert_eq!(s.status(Method::GET, "/v2/", USER, PASS), 200);
    assert_eq!(s.status(Method::GET, "/v2/", USER, "wrong"), 401);
    // a pull's requests carry the credentials too: not each a login
    assert_eq!(
        s.status(Method::GET, "/v2/team/app/tags/list", USER, PASS),
        404
    );
    let (ok, _, err) = s.token(&["revoke", "ci"]);
    assert!(ok, "{err}");
    let path = s.dir.path().join("audit.log");
    let events = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_until(
        "the refused login's audit line",
        Duration::from_secs(5),
        || events().iter().any(|e| e["action"] == "login_refused"),
        || std::fs::read_to_string(&path).unwrap_or_default(),
    );
    let all = events();
    let find = |action: &str, user: &str| {
        all.iter()
            .find(|e| e["action"] == action && e["user"] == user)
            .unwrap_or_else(|| panic!("no {action} of {user} in {all:#?}"))
            .clone()
    };
    assert_eq!(find("token_create", "robot$ci")["credential"], "token:ci");
    assert_eq!(find("login", "robot$ci")["credential"], "token:ci");
    assert_eq!(find("login", "alice")["credential"], "password");
    assert_eq!(find("login", "alice")["client"], "127.0.0.1");
    let refused = find("login_refused", "alice");
    assert_eq!(refused["reason"], "bad_credentials");
    assert_eq!(refused["status"], 401);
    assert_eq!(find("token_revoke", "robot$ci")["credential"], "token:ci");
    let logins = all
        .iter()
        .filter(|e| e["action"] == "login" && e["user"] == "alice")
        .count();
    assert_eq!(logins, 1, "the tags/list request is no login: {all:#?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&secret[18..]) && !text.contains(PASS) && !text.contains("wrong"));
}
