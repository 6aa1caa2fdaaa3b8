//! The request pipeline: route → authenticate → forward → observe.
//!
//! One `ProxyHttp` impl; each phase delegates to a small module so this file
//! reads like the pipeline and nothing else.

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::Instant;

use crate::auth::gate::{Gate, LoginOutcome};
use crate::auth::principal::{self, Challenge, Principal, Refusal};
use crate::auth::token_endpoint::{Answer, Endpoint};
use crate::auth::upstream_token::UpstreamTokens;
use crate::observe::access_log::{self, AccessRecord};
use crate::observe::audit::{self, AuditEvent, AuditLog};
use crate::observe::drain::InFlight;
use crate::observe::metrics::{code_class, method_label, metrics};
use crate::registry::catalog;
use crate::registry::errors::RegistryError;
use crate::registry::route::{self, Route};
use crate::registry::{headers, location, parameters};
use crate::tls::acme;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;

pub struct RegistryProxy {
    /// Swapped when a reloaded config changes the upstream.
    pub upstream: Arc<ArcSwap<Upstream>>,
    pub gate: Arc<Gate>,
    pub realm: String,
    /// Token mode: the endpoint's path, service name and public URL.
    pub token_endpoint: Option<Endpoint>,
    /// The upstream runs token auth: tokens we send it.
    pub upstream_tokens: Option<UpstreamTokens>,
    pub audit: Option<Arc<AuditLog>>,
    /// Precomputed `Strict-Transport-Security` value, if enabled.
    pub hsts: Option<String>,
    /// The TLS port, for redirects from the plain-HTTP listener.
    pub https_port: u16,
    pub access_log: bool,
    /// tls.acme with http-01: validation requests on the plain listener.
    pub acme_http01: Option<Arc<crate::tls::acme::Challenges>>,
    /// Seals the catalog's give-up cursors.
    pub catalog_cursors: catalog::CursorKey,
}

/// Per-request state, filled in as the pipeline advances.
pub struct RequestCtx {
    start: Instant,
    route: Option<Route>,
    user: Option<String>,
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
    _in_flight: InFlight,
}

