//! The floor of the benchmark: Pingora with rustls and nothing else (no
//! auth, no routes, no header rewriting, no metrics), forwarding to one
//! upstream. `bench/run.sh` runs it as target `pingora-bare` so that the
//! cost portcullis adds over the framework it is built on can be told
//! apart from the framework's own.
//!
//! With `--recipe` it also does what distribution's nginx recipe asks of
//! a proxy besides the password check: the forwarding headers
//! (`X-Forwarded-For`, `-Proto`, `X-Real-IP`, the client's `Host`), the
//! `Docker-Distribution-Api-Version` answer header, and upstream timeouts
//! (connect 5 s, read and write 900 s, idle 90 s, on the same timers as
//! portcullis's defaults). That is the second floor: what any Pingora
//! proxy configured for a registry pays, so that what portcullis's own
//! features cost can be told apart from what the configuration costs.
//!
//!   cargo run --release --example bare_proxy -- LISTEN UPSTREAM CERT KEY [--recipe]

use std::time::Duration;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: std::net::SocketAddr,
    recipe: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        if self.recipe {
            let o = &mut peer.options;
            o.connection_timeout = Some(Duration::from_secs(5));
            o.read_timeout = Some(Duration::from_secs(900));
            o.write_timeout = Some(Duration::from_secs(900));
            o.idle_timeout = Some(Duration::from_secs(90));
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        _: &mut (),
    ) -> Result<()> {
        if !self.recipe {
            return Ok(());
        }
        // proxy_set_header Host $http_host (HTTP/2: the authority)
        let host = session
            .req_header()
            .uri
            .authority()
            .map(|a| a.as_str().to_owned());
        if let Some(host) = host {
            req.insert_header("Host", host)?;
        }
        let ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        req.insert_header("X-Real-IP", ip.as_str())?;
        req.insert_header("X-Forwarded-For", ip)?;
        req.insert_header("X-Forwarded-Proto", "https")?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _: &mut Session,
        resp: &mut ResponseHeader,
        _: &mut (),
    ) -> Result<()> {
        if self.recipe {
            // add_header 'Docker-Distribution-Api-Version' 'registry/2.0' always
            resp.insert_header("Docker-Distribution-Api-Version", "registry/2.0")?;
        }
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let recipe = args.last().is_some_and(|a| a == "--recipe");
    if recipe {
        args.pop();
    }
    let [listen, upstream, cert, key] = args.as_slice() else {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM CERT KEY [--recipe]");
        return std::process::ExitCode::from(2);
    };
    let Ok(upstream) = upstream.parse() else {
        eprintln!("bare_proxy: UPSTREAM must be ip:port");
        return std::process::ExitCode::from(2);
    };
    let mut conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    };
    if recipe {
        // portcullis's setting: only the connect timeout on the fast timer
        conf.fast_timeout_to_tokio_threshold_seconds = Some(30);
    }
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare { upstream, recipe });
    let mut tls = match TlsSettings::intermediate(cert, key) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bare_proxy: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    tls.enable_h2();
    service.add_tls_with_settings(listen, None, tls);
    server.add_service(service);
    server.run_forever()
}
