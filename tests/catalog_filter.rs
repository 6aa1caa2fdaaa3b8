//! `/v2/_catalog` through the proxy lists only what the caller may pull,
//! page by page (`n`, `last`, `Link`), in Basic and token mode.

mod support;

use reqwest::Method;
use support::*;

fn rules() -> [Rule; 4] {
    [
        Rule::users(&["alice"]).on(&["team-a/*"]).pull(),
        Rule::users(&["bob"]).on(&["team-b/*", "public/*"]).pull(),
        Rule::users(&["carol"]).on(&["team-a/*"]).pull(),
        // the catalog is registry-wide: granted by a rule without repositories
        Rule::users(&["alice", "bob"]).may(&["catalog"]),
    ]
}

const REPOS: [&str; 12] = [
    "public/base",
    "public/tools",
    "secret/a",
    "secret/b",
    "team-a/api",
    "team-a/app",
    "team-a/db",
    "team-a/web",
    "team-a/x",
    "team-b/one",
    "team-b/three",
    "team-b/two",
];

fn alice_sees() -> Vec<String> {
    REPOS
        .iter()
        .filter(|r| r.starts_with("team-a/"))
        .map(|s| s.to_string())
        .collect()
}

fn bob_sees() -> Vec<String> {
    REPOS
        .iter()
        .filter(|r| r.starts_with("team-b/") || r.starts_with("public/"))
        .map(|s| s.to_string())
        .collect()
}

fn fill(reg: &Registry) {
    for r in REPOS {
        push_image_direct(reg, r, "v1");
    }
    // the registry itself lists all twelve, sorted
    let v: serde_json::Value = reg
        .send_direct(Method::GET, "/v2/_catalog?n=100", None)
        .json()
        .unwrap();
    let all: Vec<&str> = v["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(all, REPOS, "the registry's own catalog");
}

/// Walks the catalog with `n=3`, following `Link`, with `auth` applied to
/// each request. Returns every name in order.
fn walk(
    proxy: &Proxy,
    reg: &Registry,
    auth: &dyn Fn(reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder,
) -> Vec<String> {
    let mut names = Vec::new();
    let mut path = "/v2/_catalog?n=3".to_string();
    for page in 0..20 {
        let r = auth(proxy.client().get(proxy.url(&path))).send().unwrap();
        assert_eq!(r.status(), 200, "GET {path}\n{}", proxy.logs());
        assert_common_headers(&format!("catalog page {page}"), |h| header_of(&r, h));
        let link = header_of(&r, "link");
        let v: serde_json::Value = r.json().unwrap();
        let repos: Vec<String> = v["repositories"]
            .as_array()
            .unwrap_or_else(|| panic!("no repositories array: {v}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        assert!(repos.len() <= 3, "page larger than n=3: {repos:?}");
        names.extend(repos.clone());
        match link {
            None => return names,
            Some(link) => {
                assert!(
                    link.ends_with("; rel=\"next\""),
                    "Link without rel=next: {link}"
                );
                let target = link
                    .split(';')
                    .next()
                    .unwrap()
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string();
                assert_points_at_proxy("catalog Link", &target, proxy, reg.port());
                assert!(
                    target.starts_with("/v2/_catalog?"),
                    "Link not relative to the proxy: {target}"
                );
                assert!(target.contains("n=3"), "Link loses n: {target}");
                let last = repos.last().expect("a page with a Link has names");
                let enc = url::form_urlencoded::byte_serialize(last.as_bytes()).collect::<String>();
                assert!(
                    target.contains(&format!("last={enc}")),
                    "Link does not continue after {last}: {target}"
                );
                path = target;
            }
        }
    }
    panic!("catalog walk did not end within 20 pages: {names:?}");
}

#[test]
fn basic_mode_catalog_is_filtered_and_paged() {
    let reg = Registry::start();
    fill(&reg);
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::basic(&[(USER, PASS), BOB, CAROL]).rules(&rules()),
    );

    let alice = walk(&proxy, &reg, &|b| b.basic_auth(USER, Some(PASS)));
    assert_eq!(alice, alice_sees(), "alice's catalog");
    let bob = walk(&proxy, &reg, &|b| b.basic_auth(BOB.0, Some(BOB.1)));
    assert_eq!(bob, bob_sees(), "bob's catalog");

    // without the catalog action: 403
    let r = proxy.send_as(Method::GET, "/v2/_catalog", CAROL.0, CAROL.1);
    let (status, codes, _) = status_codes_challenge(r);
    assert_eq!(status, 403, "carol has no catalog action");
    assert_eq!(codes, ["DENIED"]);
    // without credentials: 401
    let r = proxy.send_anon(Method::GET, "/v2/_catalog");
    let (status, codes, challenge) = status_codes_challenge(r);
    assert_eq!(status, 401, "anonymous catalog");
    assert_eq!(codes, ["UNAUTHORIZED"]);
    assert!(challenge.is_some_and(|c| c.starts_with("Basic ")));

    // one big page, and a page starting in the middle
    let r = proxy.send_req(Method::GET, "/v2/_catalog");
    assert_eq!(r.status(), 200);
    assert!(
        header_of(&r, "link").is_none(),
        "no Link on a complete page"
    );
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["repositories"], serde_json::json!(alice_sees()));
    let r = proxy.send_req(Method::GET, "/v2/_catalog?n=2&last=team-a%2Fapp");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["team-a/db", "team-a/web"])
    );
}

#[test]
fn token_mode_catalog_needs_the_catalog_scope() {
    let reg = Registry::start();
    fill(&reg);
    let keys = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        &reg,
        ProxyOptions::token(&[(USER, PASS), BOB, CAROL], keys.path()).rules(&rules()),
    );

    let mut tokens = Vec::new();
    for (u, p) in [(USER, PASS), BOB, CAROL] {
        let t = proxy.token(Some((u, p)), &["registry:catalog:*"]);
        let claims = jwt_claims(&t);
        let grants_catalog = claims["access"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["type"] == "registry"
                    && x["name"] == "catalog"
                    && x["actions"]
                        .as_array()
                        .is_some_and(|acts| acts.iter().any(|y| y == "*"))
            })
        });
        assert_eq!(
            grants_catalog,
            u != CAROL.0,
            "{u}'s token for registry:catalog:*: {claims}"
        );
        tokens.push(t);
    }
    let alice = walk(&proxy, &reg, &|b| b.bearer_auth(&tokens[0]));
    assert_eq!(alice, alice_sees(), "alice's catalog (token)");
    let bob = walk(&proxy, &reg, &|b| b.bearer_auth(&tokens[1]));
    assert_eq!(bob, bob_sees(), "bob's catalog (token)");

    let r = proxy.send_bearer(Method::GET, "/v2/_catalog", &tokens[2]);
    let (status, _, challenge) = status_codes_challenge(r);
    assert_eq!(status, 401, "carol's token without catalog");
    let challenge = challenge.expect("challenge");
    assert_challenge(
        &challenge,
        "Bearer",
        &[
            ("error", "insufficient_scope"),
            ("scope", "registry:catalog:*"),
        ],
    );

    // a repository token does not open the catalog
    let t = proxy.token(Some((USER, PASS)), &["repository:team-a/app:pull"]);
    let r = proxy.send_bearer(Method::GET, "/v2/_catalog", &t);
    assert_eq!(r.status(), 401, "repository token on the catalog");
}
