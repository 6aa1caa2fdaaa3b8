//! The registry behind the proxy: where it is and how to talk to it.

use arc_swap::ArcSwap;
use base64::Engine;
use pingora::prelude::HttpPeer;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;

use crate::config::{HealthConfig, SecretError, UpstreamConfig};

/// Several registry replicas, balanced round-robin; replicas failing the
/// health check are skipped until they pass again.
pub type Replicas = LoadBalancer<RoundRobin>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("{path}: {reason}")]
    CaFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{addresses}: {reason}")]
    Replicas { addresses: String, reason: String },
    #[error("cannot run the first health check: {0}")]
    FirstCheck(#[source] std::io::Error),
}

impl UpstreamError {
    /// The config key the error is about.
    pub fn key(&self) -> &'static str {
        match self {
            UpstreamError::Resolve { .. } => "upstream.url",
            UpstreamError::Secret(_) => "upstream.password",
            UpstreamError::CaFile { .. } => "upstream.ca_file",
            UpstreamError::Replicas { .. } | UpstreamError::FirstCheck(_) => "upstream.replicas",
        }
    }
}

pub struct Upstream {
    /// `scheme://host[:port]`, to recognise upstream URLs in responses.
    origin: String,
    /// `host[:port]` as written in the config, for DNS and the Host header.
    authority: String,
    /// `authority` as the Host header of every forwarded request, built
    /// once: a clone shares its bytes, where a `&str` is validated and
    /// copied on every request.
    host_value: http::HeaderValue,
    tls: bool,
    sni: String,
    addr: ArcSwap<SocketAddr>,
    connect_timeout: Duration,
    read_timeout: Duration,
    write_timeout: Duration,
    idle_timeout: Duration,
    authorization: Option<String>,
    /// `upstream.ca_file`, read and parsed once.
    ca_certs: Vec<reqwest::Certificate>,
    /// `scheme://host[:port]` of every replica (the first is `url`).
    origins: Vec<String>,
    replicas: Option<Arc<Replicas>>,
    /// `[health]`, reloaded with the upstream it checks.
    health: HealthConfig,
}

impl Upstream {
    /// One upstream without replicas; [`Upstream::from_config`] finishes it.
    fn new(cfg: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let url = &cfg.url;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let addr = resolve(&host, port)?;
        let host_value = http::HeaderValue::try_from(authority.as_str()).map_err(|e| {
            UpstreamError::Resolve {
                host: authority.clone(),
                reason: e.to_string(),
            }
        })?;
        let authorization = match (&cfg.username, &cfg.password) {
            (Some(u), Some(p)) => {
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{u}:{}", p.resolve()?));
                Some(format!("Basic {token}"))
            }
            _ => None,
        };
        Ok(Upstream {
            origin: url.origin().ascii_serialization(),
            authority,
            host_value,
            tls: url.scheme() == "https",
            sni: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            addr: ArcSwap::from_pointee(addr),
            connect_timeout: cfg.connect_timeout,
            read_timeout: cfg.read_timeout,
            write_timeout: cfg.write_timeout,
            idle_timeout: cfg.idle_timeout,
            authorization,
            ca_certs: match &cfg.ca_file {
                Some(path) => read_ca(path)?,
                None => Vec::new(),
            },
            origins: std::iter::once(url)
                .chain(cfg.replicas.iter())
                .flat_map(origin_spellings)
                .collect(),
            replicas: None,
            health: HealthConfig::default(),
        })
    }

    /// The upstream of `[upstream]`, balanced over its replicas when it
    /// lists any. `current` is the upstream serving now: when the replica
    /// list is unchanged its balancer (and the health it has learnt) is
    /// kept; a new list is health-checked once before it is returned, so
    /// a reload never sends requests to a replica that is already down.
    /// Blocking: call off Pingora's workers.
    pub fn from_config(
        cfg: &UpstreamConfig,
        health: &HealthConfig,
        current: Option<&Upstream>,
    ) -> Result<Self, UpstreamError> {
        let mut up = Self::new(cfg)?;
        up.health = health.clone();
        if cfg.replicas.is_empty() {
            return Ok(up);
        }
        let kept = current
            .filter(|c| c.origins == up.origins && c.health.threshold == health.threshold)
            .and_then(|c| c.replicas.clone());
        up.replicas = Some(match kept {
            Some(lb) => lb,
            None => Arc::new(balancer(&up, cfg, health)?),
        });
        Ok(up)
    }

