//! http-01 on the plain-HTTP listener: the key authorization for a token
//! an order waits on, 404 for any other.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::challenge::{Challenges, HTTP01_PREFIX};

/// The token of a validation request, if `path` is one.
pub fn token(path: &str) -> Option<&str> {
    path.strip_prefix(HTTP01_PREFIX)
}

/// Answers a validation request for `token`.
pub async fn respond(
    session: &mut Session,
    challenges: &Challenges,
    token: &str,
) -> pingora::Result<()> {
    let answer = challenges.http(token).await;
    let (status, body) = match &answer {
        Some(key_auth) => (200, Bytes::from(key_auth.clone())),
        None => (404, Bytes::from_static(b"unknown challenge token\n")),
    };
    tracing::info!(target: "acme", token, status, "http-01 validation request");
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
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
