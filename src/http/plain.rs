//! The plain-HTTP listener (`server.http_listen`): its own service, so
//! nothing on it can reach the registry pipeline. It answers ACME http-01
//! validation requests and redirects everything else to https; no
//! credentials are read and nothing is forwarded.

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::reply::{self, Reply, ReplyContext};
use super::served::Served;
use crate::observe::drain::InFlight;
use crate::registry::headers;
use crate::tls::acme::{self, Challenges};

pub struct PlainHttp {
    /// The TLS listener's port, where redirects point.
    https_port: u16,
    /// tls.acme with http-01: the tokens an order waits on.
    http01: Option<Arc<Challenges>>,
    access_log: bool,
}

impl PlainHttp {
    pub fn new(https_port: u16, http01: Option<Arc<Challenges>>, access_log: bool) -> Self {
        PlainHttp {
            https_port,
            http01,
            access_log,
        }
    }

    /// The service listening on `listen`.
    pub fn service(self, listen: SocketAddr) -> Service<PlainHttp> {
        let mut service = Service::new("portcullis plain http".to_owned(), self);
        service.add_tcp(&listen.to_string());
        service
    }

    async fn answer(&self, req: &RequestHeader) -> Reply {
        if let (Some(ch), Some(token)) = (&self.http01, acme::http01::token(req.uri.path())) {
            let (status, body) = acme::http01::answer(ch, token).await;
            return Reply::Http01 { status, body };
        }
        let host = headers::request_host(req);
        Reply::Redirect {
            location: headers::https_redirect(host, self.https_port, req),
            keep_method: !matches!(req.method, http::Method::GET | http::Method::HEAD),
        }
    }
}

#[async_trait]
impl HttpServerApp for PlainHttp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                if matches!(e.etype(), pingora::ErrorType::InvalidHTTPHeader) {
                    let _ = http.respond_error(400).await;
                }
                tracing::debug!(error = %e, "plain HTTP: unreadable request");
                return None;
            }
        }
        let _in_flight = InFlight::enter();
        let started = Instant::now();
        if *shutdown.borrow() {
            http.set_keepalive(None);
        }
        let reply = self.answer(http.req_header()).await;
        let written = reply::write(&mut http, reply, &ReplyContext::PLAIN).await;
        Served {
            client: crate::http::served::client_addr(&http),
            label: "other",
            route: None,
            user: None,
            started,
            upstream_ms: None,
            error: written.as_ref().err().map(|e| e.etype().as_str()),
        }
        .record(&http, self.access_log);
        if let Err(e) = written {
            tracing::debug!(error = %e, "plain HTTP: cannot answer");
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(e) => {
                tracing::debug!(error = %e, "plain HTTP: cannot finish the request");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str) -> RequestHeader {
        let mut req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        req.insert_header("Host", "r.test:8080").unwrap();
        req
    }

    #[tokio::test]
    async fn redirects_keep_the_method_unless_get_or_head() {
        let app = PlainHttp::new(8443, None, false);
        for (method, keep_method) in [
            ("GET", false),
            ("HEAD", false),
            ("POST", true),
            ("PUT", true),
        ] {
            assert_eq!(
                app.answer(&request(method, "/v2/a/tags/list?n=1")).await,
                Reply::Redirect {
                    location: "https://r.test:8443/v2/a/tags/list?n=1".into(),
                    keep_method,
                },
                "{method}"
            );
        }
    }

    #[tokio::test]
    async fn without_http01_a_challenge_path_is_redirected_too() {
        let app = PlainHttp::new(443, None, false);
        let reply = app
            .answer(&request("GET", "/.well-known/acme-challenge/t"))
            .await;
        assert!(matches!(reply, Reply::Redirect { location, .. }
            if location == "https://r.test/.well-known/acme-challenge/t"));
    }
}
