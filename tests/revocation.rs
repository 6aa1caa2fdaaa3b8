//! The revocation list of issued tokens (`auth.token.revocation_file`),
//! written by the real `portcullis token revoke` and `user remove
//! --config` commands and reloaded by a running proxy in token mode: a
//! revoked access token's bearer tokens, a removed user's access and
//! refresh tokens, one token by `jti` and everything of one subject stop
//! working before they expire, and nothing else does.

mod support;

use reqwest::Method;
use std::time::Duration;
use support::*;

struct Setup {
    _reg: Registry,
    proxy: Proxy,
    dir: tempfile::TempDir,
}

/// Token mode; alice and bob pull and push team/**.
fn start() -> Setup {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = vec![Rule::users(&["alice", "bob"]).on(&["team/**"]).pull_push()];
    let tokens = dir.path().join("tokens.toml");
    // tokens that would outlive the test by far: only revocation ends them
    let opts = ProxyOptions::token_with(
        &[(USER, PASS), BOB],
        dir.path(),
        "lifetime = \"1h\"\nrefresh_lifetime = \"7d\"\n",
    )
    .rules(&rules)
    .toml(&format!("[auth.tokens]\npath = \"{}\"\n", tokens.display()));
    let proxy = Proxy::start(&reg, opts);
    Setup {
        _reg: reg,
        proxy,
        dir,
    }
}

const TAGS: &str = "/v2/team/app/tags/list";
const SCOPE: &str = "repository:team/app:pull";

impl Setup {
    /// `portcullis ARGS` with `--config` after the first two words.
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let config = self.proxy.config_path().display().to_string();
        let mut all = args[..2].to_vec();
        all.extend(["--config", &config]);
        all.extend_from_slice(&args[2..]);
        let o = portcullis(&all, None);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    }

    /// An access token (and a refresh token) from the token endpoint.
    fn login(&self, user: &str, pass: &str) -> (String, String) {
        let (status, v) = self.proxy.get_token(Some((user, pass)), &[SCOPE], true);
        assert_eq!(
            status,
            200,
            "GET /token as {user}: {v}\n{}",
            self.proxy.logs()
        );
        let refresh = v["refresh_token"].as_str().unwrap_or_default().to_owned();
        (v["token"].as_str().unwrap().to_owned(), refresh)
    }

    /// `token create --owner alice --scope team/**:pull ARGS`: the secret.
    fn create_for_alice(&self, args: &[&str]) -> String {
        let mut all = vec![
            "token",
            "create",
            "--owner",
            "alice",
            "--scope",
            "team/**:pull",
        ];
        all.extend_from_slice(args);
        let (ok, out) = self.cli(&all);
        assert!(ok, "{out}");
        out.split_whitespace().last().unwrap().to_owned()
    }

    /// An access token for `user`/`pass` once the proxy takes them (after
    /// the reload of a file the test just wrote).
    fn login_once_loaded(&self, what: &str, user: &str, pass: &str) -> String {
        wait_for(
            what,
            Duration::from_secs(10),
            Duration::from_millis(100),
            || match self.proxy.get_token(Some((user, pass)), &[SCOPE], false) {
                (200, v) => Ok(v["token"].as_str().unwrap().to_owned()),
                (st, v) => Err(format!("{st} {v}")),
            },
            || self.proxy.logs(),
        )
    }

    fn pull(&self, token: &str) -> u16 {
        self.proxy
            .bearer(Method::GET, TAGS, token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }

    /// Polls until `token` is refused: the proxy reloaded the list.
    fn wait_refused(&self, token: &str) {
        wait_until(
            "the revoked token is refused",
            Duration::from_secs(10),
            || self.pull(token) == 401,
            || self.proxy.logs(),
        );
    }
}

fn claim(jwt: &str, name: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v[name].clone()
}

