//! Prometheus metrics, in one registry of our own.
//!
//! Labels are bounded: route kind, method, status class, backend, result.
//! No user or repository labels (their number is unbounded).

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};
use std::sync::{LazyLock, OnceLock};

/// Request durations from a millisecond to an hour: manifest GETs take
/// milliseconds, multi-GiB layer pushes many minutes.
const DURATION_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

pub struct Metrics {
    registry: Registry,
    /// The children of `requests`, `request_duration`, `received_bytes`
    /// and `sent_bytes`, found once: a lookup by label text hashes every
    /// label and takes a lock, four times per request.
    per_request: RequestSeries,
    /// `auth_attempts{result="ok"}` by backend, found once per backend.
    logins_ok: [OnceLock<IntCounter>; BACKENDS.len()],
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub received_bytes: IntCounterVec,
    pub sent_bytes: IntCounterVec,
    pub upstream_duration: Histogram,
    pub upstream_errors: IntCounterVec,
    pub upstream_up: IntGauge,
    pub cluster_up: IntGauge,
    pub cluster_errors: IntCounterVec,
    pub auth_attempts: IntCounterVec,
    pub denied: IntCounter,
    pub credential_cache: IntCounterVec,
    /// `credential_cache{result="hit"}` and `"miss"`, found once.
    pub credential_cache_hit: IntCounter,
    pub credential_cache_miss: IntCounter,
    pub throttled: IntCounter,
    pub rate_limited: IntCounterVec,
    pub ldap_duration: HistogramVec,
    pub tls_handshakes: IntCounter,
    pub tls_hellos: IntCounter,
    pub client_cert_refusals: IntCounter,
    pub cert_expiry: GaugeVec,
    pub access_token_expiry: GaugeVec,
    pub oidc_key_fetches: IntCounterVec,
    pub oidc_logins: IntCounterVec,
    pub oidc_refreshes: IntCounterVec,
    pub acme_renewals: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub tokens_issued: IntCounter,
    pub build_info: GaugeVec,
    pub start_time: Gauge,
}

