//! Request and response headers: what the upstream gets, what clients get.

use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use super::errors::RegistryError;
use crate::upstream::Upstream;

/// Headers a client may send that only the proxy is entitled to set: a
/// client could otherwise make the registry build URLs for another host, or
/// forge its address in the registry's logs.
const CLIENT_FORWARDING_HEADERS: [&str; 6] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "forwarded",
];

/// The host the client addressed: `Host`, or the `:authority` of HTTP/2.
pub fn request_host(req: &RequestHeader) -> Option<String> {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri.authority().map(|a| a.as_str().to_owned()))?;
    // A host header with anything but host[:port] characters is not echoed
    // into Location headers or redirects.
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then_some(host)
}

/// `https://host[:port]/path?query` for the plain-HTTP listener's redirect.
pub fn https_redirect(host: Option<&str>, https_port: u16, req: &RequestHeader) -> String {
    let name = host.map(strip_port).unwrap_or("localhost");
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("https://{name}{port}{path}")
}

fn strip_port(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        return &host[..end + 2];
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

/// Turns the client's request into the upstream's: no client credentials,
/// forwarding headers set by us, the upstream's own credentials if any.
pub fn prepare_upstream_request(
    req: &mut RequestHeader,
    upstream: &Upstream,
    client_host: Option<&str>,
    client_ip: &str,
) -> pingora::Result<()> {
    req.remove_header(&http::header::AUTHORIZATION);
    for h in CLIENT_FORWARDING_HEADERS {
        req.remove_header(h);
    }
    req.insert_header(http::header::HOST, upstream.host_header())?;
    if let Some(host) = client_host {
        req.insert_header("X-Forwarded-Host", host)?;
    }
    req.insert_header("X-Forwarded-Proto", "https")?;
    if !client_ip.is_empty() {
        req.insert_header("X-Forwarded-For", client_ip)?;
    }
    if let Some(auth) = upstream.authorization() {
        req.insert_header(http::header::AUTHORIZATION, auth)?;
    }
    Ok(())
}

/// The answer for a failed upstream exchange; `None` when the client side
/// failed (nothing useful can be sent back).
pub fn upstream_error(e: &Error) -> Option<RegistryError> {
    use ErrorType as T;
    match e.etype() {
        T::ConnectTimedout | T::ReadTimedout | T::WriteTimedout => {
            Some(RegistryError::GATEWAY_TIMEOUT)
        }
        T::HTTPStatus(code) if *code >= 400 => Some(RegistryError {
            status: *code,
            ..RegistryError::BAD_GATEWAY
        }),
        _ => match e.esource() {
            pingora::ErrorSource::Upstream => Some(RegistryError::BAD_GATEWAY),
            pingora::ErrorSource::Downstream => None,
            _ => Some(RegistryError::UNAVAILABLE),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn host_from_header_or_authority() {
        assert_eq!(
            request_host(&req("/v2/", &[("Host", "reg.example.com:5443")])).as_deref(),
            Some("reg.example.com:5443")
        );
        let mut r = RequestHeader::build("GET", b"/v2/", None).unwrap();
        r.set_uri(http::Uri::from_static("https://reg.example.com/v2/"));
        assert_eq!(request_host(&r).as_deref(), Some("reg.example.com"));
        assert_eq!(request_host(&req("/v2/", &[("Host", "evil.com/x?")])), None);
    }

    #[test]
    fn redirect_keeps_path_and_swaps_port() {
        let r = req("/v2/a/manifests/x?y=1", &[]);
        assert_eq!(
            https_redirect(Some("reg.example.com:80"), 443, &r),
            "https://reg.example.com/v2/a/manifests/x?y=1"
        );
        assert_eq!(
            https_redirect(Some("[::1]:8080"), 8443, &r),
            "https://[::1]:8443/v2/a/manifests/x?y=1"
        );
        assert_eq!(
            https_redirect(Some("host"), 5443, &r),
            "https://host:5443/v2/a/manifests/x?y=1"
        );
    }

    #[test]
    fn upstream_request_drops_client_credentials_and_forwarding() {
        let up = Upstream::for_tests("http://10.0.0.5:5000");
        let mut r = req(
            "/v2/",
            &[
                ("Authorization", "Basic YTpi"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-Host", "evil.example"),
                ("Forwarded", "for=6.6.6.6"),
                ("Host", "reg.example.com"),
            ],
        );
        prepare_upstream_request(&mut r, &up, Some("reg.example.com"), "192.0.2.7").unwrap();
        let h = |n: &str| r.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(h("authorization"), None);
        assert_eq!(h("forwarded"), None);
        assert_eq!(h("x-forwarded-for").as_deref(), Some("192.0.2.7"));
        assert_eq!(h("x-forwarded-host").as_deref(), Some("reg.example.com"));
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(h("host").as_deref(), Some("10.0.0.5:5000"));
        assert_eq!(r.headers.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn upstream_errors_map_to_gateway_statuses() {
        let e = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(upstream_error(&e).unwrap().status, 502);
        let e = Error::new(ErrorType::ReadTimedout).into_up();
        assert_eq!(upstream_error(&e).unwrap().status, 504);
        let e = Error::new(ErrorType::ConnectionClosed).into_down();
        assert!(upstream_error(&e).is_none());
    }
}
