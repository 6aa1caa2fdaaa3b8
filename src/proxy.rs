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

use crate::auth::{self, AuthFailure, Authenticator};
use crate::observe::access_log::{self, AccessRecord};
use crate::observe::drain::InFlight;
use crate::registry::errors::RegistryError;
use crate::registry::route::{self, Route};
use crate::registry::{headers, location};
use crate::upstream::Upstream;

pub struct RegistryProxy {
    pub upstream: Arc<Upstream>,
    pub auth: Arc<Authenticator>,
    pub realm: String,
    /// Precomputed `Strict-Transport-Security` value, if enabled.
    pub hsts: Option<String>,
    /// The TLS port, for redirects from the plain-HTTP listener.
    pub https_port: u16,
    pub access_log: bool,
}

/// Per-request state, filled in as the pipeline advances.
pub struct RequestCtx {
    start: Instant,
    route: Option<Route>,
    user: Option<String>,
    auth_failure: Option<AuthFailure>,
    /// `https://host[:port]` as the client addressed us.
    public_origin: Option<String>,
    upstream_start: Option<Instant>,
    upstream_ms: Option<u128>,
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
            auth_failure: None,
            public_origin: None,
            upstream_start: None,
            upstream_ms: None,
            _in_flight: InFlight::enter(),
        }
    }

    /// Route and authenticate; anything refused is answered here and never
    /// reaches the upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let host = headers::request_host(session.req_header());
        if !is_tls(session) {
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
        ctx.public_origin = host.map(|h| format!("https://{h}"));

        // 1. route
        let req = session.req_header();
        let route = match route::parse(req.uri.path(), req.uri.query()) {
            Ok(r) => r,
            Err(e) => {
                self.respond(session, &RegistryError::from(e), false)
                    .await?;
                return Ok(true);
            }
        };
        if let Err(e) = route.required(&req.method) {
            self.respond(session, &RegistryError::from(e), false)
                .await?;
            return Ok(true);
        }
        ctx.route = Some(route);

        // 2. authenticate (every authenticated user may do everything for now)
        let creds = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| auth::basic::parse(v.as_bytes()));
        let Some(creds) = creds else {
            self.respond(session, &RegistryError::UNAUTHORIZED, true)
                .await?;
            return Ok(true);
        };
        ctx.user = Some(creds.user.clone());
        match self.auth.verify(&creds).await {
            Ok(_) => Ok(false),
            Err(failure) => {
                ctx.auth_failure = Some(failure);
                tracing::info!(
                    target: "auth",
                    user = %creds.user,
                    client = %client_ip(session),
                    reason = failure.as_str(),
                    "login refused"
                );
                let err = match failure {
                    AuthFailure::Unavailable => RegistryError::UNAVAILABLE,
                    _ => RegistryError::UNAUTHORIZED,
                };
                self.respond(session, &err, true).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.upstream_start = Some(Instant::now());
        self.upstream.peer()
    }

    /// 3. forward: our headers, not the client's.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_host = headers::request_host(session.req_header());
        headers::prepare_upstream_request(
            req,
            &self.upstream,
            client_host.as_deref(),
            &client_ip(session),
        )
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_ms = ctx.upstream_start.map(|t| t.elapsed().as_millis());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(public) = &ctx.public_origin {
            location::rewrite_response(resp, self.upstream.origin(), public)?;
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
        let code = match err {
            Some(err) if session.response_written().is_none() => {
                tracing::warn!(target: "upstream", error = %e, status = err.status, "upstream request failed");
                if let Err(we) = self.respond(session, &err, false).await {
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
        if !self.access_log {
            return;
        }
        let req = session.req_header();
        access_log::write(&AccessRecord {
            client: client_ip(session),
            user: ctx.user.as_deref().filter(|_| ctx.auth_failure.is_none()),
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
    fn add_security_headers(&self, resp: &mut ResponseHeader) -> Result<()> {
        resp.insert_header("Docker-Distribution-Api-Version", "registry/2.0")?;
        resp.insert_header("X-Content-Type-Options", "nosniff")?;
        if let Some(hsts) = &self.hsts {
            resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.as_str())?;
        }
        Ok(())
    }

    /// Answers with the registry's JSON error body, and the Basic challenge
    /// where a client should (re)try with credentials.
    async fn respond(
        &self,
        session: &mut Session,
        err: &RegistryError,
        challenge: bool,
    ) -> Result<()> {
        let body = Bytes::from(err.body());
        let mut resp = ResponseHeader::build(err.status, Some(5))?;
        resp.insert_header(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )?;
        resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        if challenge {
            resp.insert_header(
                http::header::WWW_AUTHENTICATE,
                format!("Basic realm=\"{}\"", self.realm),
            )?;
        }
        self.add_security_headers(&mut resp)?;
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(resp), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

fn client_ip(session: &Session) -> String {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}
