//! Secrets the config names by reference (`{ env = … }`, `{ file = … }`),
//! resolved at build so an unresolvable one is a problem under its key.

use crate::config::{MetricsConfig, Problem, Secret};
use crate::observe::admin::ScrapeAuth;

/// What scrapers of `/metrics` must present (`None`: anyone may scrape).
pub fn scrape_auth(m: &MetricsConfig) -> Result<Option<ScrapeAuth>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut resolve = |s: &Secret, key: &str| {
        s.resolve()
            .map_err(|e| problems.push(Problem::new(key, e.to_string())))
            .ok()
    };
    let basic = match (&m.username, &m.password) {
        (Some(u), Some(p)) => resolve(p, "metrics.password").map(|p| (u.clone(), p)),
        _ => None,
    };
    let bearer = m
        .bearer_token
        .as_ref()
        .and_then(|t| resolve(t, "metrics.bearer_token"));
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut auth = ScrapeAuth::new();
    if let Some((u, p)) = &basic {
        auth = auth.basic(u, p);
    }
    if let Some(t) = &bearer {
        auth = auth.bearer(t);
    }
    Ok((basic.is_some() || bearer.is_some()).then_some(auth))
}
