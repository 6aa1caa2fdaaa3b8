//! `proxy.toml`: the schema, its defaults and its validation.
//!
//! The file is parsed strictly (unknown keys are errors: a typo must not
//! silently switch a security setting off) and every problem is reported
//! with the dotted key it concerns, so `portcullis check` can name it.

pub mod acme;
pub mod client_auth;
pub mod http2;
pub mod ldap;
pub mod limits;
pub mod oidc;
mod problem;
mod secret;

pub use problem::{ConfigError, Problem};
pub use secret::{Secret, SecretError};

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub tls: TlsConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub health: HealthConfig,
    /// Ordered access rules; the first that matches decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<RuleConfig>,
    /// State shared by the replicas of a fleet (Redis).
    pub cluster: Option<ClusterConfig>,
    /// Request rate limits per address and per user.
    pub limits: Option<limits::LimitsConfig>,
}

/// `[cluster]`: the Redis the replicas share the login throttle in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]` or `rediss://…` (TLS); a
    /// secret, since the URL may carry the password.
    pub redis: Secret,
    /// Put before every key, so several fleets can share one Redis.
    #[serde(default = "defaults::cluster_prefix")]
    pub key_prefix: String,
    /// The longest a call to Redis may take before the replica goes on
    /// without it.
    #[serde(default = "defaults::cluster_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the revocation list is written to and read from Redis:
    /// the bound on a revocation reaching every replica.
    #[serde(default = "defaults::cluster_sync_interval", with = "humantime_serde")]
    pub sync_interval: Duration,
}

/// The admin listener: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    #[serde(default = "defaults::metrics_listen")]
    pub listen: SocketAddr,
    /// Basic credentials scrapers must send to `/metrics`.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Or a bearer token (`authorization.credentials` in Prometheus).
    pub bearer_token: Option<Secret>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: defaults::metrics_listen(),
            username: None,
            password: None,
            bearer_token: None,
        }
    }
}

/// The upstream health check (like registry:2's `health.storagedriver`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "defaults::health_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Failed checks in a row before the upstream counts as down.
    #[serde(default = "defaults::health_threshold")]
    pub threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: defaults::health_interval(),
            threshold: defaults::health_threshold(),
        }
    }
}

/// One `[[access]]` rule as written; compiled by `auth::acl`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub users: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub anonymous: bool,
    pub repositories: Option<Vec<String>>,
    pub networks: Option<Vec<String>>,
    pub actions: Vec<String>,
    /// Match only callers who proved who they are this way.
    pub credential: Option<CredentialKind>,
    pub comment: Option<String>,
}

/// How a caller proved who it is, as a rule names it (`access.credential`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// A password (Basic credentials, or a login at the token endpoint).
    Password,
    /// An access token of its owner.
    Token,
    /// A client certificate verified in the TLS handshake.
    Certificate,
    /// An OpenID Connect ID token of `[[auth.oidc.issuers]]`.
    Oidc,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Basic credentials on every request (what the nginx recipe does).
    #[default]
    Basic,
    /// Docker token auth: clients get a JWT at the token endpoint.
    Token,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Failures (per address, per user) before attempts are refused.
    #[serde(default = "defaults::max_failures")]
    pub max_failures: u32,
    /// Failures are forgotten after this long without a new one.
    #[serde(default = "defaults::throttle_window", with = "humantime_serde")]
    pub window: Duration,
    /// The first refusal period; doubles with each further failure.
    #[serde(default = "defaults::backoff", with = "humantime_serde")]
    pub backoff: Duration,
    #[serde(default = "defaults::max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    #[serde(default = "defaults::throttle_entries")]
    pub max_entries: u64,
    /// IPv6 clients are counted per network of this prefix length: one
    /// host usually holds a whole /64 and could take a fresh address per
    /// attempt.
    #[serde(default = "defaults::ipv6_prefix")]
    pub ipv6_prefix: u8,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            enabled: true,
            max_failures: defaults::max_failures(),
            window: defaults::throttle_window(),
            backoff: defaults::backoff(),
            max_backoff: defaults::max_backoff(),
            max_entries: defaults::throttle_entries(),
            ipv6_prefix: defaults::ipv6_prefix(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `iss` of issued tokens; registry:2's `auth.token.issuer`.
    #[serde(default = "defaults::issuer")]
    pub issuer: String,
    /// `aud`; the `service` clients ask for; registry:2's `auth.token.service`.
    #[serde(default = "defaults::service")]
    pub service: String,
    #[serde(default = "defaults::token_lifetime", with = "humantime_serde")]
    pub lifetime: Duration,
    #[serde(default = "defaults::refresh_lifetime", with = "humantime_serde")]
    pub refresh_lifetime: Duration,
    /// Per-user access-token lifetimes (robot accounts for CI).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lifetimes: std::collections::BTreeMap<String, humantime_serde::Serde<Duration>>,
    #[serde(default = "defaults::algorithm")]
    pub algorithm: String,
    /// PEM private key; generated in `key_dir` when not set.
    pub signing_key: Option<PathBuf>,
    #[serde(default = "defaults::key_dir")]
    pub key_dir: PathBuf,
    /// Extra public keys or certificates (PEM) accepted for verification,
    /// e.g. the previous key during a rotation.
    #[serde(default)]
    pub verification_keys: Vec<PathBuf>,
    /// Path of the token endpoint on the TLS listener.
    #[serde(default = "defaults::token_path")]
    pub path: String,
    /// Public URL of the token endpoint for the challenge; default: built
    /// from the request's Host.
    pub realm: Option<url::Url>,
    /// The revocation list of issued tokens (JSON, written by `portcullis
    /// token revoke` and `user remove --config`). Default:
    /// `key_dir/revoked.json`.
    pub revocation_file: Option<PathBuf>,
}