#[async_trait]
impl ProxyHttp for RegistryProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            route: None,
            user: None,
            login: None,
            public_origin: None,
            upstream_start: None,
            upstream_ms: None,
            upstream_authorization: None,
            digest: None,
            connect_failures: 0,
            own_route: None,
            _in_flight: InFlight::enter(),
        }
    }

    /// Route and authenticate; anything refused is answered here and never
    /// reaches the upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let host = headers::request_host(session.req_header());
        if !is_tls(session) {
            let path = session.req_header().uri.path().to_owned();
            if let (Some(ch), Some(token)) = (&self.acme_http01, acme::http01::token(&path)) {
                acme::http01::respond(session, ch, token).await?;
                return Ok(true);
            }
            let to =
                headers::https_redirect(host.as_deref(), self.https_port, session.req_header());
            let code = if session.req_header().method == http::Method::GET
                || session.req_header().method == http::Method::HEAD
            {
                301
            } else {
                308
            };
            let mut resp = ResponseHeader::build(code, Some(2))?;
            resp.insert_header(http::header::LOCATION, to)?;
            resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        }
        // Upload URLs are built from the Host the client sent: without a
        // well-formed one the registry would fall back to its own address
        // and hand it out in `Location`.
        let Some(host) = host else {
            self.reject(session, &RegistryError::BAD_HOST, ctx).await?;
            return Ok(true);
        };
        ctx.public_origin = Some(format!("https://{host}"));
        let ip = client_addr(session);
        // (answered, not logged: anyone can send it, and the access log
        // has the line)
        if !headers::connection_header_ok(session.req_header()) {
            self.reject(session, &RegistryError::BAD_CONNECTION, ctx)
                .await?;
            return Ok(true);
        }

        if let Some(endpoint) = &self.token_endpoint {
            if session.req_header().uri.path() == endpoint.path {
                ctx.own_route = Some("token");
                let answer = endpoint.serve(session, &self.gate, ip).await?;
                self.answer_token(session, ctx, answer).await?;
                return Ok(true);
            }
        }

        // 1. route
        let req = session.req_header();
        let route = match route::parse(req.uri.path(), req.uri.query()) {
            Ok(r) => r,
            Err(e) => {
                self.reject(session, &RegistryError::from(e), ctx).await?;
                return Ok(true);
            }
        };
        let method = req.method.clone();
        ctx.route = Some(route.clone());
        // the registry must act on exactly what was parsed and authorized
        if let Err(e) = parameters::check_body_type(req) {
            self.reject(session, &e, ctx).await?;
            return Ok(true);
        }
        let needs = match route.required(&method) {
            Ok(n) => n,
            Err(e) => {
                self.reject(session, &RegistryError::from(e), ctx).await?;
                return Ok(true);
            }
        };

        // 2. authenticate
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let (principal, outcome) = self.gate.authenticate(authorization.as_deref(), ip).await;
        ctx.login = outcome;
        let principal = match principal {
            Ok(p) => p,
            Err(refusal) => {
                self.refuse(session, ctx, &refusal).await?;
                return Ok(true);
            }
        };
        ctx.user = principal.user().map(str::to_owned);

        // 3. authorize
        let acl = self.gate.acl.load();
        if let Err(refusal) = principal::authorize(&principal, &acl, ip, self.gate.mode, &needs) {
            metrics().denied.inc();
            tracing::info!(
                target: "auth",
                user = principal.user().unwrap_or("-"),
                client = %ip,
                route = route.kind(),
                repository = route.repo().map(|r| r.as_str()).unwrap_or("-"),
                "request denied by the access rules"
            );
            self.refuse(session, ctx, &refusal).await?;
            return Ok(true);
        }
        if let Some(tokens) = &self.upstream_tokens {
            ctx.upstream_authorization = tokens.bearer(principal.user(), &needs);
        }
        if route == Route::Catalog {
            self.catalog(session, &principal, ip, ctx).await?;
            return Ok(true);
        }
        Ok(false)
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

    /// 3. forward: our headers, not the client's.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_host = headers::request_host(session.req_header());
        headers::prepare_upstream_request(
            req,
            &self.upstream.load(),
            client_host.as_deref(),
            &client_ip(session),
        )?;
        parameters::canonicalize_query(req)?;
        if let Some(auth) = &ctx.upstream_authorization {
            req.insert_header(http::header::AUTHORIZATION, auth.as_str())?;
        }
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
            for origin in self.upstream.load().origins() {
                location::rewrite_response(resp, origin, public)?;
            }
        }
        self.add_security_headers(resp)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora::Error,
        _ctx: &mut RequestCtx,
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
                if let Err(we) = self
                    .respond(session, &err, &Challenge::None, None, _ctx)
                    .await
                {
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

    /// 4. observe
    async fn logging(
        &self,
        session: &mut Session,
        e: Option<&pingora::Error>,
        ctx: &mut RequestCtx,
    ) {
        let req = session.req_header();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let route = ctx
            .own_route
            .or_else(|| ctx.route.as_ref().map(Route::kind))
            .unwrap_or("other");
        let m = metrics();
        m.requests
            .with_label_values(&[route, method_label(&req.method), code_class(status)])
            .inc();
        m.request_duration
            .with_label_values(&[route])
            .observe(ctx.start.elapsed().as_secs_f64());
        m.received_bytes
            .with_label_values(&[route])
            .inc_by(session.body_bytes_read() as u64);
        m.sent_bytes
            .with_label_values(&[route])
            .inc_by(session.body_bytes_sent() as u64);
        if let Some(log) = &self.audit {
            self.audit(log, session, ctx, status);
        }
        if !self.access_log {
            return;
        }
        let req = session.req_header();
        access_log::write(&AccessRecord {
            client: client_ip(session),
            user: ctx.user.as_deref(),
            method: req.method.as_str(),
            path: req.uri.path(),
            route: ctx.route.as_ref().map(Route::kind),
            status: session
                .response_written()
                .map(|r| r.status.as_u16())
                .unwrap_or(0),
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            duration_ms: ctx.start.elapsed().as_millis(),
            upstream_ms: ctx.upstream_ms,
            error: e.map(|e| e.etype().as_str()),
        });
    }
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
            user: ctx.user.as_deref(),
            client: client_ip(session),
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
        });
    }

    fn add_security_headers(&self, resp: &mut ResponseHeader) -> Result<()> {
        resp.insert_header("Docker-Distribution-Api-Version", "registry/2.0")?;
        resp.insert_header("X-Content-Type-Options", "nosniff")?;
        if let Some(hsts) = &self.hsts {
            resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.as_str())?;
        }
        Ok(())
    }

    /// Answers a refused request: JSON error, challenge, `Retry-After`.
    pub async fn refuse(&self, session: &mut Session, ctx: &RequestCtx, r: &Refusal) -> Result<()> {
        if let Some(LoginOutcome::Failed(f)) = ctx.login {
            tracing::info!(target: "auth", client = %client_addr(session), reason = f.as_str(), "login refused");
        }
        self.respond(session, &r.error, &r.challenge, r.retry_after, ctx)
            .await
    }

    /// An error answer that needs no challenge (bad request, gateway).
    async fn reject(
        &self,
        session: &mut Session,
        err: &RegistryError,
        ctx: &RequestCtx,
    ) -> Result<()> {
        self.respond(session, err, &Challenge::None, None, ctx)
            .await
    }

    /// Writes one of the proxy's own answers, in the registry's JSON format.
    pub async fn respond(
        &self,
        session: &mut Session,
        err: &RegistryError,
        challenge: &Challenge,
        retry_after: Option<u64>,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let body = Bytes::from(err.body());
        let mut resp = ResponseHeader::build(err.status, Some(6))?;
        resp.insert_header(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        if let Some(value) = self.challenge_header(challenge, ctx) {
            resp.insert_header(http::header::WWW_AUTHENTICATE, value)?;
        }
        if let Some(secs) = retry_after {
            resp.insert_header(http::header::RETRY_AFTER, secs.to_string())?;
        }
        // After an upstream failure Pingora closes the client connection;
        // say so, or an HTTP/1.1 client may reuse it and see a reset.
        if err.status >= 500 && !session.is_http2() {
            resp.insert_header(http::header::CONNECTION, "close")?;
        }
        self.add_security_headers(&mut resp)?;
        self.write(session, resp, Some(body)).await
    }

    /// Sends a complete response; no body for HEAD.
    pub async fn write(
        &self,
        session: &mut Session,
        resp: ResponseHeader,
        body: Option<Bytes>,
    ) -> Result<()> {
        let head_only = session.req_header().method == http::Method::HEAD || body.is_none();
        session
            .write_response_header(Box::new(resp), head_only)
            .await?;
        if !head_only {
            session.write_response_body(body, true).await?;
        }
        Ok(())
    }

    fn challenge_header(&self, challenge: &Challenge, ctx: &RequestCtx) -> Option<String> {
        match challenge {
            Challenge::None => None,
            Challenge::Basic => Some(format!("Basic realm=\"{}\"", self.realm)),
            Challenge::Bearer { scope, error } => {
                let endpoint = self.token_endpoint.as_ref()?;
                let mut v = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    endpoint.realm(ctx.public_origin.as_deref()),
                    endpoint.service
                );
                if let Some(scope) = scope {
                    v.push_str(&format!(",scope=\"{scope}\""));
                }
                if let Some(error) = error {
                    v.push_str(&format!(",error=\"{error}\""));
                }
                Some(v)
            }
        }
    }

    async fn answer_token(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        answer: Answer,
    ) -> Result<()> {
        let (status, body) = match answer {
            Answer::Token { json, user } => {
                ctx.user = user;
                (200, json)
            }
            Answer::BadRequest(e) => (e.status(), e.body()),
            Answer::MethodNotAllowed => {
                return self
                    .reject(session, &RegistryError::METHOD_NOT_ALLOWED, ctx)
                    .await
            }
            Answer::Refused(refusal, outcome) => {
                ctx.login = outcome;
                return self.refuse(session, ctx, &refusal).await;
            }
        };
        let mut resp = ResponseHeader::build(status, Some(5))?;
        resp.insert_header(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        self.add_security_headers(&mut resp)?;
        self.write(session, resp, Some(Bytes::from(body))).await
    }

    /// The filtered catalog: only repositories the caller may pull.
    async fn catalog(
        &self,
        session: &mut Session,
        principal: &Principal,
        ip: std::net::IpAddr,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let query = session.req_header().uri.query();
        let n = route::query_param(query, "n")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(catalog::DEFAULT_PAGE)
            .min(catalog::MAX_PAGE);
        let last = match self
            .catalog_cursors
            .start_after(route::query_param(query, "last").as_deref())
        {
            Ok(l) => l,
            Err(_) => return self.reject(session, &RegistryError::BAD_CURSOR, ctx).await,
        };
        let acl = self.gate.acl.load();
        let caller = principal.caller(ip);
        let visible = |name: &str| {
            acl.check(&caller, Some(name), route::Action::Pull)
                .allowed()
        };
        let source = match catalog::UpstreamCatalog::of(
            &self.upstream.load(),
            ctx.upstream_authorization.clone(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(target: "upstream", error = %e, "catalog request failed");
                return self.reject(session, &RegistryError::BAD_GATEWAY, ctx).await;
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
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(target: "upstream", error = %e, "catalog request failed");
                return self.reject(session, &RegistryError::BAD_GATEWAY, ctx).await;
            }
        };
        let (body, link) = catalog::render(&page, n, &self.catalog_cursors);
        let mut resp = ResponseHeader::build(200, Some(6))?;
        resp.insert_header(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        if let Some(link) = link {
            resp.insert_header(http::header::LINK, link)?;
        }
        self.add_security_headers(&mut resp)?;
        self.write(session, resp, Some(Bytes::from(body))).await
    }
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The client's address, canonical: on a dual-stack listener (`[::]:443`)
/// IPv4 clients arrive as `::ffff:a.b.c.d`, which no IPv4 network rule,
/// throttle entry or log search would match. Every consumer (rules,
/// throttle, logs, metrics, `X-Forwarded-For`) takes it from here.
fn client_addr(session: &Session) -> std::net::IpAddr {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_canonical())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

fn client_ip(session: &Session) -> String {
    client_addr(session).to_string()
}
