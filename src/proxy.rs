//! The request pipeline: route → authenticate → authorize → forward →
//! observe.
//!
//! One `ProxyHttp` impl; each phase delegates to a small module so this file
//! reads like the pipeline and nothing else. A phase that refuses returns a
//! [`Reply`]; `RegistryProxy::answer` is the one place that writes it.
//! The plain-HTTP listener is not part of this: see `crate::http::plain`.

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::auth::gate::{Gate, LoginOutcome};
use crate::auth::login::Login;
use crate::auth::principal::Principal;
use crate::auth::refusal::{Mode, Refusal};
use crate::auth::token::upstream::UpstreamTokens;
use crate::auth::token_endpoint::Endpoint;
use crate::config::Config;
use crate::http::login::LoginPaths;
use crate::http::reply::{self, Reply, ReplyContext};
use crate::http::served::{Served, TrustedProxies};
use crate::http::token;
use crate::limits::{Limited, Limits};
use crate::observe::audit::{self, AuditEvent, AuditLog};
use crate::observe::drain::InFlight;
use crate::observe::metrics::metrics;
use crate::registry::catalog;
use crate::registry::errors::RegistryError;
use crate::registry::route::{self, Route};
use crate::registry::{headers, location, parameters};
use crate::upstream::Upstream;
use arc_swap::ArcSwap;

pub struct RegistryProxy {
    /// Swapped when a reloaded config changes the upstream.
    upstream: Arc<ArcSwap<Upstream>>,
    gate: Arc<Gate>,
    realm: String,
    /// Token mode: the endpoint's path, service name and public URL.
    token_endpoint: Option<Endpoint>,
    /// The upstream runs token auth: tokens we send it.
    upstream_tokens: Option<UpstreamTokens>,
    audit: Option<Arc<AuditLog>>,
    /// Precomputed `Strict-Transport-Security` value, if enabled.
    hsts: Option<http::HeaderValue>,
    access_log: bool,
    /// Seals the catalog's give-up cursors.
    catalog_cursors: catalog::CursorKey,
    /// `server.trusted_proxies`.
    trusted: TrustedProxies,
    /// `[auth.oidc.login]`: the browser login and its two paths.
    login: Option<(Arc<Login>, LoginPaths)>,
    /// `[limits]`: request rates per address and per user.
    limits: Option<Arc<Limits>>,
}

impl RegistryProxy {
    /// The pipeline in front of `upstream`; `cfg` gives the Basic realm,
    /// HSTS and the access log.
    pub fn new(
        cfg: &Config,
        upstream: Arc<ArcSwap<Upstream>>,
        gate: Arc<Gate>,
        token_endpoint: Option<Endpoint>,
        upstream_tokens: Option<UpstreamTokens>,
        audit: Option<Arc<AuditLog>>,
    ) -> Result<Self, catalog::CatalogError> {
        let hsts_max_age = cfg.server.hsts_max_age;
        Ok(RegistryProxy {
            upstream,
            gate,
            realm: cfg.auth.realm.clone(),
            token_endpoint,
            upstream_tokens,
            audit,
            // (digits: always a valid value)
            hsts: (!hsts_max_age.is_zero())
                .then(|| format!("max-age={}", hsts_max_age.as_secs()))
                .and_then(|v| http::HeaderValue::try_from(v).ok()),
            access_log: cfg.log.access_log,
            trusted: TrustedProxies::new(
                &cfg.server.trusted_proxies,
                cfg.server.client_address_header,
            ),
            catalog_cursors: catalog::CursorKey::random()?,
            login: None,
            limits: None,
        })
    }

    /// Applies `[limits]`.
    pub fn with_limits(mut self, limits: Option<Arc<Limits>>) -> Self {
        self.limits = limits;
        self
    }

    /// Serves the browser login at its paths.
    pub fn with_login(mut self, login: Option<Arc<Login>>) -> Self {
        self.login = login.map(|l| {
            let paths = LoginPaths::of(&l);
            (l, paths)
        });
        self
    }
}