impl TokenConfig {
    pub fn revocation_path(&self) -> PathBuf {
        self.revocation_file
            .clone()
            .unwrap_or_else(|| self.key_dir.join("revoked.json"))
    }

    /// The longest lifetime of any token issued (access, per-user or
    /// refresh): how long a revocation must be kept.
    pub fn longest_lifetime(&self) -> Duration {
        self.lifetimes
            .values()
            .map(|d| d.into_inner())
            .chain([self.lifetime, self.refresh_lifetime])
            .max()
            .unwrap_or(self.refresh_lifetime)
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            issuer: defaults::issuer(),
            service: defaults::service(),
            lifetime: defaults::token_lifetime(),
            refresh_lifetime: defaults::refresh_lifetime(),
            lifetimes: Default::default(),
            algorithm: defaults::algorithm(),
            signing_key: None,
            key_dir: defaults::key_dir(),
            verification_keys: Vec::new(),
            path: defaults::token_path(),
            realm: None,
            revocation_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The TLS listener.
    pub listen: SocketAddr,
    /// Networks of L7 proxies in front whose `client_address_header` names
    /// the client (the right-most address not in them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The header those proxies write: only that one is read, since a proxy
    /// passes a client's forged other header through untouched.
    #[serde(default)]
    pub client_address_header: ClientAddressHeader,
    /// L4 balancers in front that send a PROXY header (both listeners).
    pub proxy_protocol: Option<ProxyProtocolConfig>,
    /// HTTP/2 flow control on the TLS listener.
    #[serde(default)]
    pub http2: http2::Http2Config,
    /// Optional plain-HTTP listener that redirects to https.
    pub http_listen: Option<SocketAddr>,
    /// How long in-flight transfers may go on after SIGTERM.
    #[serde(default = "defaults::grace_period", with = "humantime_serde")]
    pub grace_period: Duration,
    /// How often certificate and htpasswd files are checked for changes.
    #[serde(default = "defaults::watch_interval", with = "humantime_serde")]
    pub watch_interval: Duration,
    /// `Strict-Transport-Security: max-age`; zero disables the header.
    #[serde(default = "defaults::hsts_max_age", with = "humantime_serde")]
    pub hsts_max_age: Duration,
    /// Proxy worker threads; default: one per CPU.
    pub threads: Option<usize>,
    /// Whether idle worker threads take tasks from busy ones (Pingora's
    /// `work_stealing`). Off, each connection and its HTTP/2 streams stay
    /// on the thread that accepted it.
    #[serde(default = "defaults::work_stealing")]
    pub work_stealing: bool,
    /// Unix socket over which a running process hands its listening
    /// sockets to its successor (`serve --upgrade`).
    #[serde(default = "defaults::upgrade_sock")]
    pub upgrade_sock: PathBuf,
}

/// `server.client_address_header`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAddressHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx, HAProxy `option forwardfor`).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (HAProxy `option forwarded`).
    Forwarded,
}

