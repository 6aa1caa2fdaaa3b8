//! Request and response headers: what the upstream gets, what clients get.

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use super::errors::RegistryError;
use crate::upstream::Upstream;

/// The forwarding headers the proxy sets: the name, and its text for
/// requests that keep their header case (see [`set_header`]).
type Named = (HeaderName, &'static str);
static HOST: Named = (http::header::HOST, "Host");
static X_FORWARDED_FOR: Named = (
    HeaderName::from_static("x-forwarded-for"),
    "X-Forwarded-For",
);
static X_FORWARDED_PROTO: Named = (
    HeaderName::from_static("x-forwarded-proto"),
    "X-Forwarded-Proto",
);
static X_FORWARDED_HOST: Named = (
    HeaderName::from_static("x-forwarded-host"),
    "X-Forwarded-Host",
);
static AUTHORIZATION: Named = (http::header::AUTHORIZATION, "Authorization");

/// Headers a client may send that only the proxy is entitled to set: a
/// client could otherwise make the registry build URLs for another host, or
/// forge its address in the registry's logs. (Names, not strings: a name
/// given as text is parsed again on every removal.)
static CLIENT_FORWARDING_HEADERS: [&HeaderName; 6] = [
    &X_FORWARDED_FOR.0,
    &X_FORWARDED_PROTO.0,
    &X_FORWARDED_HOST.0,
    &X_FORWARDED_PORT,
    &X_REAL_IP,
    &http::header::FORWARDED,
];
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers a `Connection` header may not nominate: those the proxy sets
/// or strips itself. Pingora refuses such a request only after the
/// request filters, without an answer; the proxy answers it first.
fn is_protected(token: &[u8]) -> bool {
    ["host", "authorization"]
        .into_iter()
        .chain(CLIENT_FORWARDING_HEADERS.iter().map(|h| h.as_str()))
        .any(|p| token.eq_ignore_ascii_case(p.as_bytes()))
}
/// Pingora refuses from its tenth nomination on.
const MAX_NOMINATIONS: usize = 9;

/// Whether the `Connection` header(s) nominate only ordinary headers: at
/// most [`MAX_NOMINATIONS`] HTTP tokens, none of them protected.
pub fn connection_header_ok(req: &RequestHeader) -> bool {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let mut count = 0;
    for token in req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
    {
        count += 1;
        if count > MAX_NOMINATIONS || !token.iter().all(|&b| tchar(b)) || is_protected(token) {
            return false;
        }
    }
    true
}

/// The host the client addressed: `Host`, or the `:authority` of HTTP/2.
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
    // Only a well-formed host[:port] is echoed into Location headers,
    // redirects and the registry's X-Forwarded-Host.
    is_host_port(host).then_some(host)
}

/// `name[:port]` or `[ipv6][:port]`: DNS labels or an IPv4 address, an
/// IPv6 literal in brackets, a decimal port of at most 65535. One pass
/// over the bytes for a name, since every request's Host comes here.
pub fn is_host_port(value: &str) -> bool {
    if let Some(rest) = value.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        return match after.strip_prefix(':') {
            Some(port) => is_port(port.as_bytes()),
            None => after.is_empty(),
        };
    }
    let bytes = value.as_bytes();
    match bytes.iter().position(|&b| b == b':') {
        Some(i) => is_dns_name(&bytes[..i]) && is_port(&bytes[i + 1..]),
        None => is_dns_name(bytes),
    }
}

/// At most five decimal digits, at most 65535.
fn is_port(p: &[u8]) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.iter().all(u8::is_ascii_digit)
        && p.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
}

