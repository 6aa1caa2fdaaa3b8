//! The floor of the benchmark: Pingora with rustls and nothing else (no
//! auth, no routes, no header rewriting, no metrics), forwarding to one
//! upstream. `bench/run.sh` runs it as target `pingora-bare` so that the
//! cost portcullis adds over the framework it is built on can be told
//! apart from the framework's own.
//!
//!   cargo run --release --example bare_proxy -- LISTEN UPSTREAM CERT KEY

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, cert, key] = args.as_slice() else {
        eprintln!("usage: bare_proxy LISTEN UPSTREAM CERT KEY");
        return std::process::ExitCode::from(2);
    };
    let Ok(upstream) = upstream.parse() else {
        eprintln!("bare_proxy: UPSTREAM must be ip:port");
        return std::process::ExitCode::from(2);
    };
    let conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        upstream_keepalive_pool_size: 256,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Bare { upstream });
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