/// Registers `m` (the names are constants: a failure is a bug, caught by
/// the unit tests).
fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn plain_counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid metric"))
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(r, HistogramVec::new(opts, labels).expect("valid metric"))
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(
        r,
        GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let upstream_duration = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "portcullis_upstream_response_duration_seconds",
                    "Time from sending a request upstream to its response header.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let upstream_up = register(
            &r,
            IntGauge::new(
                "portcullis_upstream_up",
                "1 if the upstream registry passes its health check, else 0.",
            )
            .expect("valid metric"),
        );
        let cluster_up = register(
            &r,
            IntGauge::new(
                "portcullis_cluster_up",
                "1 if the last call to the [cluster] Redis succeeded, else 0 (the throttle then counts per process).",
            )
            .expect("valid metric"),
        );
        let start_time = register(
            &r,
            Gauge::new(
                "portcullis_start_time_seconds",
                "Start time of the process since the Unix epoch.",
            )
            .expect("valid metric"),
        );
        let credential_cache = counter(
            &r,
            "portcullis_credential_cache_requests_total",
            "Lookups in the verified-credential cache, by result (hit, miss).",
            &["result"],
        );
        let m = Metrics {
            requests: counter(
                &r,
                "portcullis_requests_total",
                "Requests answered, by route kind, method and status class.",
                &["route", "method", "code"],
            ),
            request_duration: histogram(
                &r,
                "portcullis_request_duration_seconds",
                "Time from the request header to the end of the response.",
                &["route"],
                &DURATION_BUCKETS,
            ),
            received_bytes: counter(
                &r,
                "portcullis_received_bytes_total",
                "Request body bytes received from clients.",
                &["route"],
            ),
            sent_bytes: counter(
                &r,
                "portcullis_sent_bytes_total",
                "Response body bytes sent to clients.",
                &["route"],
            ),
            upstream_duration,
            upstream_errors: counter(
                &r,
                "portcullis_upstream_errors_total",
                "Failed upstream exchanges, by kind (connect, timeout, other).",
                &["kind"],
            ),
            upstream_up,
            auth_attempts: counter(
                &r,
                "portcullis_auth_attempts_total",
                "Credential checks by backend and result (ok, bad_credentials, unknown_user, backend_error, throttled, bad_token).",
                &["backend", "result"],
            ),
            denied: plain_counter(
                &r,
                "portcullis_denied_requests_total",
                "Requests refused by the access rules.",
            ),
            throttled: plain_counter(
                &r,
                "portcullis_throttled_requests_total",
                "Login attempts refused by the brute-force throttle.",
            ),
            rate_limited: counter(
                &r,
                "portcullis_rate_limited_requests_total",
                "Requests refused by a [limits] rate limit (429), by limit (address, user).",
                &["limit"],
            ),
            ldap_duration: histogram(
                &r,
                "portcullis_ldap_operation_duration_seconds",
                "Directory operations (search, bind), by operation.",
                &["operation"],
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
            tls_handshakes: plain_counter(
                &r,
                "portcullis_tls_handshakes_total",
                "TLS handshakes completed.",
            ),
            tls_hellos: plain_counter(
                &r,
                "portcullis_tls_client_hellos_total",
                "TLS ClientHellos answered with a certificate; minus completed handshakes, the failed ones.",
            ),
            client_cert_refusals: plain_counter(
                &r,
                "portcullis_tls_client_certificate_refusals_total",
                "Client certificates refused in the TLS handshake (unknown CA, expired, revoked).",
            ),
            cert_expiry: gauge(
                &r,
                "portcullis_certificate_expiry_timestamp_seconds",
                "Expiry (notAfter) of each served certificate, by its first name.",
                &["name"],
            ),
            access_token_expiry: gauge(
                &r,
                "portcullis_access_token_expiry_timestamp_seconds",
                "Expiry of each access token of [auth.tokens] that has one, by token name (as many series as tokens).",
                &["name"],
            ),
            cluster_up,
            cluster_errors: counter(
                &r,
                "portcullis_cluster_errors_total",
                "Calls to the [cluster] Redis that failed or timed out, by operation.",
                &["op"],
            ),
            oidc_key_fetches: counter(
                &r,
                "portcullis_oidc_key_fetches_total",
                "Fetches of OIDC issuers' discovery documents and keys, by result (ok, error).",
                &["result"],
            ),
            oidc_logins: counter(
                &r,
                "portcullis_oidc_logins_total",
                "Browser logins at /login, by result (ok, refused, error).",
                &["result"],
            ),
            oidc_refreshes: counter(
                &r,
                "portcullis_oidc_session_refreshes_total",
                "Refreshes of the provider sessions behind login tokens, by result (ok, revoked, error).",
                &["result"],
            ),
            acme_renewals: counter(
                &r,
                "portcullis_acme_renewals_total",
                "ACME orders by result (ok, error).",
                &["result"],
            ),
            config_reloads: counter(
                &r,
                "portcullis_config_reloads_total",
                "Reloads of config, htpasswd and certificate files, by what and result.",
                &["what", "result"],
            ),
            tokens_issued: plain_counter(
                &r,
                "portcullis_tokens_issued_total",
                "Access tokens issued by the token endpoint.",
            ),
            build_info: gauge(
                &r,
                "portcullis_build_info",
                "Always 1; the version and commit of this build as labels.",
                &["version", "commit"],
            ),
            start_time,
            credential_cache_hit: credential_cache.with_label_values(&["hit"]),
            credential_cache_miss: credential_cache.with_label_values(&["miss"]),
            credential_cache,
            per_request: RequestSeries::default(),
            logins_ok: Default::default(),
            registry: r,
        };
        m.build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("PORTCULLIS_COMMIT").unwrap_or("unknown"),
            ])
            .set(1.0);
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            m.start_time.set(d.as_secs_f64());
        }
        m
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // encoding into a Vec cannot fail
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The `route` labels of the request series, as `Route::kind` and the
/// proxy's own endpoints give them.
const ROUTES: [&str; 10] = [
    "base",
    "catalog",
    "tags",
    "manifest",
    "blob",
    "upload",
    "referrers",
    "token",
    "login",
    "other",
];
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "other"];
const CODES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

struct RouteSeries {
    duration: Histogram,
    received: IntCounter,
    sent: IntCounter,
}

/// Children made on first use, so `/metrics` shows only series that
/// counted something, as with lookups by label.
#[derive(Default)]
struct RequestSeries {
    routes: [OnceLock<RouteSeries>; ROUTES.len()],
    requests: [[[OnceLock<IntCounter>; CODES.len()]; METHODS.len()]; ROUTES.len()],
}

/// One answered request, for the metrics.
pub struct RequestRecord<'a> {
    pub route: &'a str,
    pub method: &'a http::Method,
    /// The status sent; 0 for none.
    pub status: u16,
    pub seconds: f64,
    pub received: u64,
    pub sent: u64,
}

