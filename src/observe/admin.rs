//! The admin listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! It is its own listener (loopback by default) so that metrics and health
//! never share a port, TLS or auth with registry clients.

use async_trait::async_trait;
use base64::Engine;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

use super::health::Health;
use super::metrics::metrics;
use crate::tls::store::CertStore;

/// What a scraper must present: any one of these `Authorization` values.
pub struct ScrapeAuth {
    accepted: Vec<String>,
}

impl ScrapeAuth {
    pub fn new() -> Self {
        ScrapeAuth {
            accepted: Vec::new(),
        }
    }

    pub fn basic(mut self, user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.accepted.push(format!("Basic {token}"));
        self
    }

    pub fn bearer(mut self, token: &str) -> Self {
        self.accepted.push(format!("Bearer {token}"));
        self
    }

    fn wants_basic(&self) -> bool {
        self.accepted.iter().any(|a| a.starts_with("Basic "))
    }

    fn allows(&self, header: Option<&[u8]>) -> bool {
        // hash both so the comparison is constant-time and length-blind
        let got = Sha256::digest(header.unwrap_or_default());
        self.accepted.iter().fold(false, |ok, a| {
            ok | bool::from(got.ct_eq(&Sha256::digest(a.as_bytes())))
        })
    }
}

impl Default for ScrapeAuth {
    fn default() -> Self {
        Self::new()
    }
}

/// A named readiness check, e.g. whether the directory answers.
pub type ReadyCheck = (&'static str, Box<dyn Fn() -> bool + Send + Sync>);

pub struct AdminApp {
    pub health: Arc<Health>,
    pub certs: Arc<CertStore>,
    pub auth: Option<ScrapeAuth>,
    /// Extra readiness checks (e.g. the directory), by name.
    pub ready_checks: Vec<ReadyCheck>,
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> http::Response<Vec<u8>> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

impl AdminApp {
    fn readiness(&self) -> (bool, String) {
        let mut ok = true;
        let mut text = String::new();
        let up = self.health.upstream_up();
        ok &= up;
        text.push_str(&format!("upstream: {}\n", if up { "ok" } else { "down" }));
        text.push_str("certificate: ok\n");
        for (name, check) in &self.ready_checks {
            let r = check();
            ok &= r;
            text.push_str(&format!("{name}: {}\n", if r { "ok" } else { "down" }));
        }
        (ok, text)
    }

    /// Copies the ACME manager's own counters into the exported ones.
    fn refresh_acme(&self) {
        let Some(acme) = crate::tls::acme::metrics::global() else {
            return;
        };
        let (mut ok, mut failed) = (0u64, 0u64);
        for c in acme.certificates() {
            ok += c.certificates_issued();
            failed += c.renewal_failures();
        }
        let m = &metrics().acme_renewals;
        m.reset();
        m.with_label_values(&["ok"]).inc_by(ok);
        m.with_label_values(&["error"]).inc_by(failed);
    }

    fn refresh_cert_gauges(&self) {
        let g = &metrics().cert_expiry;
        g.reset();
        for info in self.certs.all() {
            let name = info.names.first().map(String::as_str).unwrap_or("default");
            g.with_label_values(&[name]).set(info.not_after as f64);
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        match path.as_str() {
            "/healthz" => response(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let (ok, text) = self.readiness();
                response(if ok { 200 } else { 503 }, "text/plain", text.into_bytes())
            }
            "/metrics" => {
                let header = session
                    .req_header()
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes());
                if let Some(auth) = &self.auth {
                    if !auth.allows(header) {
                        let mut r = response(401, "text/plain", b"unauthorized\n".to_vec());
                        if auth.wants_basic() {
                            r.headers_mut().insert(
                                http::header::WWW_AUTHENTICATE,
                                http::HeaderValue::from_static("Basic realm=\"metrics\""),
                            );
                        }
                        return r;
                    }
                }
                self.refresh_cert_gauges();
                self.refresh_acme();
                response(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics().render(),
                )
            }
            _ => response(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_auth_compares_whole_values() {
        let a = ScrapeAuth::new().basic("prom", "s3cret");
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("prom:s3cret")
        );
        assert!(a.allows(Some(good.as_bytes())));
        assert!(!a.allows(Some(b"Basic cHJvbTpub3Bl")));
        assert!(!a.allows(None));
        let b = ScrapeAuth::new().bearer("tok");
        assert!(b.allows(Some(b"Bearer tok")));
        assert!(!b.allows(Some(b"Bearer tok2")));
        let both = ScrapeAuth::new().basic("prom", "s3cret").bearer("tok");
        assert!(both.allows(Some(good.as_bytes())) && both.allows(Some(b"Bearer tok")));
    }
}