/// Per-request state, filled in as the pipeline advances.
pub struct RequestCtx {
    start: Instant,
    route: Option<Route>,
    /// Who is calling, once authenticated (or issued a token).
    principal: Option<Principal>,
    login: Option<LoginOutcome>,
    /// `https://host[:port]` as the client addressed us.
    public_origin: Option<String>,
    upstream_start: Option<Instant>,
    upstream_ms: Option<u128>,
    /// `Authorization` for the upstream, when it runs token auth.
    upstream_authorization: Option<String>,
    /// `Docker-Content-Digest` of the upstream's answer, for the audit log.
    digest: Option<String>,
    /// Connection attempts that failed (retried on another replica).
    connect_failures: usize,
    /// Route label of the proxy's own endpoints (the token endpoint).
    own_route: Option<&'static str>,
    /// The client's address (behind trusted proxies, theirs for it); set
    /// first thing, read by rules, throttle, logs and `X-Forwarded-For`.
    client: Option<IpAddr>,
    _in_flight: InFlight,
}

#[async_trait]
impl ProxyHttp for RegistryProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            route: None,
            principal: None,
            login: None,
            public_origin: None,
            upstream_start: None,
            upstream_ms: None,
            upstream_authorization: None,
            digest: None,
            connect_failures: 0,
            own_route: None,
            client: None,
            _in_flight: InFlight::enter(),
        }
    }

    /// Route and authenticate; anything refused is answered here and never
    /// reaches the upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        match self.admit(session, ctx).await {
            Ok(()) => Ok(false),
            Err(Stop::Answer(reply)) => {
                self.answer(session, ctx, reply).await?;
                Ok(true)
            }
            Err(Stop::Failed(e)) => Err(e),
        }
    }

    /// A client that goes away — closing an idle keep-alive connection
    /// (often without TLS close_notify) or giving up on a request — is
    /// normal client behaviour, not a proxy error: Pingora would log an
    /// ERROR for each. Such requests still get their access-log line (with
    /// the error) and are counted; upstream errors are always logged.
    fn suppress_error_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        e: &pingora::Error,
    ) -> bool {
        e.esource() == &pingora::ErrorSource::Downstream
            && matches!(
                e.etype(),
                pingora::ErrorType::ReadError
                    | pingora::ErrorType::WriteError
                    | pingora::ErrorType::ConnectionClosed
            )
    }

    /// Nothing was sent yet, so a refused connection may be retried: with
    /// replicas, the balancer picks the next one.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<pingora::Error>,
    ) -> Box<pingora::Error> {
        ctx.connect_failures += 1;
        if self.upstream.load().replica_count() > 1
            && ctx.connect_failures < self.upstream.load().replica_count()
        {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.upstream_start = Some(Instant::now());
        self.upstream.load().peer()
    }

    /// 4. forward: our headers, not the client's.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // (admit checked the Host and kept it in the origin: no second parse)
        let client_host = ctx
            .public_origin
            .as_deref()
            .and_then(|o| o.strip_prefix(PUBLIC_SCHEME));
        headers::prepare_upstream_request(
            req,
            &self.upstream.load(),
            client_host,
            &client_of(session, ctx),
            ctx.upstream_authorization.as_deref(),
        )?;
        parameters::canonicalize_query(req)?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(t) = ctx.upstream_start {
            let elapsed = t.elapsed();
            ctx.upstream_ms = Some(elapsed.as_millis());
            metrics().upstream_duration.observe(elapsed.as_secs_f64());
        }
        if self.audit.is_some() {
            ctx.digest = resp
                .headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(public) = &ctx.public_origin {
            location::rewrite_response(resp, self.upstream.load().origins(), public)?;
        }
        reply::add_registry_headers(resp, self.hsts.as_ref())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let err = headers::upstream_error(e);
        if e.esource() == &pingora::ErrorSource::Upstream {
            let kind = match e.etype() {
                pingora::ErrorType::ConnectTimedout
                | pingora::ErrorType::ReadTimedout
                | pingora::ErrorType::WriteTimedout => "timeout",
                pingora::ErrorType::ConnectRefused
                | pingora::ErrorType::ConnectNoRoute
                | pingora::ErrorType::ConnectError => "connect",
                _ => "other",
            };
            metrics().upstream_errors.with_label_values(&[kind]).inc();
        }
        let code = match err {
            Some(err) if session.response_written().is_none() => {
                tracing::warn!(target: "upstream", error = %e, status = err.status, "upstream request failed");
                if let Err(we) = self.answer(session, ctx, err.into()).await {
                    tracing::debug!("cannot send error response: {we}");
                }
                err.status
            }
            // the client went away, or the response had already started
            _ => {
                tracing::debug!("request ended early: {e}");
                0
            }
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// 5. observe
    async fn logging(
        &self,
        session: &mut Session,
        e: Option<&pingora::Error>,
        ctx: &mut RequestCtx,
    ) {
        let status = Served {
            client: client(session, ctx),
            label: ctx
                .own_route
                .or_else(|| ctx.route.as_ref().map(Route::kind))
                .unwrap_or("other"),
            route: ctx.route.as_ref().map(Route::kind),
            user: ctx
                .principal
                .as_ref()
                .and_then(Principal::user)
                .or_else(|| ctx.login.as_ref().and_then(LoginOutcome::claimed_user)),
            started: ctx.start,
            upstream_ms: ctx.upstream_ms,
            error: e.map(|e| e.etype().as_str()),
        }
        .record(session, self.access_log);
        if let Some(log) = &self.audit {
            self.audit(log, session, ctx, status);
            audit_login(log, session, ctx, status);
        }
    }
}

/// A login event: every refused login, wherever it was tried, and each
/// accepted one at the routes clients log in with (`GET /v2/`, the token
/// endpoint) — not every request of a pull, which all carry credentials.
fn audit_login(log: &AuditLog, session: &Session, ctx: &RequestCtx, status: u16) {
    let Some(login) = &ctx.login else { return };
    let at_login = ctx.own_route == Some(TOKEN_ROUTE) || ctx.route == Some(Route::Base);
    let (action, reason) = match login {
        LoginOutcome::Ok if at_login => ("login", None),
        LoginOutcome::Ok => return,
        LoginOutcome::Failed { failure, .. } => ("login_refused", Some(failure.as_str())),
        LoginOutcome::Throttled { .. } => ("login_refused", Some("throttled")),
        LoginOutcome::BadToken(why) => ("login_refused", Some(*why)),
    };
    let identity = match &ctx.principal {
        Some(Principal::User { identity, .. }) => Some(identity),
        _ => None,
    };
    log.write(&AuditEvent {
        time: audit::now_rfc3339(),
        action,
        user: identity
            .map(|i| i.user.as_str())
            .or_else(|| login.claimed_user()),
        client: client_of(session, ctx),
        repository: "",
        reference: None,
        digest: None,
        from: None,
        status,
        bytes: 0,
        credential: identity.map(|i| i.credential.describe()),
        reason,
    });
}

impl RegistryProxy {
    /// One audit line for content-changing or content-reading requests
    /// that reached the registry.
    fn audit(&self, log: &AuditLog, session: &Session, ctx: &RequestCtx, status: u16) {
        let Some(route) = &ctx.route else { return };
        let method = &session.req_header().method;
        let action = match (route, method.as_str()) {
            (Route::Manifest { .. } | Route::Blob { .. }, "GET" | "HEAD") => "pull",
            (Route::Manifest { .. }, "PUT") => "push",
            (Route::Upload { .. }, "PUT") => "push",
            (
                Route::UploadStart {
                    mount_from: Some(_),
                    ..
                },
                "POST",
            ) => "mount",
            (Route::Manifest { .. } | Route::Blob { .. }, "DELETE") => "delete",
            _ => return,
        };
        // HEAD of a blob is how clients check for existence: not a pull
        if action == "pull" && method == http::Method::HEAD && matches!(route, Route::Blob { .. }) {
            return;
        }
        let query = session.req_header().uri.query();
        let pushed_digest = route::query_param(query, "digest");
        let mount_digest = route::query_param(query, "mount");
        let from = match route {
            Route::UploadStart {
                mount_from: Some(f),
                ..
            } => Some(f.as_str()),
            _ => None,
        };
        log.write(&AuditEvent {
            time: audit::now_rfc3339(),
            action,
            user: ctx.principal.as_ref().and_then(Principal::user),
            client: client_of(session, ctx),
            repository: route.repo().map_or("", |r| r.as_str()),
            reference: route.reference(),
            digest: ctx
                .digest
                .as_deref()
                .or(pushed_digest.as_deref())
                .or(mount_digest.as_deref()),
            from,
            status,
            bytes: session.body_bytes_sent().max(session.body_bytes_read()),
            credential: None,
            reason: None,
        });
    }

    /// The pipeline before forwarding: `Ok` forwards the request, a
    /// [`Stop`] answers it here.
    async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), Stop> {
        let ip = self.trusted.client_of(session);
        ctx.client = Some(ip);
        if let Some(limits) = &self.limits {
            limits.check_address(ip).map_err(|l| limited(l, ip, None))?;
        }
        ctx.public_origin = Some(checked_origin(session.req_header())?);
        let path = session.req_header().uri.path();
        if let Some((login, paths)) = self.login.as_ref().filter(|(_, p)| p.matches(path)) {
            ctx.own_route = Some(LOGIN_ROUTE);
            let reply = crate::http::login::serve(session.req_header(), login, paths, ip).await;
            return Err(Stop::Answer(reply));
        }
        if let Some(endpoint) = self.token_endpoint_of(session.req_header()) {
            ctx.own_route = Some(TOKEN_ROUTE);
            let peer = peer_certificate(session);
            let exchanged = token::serve(session, endpoint, &self.gate, peer.as_ref(), ip).await?;
            (ctx.principal, ctx.login) = (exchanged.principal, exchanged.login);
            return Err(Stop::Answer(exchanged.reply));
        }
        // 1. route
        let req = session.req_header();
        let route = route::parse(req.uri.path(), req.uri.query()).map_err(RegistryError::from)?;
        // (kept in the context for the logs, and read from there: no copy)
        let route = &*ctx.route.insert(route);
        // the registry must act on exactly what was parsed and authorized
        parameters::check_body_type(req)?;
        let needs = route.required(&req.method).map_err(RegistryError::from)?;
        // 2. authenticate
        let authorization = req.headers.get(http::header::AUTHORIZATION);
        let authorization = authorization.map(|v| v.as_bytes().to_vec());
        let peer = peer_certificate(session);
        let (principal, login) = self
            .gate
            .authenticate_with_certificate(authorization.as_deref(), peer.as_ref(), ip)
            .await;
        ctx.login = login;
        let principal = ctx.principal.insert(principal?);
        if let (Some(limits), Some(user)) = (&self.limits, principal.user()) {
            limits
                .check_user(user, ip)
                .map_err(|l| limited(l, ip, Some(user)))?;
        }
        // 3. authorize
        self.authorize(principal, route, &needs, ip)?;
        if let Some(tokens) = &self.upstream_tokens {
            ctx.upstream_authorization = tokens.bearer(principal.user(), &needs);
        }
        if *route == Route::Catalog {
            let upstream_authorization = ctx.upstream_authorization.as_deref();
            let page = self.catalog(session, principal, ip, upstream_authorization);
            return Err(Stop::Answer(page.await));
        }
        Ok(())
    }

    fn token_endpoint_of(&self, req: &RequestHeader) -> Option<&Endpoint> {
        self.token_endpoint
            .as_ref()
            .filter(|e| req.uri.path() == e.path)
    }

    fn authorize(
        &self,
        principal: &Principal,
        route: &Route,
        needs: &[(Option<&route::RepoName>, route::Action)],
        ip: IpAddr,
    ) -> Result<(), Reply> {
        let authorization = self.gate.authorization(principal, ip);
        authorization.check(needs).map_err(|refusal| {
            metrics().denied.inc();
            tracing::info!(
                target: "auth",
                user = principal.user().unwrap_or("-"),
                client = %ip,
                route = route.kind(),
                repository = route.repo().map(|r| r.as_str()).unwrap_or("-"),
                "request denied by the access rules"
            );
            Reply::from(refusal)
        })
    }

    /// Writes one of the proxy's own answers.
    async fn answer(&self, session: &mut Session, ctx: &RequestCtx, reply: Reply) -> Result<()> {
        if let (Reply::Refused(_), Some(LoginOutcome::Failed { failure, user })) =
            (&reply, &ctx.login)
        {
            tracing::info!(
                target: "auth",
                user = user.as_deref().unwrap_or("-"),
                client = %client_of(session, ctx),
                reason = failure.as_str(),
                "login refused"
            );
        }
        // the token endpoint itself is protected by Basic auth
        let mode = match ctx.own_route {
            Some(TOKEN_ROUTE) => Mode::Basic,
            _ => self.gate.mode(),
        };
        let endpoint = self.token_endpoint.as_ref();
        let rc = ReplyContext {
            registry: true,
            hsts: self.hsts.as_ref(),
            mode,
            basic_realm: &self.realm,
            bearer: endpoint.map(|e| (e.realm(ctx.public_origin.as_deref()), e.service.as_str())),
        };
        reply::write(session, reply, &rc).await
    }

    /// The filtered catalog: only repositories the caller may pull.
    async fn catalog(
        &self,
        session: &Session,
        principal: &Principal,
        ip: IpAddr,
        upstream_authorization: Option<&str>,
    ) -> Reply {
        let query = session.req_header().uri.query();
        let n = route::query_param(query, "n")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(catalog::DEFAULT_PAGE)
            .min(catalog::MAX_PAGE);
        let Ok(last) = self
            .catalog_cursors
            .start_after(route::query_param(query, "last").as_deref())
        else {
            return RegistryError::BAD_CURSOR.into();
        };
        let authorization = self.gate.authorization(principal, ip);
        let visible = |name: &str| authorization.permits(Some(name), route::Action::Pull);
        let source = match catalog::UpstreamCatalog::of(
            &self.upstream.load(),
            upstream_authorization.map(str::to_owned),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(target: "upstream", error = %e, "catalog request failed");
                return RegistryError::BAD_GATEWAY.into();
            }
        };
        let page = if n == 0 {
            Ok(catalog::Filtered {
                repositories: Vec::new(),
                next: None,
            })
        } else {
            catalog::filtered(&source, last.as_deref(), n, visible).await
        };
        match page {
            Ok(page) => {
                let (json, link) = catalog::render(&page, n, &self.catalog_cursors);
                Reply::Catalog { json, link }
            }
            Err(e) => {
                tracing::warn!(target: "upstream", error = %e, "catalog request failed");
                RegistryError::BAD_GATEWAY.into()
            }
        }
    }
}

