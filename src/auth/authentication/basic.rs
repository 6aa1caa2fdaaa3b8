//! `Authorization: Basic …` as RFC 7617 defines it.

use base64::Engine;

/// A user name and password from a Basic header. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicCredentials({:?}, <redacted>)", self.user)
    }
}

/// `Basic Og==` (empty user and password): what containers/image clients
/// (skopeo, podman) send when they have no credentials. It means
/// "anonymous", not a failed login.
pub fn is_empty(header: &[u8]) -> bool {
    // "Og==" is the one spelling of ":" the strict decoder of `parse`
    // accepts (padding required, no stray trailing bits): no decoding needed
    basic_token(header) == Some(b"Og==")
}

/// Parses a header value; `None` for other schemes or malformed values.
pub fn parse(header: &[u8]) -> Option<BasicCredentials> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic_token(header)?)
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':').filter(|&i| i > 0)?;
    // the decoded text becomes the user, its tail the password: one copy
    let mut user = String::from_utf8(decoded).ok()?;
    let password = user.split_off(colon + 1);
    user.truncate(colon);
    Some(BasicCredentials { user, password })
}

/// The token of a `Basic` header value. It runs on every request with a
/// password, so it works on the bytes: base64 refuses any byte outside its
/// alphabet, and only the decoded credentials need to be UTF-8.
fn basic_token(header: &[u8]) -> Option<&[u8]> {
    let value = header.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = (&value[..space], value[space + 1..].trim_ascii());
    scheme.eq_ignore_ascii_case(b"basic").then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn parses_basic() {
        let c = parse(format!("Basic {}", b64("alice:pa:ss")).as_bytes()).unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(c.password, "pa:ss");
        assert!(parse(format!("basic {}", b64("a:b")).as_bytes()).is_some());
    }

    #[test]
    fn tolerates_the_spacing_clients_send() {
        let token = b64("alice:pw");
        for header in [
            format!("Basic {token}"),
            format!("  BASIC {token}  "),
            format!("Basic   {token}\t"),
        ] {
            let c = parse(header.as_bytes()).unwrap();
            assert_eq!((c.user.as_str(), c.password.as_str()), ("alice", "pw"));
        }
        // not UTF-8 once decoded, or not base64 at all
        assert!(parse(
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b"al\xffce:pw")
            )
            .as_bytes()
        )
        .is_none());
        assert!(parse("Basic \u{e9}\u{e9}==".as_bytes()).is_none());
        assert!(parse(format!("Basic\t{token}").as_bytes()).is_none());
    }

    #[test]
    fn refuses_others() {
        assert!(parse(b"Bearer abc").is_none());
        assert!(parse(b"Basic !!!").is_none());
        assert!(parse(format!("Basic {}", b64("nocolon")).as_bytes()).is_none());
        assert!(parse(format!("Basic {}", b64(":pw")).as_bytes()).is_none());
        assert!(parse(b"Basic").is_none());
    }

    #[test]
    fn empty_credentials_are_recognised() {
        assert!(is_empty(b"Basic Og=="));
        assert!(!is_empty(format!("Basic {}", b64("a:")).as_bytes()));
        assert!(!is_empty(b"Bearer Og=="));
        assert!(is_empty(b"  basic  Og== "));
    }

    /// `is_empty` compares text; it must agree with decoding the token the
    /// way `parse` does, for every token that could decode to one byte
    /// or two, padded or not.
    #[test]
    fn empty_check_agrees_with_decoding() {
        let decodes_to_colon = |t: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .is_ok_and(|d| d == b":")
        };
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut checked = 0;
        for a in alphabet.chars() {
            for b in alphabet.chars() {
                for tail in ["==", "=", "", "A=", "AA"] {
                    let token = format!("{a}{b}{tail}");
                    let header = format!("Basic {token}");
                    assert_eq!(
                        is_empty(header.as_bytes()),
                        decodes_to_colon(&token),
                        "{token}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 64 * 64 * 5);
    }

    #[test]
    fn debug_hides_password() {
        let c = BasicCredentials {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
