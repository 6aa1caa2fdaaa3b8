//! The compile stage: `proxy.toml`'s shape ([`crate::config`]) turned once
//! into typed, finished values — compiled rules, parsed algorithms and
//! filters, resolved secrets, loaded keys and certificates, the upstream.
//!
//! `serve` runs what [`build`] returns, `check` is [`build`] without
//! starting anything, and reload rebuilds the reloadable part
//! ([`policy::Policy`]) through the same code. Every problem is collected
//! with the dotted key it concerns, so the three can only agree.

pub mod compile;
pub mod policy;
pub mod secrets;

use std::sync::Arc;

use crate::auth::authentication::Authenticator;
use crate::auth::login::Login;
use crate::auth::token::jwt::TokenIssuer;
use crate::auth::token::keys::{KeySet, KeySettings};
use crate::auth::token::public::Algorithm;
use crate::auth::token::revocation::RevocationList;
use crate::config::{AuthMode, Config, Problem};
use crate::observe::admin::ScrapeAuth;
use crate::observe::audit::AuditLog;
use crate::tls::TlsState;

pub use compile::{compile, Compiled};
pub use policy::Policy;

/// Everything `serve` needs, built and checked.
pub struct App {
    /// What the file says, for the listeners and settings read as written.
    pub config: Config,
    pub tls: TlsState,
    pub auth: Arc<Authenticator>,
    pub policy: Policy,
    /// Token mode, `upstream.token_auth`, or Basic mode with anonymous
    /// rules: the keys tokens are signed with.
    pub issuer: Option<Arc<TokenIssuer>>,
    /// Whether clients are challenged with Bearer and served the token
    /// endpoint (token mode, or [`anonymous_needs_tokens`]).
    pub token_endpoint: bool,
    /// With the token endpoint: issued tokens revoked before they expire.
    pub revocations: Option<Arc<RevocationList>>,
    pub audit: Option<Arc<AuditLog>>,
    /// What scrapers of `/metrics` must present (`None`: anyone).
    pub scrape: Option<ScrapeAuth>,
    /// `[auth.oidc.login]`: the browser login.
    pub login: Option<Arc<Login>>,
    /// `[cluster]`: the Redis the replicas share the throttle in.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Builds every part of a loaded config, collecting each problem with its
/// key; nothing is started (no listener, no thread that serves). What
/// `check` runs.
pub fn build(config: Config) -> Result<App, Vec<Problem>> {
    match compile::compile(&config) {
        Ok(compiled) => assemble(config, compiled),
        // the rest is still checked, to report every problem at once
        Err(mut problems) => {
            let empty = Compiled {
                rules: Vec::new(),
                token_algorithm: Algorithm::ES256,
                log_filter: None,
            };
            if let Err(more) = assemble(config, empty) {
                problems.extend(more);
            }
            Err(problems)
        }
    }
}

/// The I/O half of the build, over a compiled config: files, secrets,
/// keys, the upstream. `serve` installs its logger between the two halves
/// so that what loading reports is logged.
pub fn assemble(config: Config, compiled: Compiled) -> Result<App, Vec<Problem>> {
    let mut problems = Vec::new();
    let cfg = &config;
    let tls = collect(
        &mut problems,
        TlsState::new(&cfg.tls, tls_counters()).map_err(|e| tls_problems(&cfg.tls, e)),
    );
    if let Some(acme) = &cfg.tls.acme {
        problems.extend(crate::tls::acme::check(acme));
    }
    let auth = collect(
        &mut problems,
        Authenticator::new(&cfg.auth).map_err(|e| e.problems()),
    );
    let token_endpoint =
        cfg.auth.mode == AuthMode::Token || anonymous_needs_tokens(cfg, &compiled.rules);
    let policy = collect(&mut problems, Policy::build(cfg, compiled.rules, None));
    let issuer = match token_endpoint || cfg.upstream.token_auth {
        true => collect(
            &mut problems,
            issuer(cfg, compiled.token_algorithm).map(Some),
        ),
        false => Some(None),
    };
    let revocations = match token_endpoint {
        true => collect(
            &mut problems,
            RevocationList::load(
                &cfg.auth.token.revocation_path(),
                cfg.auth.token.longest_lifetime(),
            )
            .map(|r| Some(Arc::new(r)))
            .map_err(|e| vec![Problem::new("auth.token.revocation_file", e.to_string())]),
        ),
        false => Some(None),
    };
    let audit = match &cfg.log.audit_file {
        Some(path) => collect(
            &mut problems,
            AuditLog::open(path, cfg.log.audit_max_bytes)
                .map(|a| Some(Arc::new(a)))
                .map_err(|e| {
                    vec![Problem::new(
                        "log.audit_file",
                        format!("{}: {e}", path.display()),
                    )]
                }),
        ),
        None => Some(None),
    };
    let scrape = collect(&mut problems, secrets::scrape_auth(&cfg.metrics));
    let login_config = cfg.auth.oidc.as_ref().and_then(|o| o.login.as_ref());
    let login_secret = match login_config {
        Some(l) => collect(
            &mut problems,
            l.client_secret
                .resolve()
                .map(Some)
                .map_err(|e| vec![Problem::new("auth.oidc.login.client_secret", e.to_string())]),
        ),
        None => Some(None),
    };
    let cluster = match &cfg.cluster {
        Some(c) => collect(
            &mut problems,
            c.redis
                .resolve()
                .map_err(|e| e.to_string())
                .and_then(|url| crate::cluster::Cluster::new(c, &url).map_err(|e| e.0))
                .map(|c| Some(Arc::new(c)))
                .map_err(|e| vec![Problem::new("cluster.redis", e)]),
        ),
        None => Some(None),
    };
    match (
        tls,
        auth,
        policy,
        issuer,
        revocations,
        audit,
        scrape,
        login_secret,
        cluster,
    ) {
        (
            Some(tls),
            Some(auth),
            Some(policy),
            Some(issuer),
            Some(revocations),
            Some(audit),
            Some(scrape),
            Some(login_secret),
            Some(cluster),
        ) if problems.is_empty() => {
            let auth = Arc::new(auth);
            let keep = cfg.auth.token.longest_lifetime();
            let login = match (login_config, login_secret) {
                (Some(l), Some(secret)) => Login::new(
                    l,
                    secret,
                    Arc::clone(&auth),
                    revocations.clone().map(|r| (r, keep)),
                    audit.clone(),
                )
                .map(Arc::new),
                _ => None,
            };
            Ok(App {
                config,
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
            })
        }
        _ => Err(problems),
    }
}

/// Docker cannot pull anonymously after a `Basic` challenge: its
/// authorizer runs the handler of every challenged scheme, and Basic
/// without stored credentials is an error ("no basic auth credentials"),
/// whatever else is offered. A 200 on `/v2/` instead would let `docker
/// login` succeed with any password. So in Basic mode, rules that grant
/// anonymous access bring the token endpoint along: requests without
/// credentials are challenged with `Bearer`, anonymous clients fetch an
/// anonymous token, `docker login` has its password checked there, and
/// Basic credentials keep working on every request.
pub fn anonymous_needs_tokens(
    cfg: &Config,
    rules: &[crate::auth::authorization::acl::Rule],
) -> bool {
    cfg.auth.mode == AuthMode::Basic && crate::auth::authorization::acl::grants_anonymous(rules)
}

/// Signing and verification keys (generated on first start).
fn issuer(cfg: &Config, algorithm: Algorithm) -> Result<Arc<TokenIssuer>, Vec<Problem>> {
    let t = &cfg.auth.token;
    let settings = KeySettings {
        signing_key: t.signing_key.clone(),
        generate_dir: t.key_dir.clone(),
        algorithm,
        extra_verification_keys: t.verification_keys.clone(),
    };
    let keys = KeySet::load(&settings).map_err(|e| {
        let key = match e.path() {
            Some(p) if Some(p) == t.signing_key.as_deref() => "auth.token.signing_key",
            Some(p) if t.verification_keys.iter().any(|v| v == p) => "auth.token.verification_keys",
            _ if t.signing_key.is_some() => "auth.token.signing_key",
            _ => "auth.token.key_dir",
        };
        vec![Problem::new(key, e.to_string())]
    })?;
    Ok(Arc::new(
        TokenIssuer::new(keys, &t.issuer, &t.service, t.lifetime)
            .with_refresh_lifetime(t.refresh_lifetime),
    ))
}

/// The exporter's counters, for the TLS layer to count on.
fn tls_counters() -> crate::tls::TlsCounters {
    let m = crate::observe::metrics::metrics();
    crate::tls::TlsCounters {
        hellos: m.tls_hellos.clone(),
        reload_failures: m
            .config_reloads
            .with_label_values(&["certificate", "error"]),
        client_cert_refusals: m.client_cert_refusals.clone(),
    }
}

fn tls_problems(cfg: &crate::config::TlsConfig, e: crate::tls::TlsError) -> Vec<Problem> {
    use crate::tls::TlsError;
    let key = match &e {
        TlsError::Files(pe) if Some(pe.path()) == cfg.key.as_deref() => "tls.key",
        TlsError::Files(_) => "tls.cert",
        TlsError::SelfSigned(_) => "tls.self_signed",
        TlsError::Acme(_) => "tls.acme",
        TlsError::ClientAuth(ce) => ce.key(),
    };
    vec![Problem::new(key, e.to_string())]
}

/// Keeps the value, or adds its problems and keeps going.
fn collect<T>(problems: &mut Vec<Problem>, r: Result<T, Vec<Problem>>) -> Option<T> {
    r.map_err(|p| problems.extend(p)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid config around `extra` (a self-signed certificate and an
    /// htpasswd file in `dir`), built.
    fn build_keys(dir: &std::path::Path, extra: &str) -> Vec<String> {
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, "").unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:5443\"\n[upstream]\nurl = \"http://127.0.0.1:5000\"\n\
             [tls]\nself_signed = true\n[auth.htpasswd]\npath = {htpasswd:?}\n{extra}"
        );
        let cfg = Config::parse(&text).unwrap();
        match build(cfg) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn a_valid_config_builds() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(build_keys(dir.path(), ""), Vec::<String>::new());
    }

    #[test]
    fn secrets_keys_and_files_are_problems_under_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let cases = [
            (
                "[metrics]\nusername = \"m\"\npassword = { env = \"PORTCULLIS_TEST_UNSET_1\" }"
                    .to_owned(),
                "metrics.password",
            ),
            (
                "[metrics]\nbearer_token = { env = \"PORTCULLIS_TEST_UNSET_2\" }".to_owned(),
                "metrics.bearer_token",
            ),
            (
                format!("[upstream]\nurl = \"http://127.0.0.1:5000\"\ntoken_auth = true\n[auth.token]\nsigning_key = {missing:?}"),
                "auth.token.signing_key",
            ),
            (
                format!("[log]\naudit_file = {:?}", missing.join("audit.log")),
                "log.audit_file",
            ),
            (
                format!("[auth]\ngroups_file = {missing:?}"),
                "auth.groups_file",
            ),
            ("[log]\nlevel = \"[bad\"".to_owned(), "log.level"),
        ];
        for (extra, key) in cases {
            // the [upstream] case replaces the base's section
            let keys = if extra.starts_with("[upstream]") {
                build_replacing_upstream(dir.path(), &extra)
            } else {
                build_keys(dir.path(), &extra)
            };
            assert_eq!(keys, [key], "{extra}");
        }
    }

