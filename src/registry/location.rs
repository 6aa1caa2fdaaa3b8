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

/// Applies both rewrites to a response from the upstream, for each of
/// the upstream's origins in turn; each header is looked up once and
/// written back only if it changed.
pub fn rewrite_response(
    resp: &mut pingora::http::ResponseHeader,
    upstream_origins: &[String],
    public_origin: &str,
) -> pingora::Result<()> {
    type Rewrite = fn(&str, &str, &str) -> Option<String>;
    let rewrites: [(http::HeaderName, Rewrite); 2] = [
        (http::header::LOCATION, rewrite_location),
        (http::header::LINK, rewrite_link),
    ];
    for (name, rewrite) in rewrites {
        let Some(value) = resp.headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let mut rewritten: Option<String> = None;
        for origin in upstream_origins {
            let current = rewritten.as_deref().unwrap_or(value);
            if let Some(v) = rewrite(current, origin, public_origin) {
                rewritten = Some(v);
            }
        }
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
    fn responses_are_rewritten_for_every_origin() {
        let origins = [UP.to_owned(), UP.replace("http://", "https://")];
        let mut resp = pingora::http::ResponseHeader::build(202, None).unwrap();
        resp.insert_header("Location", "https://10.0.0.5:5000/v2/a/blobs/uploads/u")
            .unwrap();
        resp.insert_header(
            "Link",
            format!("<{UP}/v2/_catalog?n=1>; rel=\"next\", <https://10.0.0.5:5000/x>"),
        )
        .unwrap();
        resp.insert_header("Content-Type", "text/plain").unwrap();
        rewrite_response(&mut resp, &origins, PUB).unwrap();
        let h = |n: &str| resp.headers.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("location"), format!("{PUB}/v2/a/blobs/uploads/u"));
        assert_eq!(
            h("link"),
            format!("<{PUB}/v2/_catalog?n=1>; rel=\"next\", <{PUB}/x>")
        );
        assert_eq!(h("content-type"), "text/plain");
        // nothing of the upstream's: nothing written
        let mut other = pingora::http::ResponseHeader::build(201, None).unwrap();
        other
            .insert_header("Location", "/v2/a/blobs/sha256:00")
            .unwrap();
        rewrite_response(&mut other, &origins, PUB).unwrap();
        assert_eq!(
            other.headers.get("location").unwrap(),
            "/v2/a/blobs/sha256:00"
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
