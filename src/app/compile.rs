//! The pure half of the compile stage: what the file alone decides, with
//! no file, secret or network read — so the docs' examples and `check`
//! of a config for another machine see the same problems.

use tracing_subscriber::EnvFilter;

use crate::auth::authorization::acl::{self, Rule};
use crate::auth::token::public::Algorithm;
use crate::config::{Config, Problem};

/// Values parsed once from their text in the file.
pub struct Compiled {
    /// `[[access]]`, compiled; the groups are joined to them by the policy.
    pub rules: Vec<Rule>,
    pub token_algorithm: Algorithm,
    /// `log.level`, with rustls' per-connection SNI warning quietened;
    /// taken by the logger `serve` installs.
    pub log_filter: Option<EnvFilter>,
}

pub fn compile(cfg: &Config) -> Result<Compiled, Vec<Problem>> {
    let mut problems = Vec::new();
    let rules = acl::compile_rules(&cfg.access).map_err(|p| problems.extend(p));
    let token_algorithm = cfg.auth.token.algorithm.parse::<Algorithm>().map_err(|_| {
        problems.push(Problem::new(
            "auth.token.algorithm",
            "must be ES256, RS256 or EdDSA",
        ))
    });
    let log_filter = log_filter(&cfg.log.level)
        .map_err(|e| problems.push(Problem::new("log.level", e.to_string())));
    match (rules, token_algorithm, log_filter) {
        (Ok(rules), Ok(token_algorithm), Ok(log_filter)) => Ok(Compiled {
            rules,
            token_algorithm,
            log_filter: Some(log_filter),
        }),
        _ => Err(problems),
    }
}

/// rustls warns once per connection from clients that send an IP address
/// as SNI (RFC 6066 forbids it; curl and Go do it): noise, unless asked.
fn log_filter(level: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    if level.contains("rustls") {
        EnvFilter::try_new(level)
    } else {
        EnvFilter::try_new(format!("{level},rustls=error"))
    }
}
