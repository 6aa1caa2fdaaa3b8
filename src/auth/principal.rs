//! The caller of one request, as every layer after authentication sees
//! it: anonymous, a user a backend vouched for, or the bearer of a token
//! we issued.

use std::sync::Arc;

use super::authentication::{Credential, Identity};
use super::token::jwt::Claims;
use crate::config::CredentialKind;

/// The authenticated (or not) caller of one request.
#[derive(Debug, Clone)]
pub enum Principal {
    Anonymous,
    /// Basic credentials, verified by a backend.
    User {
        identity: Arc<Identity>,
        /// The backend's groups and the config's static groups of the user.
        groups: Vec<String>,
    },
    /// A bearer token we issued: its `access` claim is what it may do.
    Token {
        claims: Arc<Claims>,
    },
}

impl Principal {
    /// A verified user, in the groups its backend knows it by and those
    /// `static_groups` (the config's) add.
    pub fn user_of(identity: Arc<Identity>, static_groups: &[String]) -> Principal {
        let mut groups = identity.groups.clone();
        groups.extend_from_slice(static_groups);
        groups.sort();
        groups.dedup();
        Principal::User { identity, groups }
    }

    /// The name as the backend stores it; `None` for anonymous callers.
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

    /// How the caller proved who it is, as rules name it: `None` for
    /// anonymous callers and for bearer tokens we issued (their access
    /// was decided by the credential they were issued for).
    pub fn credential(&self) -> Option<CredentialKind> {
        match self {
            Principal::Anonymous | Principal::Token { .. } => None,
            Principal::User { identity, .. } => Some(match identity.credential {
                Credential::Password => CredentialKind::Password,
                Credential::AccessToken { .. } => CredentialKind::Token,
                Credential::Certificate { .. } => CredentialKind::Certificate,
                Credential::IdToken { .. } => CredentialKind::Oidc,
            }),
        }
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
}
