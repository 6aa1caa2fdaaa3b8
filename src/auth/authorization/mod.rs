//! Authorization: what a principal may do.
//!
//! [`acl`] compiles and evaluates the access rules, [`groups`] loads the
//! config's static groups. [`Authorization`] is the one decision over
//! them for every kind of caller and every question the proxy asks: a
//! route's needs, a token request's scopes, a catalog entry. It is also
//! the one place a [`Principal`] becomes the rules' [`Caller`].

pub mod acl;
pub mod groups;

use std::net::IpAddr;
use std::sync::Arc;

use super::principal::Principal;
use super::refusal::Refusal;
use super::token::jwt;
use super::token::scope::{Access, Scope};
use crate::registry::route::{Action, RepoName};
use acl::{Acl, Actions, Caller};

/// A principal before the current rules, from one address.
pub struct Authorization<'p> {
    acl: Arc<Acl>,
    principal: &'p Principal,
    caller: Caller<'p>,
}

impl<'p> Authorization<'p> {
    pub fn new(acl: Arc<Acl>, principal: &'p Principal, ip: IpAddr) -> Self {
        let caller = Caller {
            user: principal.user(),
            groups: principal.groups(),
            ip,
            credential: principal.credential(),
        };
        Authorization {
            acl,
            principal,
            caller,
        }
    }

    /// Which rule decides `action` on `repo`, and why (`check --explain`).
    pub fn explain(&self, repo: Option<&str>, action: Action) -> String {
        self.acl.explain(&self.caller, repo, action)
    }

    /// Whether the rules let the caller do `action` to `repo` (`None`:
    /// registry-wide), whatever a token of it grants.
    pub fn permits(&self, repo: Option<&str>, action: Action) -> bool {
        self.within_token_scopes(repo, action)
            && self.acl.check(&self.caller, repo, action).allowed()
    }

    /// Whether an access token's scopes (if the caller logged in with one)
    /// cover `action` on `repo`: a token never grants more than them.
    fn within_token_scopes(&self, repo: Option<&str>, action: Action) -> bool {
        match self.principal {
            Principal::User { identity, .. } => identity
                .restriction
                .as_ref()
                .is_none_or(|r| r.allows(repo, action)),
            _ => true,
        }
    }

    /// Checks every (repository, action) a route needs.
    ///
    /// Refusals follow `registry:2`: without credentials → 401 with a
    /// challenge (so clients log in and retry); with credentials but not
    /// allowed → 403 `DENIED` for a user, 401 `insufficient_scope` for a
    /// token. The answer never depends on whether the repository exists.
    pub fn check(&self, needs: &[(Option<&RepoName>, Action)]) -> Result<(), Refusal> {
        // `GET /v2/` is how clients ask "am I logged in?": never anonymous,
        // or `docker login` would succeed without checking the password.
        if needs.is_empty() && self.principal.is_anonymous() {
            return Err(Refusal::Unauthenticated { scope: None });
        }
        for &(repo, action) in needs {
            // What a token grants, and still what the current rules grant
            // its subject from this request's address: a grant that
            // depended on `networks` does not travel with the token, and a
            // rule removed on reload takes effect at once.
            let granted = match (self.principal, repo) {
                (Principal::Token { claims }, Some(r)) => {
                    jwt::covers(claims, r.as_str(), action.as_str())
                }
                (Principal::Token { claims }, None) => jwt::covers_catalog(claims),
                _ => true,
            };
            if granted && self.permits(repo.map(RepoName::as_str), action) {
                continue;
            }
            let scope = scope_for(repo, action);
            return Err(match self.principal {
                Principal::Anonymous => Refusal::Unauthenticated { scope: Some(scope) },
                Principal::Token { .. } => Refusal::InsufficientScope { scope },
                Principal::User { .. } => Refusal::Denied { scope },
            });
        }
        Ok(())
    }

    /// The intersection of the requested scopes and what the rules allow
    /// (a partial grant is not an error).
    pub fn grant(&self, scopes: &[Scope]) -> Vec<Access> {
        scopes.iter().map(|scope| self.grant_one(scope)).collect()
    }

    fn grant_one(&self, scope: &Scope) -> Access {
        if scope.kind == "registry" {
            let all = scope.name == "catalog"
                && self.permits(None, Action::Catalog)
                && scope.actions.iter().any(|a| a == "*");
            return Access::granted(scope, all.then(|| "*".to_owned()).into_iter().collect());
        }
        let allowed = match scope.kind.as_str() {
            "repository" if RepoName::parse(&scope.name).is_ok() => self
                .acl
                .granted(&self.caller, Some(&scope.name))
                .0
                .intersect(Actions::ALL_REPO),
            _ => Actions::NONE,
        };
        let mut actions: Vec<String> = Vec::new();
        for asked in &scope.actions {
            let in_scope = allowed
                .iter()
                .filter(|&a| self.within_token_scopes(Some(&scope.name), a));
            for a in in_scope {
                if (asked == "*" || asked == a.as_str()) && !actions.iter().any(|x| x == a.as_str())
                {
                    actions.push(a.as_str().to_owned());
                }
            }
        }
        Access::granted(scope, actions)
    }

    /// The caller's groups worth recording in a token it is issued: a
    /// user's groups that some rule asks about.
    pub fn token_groups(&self) -> Vec<String> {
        match self.principal {
            Principal::User { groups, .. } => groups
                .iter()
                .filter(|g| self.acl.names_group(g))
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The scope string a token for this need would carry.
pub fn scope_for(repo: Option<&RepoName>, action: Action) -> String {
    match repo {
        Some(r) => format!("repository:{r}:{}", action.as_str()),
        None => "registry:catalog:*".to_owned(),
    }
}

#[cfg(test)]
mod tests;
