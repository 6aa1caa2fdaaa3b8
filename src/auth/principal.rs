//! Who a request is from, and the decision whether it may do what its
//! route needs, with the answer a refused client should get.

use std::net::IpAddr;
use std::sync::Arc;

use super::acl::{Acl, Caller};
use super::token::jwt::{self, Claims};
use super::Identity;
use crate::registry::errors::RegistryError;
use crate::registry::route::{Action, RepoName};

/// The authenticated (or not) caller of one request.
#[derive(Debug, Clone)]
pub enum Principal {
    Anonymous,
    /// Basic credentials, verified by a backend.
    User {
        identity: Arc<Identity>,
        groups: Vec<String>,
    },
    /// A bearer token we issued: its `access` claim is what it may do.
    Token {
        claims: Arc<Claims>,
    },
}

impl Principal {
    pub fn user(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User { identity, .. } => Some(&identity.user),
            Principal::Token { claims } if claims.sub.is_empty() => None,
            Principal::Token { claims } => Some(&claims.sub),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.user().is_none()
    }

    /// The groups the rules see: a user's (directory and config) or those
    /// a token recorded when it was issued.
    pub fn groups(&self) -> &[String] {
        match self {
            Principal::Anonymous => &[],
            Principal::User { groups, .. } => groups,
            Principal::Token { claims } => &claims.groups,
        }
    }

    /// The caller as the access rules see it, from `ip`.
    pub fn caller(&self, ip: IpAddr) -> Caller<'_> {
        Caller {
            user: self.user(),
            groups: self.groups(),
            ip,
        }
    }
}

/// Why a request is refused, and so what the client is told: the JSON
/// error, whether it is asked to authenticate ([`Refusal::challenge`], the
/// one place that decides it), and for throttled callers when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, wrong ones, or too little for an anonymous caller:
    /// 401 with a challenge (for the `scope` the request needed).
    Unauthenticated { scope: Option<String> },
    /// A bearer or refresh token that does not verify: 401.
    InvalidToken,
    /// A valid token that does not grant what the request needs: 401, so
    /// the client asks the token endpoint for `scope`.
    InsufficientScope { scope: String },
    /// An authenticated user the rules do not allow: 403, no challenge
    /// (logging in again would not help).
    Denied,
    /// Too many failed logins: 429 with `Retry-After`.
    Throttled { retry_after: u64 },
    /// The backend that would decide is down (fail closed): 503.
    Unavailable,
}

/// How a refused client is told to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    /// `Bearer realm=…,service=…[,scope=…][,error=…]`
    Bearer {
        scope: Option<String>,
        error: Option<&'static str>,
    },
}

impl Refusal {
    /// The registry error the client reads.
    pub fn error(&self) -> RegistryError {
        match self {
            Refusal::Unauthenticated { .. } => RegistryError::UNAUTHORIZED,
            Refusal::InvalidToken => RegistryError::INVALID_TOKEN,
            Refusal::InsufficientScope { .. } => RegistryError::INSUFFICIENT_SCOPE,
            Refusal::Denied => RegistryError::DENIED,
            Refusal::Throttled { .. } => RegistryError::TOO_MANY_REQUESTS,
            Refusal::Unavailable => RegistryError::UNAVAILABLE,
        }
    }

    /// Seconds a throttled client should wait.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::Throttled { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The challenge for this refusal where credentials are asked for with
    /// `mode`'s scheme (the token endpoint itself asks with Basic). `None`:
    /// authenticating (again) would not change the answer.
    pub fn challenge(&self, mode: Mode) -> Option<Challenge> {
        let (scope, error) = match self {
            Refusal::Unauthenticated { scope } => (scope.clone(), None),
            Refusal::InvalidToken => (None, Some("invalid_token")),
            Refusal::InsufficientScope { scope } => {
                (Some(scope.clone()), Some("insufficient_scope"))
            }
            Refusal::Denied | Refusal::Throttled { .. } | Refusal::Unavailable => return None,
        };
        Some(match mode {
            Mode::Basic => Challenge::Basic,
            Mode::Token => Challenge::Bearer { scope, error },
        })
    }
}

/// The scope string a token for this need would carry.
pub fn scope_for(repo: Option<&RepoName>, action: Action) -> String {
    match repo {
        Some(r) => format!("repository:{r}:{}", action.as_str()),
        None => "registry:catalog:*".to_owned(),
    }
}

/// Token mode or Basic mode: what a challenge looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Basic,
    Token,
}