/// `[server.proxy_protocol]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// Peers that must start every connection with a PROXY header (v1 or
    /// v2); no other peer may send one.
    pub from: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: url::Url,
    /// More replicas of the same registry (shared storage and
    /// `http.secret`), balanced with `url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<url::Url>,
    pub ca_file: Option<PathBuf>,
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "defaults::io_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    #[serde(default = "defaults::io_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The upstream runs token auth trusting our token key: send it a
    /// token we mint per request instead of nothing.
    #[serde(default)]
    pub token_auth: bool,
    /// Credentials the proxy presents to an upstream that wants its own.
    pub username: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub self_signed: bool,
    /// Certificates over ACME; alone, a self-signed fallback serves until
    /// the first is issued (and for names no certificate covers).
    pub acme: Option<acme::AcmeConfig>,
    /// Client certificates (mutual TLS).
    pub client_auth: Option<client_auth::ClientAuthConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default = "defaults::realm")]
    pub realm: String,
    #[serde(default = "defaults::cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    #[serde(default = "defaults::cache_size")]
    pub cache_size: u64,
    #[serde(default = "defaults::hash_threads")]
    pub hash_threads: usize,
    pub htpasswd: Option<HtpasswdConfig>,
    pub ldap: Option<ldap::LdapConfig>,
    /// The order backends are asked in; the first that knows the user
    /// decides. Default: htpasswd, then ldap (those configured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
    #[serde(default)]
    pub mode: AuthMode,
    /// Groups of htpasswd users: `group = ["user", …]`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
    /// An Apache-style group file (`group: user user`), merged with `groups`.
    pub groups_file: Option<PathBuf>,
    #[serde(default)]
    pub throttle: ThrottleConfig,
    #[serde(default)]
    pub token: TokenConfig,
    /// Named access tokens and robot accounts (`portcullis token`).
    pub tokens: Option<AccessTokensConfig>,
    /// OpenID Connect: ID tokens as passwords, and the browser login.
    pub oidc: Option<oidc::OidcConfig>,
}

/// `[auth.tokens]`: the token file `portcullis token` writes and the proxy
/// reloads when it changes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessTokensConfig {
    pub path: PathBuf,
    /// The key the secrets are hashed with (HMAC-SHA256); made by the
    /// first `portcullis token create`. Default: `path` + `.key`.
    pub key_file: Option<PathBuf>,
    /// The longest lifetime a token may have; when set, tokens without an
    /// expiry are refused.
    #[serde(default, with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    /// How stale the "last used" times may get: they are written to
    /// `path` + `.last-used` at most this often, never once per request.
    #[serde(default = "defaults::last_used_interval", with = "humantime_serde")]
    pub last_used_interval: Duration,
}

impl AccessTokensConfig {
    pub fn key_path(&self) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| suffixed(&self.path, ".key"))
    }

    pub fn last_used_path(&self) -> PathBuf {
        suffixed(&self.path, ".last-used")
    }
}

fn suffixed(path: &std::path::Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Basic,
            groups: Default::default(),
            groups_file: None,
            throttle: ThrottleConfig::default(),
            token: TokenConfig::default(),
            realm: defaults::realm(),
            cache_ttl: defaults::cache_ttl(),
            cache_size: defaults::cache_size(),
            hash_threads: defaults::hash_threads(),
            htpasswd: None,
            ldap: None,
            backends: Vec::new(),
            tokens: None,
            oidc: None,
        }
    }
}

/// An authentication backend, for `auth.backends`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Htpasswd,
    Ldap,
}

impl AuthConfig {
    /// The configured backends in the order they are asked.
    pub fn chain(&self) -> Vec<Backend> {
        if !self.backends.is_empty() {
            return self.backends.clone();
        }
        let mut v = Vec::new();
        if self.htpasswd.is_some() {
            v.push(Backend::Htpasswd);
        }
        if self.ldap.is_some() {
            v.push(Backend::Ldap);
        }
        v
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "defaults::log_level")]
    pub level: String,
    #[serde(default = "defaults::yes")]
    pub access_log: bool,
    /// JSON lines of pulls, pushes, mounts and deletes.
    pub audit_file: Option<PathBuf>,
    /// Rotate the audit file at this size (bytes; 0: never, rotate
    /// externally and send SIGHUP).
    #[serde(default)]
    pub audit_max_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: defaults::log_level(),
            access_log: true,
            audit_file: None,
            audit_max_bytes: 0,
        }
    }
}