/// A request over a `[limits]` rate: 429 with the wait, counted and logged
/// (at debug: a client over its limit sends many).
fn limited(l: Limited, ip: IpAddr, user: Option<&str>) -> Reply {
    metrics()
        .rate_limited
        .with_label_values(&[l.kind.as_str()])
        .inc();
    tracing::debug!(
        target: "limits",
        limit = l.kind.as_str(),
        client = %ip,
        user = user.unwrap_or("-"),
        retry_after_ms = l.retry_after.as_millis() as u64,
        "request over the rate limit"
    );
    Refusal::Throttled {
        retry_after: l.retry_after.as_secs_f64().ceil().max(1.0) as u64,
    }
    .into()
}

/// The route label of the token endpoint.
const TOKEN_ROUTE: &str = "token";
/// The browser login's pages.
const LOGIN_ROUTE: &str = "login";

/// Why a request is not forwarded: answered here, or the session failed.
enum Stop {
    Answer(Reply),
    Failed(Box<pingora::Error>),
}

impl From<Reply> for Stop {
    fn from(r: Reply) -> Self {
        Stop::Answer(r)
    }
}

impl From<RegistryError> for Stop {
    fn from(e: RegistryError) -> Self {
        Stop::Answer(e.into())
    }
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Self {
        Stop::Answer(r.into())
    }
}

