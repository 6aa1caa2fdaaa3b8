//! The built app handed to Pingora: the proxy on its listeners, the admin
//! listener, and the background services (watcher, health check, ACME).

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::Server;
use pingora::services::background::background_service;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::lingering_close::LingeringClose;
use super::watcher::{Watched, Watcher};
use super::ServeError;
use crate::app::App;
use crate::auth::gate::Gate;
use crate::auth::token::upstream::UpstreamTokens;
use crate::auth::token_endpoint::Endpoint;
use crate::config::AuthMode;
use crate::http::plain::PlainHttp;
use crate::observe::admin::AdminApp;
use crate::observe::health::{Health, HealthCheck};
use crate::observe::metrics::metrics;
use crate::proxy::RegistryProxy;

pub fn install(app: App, config_path: &Path, server: &mut Server) -> Result<(), ServeError> {
    let App {
        config: cfg,
        tls,
        auth,
        policy,
        issuer,
        token_endpoint,
        revocations,
        audit,
        scrape,
        login,
        cluster,
    } = app;
    let upstream = Arc::new(ArcSwap::from_pointee(policy.upstream));
    let acl = Arc::new(ArcSwap::new(policy.acl));
    let health = Arc::new(Health::default());
    // stored ACME certificates are installed before the listeners start
    let acme = match &cfg.tls.acme {
        Some(a) => Some(
            crate::tls::acme::start(
                a,
                Arc::clone(&tls.store),
                &crate::tls::acme::Listeners {
                    tls: cfg.server.listen,
                    http: cfg.server.http_listen,
                },
                cfg.server.watch_interval,
                tls.self_signed_pem.is_some(),
            )
            .map_err(|e| {
                ServeError::Config(crate::config::ConfigError {
                    problems: vec![crate::config::Problem::new("tls.acme", e.to_string())],
                })
            })?,
        ),
        None => None,
    };
    let tokens = issuer.as_ref().filter(|_| token_endpoint).map(Arc::clone);
    if token_endpoint && cfg.auth.mode == AuthMode::Basic {
        tracing::info!(
            path = %cfg.auth.token.path,
            "auth.mode = basic with anonymous rules: requests without credentials are challenged with Bearer, so Docker clients can pull anonymously; Basic credentials work on every request"
        );
    }
    if let Some(issuer) = &tokens {
        tracing::info!(
            kid = issuer.keys().signing().kid(),
            cert = %issuer.keys().cert_path().display(),
            "token auth: signing key loaded (the certificate is registry:2's auth.token.rootcertbundle)"
        );
    }
    let proxy = RegistryProxy::new(
        &cfg,
        Arc::clone(&upstream),
        Arc::new(
            Gate::new(
                Arc::clone(&auth),
                Arc::clone(&acl),
                &cfg.auth.throttle,
                tokens.clone(),
            )
            .with_revocations(revocations.clone())
            .with_cluster(cluster.clone())
            .with_certificates(
                cfg.tls
                    .client_auth
                    .as_ref()
                    .map(crate::auth::authentication::certificate::CertificateMapping::new),
            ),
        ),
        tokens
            .as_ref()
            .map(|t| Endpoint::new(&cfg.auth.token, Arc::clone(t))),
        issuer
            .filter(|_| cfg.upstream.token_auth)
            .map(UpstreamTokens::new),
        audit.clone(),
    )?
    .with_login(login.clone());
    let limits = cfg
        .limits
        .as_ref()
        .filter(|l| l.per_address.is_some() || l.per_user.is_some())
        .map(|l| Arc::new(crate::limits::Limits::new(l, cluster.is_some())));
    let proxy = proxy.with_limits(limits.clone());
    tracing::info!(
        users = auth.user_count(),
        htpasswd = %auth.htpasswd_path().map(|p| p.display().to_string()).unwrap_or_default(),
        ldap = auth.ldap().is_some(),
        upstream = upstream.load().origin(),
        "portcullis {} starting on {}",
        env!("CARGO_PKG_VERSION"),
        cfg.server.listen
    );
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, proxy);
    proxy.h2_options = Some(h2_options(&cfg.server.http2));
    let mut service = pingora::services::listening::Service::new(
        "portcullis proxy".to_owned(),
        LingeringClose::new(proxy),
    );
    if cfg.metrics.enabled {
        let ready_checks = match auth.ldap() {
            Some(_) => {
                let a = Arc::clone(&auth);
                vec![("directory", Box::new(move || a.ldap_reachable()) as _)]
            }
            None => Vec::new(),
        };
        let admin = AdminApp {
            health: Arc::clone(&health),
            certs: Arc::clone(&tls.store),
            auth: scrape,
            ready_checks,
        };
        let mut admin_service =
            pingora::services::listening::Service::new("portcullis admin".to_owned(), admin);
        admin_service.add_tcp(&cfg.metrics.listen.to_string());
        server.add_service(admin_service);
        tracing::info!(listen = %cfg.metrics.listen, "metrics and health on /metrics, /healthz, /readyz");
    }
    // The paths are unused: the resolver supplies every certificate.
    let mut tls_settings =
        TlsSettings::with_callbacks(Box::new(HandshakeCounter)).map_err(ServeError::TlsListener)?;
    tls_settings.set_cert_resolver(tls.store.clone());
    if let Some(client_auth) = &tls.client_auth {
        tls_settings.set_client_cert_verifier(client_auth.verifier.clone());
    }
    tls_settings.enable_h2();
    service.add_tls_with_settings(&cfg.server.listen.to_string(), None, tls_settings);
    // before the handshake: the PROXY header, then a tls-alpn-01 hello
    let alpn = acme
        .as_ref()
        .and_then(|a| a.alpn.clone())
        .map(|a| a as pingora::listeners::PreTlsCallback);
    let pre_tls: Option<pingora::listeners::PreTlsCallback> = match &cfg.server.proxy_protocol {
        Some(p) => {
            tracing::info!(from = ?p.from, "PROXY protocol: connections from these networks must start with a PROXY header");
            Some(Arc::new(super::proxy_protocol::ProxyProtocol::new(
                &p.from, alpn,
            )))
        }
        None => alpn,
    };
    if let Some(pre_tls) = pre_tls {
        service.endpoints().set_pre_tls_callback(pre_tls);
    }
    server.add_service(service);
    if let Some(http) = cfg.server.http_listen {
        let http01 = acme.as_ref().and_then(|a| a.http01.clone());
        let plain = PlainHttp::new(cfg.server.listen.port(), http01, cfg.log.access_log);
        match &cfg.server.proxy_protocol {
            Some(p) => server.add_service(super::proxy_protocol::PlainBehindBalancer::service(
                plain, &p.from, http,
            )),
            None => server.add_service(plain.service(http)),
        };
    }

    if let Some(acme) = acme {
        server.add_service(background_service("portcullis acme", acme.service));
    }
    if let (Some(c), Some(list)) = (&cluster, &revocations) {
        let interval = cfg
            .cluster
            .as_ref()
            .map_or(Duration::from_secs(2), |c| c.sync_interval);
        server.add_service(background_service(
            "portcullis revocation sync",
            super::cluster_sync::RevocationSync {
                cluster: Arc::clone(c),
                list: Arc::clone(list),
                interval,
            },
        ));
    }
    if let (Some(c), Some(limits), Some(cc)) = (&cluster, &limits, &cfg.cluster) {
        server.add_service(background_service(
            "portcullis limits sync",
            super::limits_sync::LimitsSync {
                cluster: Arc::clone(c),
                limits: Arc::clone(limits),
                interval: cc.sync_interval,
            },
        ));
    }
    if let Some(oidc) = auth.oidc() {
        server.add_service(background_service(
            "portcullis oidc",
            super::oidc::OidcService {
                oidc: Arc::clone(oidc),
                login: login.clone(),
            },
        ));
    }
    server.add_service(background_service(
        "portcullis health",
        HealthCheck {
            upstream: Arc::clone(&upstream),
            health,
        },
    ));
    let watched = Watched {
        config_path: config_path.to_owned(),
        groups_file: cfg.auth.groups_file.clone(),
        tls,
        auth,
        acl,
        upstream,
        audit,
        revocations,
    };
    let watcher =
        Watcher::new(watched, cfg.server.watch_interval).map_err(|source| ServeError::Thread {
            what: "file watcher",
            source,
        })?;
    server.add_service(background_service("portcullis watcher", watcher));
    let ports = std::iter::once(cfg.server.listen.port())
        .chain(cfg.server.http_listen.map(|a| a.port()))
        .collect();
    super::drain::spawn(
        server.watch_execution_phase(),
        cfg.server.grace_period,
        ports,
    )
    .map_err(|source| ServeError::Thread {
        what: "drain watcher",
        source,
    })?;
    Ok(())
}