mod defaults {
    use std::time::Duration;
    pub fn cluster_prefix() -> String {
        "portcullis:".into()
    }
    pub fn cluster_timeout() -> Duration {
        Duration::from_millis(250)
    }
    pub fn cluster_sync_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn last_used_interval() -> Duration {
        Duration::from_secs(60)
    }
    pub fn grace_period() -> Duration {
        Duration::from_secs(30)
    }
    pub fn watch_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn hsts_max_age() -> Duration {
        Duration::from_secs(365 * 24 * 3600)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn io_timeout() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn realm() -> String {
        "Docker Registry Realm".to_owned()
    }
    pub fn cache_ttl() -> Duration {
        Duration::from_secs(300)
    }
    pub fn cache_size() -> u64 {
        10_000
    }
    pub fn work_stealing() -> bool {
        true
    }
    pub fn hash_threads() -> usize {
        2
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn upgrade_sock() -> std::path::PathBuf {
        "/tmp/portcullis-upgrade.sock".into()
    }
    pub fn metrics_listen() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 9095))
    }
    pub fn health_interval() -> Duration {
        Duration::from_secs(10)
    }
    pub fn health_threshold() -> u32 {
        3
    }
    pub fn max_failures() -> u32 {
        10
    }
    pub fn throttle_window() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn backoff() -> Duration {
        Duration::from_secs(1)
    }
    pub fn max_backoff() -> Duration {
        Duration::from_secs(300)
    }
    pub fn throttle_entries() -> u64 {
        100_000
    }
    pub fn ipv6_prefix() -> u8 {
        64
    }
    pub fn issuer() -> String {
        "portcullis".to_owned()
    }
    pub fn service() -> String {
        "container-registry".to_owned()
    }
    pub fn token_lifetime() -> Duration {
        Duration::from_secs(300)
    }
    pub fn refresh_lifetime() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn algorithm() -> String {
        "ES256".to_owned()
    }
    pub fn key_dir() -> std::path::PathBuf {
        "/var/lib/portcullis".into()
    }
    pub fn token_path() -> String {
        "/token".to_owned()
    }
}

