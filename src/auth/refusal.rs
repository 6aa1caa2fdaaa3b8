//! Why a request is refused, and so what the client is told.

use crate::registry::errors::{AccessRecord, RegistryError};

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
    /// An authenticated user the rules do not allow `scope`: 403, no
    /// challenge (logging in again would not help).
    Denied { scope: String },
    /// Too many failed logins, or requests over a `[limits]` rate: 429
    /// with `Retry-After`.
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
            Refusal::Denied { .. } => RegistryError::DENIED,
            Refusal::Throttled { .. } => RegistryError::TOO_MANY_REQUESTS,
            Refusal::Unavailable => RegistryError::UNAVAILABLE,
        }
    }

    /// The JSON body: the error, with the access the request needed as its
    /// detail where there is one (as `registry:2` answers).
    pub fn body(&self) -> Vec<u8> {
        let scope = match self {
            Refusal::Unauthenticated { scope } => scope.as_deref(),
            Refusal::InsufficientScope { scope } | Refusal::Denied { scope } => {
                Some(scope.as_str())
            }
            Refusal::InvalidToken | Refusal::Throttled { .. } | Refusal::Unavailable => None,
        };
        self.error()
            .body_with(&scope.map(AccessRecord::of_scope).unwrap_or_default())
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
            Refusal::Denied { .. } | Refusal::Throttled { .. } | Refusal::Unavailable => {
                return None
            }
        };
        Some(match mode {
            Mode::Basic => Challenge::Basic,
            Mode::Token => Challenge::Bearer { scope, error },
        })
    }
}

/// Token mode or Basic mode: what a challenge looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Basic,
    Token,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_names_what_was_denied() {
        let r = Refusal::Denied {
            scope: "repository:team-a/app:push".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "DENIED");
        assert_eq!(v["errors"][0]["detail"][0]["Name"], "team-a/app");
        assert_eq!(v["errors"][0]["detail"][0]["Action"], "push");
    }

    #[test]
    fn the_scheme_decides_the_challenge() {
        let r = Refusal::InvalidToken;
        assert_eq!(r.error(), RegistryError::INVALID_TOKEN);
        assert_eq!(r.challenge(Mode::Basic), Some(Challenge::Basic));
        assert_eq!(
            r.challenge(Mode::Token),
            Some(Challenge::Bearer {
                scope: None,
                error: Some("invalid_token")
            })
        );
        let r = Refusal::Throttled { retry_after: 2 };
        assert!(String::from_utf8_lossy(&r.body()).contains(r#""detail":null"#));
        assert_eq!((r.challenge(Mode::Token), r.retry_after()), (None, Some(2)));
    }
}
