//! Keeps `Location` and `Link` headers pointing at the proxy.
//!
//! The registry builds absolute upload URLs from `X-Forwarded-Host/Proto`,
//! which the proxy sets, so they usually point here already. A registry with
//! `http.host` set, or one that ignores the forwarded headers, answers with
//! its own origin: those URLs are rewritten, or the client would try to reach
//! the private upstream directly and fail with "blob upload unknown".

/// Rewrites `value` if it is an absolute URL on `upstream_origin`
/// (`scheme://host[:port]`, no trailing slash) to the same path on
/// `public_origin`. Relative URLs and other origins are left alone.
pub fn rewrite_location(value: &str, upstream_origin: &str, public_origin: &str) -> Option<String> {
    let rest = strip_origin(value, upstream_origin)?;
    Some(format!("{public_origin}{rest}"))
}

/// Rewrites every `<url>` of a `Link` header value.
pub fn rewrite_link(value: &str, upstream_origin: &str, public_origin: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let url = &rest[open + 1..open + close];
        out.push_str(&rest[..=open]);
        match rewrite_location(url, upstream_origin, public_origin) {
            Some(new) => {
                changed = true;
                out.push_str(&new);
            }
            None => out.push_str(url),
        }
        out.push('>');
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Applies both rewrites to a response from the upstream.
pub fn rewrite_response(
    resp: &mut pingora::http::ResponseHeader,
    upstream_origin: &str,
    public_origin: &str,
) -> pingora::Result<()> {
    type Rewrite = fn(&str, &str, &str) -> Option<String>;
    let rewrites: [(http::HeaderName, Rewrite); 2] = [
        (http::header::LOCATION, rewrite_location),
        (http::header::LINK, rewrite_link),
    ];
    for (name, rewrite) in rewrites {
        let rewritten = resp
            .headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| rewrite(v, upstream_origin, public_origin));
        if let Some(v) = rewritten {
            resp.insert_header(name, v)?;
        }
    }
    Ok(())
}

fn strip_origin<'a>(value: &'a str, origin: &str) -> Option<&'a str> {
    let head = value.get(..origin.len())?;
    if !head.eq_ignore_ascii_case(origin) {
        return None;
    }
    let rest = &value[origin.len()..];
    // `http://host:5000` must not match `http://host:50001/...`
    (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: &str = "http://10.0.0.5:5000";
    const PUB: &str = "https://registry.example.com";

    #[test]
    fn location_on_upstream_is_rewritten() {
        assert_eq!(
            rewrite_location(
                "http://10.0.0.5:5000/v2/a/blobs/uploads/u?_state=x",
                UP,
                PUB
            )
            .as_deref(),
            Some("https://registry.example.com/v2/a/blobs/uploads/u?_state=x")
        );
        assert_eq!(
            rewrite_location("HTTP://10.0.0.5:5000/v2/", UP, PUB).as_deref(),
            Some("https://registry.example.com/v2/")
        );
    }

    #[test]
    fn other_locations_are_kept() {
        assert_eq!(rewrite_location("/v2/a/blobs/uploads/u", UP, PUB), None);
        assert_eq!(
            rewrite_location("https://registry.example.com/v2/", UP, PUB),
            None
        );
        assert_eq!(rewrite_location("http://10.0.0.5:50001/v2/", UP, PUB), None);
        assert_eq!(
            rewrite_location("https://s3.example.com/blob?sig=1", UP, PUB),
            None
        );
    }

    #[test]
    fn link_urls_are_rewritten() {
        assert_eq!(
            rewrite_link(
                r#"<http://10.0.0.5:5000/v2/_catalog?last=b&n=2>; rel="next""#,
                UP,
                PUB
            )
            .as_deref(),
            Some(r#"<https://registry.example.com/v2/_catalog?last=b&n=2>; rel="next""#)
        );
        assert_eq!(
            rewrite_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#, UP, PUB),
            None
        );
    }
}
