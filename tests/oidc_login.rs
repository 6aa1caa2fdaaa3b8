//! The browser login (`[auth.oidc.login]`) against a real OpenID Provider
//! (oidc-provider, with its login page and PKCE required), driven by
//! headless Chromium: the page's token logs the Docker engine, podman and
//! skopeo in; the pages and the cookie are what a careful web app sends;
//! a callback from another browser or a replayed one is refused; the token
//! follows the person at the provider (new groups are picked up; disabled,
//! or no longer in the required group, the token and the registry tokens
//! minted from it stop working within the refresh interval); a rotation
//! of the provider's signing key is picked up without a restart.

mod support;

use reqwest::Method;
use std::time::Duration;
use support::oidc::*;
use support::*;

const DAVE: &str = "dave";
const DAVE_PW: &str = "dave-at-the-idp";

struct Setup {
    _reg: Registry,
    proxy: Proxy,
    provider: Provider,
    _dir: tempfile::TempDir,
}

/// Token mode; dave (only at the provider) pushes team/** as a member of
/// pushers and pulls shared/** as one of devs; the login needs the
/// registry-users group and refreshes sessions every 2 s.
fn start() -> Setup {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let provider_port = free_port();
    let provider_url = format!("https://127.0.0.1:{provider_port}");
    // the provider's CA, trusted by the proxy (the provider starts after
    // the proxy: its client's redirect URI names the proxy's port)
    let idp_ca = Ca::new("test provider CA");
    let ca = dir.path().join("idp-ca.pem");
    std::fs::write(&ca, &idp_ca.pem).unwrap();
    let rules = vec![
        Rule::groups(&["pushers"]).on(&["team/**"]).pull_push(),
        Rule::groups(&["devs"]).on(&["shared/**"]).pull(),
    ];
    let mut opts = ProxyOptions::token(&[(USER, PASS)], dir.path());
    // a line of the [log] table the harness config ends with
    opts.extra_toml = format!(
        "audit_file = {:?}\n",
        dir.path().join("audit.log").display().to_string()
    );
    let opts = opts.rules(&rules).toml(&format!(
        r#"
[auth.tokens]
path = "{tokens}"
max_lifetime = "30d"

[auth.oidc]
ca_file = "{ca}"
min_refetch_interval = "1s"

[auth.oidc.login]
issuer = "{provider_url}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
redirect_url = "https://127.0.0.1:{{PROXY_PORT}}/login/callback"
required_claims = {{ groups = "registry-users" }}
token_lifetime = "7d"
refresh_interval = "2s"
max_offline = "1h"
"#,
        tokens = dir.path().join("tokens.toml").display(),
        ca = ca.display(),
    ));
    let proxy = Proxy::start(&reg, opts);
    let provider = Provider::start(
        provider_port,
        &idp_ca,
        &format!("https://127.0.0.1:{}/login/callback", proxy.port()),
        &[Account {
            id: DAVE,
            password: DAVE_PW,
            groups: &["devs", "registry-users"],
        }],
    );
    // the proxy's first fetch of the provider's keys ran before the
    // provider was up: the next is at most min_refetch_interval later
    wait_until(
        "the login page sends browsers to the provider",
        Duration::from_secs(20),
        || {
            proxy
                .client()
                .get(proxy.url("/login"))
                .send()
                .is_ok_and(|r| r.status() == 303)
        },
        || proxy.logs(),
    );
    Setup {
        _reg: reg,
        proxy,
        provider,
        _dir: dir,
    }
}

impl Setup {
    fn login_url(&self) -> String {
        self.proxy.url("/login")
    }

    /// A browser login as dave: the page's token.
    fn browser_token(&self) -> (BrowserResult, String) {
        let r = browser_login(&self.login_url(), DAVE, DAVE_PW, false);
        assert_eq!(r.status, 200, "the token page: {r:?}\n{}", self.logs());
        let token = r.token.clone().expect("the page shows a token");
        (r, token)
    }

    fn status(&self, path: &str, token: &str) -> u16 {
        self.proxy.status_as(Method::GET, path, (DAVE, token))
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("audit.log")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "{}\n--- provider ---\n{}",
            self.proxy.logs(),
            self.provider.logs()
        )
    }
}

