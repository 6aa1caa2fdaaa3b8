//! Observability against real components: a real Prometheus scraping the
//! admin listener while skopeo pushes and pulls through the proxy, the
//! readiness endpoint following the real registry, the audit log written by
//! real client traffic and rotated with SIGHUP, `promtool` on a live scrape
//! and on deploy/prometheus, and the scrape protection.
//!
//! Expected counter values are derived from what each test itself did (the
//! blobs it built and pushed), never hard-coded.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use reqwest::blocking::Client;
use reqwest::Method;
use support::prometheus::*;
use support::*;

/// A series (name, labels) and the least value it must reach.
type Floor<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// TOML appended to the harness config: `log_lines` land in `[log]` (the
/// table the harness config ends with), then the admin listener on `admin`
/// and a fast health check.
fn observe_toml(admin: u16, log_lines: &str, metrics_lines: &str) -> String {
    format!(
        "{log_lines}\n\n[metrics]\nlisten = \"127.0.0.1:{admin}\"\n{metrics_lines}\n\n{}",
        health_toml("200ms", 2)
    )
}

/// A registry, and a proxy whose admin listener (metrics, health) is on a
/// port of its own: `extra(admin)` is the TOML for it (see [`observe_toml`]).
fn observed(extra: impl FnOnce(u16) -> String) -> (Registry, u16, Proxy) {
    observed_with(ProxyOptions::default(), extra)
}

/// [`observed`] starting from `opts`.
fn observed_with(
    mut opts: ProxyOptions,
    extra: impl FnOnce(u16) -> String,
) -> (Registry, u16, Proxy) {
    let reg = Registry::start();
    let admin = free_port();
    opts.extra_toml = format!("{}\n{}", extra(admin), opts.extra_toml);
    let proxy = Proxy::start(&reg, opts);
    (reg, admin, proxy)
}

fn admin_client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET on the admin listener: (status, body).
fn admin_get(admin: u16, path: &str, authorization: Option<&str>) -> Result<(u16, String), String> {
    let mut req = admin_client().get(format!("http://127.0.0.1:{admin}{path}"));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let r = req.send().map_err(|e| format!("GET {path}: {e}"))?;
    let status = r.status().as_u16();
    Ok((status, r.text().unwrap_or_default()))
}

/// The /metrics text, asserting 200.
fn scrape(admin: u16, proxy: &Proxy) -> String {
    let (status, body) =
        admin_get(admin, "/metrics", None).unwrap_or_else(|e| panic!("{e}\n{}", proxy.logs()));
    assert_eq!(status, 200, "GET /metrics: {body}\n{}", proxy.logs());
    body
}

fn wait_admin_up(admin: u16, proxy: &Proxy) {
    wait_until(
        "admin listener answers /healthz",
        WAIT,
        || matches!(admin_get(admin, "/healthz", None), Ok((200, _))),
        || proxy.logs(),
    );
}

/// What a test pushed: the OCI layout and the sizes of its parts.
struct Pushed {
    image: OciImage,
    /// (digest, size) of every blob: the layers, then the config.
    blobs: Vec<(String, u64)>,
    manifest_len: u64,
}

impl Pushed {
    fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, s)| s).sum()
    }
}

