//! http-01 on the plain-HTTP listener: the key authorization for a token
//! an order waits on, 404 for any other.

use bytes::Bytes;

use super::challenge::{Challenges, HTTP01_PREFIX};

/// The token of a validation request, if `path` is one.
pub fn token(path: &str) -> Option<&str> {
    path.strip_prefix(HTTP01_PREFIX)
}

/// The answer to a validation request for `token`: status and body (the
/// listener's reply writer sends them).
pub async fn answer(challenges: &Challenges, token: &str) -> (u16, Bytes) {
    let (status, body) = match challenges.http(token).await {
        Some(key_auth) => (200, Bytes::from(key_auth)),
        None => (404, Bytes::from_static(b"unknown challenge token\n")),
    };
    tracing::info!(target: "acme", token, status, "http-01 validation request");
    (status, body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_challenge_path_has_a_token() {
        assert_eq!(super::token("/.well-known/acme-challenge/abc"), Some("abc"));
        assert_eq!(super::token("/v2/"), None);
        assert_eq!(super::token("/.well-known/acme-challengeabc"), None);
    }
}