impl Config {
    /// Reads and parses `path`, then checks what can be checked without
    /// touching the files the config names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem::new(
                path.display().to_string(),
                format!("cannot read config file: {e}"),
            )],
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| ConfigError {
            problems: vec![parse_problem(text, &e)],
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Consistency checks across keys; all problems, not just the first.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        match self.upstream.url.scheme() {
            "http" | "https" => {}
            other => p.push(Problem::new(
                "upstream.url",
                format!("scheme must be http or https, not {other:?}"),
            )),
        }
        if self.upstream.url.host_str().is_none() {
            p.push(Problem::new("upstream.url", "has no host"));
        }
        if !matches!(self.upstream.url.path(), "" | "/") {
            p.push(Problem::new(
                "upstream.url",
                "must not have a path: the registry API lives at /v2/ of the upstream",
            ));
        }
        for (i, r) in self.upstream.replicas.iter().enumerate() {
            if r.scheme() != self.upstream.url.scheme()
                || r.host_str().is_none()
                || !matches!(r.path(), "" | "/")
            {
                p.push(Problem::new(
                    format!("upstream.replicas[{i}]"),
                    "must be a URL like upstream.url: same scheme, a host, no path",
                ));
            }
        }
        if self.upstream.ca_file.is_some() && self.upstream.url.scheme() != "https" {
            p.push(Problem::new(
                "upstream.ca_file",
                "only used with an https upstream url",
            ));
        }
        if self.upstream.token_auth && self.upstream.username.is_some() {
            p.push(Problem::new(
                "upstream.token_auth",
                "cannot be combined with upstream.username/password",
            ));
        }
        if self.upstream.password.is_some() != self.upstream.username.is_some() {
            p.push(Problem::new(
                "upstream.password",
                "upstream.username and upstream.password go together",
            ));
        }
        for (key, d) in [
            ("upstream.connect_timeout", self.upstream.connect_timeout),
            ("upstream.read_timeout", self.upstream.read_timeout),
            ("upstream.write_timeout", self.upstream.write_timeout),
            ("upstream.idle_timeout", self.upstream.idle_timeout),
            ("server.watch_interval", self.server.watch_interval),
        ]
        .into_iter()
        .chain(self.cluster.iter().flat_map(|c| {
            [
                ("cluster.timeout", c.timeout),
                ("cluster.sync_interval", c.sync_interval),
            ]
        })) {
            if d.is_zero() {
                p.push(Problem::new(key, "must be greater than zero"));
            }
        }
        if self.server.http_listen == Some(self.server.listen) {
            p.push(Problem::new(
                "server.http_listen",
                "is the same address as server.listen",
            ));
        }
        if self
            .server
            .proxy_protocol
            .as_ref()
            .is_some_and(|p| p.from.is_empty())
        {
            p.push(Problem::new(
                "server.proxy_protocol.from",
                "lists no network: give the addresses of the balancers that send PROXY headers",
            ));
        }
        if self.server.threads == Some(0) {
            p.push(Problem::new("server.threads", "must be at least 1"));
        }
        let tls = &self.tls;
        match (tls.self_signed, &tls.cert, &tls.key) {
            (true, None, None) | (false, Some(_), Some(_)) => {}
            (true, _, _) => p.push(Problem::new(
                "tls.self_signed",
                "cannot be combined with tls.cert and tls.key",
            )),
            (false, None, None) if tls.acme.is_some() => {}
            (false, None, None) => p.push(Problem::new(
                "tls",
                "set tls.cert and tls.key, [tls.acme], or tls.self_signed = true",
            )),
            (false, Some(_), None) => p.push(Problem::new("tls.key", "missing (tls.cert is set)")),
            (false, None, Some(_)) => p.push(Problem::new("tls.cert", "missing (tls.key is set)")),
        }
        if let Some(acme) = &tls.acme {
            p.extend(acme.validate(self.server.http_listen.is_some()));
        }
        if let Some(c) = &tls.client_auth {
            p.extend(c.validate());
        }
        if let Some(l) = &self.limits {
            p.extend(l.validate());
        }
        p.extend(self.server.http2.validate());
        if self.auth.realm.is_empty() || self.auth.realm.contains('"') {
            p.push(Problem::new(
                "auth.realm",
                "must be non-empty and contain no '\"'",
            ));
        }
        if self.auth.hash_threads == 0 {
            p.push(Problem::new("auth.hash_threads", "must be at least 1"));
        }
        let oidc_issuers = self
            .auth
            .oidc
            .as_ref()
            .is_some_and(|o| !o.issuers.is_empty());
        if self.auth.htpasswd.is_none() && self.auth.ldap.is_none() && !oidc_issuers {
            p.push(Problem::new(
                "auth",
                "no authentication backend configured (add [auth.htpasswd], [auth.ldap] or [[auth.oidc.issuers]])",
            ));
        }
        if let Some(o) = &self.auth.oidc {
            p.extend(o.validate(self.auth.tokens.as_ref().map(|t| t.max_lifetime)));
        }
        if let Some(l) = &self.auth.ldap {
            p.extend(l.validate("auth.ldap"));
        }
        for (i, b) in self.auth.backends.iter().enumerate() {
            let configured = match b {
                Backend::Htpasswd => self.auth.htpasswd.is_some(),
                Backend::Ldap => self.auth.ldap.is_some(),
            };
            if !configured {
                p.push(Problem::new(
                    format!("auth.backends[{i}]"),
                    format!(
                        "{b:?} is listed but has no [auth.{}] section",
                        format!("{b:?}").to_lowercase()
                    ),
                ));
            }
            if self.auth.backends[..i].contains(b) {
                p.push(Problem::new(format!("auth.backends[{i}]"), "listed twice"));
            }
        }
        let t = &self.auth.token;
        if !t.path.starts_with('/') || t.path.starts_with("/v2") {
            p.push(Problem::new(
                "auth.token.path",
                "must start with / and not be under /v2",
            ));
        }
        if t.lifetime < Duration::from_secs(5) || t.refresh_lifetime < Duration::from_secs(5) {
            p.push(Problem::new(
                "auth.token.lifetime",
                "token lifetimes must be at least 5s",
            ));
        }
        let m = &self.metrics;
        if m.password.is_some() != m.username.is_some() {
            p.push(Problem::new(
                "metrics.password",
                "metrics.username and metrics.password go together",
            ));
        }

        if m.enabled
            && (m.listen == self.server.listen || Some(m.listen) == self.server.http_listen)
        {
            p.push(Problem::new(
                "metrics.listen",
                "must differ from the proxy's listeners",
            ));
        }
        if self.health.interval.is_zero() || self.health.threshold == 0 {
            p.push(Problem::new(
                "health",
                "interval and threshold must be greater than zero",
            ));
        }
        let th = &self.auth.throttle;
        if th.enabled
            && (th.max_failures == 0 || th.backoff.is_zero() || th.max_backoff < th.backoff)
        {
            p.push(Problem::new(
                "auth.throttle",
                "max_failures must be at least 1 and max_backoff at least backoff",
            ));
        }
        if th.ipv6_prefix == 0 || th.ipv6_prefix > 128 {
            p.push(Problem::new(
                "auth.throttle.ipv6_prefix",
                "must be between 1 and 128 (64: one count per /64)",
            ));
        }
        p
    }
}