/// Builds a 3-layer image with a fresh seed (so no client-side blob cache
/// knows its digests), pushes it through the proxy with skopeo and pulls it
/// back into a new layout.
fn skopeo_push_and_pull(state: &Path, proxy: &Proxy, repo: &str, tag: &str) -> Pushed {
    let seed = 1000 + rand::random::<u32>() as u64;
    let src = state.join("src-oci");
    let image = make_oci_layout(&src, tag, 3, seed);
    let blob_size = |d: &str| {
        std::fs::metadata(
            src.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
        .len()
    };
    let mut blobs: Vec<(String, u64)> = image
        .layer_digests
        .iter()
        .map(|d| (d.clone(), blob_size(d)))
        .collect();
    blobs.push((image.config_digest.clone(), blob_size(&image.config_digest)));
    let manifest_len = blob_size(&image.manifest_digest);

    let creds = format!("{USER}:{PASS}");
    let dest = format!("docker://127.0.0.1:{}/{repo}:{tag}", proxy.port());
    let skopeo = Skopeo::in_dir(state);
    skopeo.push_layout(proxy, &creds, &src, tag, &dest);
    let out = state.join("out-oci");
    skopeo.pull_layout(proxy, &creds, &dest, &out, tag);
    assert_eq!(
        oci_layer_digests(&out),
        image.layer_digests,
        "skopeo pulled back other layers"
    );
    Pushed {
        image,
        blobs,
        manifest_len,
    }
}

/// The manifest digest the registry itself reports (bypassing the proxy).
fn registry_digest(reg: &Registry, repo: &str, tag: &str) -> String {
    let r = reg
        .direct()
        .head(format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
        .header("accept", OCI_MANIFEST)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "manifest {repo}:{tag} not in the registry");
    header_of(&r, "docker-content-digest").expect("Docker-Content-Digest from the registry")
}

/// Metric names a PromQL expression uses (`portcullis_…`), with the
/// histogram suffixes taken off.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"portcullis_[a-z0-9_]+").unwrap();
    re.find_iter(expr)
        .map(|m| {
            let n = m.as_str();
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

/// Every metric name declared in src/observe/metrics.rs. (A labelled
/// metric only shows in a scrape once it has a child, so a scrape alone
/// cannot tell which names exist.)
fn source_metric_names() -> BTreeSet<String> {
    let src = std::fs::read_to_string(root().join("src/observe/metrics.rs")).unwrap();
    let re = regex::Regex::new(r#""(portcullis_[a-z0-9_]+)""#).unwrap();
    let names: BTreeSet<String> = re.captures_iter(&src).map(|c| c[1].to_string()).collect();
    assert!(names.len() >= 15, "metric names in metrics.rs: {names:?}");
    names
}

/// Every `"expr"` of the Grafana dashboard, with its panel title.
fn dashboard_exprs() -> Vec<(String, String)> {
    let path = root().join("deploy/grafana/portcullis-dashboard.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
    let mut out = Vec::new();
    for p in v["panels"].as_array().expect("dashboard panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    e.to_string(),
                ));
            }
        }
    }
    out
}

/// Every `expr:` of the alert rules (block scalars folded into one line).
fn alert_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" || rest == ">" {
                let indent = l.len() - t.len();
                let mut e = String::new();
                while let Some(n) = lines.peek() {
                    let nt = n.trim_start();
                    if !nt.is_empty() && n.len() - nt.len() <= indent {
                        break;
                    }
                    e.push_str(nt);
                    e.push(' ');
                    lines.next();
                }
                out.push(e.trim().to_string());
            } else {
                out.push(rest.to_string());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Prometheus sees exactly the traffic
// ---------------------------------------------------------------------------

#[test]
fn prometheus_counts_exactly_a_skopeo_push_and_pull_and_one_failed_login() {
    let (_reg, admin, proxy) = observed(|admin| observe_toml(admin, "", ""));
    wait_admin_up(admin, &proxy);
    let prom = Prometheus::start(
        &[ScrapeJob::new("portcullis", &format!("127.0.0.1:{admin}"))],
        &[root().join("deploy/prometheus/alerts.yml")],
    );
    assert_eq!(
        prom.wait_for_up("portcullis"),
        1.0,
        "Prometheus cannot scrape the admin listener: {:?}\n{}",
        prom.targets(),
        prom.logs()
    );

    // the traffic: one push, one pull, one wrong password
    let state = tempfile::tempdir().unwrap();
    let repo = "observe/skopeo-counted";
    let tag = "obs-tag-1";
    let pushed = skopeo_push_and_pull(state.path(), &proxy, repo, tag);
    let r = proxy.send_as(Method::GET, "/v2/", USER, "not-the-password");
    assert_eq!(r.status(), 401, "wrong password accepted");

    let nblobs = pushed.blobs.len() as f64;
    let blob_bytes = pushed.blob_bytes() as f64;
    let manifest_len = pushed.manifest_len as f64;

    // 1. the proxy's own counters have the traffic (they are recorded in the
    // logging phase, which may trail the last response a little)
    let floor: Vec<Floor> = vec![
        (
            "portcullis_auth_attempts_total",
            vec![("result", "bad_credentials")],
            1.0,
        ),
        (
            "portcullis_requests_total",
            vec![("route", "manifest"), ("method", "PUT"), ("code", "2xx")],
            1.0,
        ),
        (
            "portcullis_requests_total",
            vec![("route", "blob"), ("method", "GET"), ("code", "2xx")],
            nblobs,
        ),
        (
            "portcullis_requests_total",
            vec![("route", "upload"), ("method", "PUT"), ("code", "2xx")],
            nblobs,
        ),
        (
            "portcullis_sent_bytes_total",
            vec![("route", "blob")],
            blob_bytes,
        ),
        (
            "portcullis_received_bytes_total",
            vec![("route", "upload")],
            blob_bytes,
        ),
    ];
    wait_until(
        "the proxy's /metrics shows the traffic",
        WAIT,
        || {
            let s = parse_exposition(&scrape(admin, &proxy));
            floor
                .iter()
                .all(|(n, l, min)| sample_value(&s, n, l).unwrap_or(0.0) >= *min)
        },
        || {
            format!(
                "expected at least {floor:?}\n{}\n{}",
                scrape(admin, &proxy),
                proxy.logs()
            )
        },
    );

    // 2. Prometheus has scraped since
    prom.wait_for_scrape_after("portcullis", SystemTime::now());
    let q = |expr: &str| prom.value(expr).unwrap_or(0.0);
    let all_counters = || {
        prom.query(
            "{__name__=~\"portcullis_(requests|auth_attempts|sent_bytes|received_bytes)_total\"}",
        )
        .map(|v| {
            v.iter()
                .map(|s| format!("{:?} {}", s.labels, s.value))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|e| e)
    };

    assert_eq!(
        q(r#"portcullis_auth_attempts_total{backend="htpasswd",result="bad_credentials"}"#),
        1.0,
        "exactly one failed login (wrong password)\n{}",
        all_counters()
    );
    assert_eq!(
        q(r#"sum(portcullis_auth_attempts_total{result!="ok"})"#),
        1.0,
        "no other failed credential check (unknown_user, backend_error, throttled)\n{}",
        all_counters()
    );
    assert!(
        q(r#"portcullis_auth_attempts_total{backend="htpasswd",result="ok"}"#) >= 1.0,
        "the push and pull authenticated\n{}",
        all_counters()
    );
    // every credential check went through the cache: a hit (ok) or a miss
    // (bcrypt: ok, or the one wrong password)
    let hits = q(r#"portcullis_credential_cache_requests_total{result="hit"}"#);
    let misses = q(r#"portcullis_credential_cache_requests_total{result="miss"}"#);
    assert!(
        hits >= 1.0,
        "the push and pull hit the credential cache: {hits}"
    );
    assert!(
        misses >= 2.0,
        "first login and wrong password miss: {misses}"
    );
    assert_eq!(
        q(r#"sum(portcullis_auth_attempts_total)"#),
        hits + misses,
        "auth attempts vs credential-cache lookups\n{}",
        all_counters()
    );
    assert_eq!(
        q(r#"portcullis_requests_total{route="manifest",method="PUT",code="2xx"}"#),
        1.0,
        "one manifest PUT\n{}",
        all_counters()
    );
    assert_eq!(
        q(r#"portcullis_requests_total{route="upload",method="PUT",code="2xx"}"#),
        nblobs,
        "one completed upload per blob pushed ({} layers + config)\n{}",
        pushed.image.layer_digests.len(),
        all_counters()
    );
    assert_eq!(
        q(r#"portcullis_requests_total{route="blob",method="GET",code="2xx"}"#),
        nblobs,
        "one blob GET per layer and config pulled\n{}",
        all_counters()
    );
    assert!(
        q(r#"sum(portcullis_requests_total{route="manifest",method=~"GET|HEAD",code="2xx"})"#)
            >= 1.0,
        "the pull read the manifest\n{}",
        all_counters()
    );
    assert!(
        q(r#"portcullis_requests_total{route="base",method="GET",code="4xx"}"#) >= 1.0,
        "the failed login is a 4xx on /v2/\n{}",
        all_counters()
    );
    assert_eq!(
        q(r#"sum(portcullis_requests_total{code=~"5xx|none"})"#),
        0.0,
        "no request failed or went unanswered\n{}",
        all_counters()
    );
    for (query, floor, what) in [
        (
            r#"portcullis_sent_bytes_total{route="blob"}"#,
            blob_bytes,
            "blob bytes sent (pulled)",
        ),
        (
            r#"portcullis_received_bytes_total{route="upload"}"#,
            blob_bytes,
            "upload bytes received (pushed)",
        ),
        (
            r#"portcullis_received_bytes_total{route="manifest"}"#,
            manifest_len,
            "manifest bytes received",
        ),
        (
            r#"portcullis_sent_bytes_total{route="manifest"}"#,
            manifest_len,
            "manifest bytes sent",
        ),
    ] {
        let bytes = q(query);
        assert!(
            bytes >= floor,
            "{what}: {bytes} < {floor}\n{}",
            all_counters()
        );
    }

    // every answered request is in the duration histogram of its route
    let per_route = prom
        .query("sum by (route) (portcullis_requests_total)")
        .unwrap();
    for s in &per_route {
        let route = &s.labels["route"];
        let count = q(&format!(
            "portcullis_request_duration_seconds_count{{route=\"{route}\"}}"
        ));
        assert_eq!(
            count, s.value,
            "route {route}: duration histogram count vs requests_total"
        );
    }
    let forwarded = q("portcullis_upstream_response_duration_seconds_count");
    let total = q("sum(portcullis_requests_total)");
    assert!(
        forwarded >= 2.0 * nblobs && forwarded <= total,
        "upstream responses timed: {forwarded} (requests: {total})"
    );
    assert_eq!(
        q("portcullis_upstream_up"),
        1.0,
        "upstream_up while serving"
    );
    assert_eq!(
        q(&format!(
            "portcullis_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0,
        "build_info carries the crate version"
    );
    // the served certificate's notAfter
    let (_, cert) = x509_parser::parse_x509_certificate(&proxy.leaf.der).unwrap();
    let expiry = prom
        .query("portcullis_certificate_expiry_timestamp_seconds")
        .unwrap();
    assert_eq!(expiry.len(), 1, "one served certificate: {expiry:?}");
    assert_eq!(
        expiry[0].value,
        cert.validity().not_after.timestamp() as f64,
        "certificate expiry gauge"
    );

    // 3. no user or repository anywhere in the metrics
    let text = scrape(admin, &proxy);
    for secret in [USER, PASS, repo, "skopeo-counted", tag] {
        assert!(
            !text.contains(secret),
            "the scrape mentions {secret:?}: unbounded label values\n{text}"
        );
    }
    for s in parse_exposition(&text) {
        for k in s.labels.keys() {
            assert!(
                !["user", "username", "repository", "repo", "tag"].contains(&k.as_str()),
                "label {k} on {}",
                s.name
            );
        }
    }

    // 4. promtool accepts the live scrape
    let (code, out) = promtool(&["check", "metrics"], Some(text.as_bytes()), None);
    assert!(
        code == Some(0) && out.trim().is_empty(),
        "promtool check metrics on a live scrape: exit {code:?}\n{out}"
    );

    // 5. the dashboard and the alert rules use metrics that exist, in
    // expressions Prometheus accepts
    let exported = source_metric_names();
    for name in declared_types(&text).keys() {
        assert!(
            exported.contains(name),
            "the scrape has {name}, which src/observe/metrics.rs does not declare"
        );
    }
    let mut exprs: Vec<(String, String)> = dashboard_exprs();
    assert!(exprs.len() >= 10, "dashboard has {} queries", exprs.len());
    exprs.extend(
        alert_exprs()
            .into_iter()
            .map(|e| ("alerts.yml".to_string(), e)),
    );
    for (title, expr) in &exprs {
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "{title}: {expr} uses {name}, which portcullis does not export"
            );
        }
        let e = expr.replace("$__rate_interval", "1m");
        prom.query(&e)
            .unwrap_or_else(|err| panic!("{title}: Prometheus refuses {e}: {err}"));
    }

    // 6. the alert rules load and evaluate without error
    let mut rules = Vec::new();
    wait_until(
        "every alert rule evaluated",
        WAIT,
        || {
            rules = prom.rules();
            !rules.is_empty() && rules.iter().all(|r| r.4)
        },
        || format!("{:?}\n{}", prom.rules(), prom.logs()),
    );
    let names: BTreeSet<&str> = rules.iter().map(|r| r.1.as_str()).collect();
    for want in [
        "PortcullisCertificateExpiresSoon",
        "PortcullisAcmeRenewalFailing",
        "PortcullisUpstreamDown",
        "PortcullisLoginFailureSpike",
        "PortcullisHighErrorRatio",
    ] {
        assert!(names.contains(want), "alert {want} not loaded: {names:?}");
    }
    for r in &rules {
        assert_eq!(r.2, "ok", "rule {} does not evaluate: {}", r.1, r.3);
    }
    // with the registry up and a certificate valid for years, nothing fires
    let firing = prom.query("ALERTS{alertstate=\"firing\"}").unwrap();
    assert!(firing.is_empty(), "alerts firing: {firing:?}");
}

// ---------------------------------------------------------------------------
// readiness follows the upstream
// ---------------------------------------------------------------------------

#[test]
fn readyz_and_upstream_up_follow_the_registry() {
    let (mut reg, admin, proxy) = observed(|admin| observe_toml(admin, "", ""));
    wait_admin_up(admin, &proxy);
    let up = |admin: u16| {
        let text = scrape(admin, &proxy);
        sample_value(&parse_exposition(&text), "portcullis_upstream_up", &[])
    };
    let readyz = || admin_get(admin, "/readyz", None).unwrap_or((0, String::new()));

    // ready once the first check passed
    wait_until(
        "/readyz 200 with the registry up",
        WAIT,
        || readyz().0 == 200,
        || format!("{:?}\n{}", readyz(), proxy.logs()),
    );
    let (_, body) = readyz();
    assert!(body.contains("upstream: ok"), "/readyz body: {body}");
    assert_eq!(
        up(admin),
        Some(1.0),
        "portcullis_upstream_up with the registry up"
    );

    // the registry goes away: not ready after `threshold` failed checks
    reg.stop();
    wait_until(
        "/readyz 503 with the registry stopped",
        WAIT,
        || readyz().0 == 503,
        || format!("{:?}\n{}", readyz(), proxy.logs()),
    );
    let (_, body) = readyz();
    assert!(body.contains("upstream: down"), "/readyz body: {body}");
    assert_eq!(
        up(admin),
        Some(0.0),
        "portcullis_upstream_up with the registry stopped"
    );
    assert_eq!(
        admin_get(admin, "/healthz", None).unwrap().0,
        200,
        "/healthz (alive) does not depend on the upstream"
    );
    // a request forwarded meanwhile is a 5xx and a connect error
    let r = proxy.send_req(Method::GET, "/v2/");
    assert!(
        r.status().is_server_error(),
        "GET /v2/ upstream down: {}",
        r.status()
    );
    wait_until(
        "upstream connect error counted",
        WAIT,
        || {
            let s = parse_exposition(&scrape(admin, &proxy));
            sample_value(
                &s,
                "portcullis_upstream_errors_total",
                &[("kind", "connect")],
            )
            .unwrap_or(0.0)
                >= 1.0
                && sample_value(&s, "portcullis_requests_total", &[("code", "5xx")]).unwrap_or(0.0)
                    >= 1.0
        },
        || format!("{}\n{}", scrape(admin, &proxy), proxy.logs()),
    );

    // back again
    reg.start_again();
    wait_until(
        "/readyz 200 with the registry back",
        WAIT,
        || readyz().0 == 200,
        || format!("{:?}\n{}", readyz(), proxy.logs()),
    );
    assert_eq!(
        up(admin),
        Some(1.0),
        "portcullis_upstream_up with the registry back"
    );
    assert_eq!(proxy.send_req(Method::GET, "/v2/").status(), 200);
}

// ---------------------------------------------------------------------------
// the audit log
// ---------------------------------------------------------------------------

fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{}: last line not terminated: {text:?}",
        path.display()
    );
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {l:?}", path.display(), i + 1))
        })
        .collect()
}

fn is_rfc3339(s: &str) -> bool {
    // 2024-05-01T12:34:56.789Z
    let b = s.as_bytes();
    s.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && s.ends_with('Z')
        && s[..4].parse::<u32>().is_ok()
}

#[test]
fn audit_log_records_the_skopeo_push_and_pull_and_reopens_on_sighup() {
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("audit.log");
    let (reg, _admin, proxy) = observed(|admin| {
        observe_toml(
            admin,
            &format!("audit_file = {:?}", audit.display().to_string()),
            "",
        )
    });
    let state = tempfile::tempdir().unwrap();
    let repo = "observe/audited";
    let tag = "audit-v1";
    let pushed = skopeo_push_and_pull(state.path(), &proxy, repo, tag);
    let digest = registry_digest(&reg, repo, tag);
    assert_eq!(
        digest, pushed.image.manifest_digest,
        "registry digest vs layout"
    );

    let raw = std::fs::read_to_string(&audit).unwrap();
    assert!(!raw.contains(PASS), "the audit log holds the password");
    let lines = read_json_lines(&audit);
    let show = || {
        lines
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    for l in &lines {
        assert!(
            l["time"].as_str().is_some_and(is_rfc3339),
            "time is RFC 3339 UTC: {l}"
        );
        assert_eq!(l["client"], "127.0.0.1", "client address: {l}");
        assert_eq!(l["repository"], repo, "repository: {l}");
        assert_eq!(l["user"], USER, "user: {l}");
    }
    let find = |what: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        lines
            .iter()
            .find(|l| pred(l))
            .unwrap_or_else(|| panic!("no audit line for {what}:\n{}", show()))
            .clone()
    };

    // the manifest push, with the tag and the digest the registry stored
    let push = find("the manifest push", &|l| {
        l["action"] == "push" && l["reference"] == tag
    });
    assert_eq!(push["digest"], digest.as_str(), "push digest: {push}");
    assert_eq!(push["status"], 201, "push status: {push}");
    assert_eq!(push["bytes"], pushed.manifest_len, "push bytes: {push}");
    // the manifest pull (a GET with the whole manifest)
    let pull = find("the manifest pull", &|l| {
        l["action"] == "pull" && l["reference"] == tag && l["bytes"] == pushed.manifest_len
    });
    assert_eq!(pull["digest"], digest.as_str(), "pull digest: {pull}");
    assert_eq!(pull["status"], 200, "pull status: {pull}");
    // every blob: pushed once (upload completion), pulled once
    for (d, size) in &pushed.blobs {
        let n_push = lines
            .iter()
            .filter(|l| l["action"] == "push" && l["digest"] == d.as_str())
            .count();
        assert_eq!(n_push, 1, "push lines for blob {d}:\n{}", show());
        let p = find(&format!("the pull of blob {d}"), &|l| {
            l["action"] == "pull" && l["reference"] == d.as_str()
        });
        assert_eq!(p["digest"], d.as_str(), "blob pull digest: {p}");
        assert_eq!(p["status"], 200, "blob pull status: {p}");
        assert_eq!(p["bytes"], *size, "blob pull bytes: {p}");
    }
    // existence checks (HEAD of a blob) are not pulls
    let blob_pulls = lines
        .iter()
        .filter(|l| {
            l["action"] == "pull"
                && l["reference"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("sha256:"))
        })
        .count();
    assert_eq!(
        blob_pulls,
        pushed.blobs.len(),
        "blob pull lines:\n{}",
        show()
    );

    // rotation: rename, SIGHUP, the next line goes to a new file at the path
    let before = lines.len();
    let rotated = logs.path().join("audit.log.1");
    std::fs::rename(&audit, &rotated).unwrap();
    proxy.sighup();
    wait_until(
        "the audit file reopened at its path after SIGHUP",
        WAIT,
        || audit.exists(),
        || proxy.logs(),
    );
    let r = accepting(
        proxy.req(Method::GET, &format!("/v2/{repo}/manifests/{tag}")),
        OCI_MANIFEST,
    );
    assert_eq!(r.status(), 200);
    wait_until(
        "a line in the new audit file",
        WAIT,
        || std::fs::read_to_string(&audit).is_ok_and(|t| t.ends_with('\n')),
        || proxy.logs(),
    );
    let new = read_json_lines(&audit);
    assert_eq!(new.len(), 1, "new file: {new:?}");
    assert_eq!(new[0]["action"], "pull");
    assert_eq!(new[0]["reference"], tag);
    assert_eq!(new[0]["digest"], digest.as_str());
    assert_eq!(
        read_json_lines(&rotated).len(),
        before,
        "the rotated file got lines after the reopen"
    );
    assert!(proxy.is_running_ref(), "SIGHUP stopped the proxy");
}

#[test]
fn audit_log_rotates_itself_at_audit_max_bytes() {
    let logs = tempfile::tempdir().unwrap();
    let audit = logs.path().join("audit.log");
    let max = 600u64;
    let (_reg, _admin, proxy) = observed(|admin| {
        let file = audit.display().to_string();
        observe_toml(
            admin,
            &format!("audit_file = {file:?}\naudit_max_bytes = {max}"),
            "",
        )
    });
    let (_, digest) = push_image(&proxy, "observe/rotated", "r1");
    let mut longest = 0;
    for _ in 0..8 {
        let r = accepting(
            proxy.req(Method::GET, "/v2/observe/rotated/manifests/r1"),
            OCI_MANIFEST,
        );
        assert_eq!(r.status(), 200);
    }
    let rotated = logs.path().join("audit.log.1");
    // all 8 pulls answered; their lines may trail the responses a little
    let pulls_in = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .matches("\"action\":\"pull\"")
            .count()
    };
    wait_until(
        "audit.log.1, and audit.log with the last pull",
        WAIT,
        || rotated.exists() && pulls_in(&audit) >= 1,
        || {
            format!(
                "{:?}\n{}",
                std::fs::read_dir(logs.path()).unwrap().count(),
                proxy.logs()
            )
        },
    );
    let old = read_json_lines(&rotated);
    let lines = read_json_lines(&audit);
    for l in old.iter().chain(lines.iter()) {
        longest = longest.max(l.to_string().len() as u64 + 1);
        if l["action"] == "pull" {
            assert_eq!(l["digest"], digest.as_str(), "{l}");
        }
    }
    for f in [&audit, &rotated] {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(
            size < max + longest,
            "{} is {size} bytes, over audit_max_bytes {max} plus one line",
            f.display()
        );
    }
}

// ---------------------------------------------------------------------------
// the access log
// ---------------------------------------------------------------------------

#[test]
fn access_log_has_one_json_line_per_request_without_query_or_credentials() {
    let (_reg, _admin, proxy) = observed(|admin| observe_toml(admin, "format = \"json\"", ""));
    push_image(&proxy, "observe/logged", "l1");
    let r = proxy.send_req(
        Method::GET,
        "/v2/observe/logged/tags/list?n=5&last=query-marker",
    );
    assert_eq!(r.status(), 200);
    let r = proxy.send_as(Method::GET, "/v2/", USER, "wrong-password-marker");
    assert_eq!(r.status(), 401);

    let access = || -> Vec<serde_json::Value> {
        proxy
            .log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "access")
            .collect()
    };
    wait_until(
        "access lines of the tags list and the failed login",
        WAIT,
        || {
            let a = access();
            a.iter().any(|l| l["route"] == "tags")
                && a.iter().any(|l| l["route"] == "base" && l["status"] == 401)
        },
        || proxy.logs(),
    );
    let text = proxy.log_text();
    for secret in [PASS, "wrong-password-marker", "query-marker", "_state="] {
        assert!(!text.contains(secret), "the log holds {secret:?}:\n{text}");
    }
    let lines = access();
    let tags = lines.iter().find(|l| l["route"] == "tags").unwrap();
    assert_eq!(tags["path"], "/v2/observe/logged/tags/list", "{tags}");
    assert_eq!(tags["method"], "GET");
    assert_eq!(tags["status"], 200);
    assert_eq!(tags["user"], USER);
    assert_eq!(tags["client"], "127.0.0.1");
    assert!(tags["bytes_out"].as_u64().is_some_and(|b| b > 0), "{tags}");
    assert!(tags["duration_ms"].as_u64().is_some(), "{tags}");
    assert!(
        tags["upstream_ms"].as_i64().is_some_and(|v| v >= 0),
        "{tags}"
    );
    assert!(tags["timestamp"].is_string(), "{tags}");
    let failed = lines
        .iter()
        .find(|l| l["route"] == "base" && l["status"] == 401)
        .unwrap();
    assert_eq!(
        failed["upstream_ms"], -1,
        "a refused request never went upstream: {failed}"
    );
    // the manifest PUT: bytes in
    let put = lines
        .iter()
        .find(|l| l["route"] == "manifest" && l["method"] == "PUT")
        .unwrap_or_else(|| panic!("no manifest PUT line: {lines:?}"));
    assert_eq!(put["status"], 201, "{put}");
    assert!(put["bytes_in"].as_u64().is_some_and(|b| b > 0), "{put}");
}

// ---------------------------------------------------------------------------
// promtool on deploy/prometheus
// ---------------------------------------------------------------------------

#[test]
fn promtool_accepts_the_deploy_rules_and_config() {
    let dir = root().join("deploy/prometheus");
    let (code, out) = promtool(&["check", "rules", "alerts.yml"], None, Some(&dir));
    assert_eq!(code, Some(0), "promtool check rules alerts.yml:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    // prometheus.yml names alerts.yml relative to itself: check it from
    // elsewhere, so the path is resolved the way Prometheus does
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, out) = promtool(
        &[
            "check",
            "config",
            dir.join("prometheus.yml").to_str().unwrap(),
        ],
        None,
        Some(elsewhere.path()),
    );
    assert_eq!(
        code,
        Some(0),
        "promtool check config prometheus.yml:\n{out}"
    );
    assert!(
        out.contains("alerts.yml") && out.contains("SUCCESS"),
        "the config's rule file was checked too:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// scrape protection
// ---------------------------------------------------------------------------

#[test]
fn bearer_token_protects_metrics_but_not_health() {
    let (_reg, admin, proxy) = observed(|admin| observe_toml(admin, "", "bearer_token = \"t0k\""));
    wait_admin_up(admin, &proxy);
    let get = |auth: Option<&str>| admin_get(admin, "/metrics", auth).unwrap();
    assert_eq!(get(None).0, 401, "/metrics without a token");
    assert_eq!(
        get(Some("Bearer t0k2")).0,
        401,
        "/metrics with a longer token"
    );
    assert_eq!(
        get(Some("Bearer t0")).0,
        401,
        "/metrics with a prefix of the token"
    );
    assert_eq!(get(Some("Basic dDBrOg==")).0, 401, "/metrics with Basic");
    let (status, body) = get(Some("Bearer t0k"));
    assert_eq!(status, 200, "/metrics with the token");
    assert!(
        body.contains("# TYPE portcullis_requests_total counter"),
        "{body}"
    );
    assert_eq!(admin_get(admin, "/healthz", None).unwrap().0, 200);
    wait_until(
        "/readyz 200 without a token",
        WAIT,
        || matches!(admin_get(admin, "/readyz", None), Ok((200, _))),
        || proxy.logs(),
    );
    assert_eq!(admin_get(admin, "/nothing", None).unwrap().0, 404);

    // Prometheus with the token in a credentials file (as deploy/prometheus
    // suggests) scrapes; without it the target is down
    let target = format!("127.0.0.1:{admin}");
    let mut with = ScrapeJob::new("with-token", &target);
    with.bearer = Some("t0k\n".into());
    let prom = Prometheus::start(&[with, ScrapeJob::new("without-token", &target)], &[]);
    assert_eq!(
        prom.wait_for_up("with-token"),
        1.0,
        "{:?}\n{}",
        prom.targets(),
        prom.logs()
    );
    assert_eq!(
        prom.wait_for_up("without-token"),
        0.0,
        "{:?}",
        prom.targets()
    );
    let errors: Vec<_> = prom
        .targets()
        .into_iter()
        .filter(|t| t.0 == "without-token")
        .collect();
    assert!(
        errors.iter().all(|t| t.2.contains("401")),
        "the unauthenticated scrape fails with 401: {errors:?}"
    );
}

#[test]
fn basic_credentials_protect_metrics() {
    let (_reg, admin, proxy) = observed(|admin| {
        observe_toml(
            admin,
            "",
            "username = \"prom\"\npassword = \"scrape-S3cret\"",
        )
    });
    wait_admin_up(admin, &proxy);
    let basic = |u: &str, p: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let r = admin_client()
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "/metrics without credentials");
    assert_eq!(
        header_of(&r, "www-authenticate").as_deref(),
        Some("Basic realm=\"metrics\""),
        "a Basic challenge"
    );
    let get = |auth: &str| admin_get(admin, "/metrics", Some(auth)).unwrap().0;
    assert_eq!(get(&basic("prom", "wrong")), 401);
    assert_eq!(get(&basic("other", "scrape-S3cret")), 401);
    assert_eq!(get("Bearer scrape-S3cret"), 401);
    assert_eq!(get(&basic("prom", "scrape-S3cret")), 200);
    assert_eq!(admin_get(admin, "/healthz", None).unwrap().0, 200);
}

// ---------------------------------------------------------------------------
// TLS and token endpoint counters
// ---------------------------------------------------------------------------

#[test]
fn tls_handshakes_and_failed_handshakes_are_counted() {
    let (_reg, admin, proxy) = observed(|admin| observe_toml(admin, "", ""));
    wait_admin_up(admin, &proxy);
    let counts = || {
        let s = parse_exposition(&scrape(admin, &proxy));
        (
            sample_value(&s, "portcullis_tls_handshakes_total", &[]).unwrap_or(-1.0),
            sample_value(&s, "portcullis_tls_client_hellos_total", &[]).unwrap_or(-1.0),
        )
    };
    let (hs0, hello0) = counts();
    // three fresh connections, each a full handshake
    for _ in 0..3 {
        let r = proxy
            .new_client(true)
            .get(proxy.url("/v2/"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // one client that does not trust the certificate: the server answers
    // its ClientHello, the client aborts the handshake
    let untrusting = Client::builder()
        .timeout(Duration::from_secs(10))
        .http1_only()
        .build()
        .unwrap();
    assert!(
        untrusting.get(proxy.url("/v2/")).send().is_err(),
        "a client without the test CA connected"
    );
    let mut last = (hs0, hello0);
    wait_until(
        "three handshakes and four ClientHellos counted",
        Duration::from_secs(5),
        || {
            last = counts();
            last.0 >= hs0 + 3.0 && last.1 >= hello0 + 4.0
        },
        || {
            format!(
                "before: handshakes {hs0}, hellos {hello0}; now {:?}\n{}",
                counts(),
                proxy.logs()
            )
        },
    );
    assert_eq!(last.0, hs0 + 3.0, "completed handshakes");
    assert_eq!(last.1, hello0 + 4.0, "ClientHellos answered");
}

#[test]
fn token_endpoint_requests_are_their_own_route_and_issued_tokens_counted() {
    let keys = tempfile::tempdir().unwrap();
    let (_reg, admin, proxy) =
        observed_with(ProxyOptions::token(&[(USER, PASS)], keys.path()), |admin| {
            observe_toml(admin, "", "")
        });
    wait_admin_up(admin, &proxy);
    let (status, body) = proxy.get_token(Some((USER, PASS)), &[], false);
    assert_eq!(status, 200, "GET /token: {body}");
    let (status, body) = proxy.get_token(Some((USER, "wrong")), &[], false);
    assert_eq!(status, 401, "GET /token with a wrong password: {body}");

    let mut text = String::new();
    wait_until(
        "both token requests counted",
        WAIT,
        || {
            text = scrape(admin, &proxy);
            let s = parse_exposition(&text);
            sample_value(&s, "portcullis_requests_total", &[("method", "GET")]).unwrap_or(0.0)
                >= 2.0
        },
        || proxy.logs(),
    );
    let s = parse_exposition(&text);
    let v = |name: &str, labels: &[(&str, &str)]| sample_value(&s, name, labels).unwrap_or(0.0);
    assert_eq!(v("portcullis_tokens_issued_total", &[]), 1.0, "{text}");
    assert_eq!(
        v(
            "portcullis_auth_attempts_total",
            &[("backend", "htpasswd"), ("result", "bad_credentials")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        v(
            "portcullis_requests_total",
            &[("route", "token"), ("method", "GET"), ("code", "2xx")]
        ),
        1.0,
        "the token endpoint is route=\"token\"\n{text}"
    );
    assert_eq!(
        v(
            "portcullis_requests_total",
            &[("route", "token"), ("method", "GET"), ("code", "4xx")]
        ),
        1.0,
        "the refused token request is route=\"token\"\n{text}"
    );
}

// ---------------------------------------------------------------------------
// docs/observability.md stays true
// ---------------------------------------------------------------------------

fn observability_md() -> String {
    std::fs::read_to_string(root().join("docs/observability.md")).unwrap()
}

/// The text of a `## heading` section (up to the next `## `).
fn doc_section(md: &str, heading: &str) -> String {
    let start = md
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("docs/observability.md has no section {heading:?}"));
    let rest = &md[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

/// First-column names of the markdown table rows of `section`: `| `name` | …`.
fn table_names(section: &str) -> Vec<(String, Vec<String>)> {
    section
        .lines()
        .filter_map(|l| {
            let cells: Vec<String> = l
                .trim()
                .strip_prefix('|')?
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            let name = cells
                .first()?
                .strip_prefix('`')?
                .strip_suffix('`')?
                .to_string();
            Some((name, cells[1..].to_vec()))
        })
        .collect()
}

/// The indented example lines of `section` that are JSON objects.
fn json_examples(section: &str) -> Vec<serde_json::Value> {
    section
        .lines()
        .filter(|l| l.starts_with("    {"))
        .map(|l| {
            serde_json::from_str(l.trim())
                .unwrap_or_else(|e| panic!("docs example is not JSON ({e}): {l}"))
        })
        .collect()
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn docs_describe_every_metric_with_its_type() {
    let md = observability_md();
    let documented: std::collections::BTreeMap<String, String> =
        table_names(&doc_section(&md, "Metrics"))
            .into_iter()
            .filter(|(n, _)| n.starts_with("portcullis_"))
            .map(|(n, cells)| (n, cells.first().cloned().unwrap_or_default()))
            .collect();
    let names: BTreeSet<String> = documented.keys().cloned().collect();
    let source = source_metric_names();
    assert_eq!(
        names.difference(&source).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented metrics the code does not have"
    );
    assert_eq!(
        source.difference(&names).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "metrics missing from docs/observability.md"
    );
    for (n, t) in &documented {
        let expected = if n.ends_with("_total") {
            "counter"
        } else if t == "histogram" {
            "histogram"
        } else {
            "gauge"
        };
        assert_eq!(t, expected, "{n}: documented type");
    }

    // the types a live scrape declares are the documented ones
    let (_reg, admin, proxy) = observed(|admin| observe_toml(admin, "", ""));
    wait_admin_up(admin, &proxy);
    // a little traffic, so labelled metrics have children
    let _ = push_image(&proxy, "observe/typed", "t1");
    let _ = proxy.send_as(Method::GET, "/v2/", USER, "wrong");
    let text = scrape(admin, &proxy);
    let declared = declared_types(&text);
    assert!(declared.len() >= 12, "{declared:?}");
    for (name, kind) in &declared {
        assert_eq!(
            documented.get(name),
            Some(kind),
            "{name}: the scrape says {kind}"
        );
    }
}

#[test]
fn docs_log_examples_have_the_real_fields() {
    let md = observability_md();
    // audit examples: JSON, only fields of the documented table, and the
    // fields every line has
    let audit = doc_section(&md, "The audit log");
    let fields: BTreeSet<String> = table_names(&audit)
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    for f in [
        "time",
        "action",
        "user",
        "client",
        "repository",
        "reference",
        "digest",
        "from",
        "status",
        "bytes",
    ] {
        assert!(
            fields.contains(f),
            "audit field {f} not in the docs table: {fields:?}"
        );
    }
    let examples = json_examples(&audit);
    assert!(examples.len() >= 4, "audit examples: {}", examples.len());
    for e in &examples {
        for k in keys(e) {
            assert!(
                fields.contains(&k),
                "example field {k} is not documented: {e}"
            );
        }
        for k in [
            "time",
            "action",
            "user",
            "client",
            "repository",
            "status",
            "bytes",
        ] {
            assert!(e.get(k).is_some(), "example without {k}: {e}");
        }
        assert!(is_rfc3339(e["time"].as_str().unwrap()), "{e}");
    }
    // access examples: the JSON one has exactly the fields a real line has
    let access = doc_section(&md, "The access log");
    let examples = json_examples(&access);
    let doc_line = examples
        .iter()
        .find(|e| e["target"] == "access")
        .expect("a JSON access log example");

    let reg = Registry::start();
    let proxy = Proxy::start(&reg, ProxyOptions::default().toml("format = \"json\"\n"));
    assert_eq!(proxy.send_req(Method::GET, "/v2/").status(), 200);
    let mut real = None;
    wait_until(
        "a JSON access line",
        WAIT,
        || {
            real = proxy
                .log_text()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["target"] == "access" && v["status"] == 200);
            real.is_some()
        },
        || proxy.logs(),
    );
    assert_eq!(
        keys(doc_line),
        keys(real.as_ref().unwrap()),
        "documented JSON access line vs a real one: {}",
        real.unwrap()
    );
}

/// `[health]` is reloaded with the upstream: a threshold too high to ever
/// trip keeps /readyz at 200 with the registry stopped, until a reload
/// lowers it.
#[test]
fn health_settings_are_reloaded() {
    let (mut reg, admin, proxy) = observed(|admin| {
        observe_toml(admin, "", "").replace("threshold = 2", "threshold = 100000")
    });
    wait_admin_up(admin, &proxy);
    let readyz = || admin_get(admin, "/readyz", None).map_or(0, |r| r.0);
    wait_until("/readyz 200", WAIT, || readyz() == 200, || proxy.logs());
    reg.stop();
    // ten checks fail, far from 100000 in a row: still ready
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(readyz(), 200, "{}", proxy.logs());

    let text = std::fs::read_to_string(proxy.config_path()).unwrap();
    assert!(text.contains("threshold = 100000"), "{text}");
    write_atomic(
        &proxy.config_path(),
        text.replace("threshold = 100000", "threshold = 1")
            .as_bytes(),
    );
    wait_until(
        "/readyz 503 once the reloaded threshold applies",
        WAIT,
        || readyz() == 503,
        || proxy.logs(),
    );
    reg.start_again();
}