#[test]
fn revoking_an_access_token_ends_the_bearer_tokens_it_minted() {
    let s = start();
    let secret = s.create_for_alice(&["--name", "ci"]);
    let minted = s.login_once_loaded("a token for the access token", USER, &secret);
    let (with_password, _) = s.login(USER, PASS);
    // the JWTs live auth.token.lifetime (1h here) ...
    let life =
        |jwt: &str| claim(jwt, "exp").as_u64().unwrap() - claim(jwt, "iat").as_u64().unwrap();
    assert_eq!(life(&minted), 3600);
    // ... but never past the access token they were minted from
    let short = s.create_for_alice(&["--name", "short", "--expires", "2m"]);
    let short_jwt = s.login_once_loaded("a token for the short-lived access token", USER, &short);
    assert!(
        (100..=120).contains(&life(&short_jwt)),
        "{}",
        life(&short_jwt)
    );
    // the minted token names its access token; the password's does not
    let (ok, shown) = s.cli(&["token", "show", "ci"]);
    assert!(ok, "{shown}");
    let id = shown
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    assert_eq!(claim(&minted, "tid"), serde_json::json!(id));
    assert!(claim(&with_password, "tid").is_null());
    // the registry answers (an unknown repository): the tokens are good
    assert_eq!(s.pull(&minted), 404, "{}", s.proxy.logs());
    assert_eq!(s.pull(&with_password), 404);

    let (ok, out) = s.cli(&["token", "revoke", "ci"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("revoked the tokens issued with access token"),
        "{out}"
    );
    s.wait_refused(&minted);
    let logs = s.proxy.logs();
    assert!(logs.contains("revocation list reloaded"), "{logs}");
    assert!(logs.contains("revoked_access_token"), "{logs}");
    // alice's own login is not that access token
    assert_eq!(s.pull(&with_password), 404);
    // the secret itself is gone too
    assert_eq!(
        s.proxy.get_token(Some((USER, &secret)), &[SCOPE], false).0,
        401
    );
}

#[test]
fn user_remove_with_the_config_ends_the_users_access_and_refresh_tokens() {
    let s = start();
    let (alice, alice_refresh) = s.login(USER, PASS);
    let (bob, bob_refresh) = s.login(BOB.0, BOB.1);
    assert_eq!(s.pull(&alice), 404);
    assert_eq!(s.proxy.refresh(&alice_refresh, SCOPE).0, 200);

    let (ok, out) = s.cli(&["user", "remove", "alice"]);
    assert!(ok, "{out}");
    assert!(out.contains("revoked every token issued to alice"), "{out}");
    s.wait_refused(&alice);
    assert_eq!(s.proxy.refresh(&alice_refresh, SCOPE).0, 401);
    // bob is someone else
    assert_eq!(s.pull(&bob), 404);
    assert_eq!(s.proxy.refresh(&bob_refresh, SCOPE).0, 200);

    // alice back with a new password: tokens issued after the revocation
    // work (the second of the revocation still counts as before it)
    let add = std::process::Command::new(support::bin())
        .args(["user", "add", "--file"])
        .arg(s.proxy.htpasswd_path())
        .args(["--cost", "4", "--password-stdin", "alice"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"new-pass\n")?;
            c.wait()
        })
        .unwrap();
    assert!(add.success());
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = s.login_once_loaded("a login as the re-added alice", USER, "new-pass");
    assert_eq!(s.pull(&fresh), 404, "{}", s.proxy.logs());
    assert_eq!(s.pull(&alice), 401);
}