#[test]
fn a_browser_login_gives_a_token_the_engine_podman_and_skopeo_use() {
    let s = start();
    let (page, token) = s.browser_token();
    assert!(token.starts_with("pcat_"), "an access token: {token}");
    let command = page.command.clone().unwrap_or_default();
    let host = format!("127.0.0.1:{}", s.proxy.port());
    assert!(
        command.contains(&format!(
            "docker login {host} --username '{DAVE}' --password-stdin"
        )),
        "the docker login line: {command}"
    );
    assert!(command.contains(&token), "the line carries the token");
    // the page: nothing may keep, frame or script it; the cookie is gone
    for (name, want) in [
        ("cache-control", "no-store"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(
            page.headers.get(name).map(String::as_str),
            Some(want),
            "{name}: {:?}",
            page.headers
        );
    }
    let csp = page
        .headers
        .get("content-security-policy")
        .cloned()
        .unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        !page
            .cookies
            .iter()
            .any(|c| c["name"] == "__Host-portcullis-login"),
        "the login cookie is cleared after the callback: {:?}",
        page.cookies
    );
    // the token is a password for every client
    assert_eq!(
        s.status("/v2/shared/app/tags/list", &token),
        404,
        "devs pull shared/**"
    );
    assert_eq!(
        s.status("/v2/team/app/tags/list", &token),
        403,
        "dave is no pusher yet"
    );
    let listed = portcullis(
        &[
            "token",
            "list",
            "--config",
            s.proxy.config_path().to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out_text(&listed).contains("login.dave."),
        "token list shows the login's token: {}",
        out_text(&listed)
    );

    // the provider puts dave in pushers: the next refresh gives him push
    s.provider
        .set_groups(DAVE, &["devs", "pushers", "registry-users"]);
    wait_until(
        "dave's new group reaches his token",
        Duration::from_secs(30),
        || s.status("/v2/team/app/tags/list", &token) == 404,
        || s.logs(),
    );

    // the Docker engine logs in with the page's line and pushes
    let engine = Engine::start();
    engine.trust(&s.proxy);
    let docker = engine.client();
    let o = docker.login(&[], DAVE, Password::Stdin(&format!("{token}\n")), &host);
    let text = client_ok("docker login with the page's token", o, &s.proxy);
    assert!(text.contains("Login Succeeded"), "{text}");
    let image = format!("{host}/team/app:sso");
    let id = docker.build_scratch(&image, 2, 11);
    client_ok("docker push", docker.run(&["push", &image], None), &s.proxy);
    client_ok("docker rmi", docker.run(&["rmi", &image], None), &s.proxy);
    client_ok("docker pull", docker.run(&["pull", &image], None), &s.proxy);
    assert_eq!(docker.image_id(&image), id, "the image pulled back");

    // podman and skopeo with the same token
    let podman = PodmanCli::new();
    let certs = s.proxy.cert_dir();
    let o = podman.login(
        &["--cert-dir", certs.to_str().unwrap()],
        DAVE,
        Password::Stdin(&format!("{token}\n")),
        &host,
    );
    client_ok("podman login with the page's token", o, &s.proxy);
    let state = tempfile::tempdir().unwrap();
    let out = state.path().join("layout");
    Skopeo::in_dir(state.path()).pull_layout(
        &s.proxy,
        &format!("{DAVE}:{token}"),
        &format!("docker://{image}"),
        &out,
        "sso",
    );
    assert!(out.join("index.json").exists(), "skopeo copied the image");
}

#[test]
fn removing_the_person_at_the_provider_revokes_the_token_and_its_registry_tokens() {
    let s = start();
    let (_, token) = s.browser_token();
    let (status, v) =
        s.proxy
            .get_token(Some((DAVE, &token)), &["repository:shared/app:pull"], false);
    assert_eq!(status, 200, "a registry token from the login token: {v}");
    let bearer = v["token"].as_str().unwrap().to_owned();
    let pull = |b: &str| {
        s.proxy
            .send_bearer(Method::GET, "/v2/shared/app/tags/list", b)
            .status()
            .as_u16()
    };
    assert_eq!(pull(&bearer), 404);
    s.provider.disable(DAVE);
    wait_until(
        "the login token refused after the provider disabled dave",
        Duration::from_secs(30),
        || s.status("/v2/shared/app/tags/list", &token) == 401,
        || s.logs(),
    );
    assert_eq!(
        pull(&bearer),
        401,
        "the registry token minted from it is revoked too"
    );
    let logs = s.proxy.logs();
    assert!(
        logs.contains("login token revoked") && logs.contains("invalid_grant"),
        "{logs}"
    );
    assert!(!logs.contains(&token), "the token appears in the log");
    let audit = s.audit();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for action in ["token_create", "token_revoke"] {
        assert!(
            lines
                .iter()
                .any(|l| l["action"] == action && l["user"] == DAVE),
            "{action} of dave's login token in the audit log:\n{audit}"
        );
    }
    assert!(
        !audit.contains(&token),
        "the token appears in the audit log"
    );
}

#[test]
fn leaving_the_required_group_revokes_the_token() {
    let s = start();
    let (_, token) = s.browser_token();
    assert_eq!(s.status("/v2/shared/app/tags/list", &token), 404);
    s.provider.set_groups(DAVE, &["devs"]);
    wait_until(
        "the login token refused once dave left registry-users",
        Duration::from_secs(30),
        || s.status("/v2/shared/app/tags/list", &token) == 401,
        || s.logs(),
    );
    assert!(
        s.proxy.logs().contains("no longer allowed"),
        "{}",
        s.proxy.logs()
    );
    // and a new login is refused with a page that says why
    let r = browser_login(&s.login_url(), DAVE, DAVE_PW, true);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.text.contains("may not use this registry"), "{}", r.text);
}