    /// How often to check, and after how many failures in a row the
    /// upstream counts as down.
    pub fn health(&self) -> &HealthConfig {
        &self.health
    }

    /// One health check of every replica (a no-op without replicas); run
    /// every `[health] interval` by the health loop.
    pub async fn check_replicas(&self) {
        if let Some(lb) = &self.replicas {
            lb.backends().run_health_check(true).await;
        }
    }

    /// The replicas' `host:port`s, for the load balancer.
    pub fn replica_addresses(cfg: &UpstreamConfig) -> Vec<String> {
        std::iter::once(&cfg.url)
            .chain(cfg.replicas.iter())
            .map(|u| {
                let host = u.host_str().unwrap_or_default();
                let port = u.port_or_known_default().unwrap_or(80);
                format!("{host}:{port}")
            })
            .collect()
    }

    pub fn replica_count(&self) -> usize {
        self.origins.len()
    }

    /// Every replica's origin, to recognise upstream URLs in responses
    /// (in both schemes: told `X-Forwarded-Proto: https`, a registry that
    /// ignores `X-Forwarded-Host` writes `https://` + its own address).
    pub fn origins(&self) -> &[String] {
        &self.origins
    }

    #[cfg(test)]
    pub fn for_tests(url: &str) -> Self {
        let cfg: UpstreamConfig = toml::from_str(&format!("url = {url:?}")).unwrap();
        Self::new(&cfg).unwrap()
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn host_header(&self) -> &str {
        &self.authority
    }

    /// [`host_header`](Self::host_header) as a header value.
    pub fn host_value(&self) -> &http::HeaderValue {
        &self.host_value
    }

    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// A client for the proxy's own requests to the registry (the filtered
    /// catalog, the health check), trusting `upstream.ca_file`. A client
    /// per use: they are rare, and a pooled client would tie its sockets to
    /// whichever of Pingora's runtimes made it.
    pub fn client(&self) -> Result<reqwest::Client, reqwest::Error> {
        http_client(
            &self.ca_certs,
            self.connect_timeout,
            self.read_timeout,
            None,
        )
    }

    /// The health check of the registry (a healthy replica, if any).
    pub async fn probe(&self) -> bool {
        let timeout = self.health.interval;
        match http_client(
            &self.ca_certs,
            self.connect_timeout.min(timeout),
            timeout,
            None,
        ) {
            Ok(client) => probe(&client, &format!("{}/v2/", self.api_base())).await,
            Err(e) => {
                tracing::warn!(target: "health", error = %e, "cannot make an HTTP client for the health check");
                false
            }
        }
    }

    /// `scheme://host[:port]` of the registry (a healthy replica's, when
    /// there are replicas), for the proxy's own requests.
    pub fn api_base(&self) -> String {
        match self.replicas.as_ref().and_then(|lb| lb.select(b"", 256)) {
            Some(b) if !self.tls => format!("http://{}", b.addr),
            _ => self.origin.clone(),
        }
    }

    pub fn address(&self) -> SocketAddr {
        **self.addr.load()
    }

    /// Re-resolves the upstream's name (it may move, e.g. in compose); an
    /// error keeps the last good address. Blocking: call off the workers.
    pub fn refresh_address(&self) -> Result<(), UpstreamError> {
        let (host, port) = split_authority(&self.authority, self.tls);
        let addr = resolve(host, port)?;
        if addr != self.address() {
            tracing::info!(target: "upstream", %addr, "upstream address changed");
            self.addr.store(Arc::new(addr));
        }
        Ok(())
    }

    /// A peer for one request; pingora pools connections per peer, so
    /// equal peers reuse kept-alive upstream connections.
    pub fn peer(&self) -> pingora::Result<Box<HttpPeer>> {
        let addr = match &self.replicas {
            Some(lb) => lb
                .select(b"", 256)
                .and_then(|b| b.addr.as_inet().copied())
                .ok_or_else(|| {
                    pingora::Error::explain(
                        pingora::ErrorType::ConnectNoRoute,
                        "no healthy upstream replica",
                    )
                })?,
            None => self.address(),
        };
        let mut peer = HttpPeer::new(addr, self.tls, self.sni.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.connect_timeout);
        o.read_timeout = Some(self.read_timeout);
        o.write_timeout = Some(self.write_timeout);
        o.idle_timeout = Some(self.idle_timeout);
        Ok(Box::new(peer))
    }
}

/// Round-robin over the replicas, each checked with [`probe`] (the same
/// check as the single upstream's). The first check runs here with a
/// threshold of one, so replicas that are down start out of the rotation;
/// later ones need `health.threshold` failures in a row.
fn balancer(
    up: &Upstream,
    cfg: &UpstreamConfig,
    health: &HealthConfig,
) -> Result<Replicas, UpstreamError> {
    let addrs = Upstream::replica_addresses(cfg);
    let mut lb = Replicas::try_from_iter(addrs.iter().map(String::as_str)).map_err(|e| {
        UpstreamError::Replicas {
            addresses: addrs.join(", "),
            reason: e.to_string(),
        }
    })?;
    let primed = Arc::new(AtomicBool::new(false));
    lb.set_health_check(Box::new(ReplicaCheck {
        ca_certs: up.ca_certs.clone(),
        timeout: health.interval,
        tls: up.tls,
        host: up.sni.clone(),
        threshold: health.threshold.max(1) as usize,
        primed: Arc::clone(&primed),
    }));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(UpstreamError::FirstCheck)?
        .block_on(lb.backends().run_health_check(true));
    primed.store(true, Ordering::Relaxed);
    Ok(lb)
}

/// A client for the proxy's own requests to the registry, trusting
/// `upstream.ca_file`; `resolve` pins a name to one replica's address.
fn http_client(
    ca_certs: &[reqwest::Certificate],
    connect_timeout: Duration,
    timeout: Duration,
    resolve: Option<(&str, SocketAddr)>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .pool_max_idle_per_host(0);
    for cert in ca_certs {
        builder = builder.add_root_certificate(cert.clone());
    }
    if let Some((name, addr)) = resolve {
        builder = builder.resolve(name, addr);
    }
    builder.build()
}

/// The health check: `GET /v2/`, any answer below 500 (401 included: the
/// registry may run its own auth) means the registry is serving. Like
/// registry:2's `health.storagedriver`.
pub async fn probe(client: &reqwest::Client, url: &str) -> bool {
    match client.get(url).send().await {
        Ok(r) => r.status().as_u16() < 500,
        Err(e) => {
            tracing::debug!(target: "health", error = %e.without_url(), "upstream health check failed");
            false
        }
    }
}

/// [`probe`] for Pingora's balancer, one replica at a time; its first
/// pass decides at once.
struct ReplicaCheck {
    ca_certs: Vec<reqwest::Certificate>,
    timeout: Duration,
    tls: bool,
    /// The upstream's name: TLS replicas are asked for it at their address.
    host: String,
    threshold: usize,
    primed: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl pingora::lb::health_check::HealthCheck for ReplicaCheck {
    async fn check(&self, target: &pingora::lb::Backend) -> pingora::Result<()> {
        let unhealthy = |why: &str| {
            pingora::Error::explain(
                pingora::ErrorType::ConnectError,
                format!("replica unhealthy: {why}"),
            )
        };
        let addr = target
            .addr
            .as_inet()
            .copied()
            .ok_or_else(|| unhealthy("not an inet address"))?;
        // a TLS replica is asked for the upstream's name, at its address
        let (url, resolve) = match self.tls {
            true => (
                format!("https://{}:{}/v2/", self.host, addr.port()),
                Some((self.host.as_str(), addr)),
            ),
            false => (format!("http://{addr}/v2/"), None),
        };
        let client = http_client(&self.ca_certs, self.timeout, self.timeout, resolve)
            .map_err(|e| unhealthy(&e.to_string()))?;
        match probe(&client, &url).await {
            true => Ok(()),
            false => Err(unhealthy("no answer below 500")),
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        match (self.primed.load(Ordering::Relaxed), success) {
            (false, _) | (true, true) => 1,
            (true, false) => self.threshold,
        }
    }
}

/// The certificates of `upstream.ca_file`; unreadable, or without one
/// certificate, is an error (the registry would be unreachable).
fn read_ca(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, UpstreamError> {
    let err = |reason: String| UpstreamError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate found".to_owned()));
    }
    Ok(certs)
}

fn split_authority(authority: &str, tls: bool) -> (&str, u16) {
    let default = if tls { 443 } else { 80 };
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            let port = p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default);
            return (h, port);
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(default)),
        None => (authority, default),
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, UpstreamError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(|e| UpstreamError::Resolve {
            host: host.to_owned(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| UpstreamError::Resolve {
            host: host.to_owned(),
            reason: "no address".to_owned(),
        })
}

/// `scheme://host[:port]` of `url` as the upstream may write it in a
/// `Location`: its own scheme and the other one, the port always explicit
/// in the latter (the default port of one scheme is not the other's).
fn origin_spellings(url: &url::Url) -> Vec<String> {
    let own = url.origin().ascii_serialization();
    let mut out = vec![own];
    // (`host_str` keeps an IPv6 address in brackets)
    if let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
        for scheme in ["http", "https"] {
            let spelled = format!("{scheme}://{host}:{port}");
            if !out.contains(&spelled) {
                out.push(spelled);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_origin_and_authority() {
        let u = Upstream::for_tests("http://127.0.0.1:5000");
        assert_eq!(u.origin(), "http://127.0.0.1:5000");
        assert_eq!(u.host_header(), "127.0.0.1:5000");
        assert_eq!(u.address(), "127.0.0.1:5000".parse().unwrap());
        let u = Upstream::for_tests("https://[::1]");
        assert_eq!(u.address(), "[::1]:443".parse().unwrap());
        assert_eq!(u.host_header(), "[::1]");
        assert!(u.refresh_address().is_ok());
    }

    #[test]
    fn upstream_credentials_become_a_header() {
        let cfg: UpstreamConfig =
            toml::from_str("url = \"http://127.0.0.1:1\"\nusername = \"p\"\npassword = \"s\"")
                .unwrap();
        let u = Upstream::new(&cfg).unwrap();
        assert_eq!(u.authorization(), Some("Basic cDpz"));
    }

    /// Answers every connection with `200 OK`, like a healthy registry.
    fn healthy_replica() -> SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            }
        });
        addr
    }