/// Counts completed TLS handshakes (ClientHellos are counted by the
/// certificate resolver, so the difference is the failed ones), and puts
/// the client certificate, if any, on the connection's TLS digest, where
/// authentication finds it (`ssl_digest.extension`).
///
/// rustls exposes a peer certificate only after the listener's verifier
/// (`[tls.client_auth]`) accepted it; without client_auth none is asked
/// for.
struct HandshakeCounter;

#[async_trait]
impl pingora::listeners::TlsAccept for HandshakeCounter {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        metrics().tls_handshakes.inc();
        let der = tls.peer_certificate_der()?;
        match crate::tls::client_auth::PeerCertificate::parse(der) {
            Ok(peer) => Some(Arc::new(peer)),
            Err(e) => {
                // (the verifier parsed it already: not expected)
                tracing::warn!(target: "tls", error = %e, "verified client certificate cannot be parsed; ignoring it");
                None
            }
        }
    }
}

/// Pingora's bounded defaults (header list, concurrent streams) with the
/// windows and frame size of `[server.http2]`.
fn h2_options(
    c: &crate::config::http2::Http2Config,
) -> pingora::protocols::http::v2::server::H2Options {
    let mut o = pingora::protocols::http::v2::server::default_h2_options();
    o.initial_window_size(c.stream_window)
        .initial_connection_window_size(c.connection_window)
        .max_frame_size(c.max_frame_size)
        .max_send_buffer_size(c.send_buffer as usize);
    o
}