#[test]
fn callbacks_from_another_browser_or_replayed_are_refused() {
    let s = start();
    // start a login without keeping its cookie, then come back with the
    // state: another browser (a login CSRF)
    let start = s.proxy.client().get(s.login_url()).send().unwrap();
    assert_eq!(start.status(), 303);
    let cookie = header_of(&start, "set-cookie").unwrap_or_default();
    for want in [
        "__Host-portcullis-login=",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
    ] {
        assert!(cookie.contains(want), "{want} in {cookie}");
    }
    let location = header_of(&start, "location").unwrap();
    let authorize = url::Url::parse(&location).unwrap();
    let param = |name: &str| {
        authorize
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert!(param("nonce").is_some_and(|n| n.len() >= 32));
    assert_eq!(param("client_id").as_deref(), Some(CLIENT_ID));
    let state = param("state").unwrap();
    let other_browser = s
        .proxy
        .client()
        .get(
            s.proxy
                .url(&format!("/login/callback?state={state}&code=stolen")),
        )
        .send()
        .unwrap();
    assert_eq!(other_browser.status(), 400);
    assert_eq!(
        header_of(&other_browser, "cache-control").as_deref(),
        Some("no-store")
    );
    assert!(other_browser.text().unwrap().contains("another browser"));
    // a real login, then its callback URL replayed
    let (page, _) = s.browser_token();
    let replay = s.proxy.client().get(&page.url).send().unwrap();
    assert_eq!(replay.status(), 400, "a replayed callback");
    assert!(replay.text().unwrap().contains("used already"));
    let unknown = s
        .proxy
        .client()
        .get(s.proxy.url("/login/callback?state=made-up&code=x"))
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let post = s.proxy.client().post(s.login_url()).send().unwrap();
    assert_eq!(post.status(), 405, "only GET");
}

#[test]
fn a_rotated_provider_key_is_picked_up_without_a_restart() {
    let s = start();
    let (_, first) = s.browser_token();
    let fetches = s.provider.jwks_fetches();
    assert!(fetches >= 1, "{}", s.provider.logs());
    let kid = s.provider.rotate();
    std::thread::sleep(Duration::from_millis(1100));
    let (_, second) = s.browser_token();
    assert_ne!(first, second);
    assert!(
        s.provider.jwks_fetches() > fetches,
        "the proxy fetched the keys again for kid {kid}\n{}",
        s.provider.logs()
    );
    assert_eq!(s.status("/v2/shared/app/tags/list", &second), 404);
    assert_eq!(
        s.status("/v2/shared/app/tags/list", &first),
        404,
        "the first token still works"
    );
}