    fn build_replacing_upstream(dir: &std::path::Path, extra: &str) -> Vec<String> {
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, "").unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:5443\"\n[tls]\nself_signed = true\n\
             [auth.htpasswd]\npath = {htpasswd:?}\n{extra}"
        );
        match build(Config::parse(&text).unwrap()) {
            Ok(_) => Vec::new(),
            Err(problems) => problems.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn ldap_templates_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ldap =
            "[auth.ldap]\nurls = [\"ldap://127.0.0.1:389\"]\nbase_dn = \"dc=example,dc=org\"\n";
        for (extra, keys) in [
            (
                "user_filter = \"(uid={user})\"",
                &["auth.ldap.user_filter"][..],
            ),
            (
                "user_filter = \"(uid={username}\"",
                &["auth.ldap.user_filter"],
            ),
            (
                "user_filter = \"(objectClass=person)\"",
                &["auth.ldap.user_filter"],
            ),
            (
                "user_dn_template = \"ou=people,dc=example,dc=org\"",
                &["auth.ldap.user_dn_template"],
            ),
            ("nested_group_depth = 2", &["auth.ldap.nested_group_depth"]),
            (
                "nested_group_depth = 2\ngroup_filter = \"(member={dn})\"",
                &[],
            ),
            (
                "bind_dn = \"cn=svc\"\nbind_password = { env = \"PORTCULLIS_TEST_UNSET_3\" }",
                &["auth.ldap.bind_password"],
            ),
        ] {
            assert_eq!(
                build_keys(dir.path(), &format!("{ldap}{extra}")),
                keys,
                "{extra}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_when_rules_do_not_compile() {
        let dir = tempfile::tempdir().unwrap();
        let extra = "[metrics]\nbearer_token = { env = \"PORTCULLIS_TEST_UNSET_4\" }\n\
                     [[access]]\nactions = [\"fly\"]";
        assert_eq!(
            build_keys(dir.path(), extra),
            ["access[0].actions", "metrics.bearer_token"]
        );
    }
}