#[test]
fn one_token_by_jti_and_a_subject_everywhere() {
    let s = start();
    let (first, _) = s.login(USER, PASS);
    let (second, _) = s.login(USER, PASS);
    let jti = claim(&first, "jti");
    let jti = jti.as_str().unwrap();
    let (ok, out) = s.cli(&[
        "token",
        "revoke",
        "--jti",
        jti,
        "--reason",
        "pasted in a CI log",
    ]);
    assert!(ok, "{out}");
    s.wait_refused(&first);
    assert_eq!(s.pull(&second), 404, "only that token");

    let (bob, bob_refresh) = s.login(BOB.0, BOB.1);
    let (ok, out) = s.cli(&["token", "revoke", "--subject", "bob"]);
    assert!(ok, "{out}");
    s.wait_refused(&bob);
    assert_eq!(s.proxy.refresh(&bob_refresh, SCOPE).0, 401);
    assert_eq!(s.pull(&second), 404, "alice is not bob");
    // bob still exists: his next login works
    std::thread::sleep(Duration::from_millis(1100));
    let (again, _) = s.login(BOB.0, BOB.1);
    assert_eq!(s.pull(&again), 404);

    // the list says what, when and why, and holds no token
    let text = std::fs::read_to_string(s.dir.path().join("revoked.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries = v["revoked"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{text}");
    assert_eq!(entries[0]["jti"], serde_json::json!(jti));
    assert_eq!(
        entries[0]["reason"],
        serde_json::json!("pasted in a CI log")
    );
    assert_eq!(entries[1]["subject"], serde_json::json!("bob"));
    let signature = first.rsplit('.').next().unwrap();
    assert!(!text.contains(signature), "{text}");

    // revoking needs a target
    let (ok, out) = s.cli(&["token", "revoke"]);
    assert!(!ok, "{out}");
}

#[test]
fn a_broken_revocation_list_keeps_the_previous_one_and_fails_check() {
    let s = start();
    let (alice, _) = s.login(USER, PASS);
    let (ok, out) = s.cli(&["token", "revoke", "--subject", "alice"]);
    assert!(ok, "{out}");
    s.wait_refused(&alice);
    let path = s.dir.path().join("revoked.json");
    std::fs::write(
        &path,
        "{\"revoked\": [{\"subject\": \"alice\", \"at\": \"soon\"",
    )
    .unwrap();
    wait_until(
        "the reload error",
        Duration::from_secs(10),
        || {
            s.proxy
                .logs()
                .contains("revocation list changed but does not load")
        },
        || s.proxy.logs(),
    );
    assert_eq!(s.pull(&alice), 401, "the previous list still applies");
    let config = s.proxy.config_path().display().to_string();
    let o = portcullis(&["check", "--config", &config], None);
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("auth.token.revocation_file"), "{err}");
    assert!(err.contains("revoked.json"), "{err}");
}

#[test]
fn users_removed_or_given_a_new_password_by_any_tool_lose_their_tokens() {
    let s = start();
    let (alice, _) = s.login(USER, PASS);
    let (bob, bob_refresh) = s.login(BOB.0, BOB.1);
    let htpasswd = s.proxy.htpasswd_path();
    // apache's own tool, not portcullis: the proxy sees alice go on reload
    let o = std::process::Command::new("htpasswd")
        .arg("-D")
        .arg(&htpasswd)
        .arg("alice")
        .output()
        .expect("run apache's htpasswd");
    assert!(o.status.success(), "{o:?}");
    s.wait_refused(&alice);
    let logs = s.proxy.logs();
    assert!(
        logs.contains("removed or changed users: their issued tokens are revoked"),
        "{logs}"
    );
    assert_eq!(s.pull(&bob), 404, "bob is unchanged");

    // a new password for bob ends what his old one got
    let o = std::process::Command::new("htpasswd")
        .args(["-b", "-B", "-C", "4"])
        .arg(&htpasswd)
        .args(["bob", "bobs-new-pw"])
        .output()
        .expect("run apache's htpasswd");
    assert!(o.status.success(), "{o:?}");
    s.wait_refused(&bob);
    assert_eq!(s.proxy.refresh(&bob_refresh, SCOPE).0, 401);
    std::thread::sleep(Duration::from_millis(1100));
    let (fresh, _) = s.login(BOB.0, "bobs-new-pw");
    assert_eq!(s.pull(&fresh), 404);
}