impl From<Box<pingora::Error>> for Stop {
    fn from(e: Box<pingora::Error>) -> Self {
        Stop::Failed(e)
    }
}

/// The `https://host[:port]` the client addressed, after the checks on
/// the headers the proxy acts on.
/// The scheme of the origin clients reach us by: we only serve TLS.
const PUBLIC_SCHEME: &str = "https://";

fn checked_origin(req: &RequestHeader) -> Result<String, RegistryError> {
    // Upload URLs are built from the Host the client sent: without a
    // well-formed one the registry would fall back to its own address
    // and hand it out in `Location`.
    let host = headers::request_host(req).ok_or(RegistryError::BAD_HOST)?;
    // (answered, not logged: anyone can send it, and the access log has
    // the line)
    if !headers::connection_header_ok(req) {
        return Err(RegistryError::BAD_CONNECTION);
    }
    let mut origin = String::with_capacity(PUBLIC_SCHEME.len() + host.len());
    origin.push_str(PUBLIC_SCHEME);
    origin.push_str(host);
    Ok(origin)
}

/// The client's address: the one `admit` found, or the peer's for a
/// request that failed before it.
fn client(session: &Session, ctx: &RequestCtx) -> IpAddr {
    ctx.client
        .unwrap_or_else(|| crate::http::served::client_addr(session))
}

fn client_of(session: &Session, ctx: &RequestCtx) -> String {
    headers::forwarded_for(client(session, ctx))
}

/// The client certificate verified in this connection's handshake, as the
/// handshake callback put it on the TLS digest.
fn peer_certificate(session: &Session) -> Option<crate::tls::client_auth::PeerCertificate> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<crate::tls::client_auth::PeerCertificate>()
        .cloned()
}