/// Checks every (repository, action) the route needs.
///
/// Refusals follow `registry:2`: without credentials → 401 with a
/// challenge (so clients log in and retry); with credentials but not
/// allowed → 403 `DENIED` in Basic mode, 401 `insufficient_scope` for a
/// token. The answer never depends on whether the repository exists.
pub fn authorize(
    principal: &Principal,
    acl: &Acl,
    ip: IpAddr,
    needs: &[(Option<&RepoName>, Action)],
) -> Result<(), Refusal> {
    // `GET /v2/` is how clients ask "am I logged in?": never anonymous, or
    // `docker login` would succeed without checking the password.
    if needs.is_empty() && principal.is_anonymous() {
        return Err(Refusal::Unauthenticated { scope: None });
    }
    for &(repo, action) in needs {
        let allowed = match principal {
            // What the token grants, and still what the current rules
            // grant its subject from this request's address: a grant that
            // depended on `networks` does not travel with the token, and a
            // rule removed on reload takes effect at once.
            Principal::Token { claims } => {
                let granted = match repo {
                    Some(r) => jwt::covers(claims, r.as_str(), action.as_str()),
                    None => jwt::covers_catalog(claims),
                };
                granted
                    && acl
                        .check(&principal.caller(ip), repo.map(RepoName::as_str), action)
                        .allowed()
            }
            _ => acl
                .check(&principal.caller(ip), repo.map(RepoName::as_str), action)
                .allowed(),
        };
        if allowed {
            continue;
        }
        let scope = scope_for(repo, action);
        return Err(match principal {
            Principal::Anonymous => Refusal::Unauthenticated { scope: Some(scope) },
            Principal::Token { .. } => Refusal::InsufficientScope { scope },
            Principal::User { .. } => Refusal::Denied,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;
    use std::collections::HashMap;

    fn acl() -> Arc<Acl> {
        let rules = vec![
            RuleConfig {
                users: Some(vec!["alice".into()]),
                actions: vec!["*".into()],
                ..Default::default()
            },
            RuleConfig {
                anonymous: true,
                repositories: Some(vec!["public/**".into()]),
                actions: vec!["pull".into()],
                ..Default::default()
            },
        ];
        Acl::compile(&rules, HashMap::new()).unwrap()
    }

    fn user(name: &str) -> Principal {
        Principal::User {
            identity: Arc::new(Identity {
                credential_stamp: None,
                user: name.into(),
                backend: "htpasswd",
                groups: Vec::new(),
            }),
            groups: vec![],
        }
    }

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn base_needs_credentials() {
        let e = authorize(&Principal::Anonymous, &acl(), IP, &[]).unwrap_err();
        assert_eq!(e.error().status, 401);
        assert_eq!(e.challenge(Mode::Basic), Some(Challenge::Basic));
        assert!(authorize(&user("bob"), &acl(), IP, &[]).is_ok());
    }

    #[test]
    fn anonymous_pull_but_push_asks_for_login() {
        let a = acl();
        let r = repo("public/tools");
        assert!(authorize(&Principal::Anonymous, &a, IP, &[(Some(&r), Action::Pull)]).is_ok());
        let e = authorize(&Principal::Anonymous, &a, IP, &[(Some(&r), Action::Push)]).unwrap_err();
        assert_eq!(e.error().status, 401);
        assert_eq!(
            e.challenge(Mode::Token),
            Some(Challenge::Bearer {
                scope: Some("repository:public/tools:push".into()),
                error: None
            })
        );
    }

    #[test]
    fn authenticated_but_not_allowed_is_denied() {
        let a = acl();
        let r = repo("private/x");
        let e = authorize(&user("bob"), &a, IP, &[(Some(&r), Action::Pull)]).unwrap_err();
        assert_eq!(e, Refusal::Denied);
        assert_eq!(e.challenge(Mode::Basic), None);
        assert!(authorize(&user("alice"), &a, IP, &[(Some(&r), Action::Delete)]).is_ok());
    }

    #[test]
    fn mount_needs_both_repositories() {
        let a = acl();
        let (dst, src) = (repo("public/x"), repo("private/y"));
        // bob may pull public/x but push nothing
        let e = authorize(
            &user("bob"),
            &a,
            IP,
            &[(Some(&dst), Action::Push), (Some(&src), Action::Pull)],
        )
        .unwrap_err();
        assert_eq!(e, Refusal::Denied);
        assert_eq!(e.challenge(Mode::Basic), None);
    }
}
