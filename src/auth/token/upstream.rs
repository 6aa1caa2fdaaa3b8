//! Tokens the proxy presents to an upstream registry that runs token auth
//! itself (`registry:2` with `auth.token` trusting portcullis's key).
//!
//! Such a registry refuses anything without a valid token, which is what
//! protects it from clients that bypass the proxy. The proxy strips the
//! client's credentials and sends its own short-lived token instead, scoped
//! to exactly what the request was authorized for.

use moka::sync::Cache;
use std::sync::Arc;
use std::time::Duration;

use super::jwt::TokenIssuer;
use super::scope::Access;
use crate::registry::route::{Action, RepoName};

/// Lifetime of upstream tokens; they are reused for half of it.
const LIFETIME: Duration = Duration::from_secs(120);

pub struct UpstreamTokens {
    issuer: Arc<TokenIssuer>,
    cache: Cache<String, Arc<str>>,
}

impl UpstreamTokens {
    pub fn new(issuer: Arc<TokenIssuer>) -> Self {
        UpstreamTokens {
            issuer,
            cache: Cache::builder()
                .time_to_live(LIFETIME / 2)
                .max_capacity(10_000)
                .build(),
        }
    }

    /// `Bearer …` for a request of `user` that needs `needs`.
    pub fn bearer(
        &self,
        user: Option<&str>,
        needs: &[(Option<&RepoName>, Action)],
    ) -> Option<String> {
        let access = access_for(needs);
        let sub = user.unwrap_or("");
        let key = format!("{sub}\n{}", super::scope::scope_string(&access));
        if let Some(t) = self.cache.get(&key) {
            return Some(format!("Bearer {t}"));
        }
        match self.issuer.issue(sub, access, LIFETIME) {
            Ok(issued) => {
                let token: Arc<str> = issued.token.into();
                self.cache.insert(key, Arc::clone(&token));
                Some(format!("Bearer {token}"))
            }
            Err(e) => {
                tracing::error!(target: "upstream", error = %e, "cannot mint an upstream token");
                None
            }
        }
    }
}

/// The `access` claim for a set of needs, one entry per resource.
/// registry:2 wants `pull` with every `push` (distribution's
/// `appendAccessRecords` asks for both on uploads), so push brings pull.
pub fn access_for(needs: &[(Option<&RepoName>, Action)]) -> Vec<Access> {
    let mut out: Vec<Access> = Vec::new();
    let expanded = needs.iter().flat_map(|&(repo, action)| {
        let extra = (action == Action::Push).then_some((repo, Action::Pull));
        std::iter::once((repo, action)).chain(extra)
    });
    for (repo, action) in expanded {
        let (kind, name, act) = match repo {
            Some(r) => ("repository", r.as_str(), action.as_str()),
            None => ("registry", "catalog", "*"),
        };
        match out.iter_mut().find(|a| a.kind == kind && a.name == name) {
            Some(a) if !a.actions.iter().any(|x| x == act) => a.actions.push(act.to_owned()),
            Some(_) => {}
            None => out.push(Access {
                kind: kind.to_owned(),
                class: None,
                name: name.to_owned(),
                actions: vec![act.to_owned()],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_resource() {
        let a = RepoName::parse("team/app").unwrap();
        let b = RepoName::parse("base").unwrap();
        let got = access_for(&[
            (Some(&a), Action::Push),
            (Some(&b), Action::Pull),
            (Some(&a), Action::Pull),
            (Some(&a), Action::Push),
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "team/app");
        assert_eq!(got[0].actions, ["push", "pull"]);
        // push alone brings pull along
        let p = access_for(&[(Some(&b), Action::Push)]);
        assert_eq!(p[0].actions, ["push", "pull"]);
        assert_eq!(got[1].actions, ["pull"]);
        let cat = access_for(&[(None, Action::Catalog)]);
        assert_eq!(
            (cat[0].kind.as_str(), cat[0].name.as_str()),
            ("registry", "catalog")
        );
        assert!(access_for(&[]).is_empty());
    }
}