impl Metrics {
    /// Counts one answered request in the request series.
    pub fn record_request(&self, r: &RequestRecord<'_>) {
        let (method, code) = (method_index(r.method), code_index(r.status));
        let Some(route) = ROUTES.iter().position(|l| *l == r.route) else {
            // (a label outside the table: looked up by text)
            let route = [r.route];
            self.requests
                .with_label_values(&[r.route, METHODS[method], CODES[code]])
                .inc();
            self.request_duration
                .with_label_values(&route)
                .observe(r.seconds);
            self.received_bytes
                .with_label_values(&route)
                .inc_by(r.received);
            self.sent_bytes.with_label_values(&route).inc_by(r.sent);
            return;
        };
        let label = ROUTES[route];
        self.per_request.requests[route][method][code]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[label, METHODS[method], CODES[code]])
            })
            .inc();
        let series = self.per_request.routes[route].get_or_init(|| RouteSeries {
            duration: self.request_duration.with_label_values(&[label]),
            received: self.received_bytes.with_label_values(&[label]),
            sent: self.sent_bytes.with_label_values(&[label]),
        });
        series.duration.observe(r.seconds);
        series.received.inc_by(r.received);
        series.sent.inc_by(r.sent);
    }
}

/// The `backend` labels of a successful login.
const BACKENDS: [&str; 5] = ["htpasswd", "ldap", "oidc", "token", "certificate"];

impl Metrics {
    /// Counts a successful login by `backend`: every request with
    /// credentials is one.
    pub fn login_ok(&self, backend: &str) {
        match BACKENDS.iter().position(|b| *b == backend) {
            Some(i) => self.logins_ok[i]
                .get_or_init(|| self.auth_attempts.with_label_values(&[BACKENDS[i], "ok"]))
                .inc(),
            None => self.auth_attempts.with_label_values(&[backend, "ok"]).inc(),
        }
    }
}

fn code_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

fn method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::PATCH => 4,
        http::Method::DELETE => 5,
        _ => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let m = metrics();
        m.requests
            .with_label_values(&["manifest", "GET", "2xx"])
            .inc();
        m.request_duration
            .with_label_values(&["manifest"])
            .observe(0.003);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(
                "portcullis_requests_total{code=\"2xx\",method=\"GET\",route=\"manifest\"}"
            ),
            "{text}"
        );
        assert!(text.contains("portcullis_build_info{"), "{text}");
        assert!(text.contains("# TYPE portcullis_request_duration_seconds histogram"));
    }

    #[test]
    fn labels() {
        assert_eq!(CODES[code_index(204)], "2xx");
        assert_eq!(CODES[code_index(0)], "none");
        assert_eq!(CODES[code_index(600)], "none");
        assert_eq!(METHODS[method_index(&http::Method::OPTIONS)], "other");
        assert_eq!(METHODS[method_index(&http::Method::PATCH)], "PATCH");
    }

    /// The cached children are the series a lookup by label finds, for a
    /// route of the table and for one outside it.
    #[test]
    fn recorded_requests_land_in_the_labelled_series() {
        let m = metrics();
        let record = |route, method, status, received| RequestRecord {
            route,
            method,
            status,
            seconds: 0.5,
            received,
            sent: 7,
        };
        for _ in 0..2 {
            m.record_request(&record("upload", &http::Method::PUT, 201, 100));
        }
        m.record_request(&record("upload", &http::Method::PUT, 404, 1));
        m.record_request(&record("something-new", &http::Method::GET, 0, 5));
        let count = |labels: &[&str]| m.requests.with_label_values(labels).get();
        assert_eq!(count(&["upload", "PUT", "2xx"]), 2);
        assert_eq!(count(&["upload", "PUT", "4xx"]), 1);
        assert_eq!(count(&["something-new", "GET", "none"]), 1);
        assert_eq!(m.received_bytes.with_label_values(&["upload"]).get(), 201);
        assert_eq!(m.sent_bytes.with_label_values(&["upload"]).get(), 21);
        assert_eq!(
            m.received_bytes.with_label_values(&["something-new"]).get(),
            5
        );
        let upload = m.request_duration.with_label_values(&["upload"]);
        assert_eq!(upload.get_sample_count(), 3);
        assert_eq!(upload.get_sample_sum(), 1.5);
        m.login_ok("ldap");
        m.login_ok("ldap");
        m.login_ok("elsewhere");
        let ok = |b: &str| m.auth_attempts.with_label_values(&[b, "ok"]).get();
        assert_eq!((ok("ldap"), ok("elsewhere"), ok("htpasswd")), (2, 1, 0));
        // nothing made for routes that counted nothing
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("route=\"referrers\""), "{text}");
    }
}
