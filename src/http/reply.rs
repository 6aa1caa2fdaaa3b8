//! Everything the proxy answers itself, as values, and the one writer that
//! puts them on the wire.
//!
//! Handlers decide *what* to answer (a [`Reply`]); [`write()`] alone builds
//! the `ResponseHeader`, so the headers every answer must carry
//! (`Content-Length`, the registry's API version, `nosniff`, HSTS,
//! `Connection: close` after a failure) cannot be forgotten by one of them.
//! It also reads and discards what the client still sends of a request
//! body the answer did not need (see [`DRAIN_LIMIT`]).

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use std::time::Duration;

use crate::auth::refusal::{Challenge, Mode, Refusal};
use crate::auth::token::endpoint::bearer_challenge;
use crate::registry::errors::RegistryError;

const JSON: &str = "application/json; charset=utf-8";

/// One answer of the proxy's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A registry JSON error that asking for credentials would not change
    /// (bad request, unknown path, upstream failure).
    Error(RegistryError),
    /// A refused request: its JSON error, with the challenge and
    /// `Retry-After` the refusal calls for.
    Refused(Refusal),
    /// The token endpoint's JSON (a token, or an OAuth2 error), never
    /// cached.
    Token { status: u16, json: String },
    /// A page of the filtered catalog, with the `Link` to the next one.
    Catalog { json: Vec<u8>, link: Option<String> },
    /// From the plain-HTTP listener to the TLS one.
    Redirect {
        location: String,
        /// 308 rather than 301: the method (and body) must be kept.
        keep_method: bool,
    },
    /// An ACME http-01 validation answer (the key authorization, or 404).
    Http01 { status: u16, body: Bytes },
    /// A page of the browser login, or its redirect to the provider.
    Page(super::page::Page),
}

impl From<RegistryError> for Reply {
    fn from(e: RegistryError) -> Self {
        Reply::Error(e)
    }
}

impl From<Refusal> for Reply {
    fn from(r: Refusal) -> Self {
        Reply::Refused(r)
    }
}

/// Where the reply goes: what the listener adds to every answer and how
/// it asks for credentials.
pub struct ReplyContext<'a> {
    /// The registry API's own headers (`Docker-Distribution-Api-Version`,
    /// `X-Content-Type-Options`): on the TLS listener only.
    pub registry: bool,
    /// The `Strict-Transport-Security` value, if enabled (TLS only).
    pub hsts: Option<&'a http::HeaderValue>,
    /// The scheme credentials are asked for with.
    pub mode: Mode,
    /// The realm of a Basic challenge.
    pub basic_realm: &'a str,
    /// `(realm, service)` of a Bearer challenge; without a token endpoint
    /// no Bearer challenge is sent.
    pub bearer: Option<(String, &'a str)>,
}

impl ReplyContext<'_> {
    /// The plain-HTTP listener: not the registry API, never a challenge.
    pub const PLAIN: ReplyContext<'static> = ReplyContext {
        registry: false,
        hsts: None,
        mode: Mode::Basic,
        basic_realm: "",
        bearer: None,
    };

    fn challenge_header(&self, challenge: &Challenge) -> Option<String> {
        match challenge {
            Challenge::Basic => Some(format!("Basic realm=\"{}\"", self.basic_realm)),
            Challenge::Bearer { scope, error } => {
                let (realm, service) = self.bearer.as_ref()?;
                Some(bearer_challenge(realm, service, scope.as_deref(), *error))
            }
        }
    }
}

/// A downstream session a reply can be written to: the proxy's, or a
/// plain [`ServerSession`] of a small app.
#[async_trait]
pub trait Downstream: Send {
    fn request(&self) -> &RequestHeader;
    fn is_http2(&self) -> bool;
    /// Sends the header and, unless `None`, the whole body.
    async fn send(&mut self, head: ResponseHeader, body: Option<Bytes>) -> pingora::Result<()>;
    /// The HTTP session underneath, to read what is left of the request
    /// body.
    fn http(&mut self) -> &mut ServerSession;
}

