//! The parameters the registry reads from a request, forwarded exactly as
//! the proxy parsed them.
//!
//! distribution reads `mount`, `from` and `digest` with Go's `FormValue`,
//! which also parses a form *body* (`application/x-www-form-urlencoded`,
//! `multipart/form-data`) and lets body values win over the query. A proxy
//! that authorizes what it read in the query while the registry acts on
//! the body grants a cross-repository mount nobody checked. So:
//! - no request with a form body is forwarded (no registry API request has
//!   one; blobs and manifests have their own media types);
//! - the query is re-encoded from the pairs the proxy parsed, first value
//!   of each key only, so the registry's parser cannot read anything else
//!   (a duplicate key, a `;` separator, an escape Go refuses and skips).

use pingora::http::RequestHeader;

use super::errors::{ErrorCode, RegistryError};

pub const FORM_BODY: RegistryError = RegistryError::new(
    415,
    ErrorCode::Unsupported,
    "form bodies are not part of the registry API",
);

/// Media types Go's `Request.FormValue` reads parameters from.
const FORM_TYPES: [&str; 2] = ["application/x-www-form-urlencoded", "multipart/form-data"];

/// Refuses a request whose body the registry would parse as a form; also
/// several `Content-Type` headers (Go reads the first, another parser the
/// last).
pub fn check_body_type(req: &RequestHeader) -> Result<(), RegistryError> {
    let mut values = req.headers.get_all(http::header::CONTENT_TYPE).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err(FORM_BODY);
    }
    let Ok(text) = first.to_str() else {
        return Err(FORM_BODY);
    };
    // Go's mime.ParseMediaType: the part before `;`, trimmed, lower-cased
    let essence = text.split(';').next().unwrap_or("").trim();
    if FORM_TYPES.iter().any(|f| essence.eq_ignore_ascii_case(f)) {
        return Err(FORM_BODY);
    }
    Ok(())
}

/// The query the upstream gets: every key once, with its first value,
/// re-encoded (`None` for an absent or empty query).
pub fn canonical_query(query: Option<&str>) -> Option<String> {
    let query = query.filter(|q| !q.is_empty())?;
    let mut seen: Vec<String> = Vec::new();
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k.is_empty() || seen.iter().any(|s| *s == k) {
            continue;
        }
        out.append_pair(&k, &v);
        seen.push(k.into_owned());
    }
    let q = out.finish();
    (!q.is_empty()).then_some(q)
}

/// Replaces the query of the upstream request with its canonical form.
pub fn canonicalize_query(req: &mut RequestHeader) -> pingora::Result<()> {
    let query = req.uri.query();
    let canonical = canonical_query(query);
    if canonical.as_deref() == query {
        return Ok(());
    }
    let path = req.uri.path();
    let pq = match canonical {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let uri = http::Uri::builder()
        .path_and_query(pq)
        .build()
        .map_err(|e| pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "query", e))?;
    req.set_uri(uri);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::route::query_param;

    fn req(content_types: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v2/a/blobs/uploads/", None).unwrap();
        for c in content_types {
            r.append_header("Content-Type", *c).unwrap();
        }
        r
    }

    #[test]
    fn form_bodies_are_refused() {
        for bad in [
            &["application/x-www-form-urlencoded"][..],
            &["Application/X-WWW-Form-Urlencoded; charset=utf-8"],
            &["  multipart/form-data ; boundary=x"],
            &["multipart/form-data;"],
            &[
                "application/octet-stream",
                "application/x-www-form-urlencoded",
            ],
        ] {
            assert_eq!(check_body_type(&req(bad)), Err(FORM_BODY), "{bad:?}");
        }
        for ok in [
            &[][..],
            &["application/octet-stream"],
            &["application/vnd.oci.image.manifest.v1+json"],
            &["application/vnd.docker.distribution.manifest.v2+json"],
        ] {
            assert_eq!(check_body_type(&req(ok)), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn the_query_forwarded_is_the_query_parsed() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        // duplicates: the first value, as the proxy read it
        let q =
            canonical_query(Some(&format!("mount={d}&from=bob%2Fa&from=team%2Fsecret"))).unwrap();
        assert_eq!(query_param(Some(&q), "from").as_deref(), Some("bob/a"));
        assert!(!q.contains("secret"), "{q}");
        // an escape Go skips is kept as the proxy read it, so Go cannot
        // skip to a later value
        let q = canonical_query(Some("from=%zz&from=team%2Fsecret")).unwrap();
        assert_eq!(q, "from=%25zz");
        // `;` is data, not a separator
        let q = canonical_query(Some("a=1;from=team/secret")).unwrap();
        assert_eq!(q, "a=1%3Bfrom%3Dteam%2Fsecret");
        // an upload's state survives the round trip
        let q = canonical_query(Some("_state=abc%3D%3D&digest=sha256%3Aff")).unwrap();
        assert_eq!(query_param(Some(&q), "_state").as_deref(), Some("abc=="));
        assert_eq!(
            query_param(Some(&q), "digest").as_deref(),
            Some("sha256:ff")
        );
        assert_eq!(canonical_query(Some("")), None);
        assert_eq!(canonical_query(None), None);
    }

    #[test]
    fn upstream_request_gets_the_canonical_query() {
        let mut r = RequestHeader::build(
            "POST",
            b"/v2/bob/m/blobs/uploads/?from=bob%2Fa&mount=x&from=team%2Fs",
            None,
        )
        .unwrap();
        canonicalize_query(&mut r).unwrap();
        assert_eq!(r.uri.path(), "/v2/bob/m/blobs/uploads/");
        assert_eq!(r.uri.query(), Some("from=bob%2Fa&mount=x"));
    }
}