/// Labels of letters, digits, `-` and `_`, each 1 to 63 bytes and neither
/// starting nor ending with `-`; at most 253 bytes in all, not counting
/// an absolute name's trailing dot.
fn is_dns_name(host: &[u8]) -> bool {
    let name = host.strip_suffix(b".").unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let (mut label, mut prev) = (0usize, b'.');
    for &b in name {
        if b == b'.' {
            if label == 0 || prev == b'-' {
                return false;
            }
            label = 0;
        } else if b.is_ascii_alphanumeric() || b == b'_' || (b == b'-' && label > 0) {
            label += 1;
            if label > 63 {
                return false;
            }
        } else {
            return false;
        }
        prev = b;
    }
    label > 0 && prev != b'-'
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
/// forwarding headers set by us, and as `Authorization` the token issued
/// for this request (`token`, when the upstream runs token auth) or else
/// the upstream's own credentials, if any.
pub fn prepare_upstream_request(
    req: &mut RequestHeader,
    upstream: &Upstream,
    client_host: Option<&str>,
    client_ip: &str,
    token: Option<&str>,
) -> pingora::Result<()> {
    // one look over the client's few headers instead of six removals,
    // which nearly always find nothing
    if req
        .headers
        .keys()
        .any(|k| CLIENT_FORWARDING_HEADERS.contains(&k))
    {
        for h in CLIENT_FORWARDING_HEADERS {
            req.remove_header(h);
        }
    }
    set_header(req, &HOST, upstream.host_value().clone())?;
    if let Some(host) = client_host {
        set_header(req, &X_FORWARDED_HOST, host)?;
    }
    set_header(req, &X_FORWARDED_PROTO, HeaderValue::from_static("https"))?;
    if !client_ip.is_empty() {
        set_header(req, &X_FORWARDED_FOR, client_ip)?;
    }
    // (an insert replaces the client's value; a removal only when none)
    match token.or(upstream.authorization()) {
        Some(auth) => set_header(req, &AUTHORIZATION, auth)?,
        None => drop(req.remove_header(&http::header::AUTHORIZATION)),
    }
    Ok(())
}

/// Inserts a header the proxy sets. A request read over HTTP/1.1 keeps
/// its header case, so the name goes in as text and reaches the upstream
/// as written (`X-Forwarded-Proto`). An HTTP/2 request has no case to
/// keep: the prepared `HeaderName` goes in, which the patched
/// pingora-http stores without parsing it again (vendor/README.md).
fn set_header<V: TryInto<HeaderValue>>(
    req: &mut RequestHeader,
    (name, text): &Named,
    value: V,
) -> pingora::Result<()> {
    if req.has_case() {
        req.insert_header(*text, value)
    } else {
        req.insert_header(name.clone(), value)
    }
}

/// `ip` as the registry's `X-Forwarded-For` gets it, for every request:
/// IPv4 written octet by octet, since `Ipv4Addr`'s `Display` goes through
/// the padding-aware formatter four times (some 1.3 k instructions).
pub fn forwarded_for(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        let (hundreds, tens, ones) = (octet / 100, octet / 10 % 10, octet % 10);
        if hundreds > 0 {
            text.push(char::from(b'0' + hundreds));
        }
        if hundreds > 0 || tens > 0 {
            text.push(char::from(b'0' + tens));
        }
        text.push(char::from(b'0' + ones));
    }
    text
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
    fn forwarded_for_writes_what_display_writes() {
        for a in 0..=255u8 {
            for b in [0u8, 1, 9, 10, 99, 100, 199, 255] {
                let ip = std::net::IpAddr::from([a, b, a.wrapping_mul(7), 255 - a]);
                assert_eq!(forwarded_for(ip), ip.to_string());
            }
        }
        for v6 in ["::1", "2001:db8::8a2e:370:7334", "::ffff:192.0.2.1"] {
            let ip: std::net::IpAddr = v6.parse().unwrap();
            assert_eq!(forwarded_for(ip), ip.to_string());
        }
    }

    #[test]
    fn host_from_header_or_authority() {
        assert_eq!(
            request_host(&req("/v2/", &[("Host", "reg.example.com:5443")])),
            Some("reg.example.com:5443")
        );
        let mut r = RequestHeader::build("GET", b"/v2/", None).unwrap();
        r.set_uri(http::Uri::from_static("https://reg.example.com/v2/"));
        assert_eq!(request_host(&r), Some("reg.example.com"));
        assert_eq!(request_host(&req("/v2/", &[("Host", "evil.com/x?")])), None);
    }

    #[test]
    fn connection_may_not_nominate_our_headers() {
        for ok in ["keep-alive", "close", "Keep-Alive, Upgrade", "x-custom"] {
            assert!(
                connection_header_ok(&req("/", &[("Connection", ok)])),
                "{ok}"
            );
        }
        assert!(connection_header_ok(&req("/", &[])));
        for bad in [
            "X-Forwarded-For",
            "keep-alive, x-forwarded-host",
            "X-FORWARDED-PROTO",
            "Host",
            "authorization",
            "\"x-forwarded-for\"",
            ":authority",
            "a,b,c,d,e,f,g,h,i,j",
        ] {
            assert!(
                !connection_header_ok(&req("/", &[("Connection", bad)])),
                "{bad}"
            );
        }
        // over several header lines too
        let r = req(
            "/",
            &[("Connection", "keep-alive"), ("Connection", "forwarded")],
        );
        assert!(!connection_header_ok(&r));
    }

    /// The rule as first written, splitting and checking piece by piece.
    fn plain_is_host_port(value: &str) -> bool {
        let (host, port) = if let Some(rest) = value.strip_prefix('[') {
            let Some((v6, after)) = rest.split_once(']') else {
                return false;
            };
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return false;
            }
            match after {
                "" => return true,
                a => match a.strip_prefix(':') {
                    Some(p) => ("", p),
                    None => return false,
                },
            }
        } else {
            match value.split_once(':') {
                Some((h, p)) => (h, p),
                None => (value, "65535"),
            }
        };
        let port_ok = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65535);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        // an absolute name's trailing dot is allowed
        let name = host.strip_suffix('.').unwrap_or(host);
        let host_ok = value.starts_with('[')
            || (!name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok));
        host_ok && port_ok
    }
    /// The one-pass check agrees with the rule written plainly, on every
    /// string of up to five bytes from an alphabet of the bytes that
    /// matter, and on labels and names around their length limits.
    #[test]
    fn host_check_agrees_with_the_plain_rule() {
        const ALPHABET: &[u8] = b"a-_.:9[]/ ";
        let mut cases: Vec<String> = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            let next: Vec<String> = last
                .iter()
                .flat_map(|s| {
                    ALPHABET.iter().map(move |&b| {
                        let mut t = s.clone();
                        t.push(char::from(b));
                        t
                    })
                })
                .collect();
            cases.extend(next.iter().cloned());
            last = next;
        }
        for n in [62, 63, 64] {
            let label = "a".repeat(n);
            cases.push(label.clone());
            cases.push(format!("{label}.b:443"));
            cases.push(format!("x.{label}"));
        }
        for n in [251, 252, 253, 254] {
            let name: String = (0..n).map(|i| if i % 2 == 1 { '.' } else { 'a' }).collect();
            cases.push(name.clone());
            cases.push(format!("{name}."));
            cases.push(format!("{name}:1"));
        }
        cases.extend(
            [
                "[::1]",
                "[::1]:0",
                "[::1]:65536",
                "[fe80::1%eth0]",
                "h:00000",
                "h:065535",
                "h:65535",
            ]
            .map(String::from),
        );
        for c in &cases {
            assert_eq!(is_host_port(c), plain_is_host_port(c), "{c:?}");
        }
        assert!(cases.len() > 100_000);
    }

    #[test]
    fn only_host_port_is_a_host() {
        for ok in [
            "reg.example.com",
            "reg.example.com:5443",
            "127.0.0.1:5443",
            "localhost",
            "[::1]",
            "[::1]:443",
            "my_host.internal",
            "reg.example.com.:443",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "",
            "evil host",
            "a/b",
            "host:port/",
            "host:",
            "host:99999",
            "host:12:34",
            "a..b",
            ".a",
            "[::1",
            "[zz]:1",
            "[::1]x",
            "user@host",
            "-a.b",
            "::1",
        ] {
            assert!(!is_host_port(bad), "{bad:?}");
        }
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
    fn the_issued_token_replaces_the_clients_credentials() {
        let up = Upstream::for_tests("http://10.0.0.5:5000");
        for mut r in [
            req("/v2/", &[("Authorization", "Basic YTpi")]),
            RequestHeader::build_no_case("GET", b"/v2/", None).unwrap(),
        ] {
            prepare_upstream_request(&mut r, &up, None, "192.0.2.7", Some("Bearer t")).unwrap();
            let all: Vec<_> = r.headers.get_all("authorization").iter().collect();
            assert_eq!(all, ["Bearer t"]);
        }
    }

    #[test]
    fn upstream_request_drops_client_credentials_and_forwarding() {
        let up = Upstream::for_tests("http://10.0.0.5:5000");
        let client = [
            ("Authorization", "Basic YTpi"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Host", "evil.example"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("Host", "reg.example.com"),
        ];
        // with the case of HTTP/1.1 names kept, and without (HTTP/2)
        let mut no_case = RequestHeader::build_no_case("GET", b"/v2/", None).unwrap();
        for (k, v) in client {
            no_case.append_header(k, v).unwrap();
        }
        for (mut r, cased) in [(req("/v2/", &client), true), (no_case, false)] {
            prepare_upstream_request(&mut r, &up, Some("reg.example.com"), "192.0.2.7", None)
                .unwrap();
            let h = |n: &str| r.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(h("authorization"), None);
            assert_eq!(h("forwarded"), None);
            assert_eq!(h("x-real-ip"), None);
            assert_eq!(h("x-forwarded-for").as_deref(), Some("192.0.2.7"));
            assert_eq!(h("x-forwarded-host").as_deref(), Some("reg.example.com"));
            assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
            assert_eq!(h("host").as_deref(), Some("10.0.0.5:5000"));
            assert_eq!(r.headers.get_all("x-forwarded-for").iter().count(), 1);
            let mut wire = Vec::new();
            r.header_to_h1_wire(&mut wire);
            let wire = String::from_utf8(wire).unwrap();
            assert_eq!(wire.matches("192.0.2.7").count(), 1, "{wire}");
            assert!(!wire.contains("6.6.6.6"), "{wire}");
            if cased {
                assert!(wire.contains("X-Forwarded-Proto: https\r\n"), "{wire}");
            }
        }
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