/// Turns a deserialization error into `key: reason (line N)`.
fn parse_problem(text: &str, e: &serde_path_to_error::Error<toml::de::Error>) -> Problem {
    let inner = e.inner();
    let mut key = e.path().to_string();
    let message = inner.message().trim().to_owned();
    // serde reports an unknown field at its parent; name the field itself.
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        let named = key == field || key.ends_with(&format!(".{field}"));
        if !named {
            key = if key == "." || key.is_empty() {
                field.to_owned()
            } else {
                format!("{key}.{field}")
            };
        }
    }
    if key == "." || key.is_empty() {
        key = "config".to_owned();
    }
    let line = inner
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let reason = match line {
        Some(l) => format!("{message} (line {l})"),
        None => message,
    };
    Problem::new(key, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid config (the docs' examples are merged over it).
    const MINIMAL: &str = include_str!("minimal.toml");

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.auth.realm, "Docker Registry Realm");
        assert_eq!(c.server.grace_period, Duration::from_secs(30));
        assert_eq!(c.upstream.read_timeout, Duration::from_secs(900));
        assert!(c.log.access_log);
    }

    #[test]
    fn unknown_key_is_named() {
        let t = MINIMAL.replace("listen =", "lisen = \"x\"\nlisten =");
        let e = Config::parse(&t).unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert_eq!(e.problems[0].key, "server.lisen", "{e}");
        assert!(e.problems[0].reason.contains("line 2"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let t = MINIMAL.replace("\"http://127.0.0.1:5000\"", "\"not a url\"");
        let e = Config::parse(&t).unwrap_err();
        assert_eq!(e.problems[0].key, "upstream.url", "{e}");
        let t = MINIMAL.replace("[tls]", "[tls]\ncert = 5");
        let e = Config::parse(&t).unwrap_err();
        assert_eq!(e.problems[0].key, "tls.cert", "{e}");
    }

    #[test]
    fn all_semantic_problems_are_reported() {
        let t = MINIMAL
            .replace("http://127.0.0.1:5000", "ftp://127.0.0.1:5000/x")
            .replace("self_signed = true", "cert = \"/c\"")
            .replace("[auth.htpasswd]", "[auth]\nrealm = \"\"\n[auth.htpasswd]");
        let e = Config::parse(&t).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["upstream.url", "upstream.url", "tls.key", "auth.realm"],
            "{e}"
        );
    }

    #[test]
    fn fleet_settings_are_checked() {
        let t = format!(
            "{MINIMAL}\n[server.proxy_protocol]\nfrom = []\n\n[cluster]\nredis = \"redis://127.0.0.1\"\ntimeout = \"0s\"\nsync_interval = \"0s\"\n"
        );
        let e = Config::parse(&t).unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cluster.timeout",
                "cluster.sync_interval",
                "server.proxy_protocol.from"
            ],
            "{e}"
        );
        let ok = format!("{MINIMAL}\n[cluster]\nredis = {{ env = \"REDIS_URL\" }}\n");
        let c = Config::parse(&ok).unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.key_prefix, "portcullis:");
        assert_eq!(cluster.sync_interval, Duration::from_secs(2));
    }

    #[test]
    fn missing_section_is_named() {
        let e = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(
            e.problems[0].reason.contains("missing field `upstream`"),
            "{e}"
        );
    }
}