#[async_trait]
impl Downstream for pingora::proxy::Session {
    fn request(&self) -> &RequestHeader {
        self.req_header()
    }
    fn is_http2(&self) -> bool {
        ServerSession::is_http2(self)
    }
    async fn send(&mut self, head: ResponseHeader, body: Option<Bytes>) -> pingora::Result<()> {
        self.write_response_header(Box::new(head), body.is_none())
            .await?;
        if let Some(body) = body {
            self.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }
    fn http(&mut self) -> &mut ServerSession {
        self
    }
}

#[async_trait]
impl Downstream for ServerSession {
    fn request(&self) -> &RequestHeader {
        self.req_header()
    }
    fn is_http2(&self) -> bool {
        ServerSession::is_http2(self)
    }
    async fn send(&mut self, head: ResponseHeader, body: Option<Bytes>) -> pingora::Result<()> {
        self.write_response_header(Box::new(head)).await?;
        if let Some(body) = body {
            self.write_response_body(body, true).await?;
        }
        Ok(())
    }
    fn http(&mut self) -> &mut ServerSession {
        self
    }
}

/// The status, content type, body and reply-specific headers of a reply.
struct Parts {
    status: u16,
    content_type: Option<&'static str>,
    body: Bytes,
    headers: Vec<(http::HeaderName, String)>,
}

impl Parts {
    fn new(status: u16, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Self {
        Parts {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: http::HeaderName, value: Option<String>) -> Self {
        self.headers.extend(value.map(|v| (name, v)));
        self
    }

    fn of(reply: Reply, ctx: &ReplyContext<'_>) -> Parts {
        use http::header;
        match reply {
            Reply::Error(e) => Parts::new(e.status, Some(JSON), e.body()),
            Reply::Refused(r) => Parts::new(r.error().status, Some(JSON), r.body())
                .with(
                    header::WWW_AUTHENTICATE,
                    r.challenge(ctx.mode).and_then(|c| ctx.challenge_header(&c)),
                )
                .with(header::RETRY_AFTER, r.retry_after().map(|s| s.to_string())),
            Reply::Token { status, json } => Parts::new(status, Some(JSON), json)
                .with(header::CACHE_CONTROL, Some("no-store".into())),
            Reply::Catalog { json, link } => {
                Parts::new(200, Some(JSON), json).with(header::LINK, link)
            }
            Reply::Redirect {
                location,
                keep_method,
            } => Parts::new(if keep_method { 308 } else { 301 }, None, Bytes::new())
                .with(header::LOCATION, Some(location)),
            Reply::Http01 { status, body } => Parts::new(status, Some("text/plain"), body)
                .with(header::CACHE_CONTROL, Some("no-store".into())),
            Reply::Page(page) => {
                let mut parts =
                    Parts::new(page.status, Some("text/html; charset=utf-8"), page.html)
                        .with(header::LOCATION, page.location)
                        .with(header::SET_COOKIE, page.cookie);
                for (name, value) in super::page::HEADERS {
                    parts = parts.with(http::HeaderName::from_static(name), Some(value.into()));
                }
                parts
            }
        }
    }

    fn head(self, ctx: &ReplyContext<'_>, http2: bool) -> pingora::Result<(ResponseHeader, Bytes)> {
        use http::header;
        let mut resp = ResponseHeader::build(self.status, Some(6 + self.headers.len()))?;
        if let Some(t) = self.content_type {
            resp.insert_header(header::CONTENT_TYPE, t)?;
        }
        resp.insert_header(header::CONTENT_LENGTH, self.body.len().to_string())?;
        for (name, value) in self.headers {
            resp.insert_header(name, value)?;
        }
        // After an upstream failure Pingora closes the client connection;
        // say so, or an HTTP/1.1 client may reuse it and see a reset.
        if self.status >= 500 && !http2 {
            resp.insert_header(header::CONNECTION, "close")?;
        }
        if ctx.registry {
            add_registry_headers(&mut resp, ctx.hsts)?;
        }
        Ok((resp, self.body))
    }
}

/// The headers of every registry API answer, the upstream's included.
pub fn add_registry_headers(
    resp: &mut ResponseHeader,
    hsts: Option<&http::HeaderValue>,
) -> pingora::Result<()> {
    static API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
    static NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");
    ensure(
        resp,
        &API_VERSION,
        "Docker-Distribution-Api-Version",
        "registry/2.0",
    )?;
    ensure(resp, &NOSNIFF, "X-Content-Type-Options", "nosniff")?;
    if let Some(hsts) = hsts {
        // (the name as text: Pingora copies a `HeaderName` it has no
        // title case for, then parses the copy)
        resp.insert_header("Strict-Transport-Security", hsts.clone())?;
    }
    Ok(())
}

/// Sets `name: value` unless the response has exactly that already, as
/// the registry's own answers do: an insert parses `cased` into a name
/// again and, for a name the response lacks, grows both of Pingora's
/// header maps (values and original case).
fn ensure(
    resp: &mut ResponseHeader,
    name: &HeaderName,
    cased: &'static str,
    value: &'static str,
) -> pingora::Result<()> {
    let mut present = resp.headers.get_all(name).iter();
    if present.next().is_some_and(|v| v == value) && present.next().is_none() {
        return Ok(());
    }
    resp.insert_header(cased, http::HeaderValue::from_static(value))
}

/// Writes `reply` as a complete response; no body for `HEAD` (its
/// `Content-Length` is still the body's).
pub async fn write<S: Downstream + ?Sized>(
    session: &mut S,
    reply: Reply,
    ctx: &ReplyContext<'_>,
) -> pingora::Result<()> {
    let (head, body) = Parts::of(reply, ctx).head(ctx, session.is_http2())?;
    let head_only = session.request().method == http::Method::HEAD || body.is_empty();
    session.send(head, (!head_only).then_some(body)).await?;
    let http = session.http();
    if !http.is_body_done() {
        if head_only {
            // (over HTTP/2 the stream's end is only sent here)
            http.finish_body().await?;
        }
        discard_body(http).await;
    }
    Ok(())
}

/// About this much of a request body the answer did not need (a refused
/// upload; the last read may cross it by its buffer) is read and thrown
/// away after the answer is sent, for at most [`DRAIN_TIME`]; then the
/// stream is reset (HTTP/2) or the connection closed (HTTP/1.1).
///
/// Without it, HTTP/2 ends the stream with `RST_STREAM(NO_ERROR)` right
/// after the answer, which RFC 9113 §8.1 allows but which curl 7.88 reports
/// as error 92 without the status while it is still sending the body; and
/// HTTP/1.1 closes a socket with the body unread, whose TCP reset can reach
/// the client before it read the answer (curl error 55). Clients stop
/// sending when they see the answer (curl ends the stream, Go resets it
/// with `CANCEL`), so what is read is what was in flight: the HTTP/2 flow
/// control window (64 KiB) plus what the client sends before it reads the
/// answer; on HTTP/1.1 also what the socket buffers hold. The cap keeps a
/// client that never stops from being read without limit, as nginx's
/// lingering close and Go's server (256 KiB) bound theirs.
pub const DRAIN_LIMIT: usize = 4 << 20;

/// How long [`discard_body`] waits for the rest of a body at most.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads and drops what the client still sends of the request body, up to
/// [`DRAIN_LIMIT`] bytes and [`DRAIN_TIME`]. The body is never kept. If it
/// did not end within them, an HTTP/1.1 connection is not reused.
async fn discard_body(http: &mut ServerSession) {
    if !http.is_http2() && expects_continue(http.req_header()) {
        // no `100 Continue` was sent, so the client sends no body (or
        // closes the connection); Pingora closes it after this answer
        http.set_keepalive(None);
        return;
    }
    let start = http.body_bytes_read();
    let drain = async {
        while http.body_bytes_read() - start < DRAIN_LIMIT {
            match http.read_request_body().await {
                Ok(Some(_)) => {}
                Ok(None) => return true,
                // the client reset the stream or closed the connection
                Err(_) => return false,
            }
        }
        false
    };
    let ended = tokio::time::timeout(DRAIN_TIME, drain)
        .await
        .unwrap_or(false);
    if !ended {
        tracing::debug!(
            read = http.body_bytes_read() - start,
            "request body not read to its end after the answer"
        );
        http.set_keepalive(None);
    }
}

fn expects_continue(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

#[cfg(test)]
mod tests {
    use super::*;
    static HSTS: http::HeaderValue = http::HeaderValue::from_static("max-age=60");

    fn ctx(mode: Mode) -> ReplyContext<'static> {
        ReplyContext {
            registry: true,
            hsts: Some(&HSTS),
            mode,
            basic_realm: "portcullis",
            bearer: Some(("https://r.test/token".into(), "registry.test")),
        }
    }

    fn header(resp: &ResponseHeader, name: &str) -> Option<String> {
        resp.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn refusals_carry_their_challenge_and_wait() {
        let r = Reply::from(Refusal::Unauthenticated {
            scope: Some("repository:a/b:pull".into()),
        });
        let (resp, body) = Parts::of(r, &ctx(Mode::Token))
            .head(&ctx(Mode::Token), false)
            .unwrap();
        assert_eq!(resp.status, 401);
        assert_eq!(
            header(&resp, "www-authenticate").as_deref(),
            Some(
                "Bearer realm=\"https://r.test/token\",service=\"registry.test\",\
                 scope=\"repository:a/b:pull\""
            )
        );
        // the body lists the access asked for, as registry:2's 401 does
        let records = crate::registry::errors::AccessRecord::of_scope("repository:a/b:pull");
        assert_eq!(
            body,
            Bytes::from(RegistryError::UNAUTHORIZED.body_with(&records))
        );
        assert_eq!(
            header(&resp, "strict-transport-security").as_deref(),
            Some("max-age=60")
        );

        let r = Reply::from(Refusal::Throttled { retry_after: 3 });
        let (resp, _) = Parts::of(r, &ctx(Mode::Basic))
            .head(&ctx(Mode::Basic), false)
            .unwrap();
        assert_eq!(resp.status, 429);
        assert_eq!(header(&resp, "retry-after").as_deref(), Some("3"));
        assert_eq!(header(&resp, "www-authenticate"), None);
    }

    #[test]
    fn failures_close_http1_connections() {
        let (resp, _) = Parts::of(RegistryError::BAD_GATEWAY.into(), &ctx(Mode::Basic))
            .head(&ctx(Mode::Basic), false)
            .unwrap();
        assert_eq!(header(&resp, "connection").as_deref(), Some("close"));
        let (resp, _) = Parts::of(RegistryError::BAD_GATEWAY.into(), &ctx(Mode::Basic))
            .head(&ctx(Mode::Basic), true)
            .unwrap();
        assert_eq!(header(&resp, "connection"), None);
    }

    #[test]
    fn token_answers_are_never_cached_and_catalog_pages_link_on() {
        let c = ctx(Mode::Token);
        let token = Reply::Token {
            status: 200,
            json: "{}".into(),
        };
        let (resp, body) = Parts::of(token, &c).head(&c, false).unwrap();
        assert_eq!(header(&resp, "cache-control").as_deref(), Some("no-store"));
        assert_eq!(header(&resp, "content-length").as_deref(), Some("2"));
        assert_eq!(body, Bytes::from_static(b"{}"));
        let page = Reply::Catalog {
            json: b"{}".to_vec(),
            link: Some("</v2/_catalog?n=1>; rel=\"next\"".into()),
        };
        let (resp, _) = Parts::of(page, &c).head(&c, false).unwrap();
        assert_eq!(
            header(&resp, "link").as_deref(),
            Some("</v2/_catalog?n=1>; rel=\"next\"")
        );
        assert_eq!(
            header(&resp, "docker-distribution-api-version").as_deref(),
            Some("registry/2.0")
        );
    }

    #[test]
    fn plain_listener_answers_carry_no_registry_headers() {
        let r = Reply::Redirect {
            location: "https://r.test/v2/".into(),
            keep_method: true,
        };
        let (resp, body) = Parts::of(r, &ReplyContext::PLAIN)
            .head(&ReplyContext::PLAIN, false)
            .unwrap();
        assert_eq!(resp.status, 308);
        assert_eq!(header(&resp, "content-length").as_deref(), Some("0"));
        assert_eq!(header(&resp, "docker-distribution-api-version"), None);
        assert!(body.is_empty());
    }

    #[test]
    fn registry_headers_replace_what_the_upstream_got_wrong() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("Docker-Distribution-Api-Version", "registry/2.0")
            .unwrap();
        resp.append_header("X-Content-Type-Options", "nosniff")
            .unwrap();
        resp.append_header("X-Content-Type-Options", "other")
            .unwrap();
        add_registry_headers(&mut resp, Some(&HSTS)).unwrap();
        let all = |name: &str| -> Vec<String> {
            resp.headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(all("docker-distribution-api-version"), ["registry/2.0"]);
        assert_eq!(all("x-content-type-options"), ["nosniff"]);
        assert_eq!(all("strict-transport-security"), ["max-age=60"]);
        let mut wrong = ResponseHeader::build(200, None).unwrap();
        wrong
            .append_header("Docker-Distribution-Api-Version", "registry/3.0")
            .unwrap();
        add_registry_headers(&mut wrong, None).unwrap();
        let version = wrong.headers.get("docker-distribution-api-version");
        assert_eq!(version.unwrap(), "registry/2.0");
        assert_eq!(
            wrong.headers.get("x-content-type-options").unwrap(),
            "nosniff"
        );
        assert!(wrong.headers.get("strict-transport-security").is_none());
    }
}