    #[test]
    fn a_replica_already_down_starts_out_of_the_rotation() {
        let live = healthy_replica();
        // a port nothing listens on
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let cfg: UpstreamConfig = toml::from_str(&format!(
            "url = \"http://{dead}\"\nreplicas = [\"http://{live}\"]"
        ))
        .unwrap();
        // a threshold of 3 applies to later checks, not to the first one
        let health: HealthConfig = toml::from_str("threshold = 3").unwrap();
        let up = Upstream::from_config(&cfg, &health, None).unwrap();
        for _ in 0..6 {
            assert_eq!(up.peer().unwrap()._address.as_inet(), Some(&live));
        }
        // the same list on reload keeps the balancer and what it learnt
        let again = Upstream::from_config(&cfg, &health, Some(&up)).unwrap();
        assert!(Arc::ptr_eq(
            again.replicas.as_ref().unwrap(),
            up.replicas.as_ref().unwrap()
        ));
        let other: UpstreamConfig = toml::from_str(&format!(
            "url = \"http://{live}\"\nreplicas = [\"http://{dead}\"]"
        ))
        .unwrap();
        let changed = Upstream::from_config(&other, &health, Some(&up)).unwrap();
        assert!(!Arc::ptr_eq(
            changed.replicas.as_ref().unwrap(),
            up.replicas.as_ref().unwrap()
        ));
    }

    #[test]
    fn authority_split() {
        assert_eq!(split_authority("h:1", false), ("h", 1));
        assert_eq!(split_authority("h", true), ("h", 443));
        assert_eq!(split_authority("[::1]:8", false), ("::1", 8));
    }
}
