//! The reloadable part of a config: the access rules with their groups,
//! and the upstream with its replicas. Built by [`crate::app::build`] at
//! start and by the watcher on a change or SIGHUP, through the same code,
//! all or nothing.

use std::path::Path;
use std::sync::Arc;

use crate::auth::authorization::acl::{Acl, Rule};
use crate::auth::authorization::groups;
use crate::config::{Config, Problem};
use crate::upstream::Upstream;

pub struct Policy {
    pub acl: Arc<Acl>,
    pub upstream: Upstream,
}

impl Policy {
    /// `current` is the upstream serving now: an unchanged replica list
    /// keeps its balancer and the health it has learnt. Blocking (DNS, a
    /// first health check of new replicas): call off Pingora's workers.
    pub fn build(
        cfg: &Config,
        rules: Vec<Rule>,
        current: Option<&Upstream>,
    ) -> Result<Policy, Vec<Problem>> {
        let acl = access(cfg, rules);
        let upstream = Upstream::from_config(&cfg.upstream, &cfg.health, current)
            .map_err(|e| vec![Problem::new(e.key(), e.to_string())]);
        match (acl, upstream) {
            (Ok(acl), Ok(upstream)) => Ok(Policy { acl, upstream }),
            (acl, upstream) => Err([acl.err(), upstream.err()]
                .into_iter()
                .flatten()
                .flatten()
                .collect()),
        }
    }

    /// The policy of the config file as it is now.
    pub fn reload(path: &Path, current: &Upstream) -> Result<Policy, Vec<Problem>> {
        let cfg = Config::load(path).map_err(|e| e.problems)?;
        let compiled = super::compile::compile(&cfg)?;
        Policy::build(&cfg, compiled.rules, Some(current))
    }
}

/// The compiled rules joined with the groups of the config and its groups
/// file (what `check --explain` decides with).
pub fn access(cfg: &Config, rules: Vec<Rule>) -> Result<Arc<Acl>, Vec<Problem>> {
    let groups = groups::load(&cfg.auth)
        .map_err(|e| vec![Problem::new("auth.groups_file", e.to_string())])?;
    Ok(Acl::new(rules, groups))
}
