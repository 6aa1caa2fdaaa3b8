//! `[tls.acme]`: certificates obtained and renewed over ACME (RFC 8555).
//!
//! Only the shape and the checks that need no network live here; the
//! manager (`tls::acme`) turns this into orders, state files and renewals.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use super::{Problem, Secret};

pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// How the CA checks that we control a name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ChallengeType {
    /// A token on `http://NAME/.well-known/acme-challenge/` (port 80,
    /// `server.http_listen`).
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate for the `acme-tls/1` protocol on the TLS
    /// listener (port 443); needs no second port.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeType::Http01 => "http-01",
            ChallengeType::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// The key of the certificates (the account key is always ECDSA P-256).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa4096,
}

/// Which of several replicas sharing `state_dir` talks to the CA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Orders and renews, writing to `state_dir`.
    #[default]
    Renew,
    /// Never contacts the CA: installs what the renewing replica writes.
    Follow,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// `letsencrypt`, `letsencrypt-staging`, or a directory URL.
    #[serde(default = "defaults::directory")]
    pub directory: String,
    /// Agreement to the CA's terms of service; never assumed.
    #[serde(default)]
    pub accept_terms: bool,
    /// E-mail addresses the CA may write to (expiry, incidents).
    #[serde(default)]
    pub contact: Vec<String>,
    /// The names of one certificate (shorthand for one `certificates` entry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Further certificates, each for its own names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<AcmeCertificate>,
    #[serde(default)]
    pub challenge: ChallengeType,
    #[serde(default)]
    pub key_type: KeyType,
    /// External Account Binding, for CAs that require it.
    pub eab: Option<EabConfig>,
    /// Account credentials and certificates (mode 0600).
    #[serde(default = "defaults::state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub role: Role,
    /// Renew when this share of a certificate's lifetime is left.
    #[serde(default = "defaults::renew_remaining_share")]
    pub renew_remaining_share: f64,
    /// Renewals start up to this much earlier, at random, so replicas and
    /// restarts do not all hit the CA at the same second.
    #[serde(default = "defaults::renew_jitter", with = "humantime_serde")]
    pub renew_jitter: Duration,
    /// First wait after a failed order; doubles per failure.
    #[serde(default = "defaults::retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(default = "defaults::retry_max_backoff", with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// PEM roots for the ACME server's own HTTPS; default: the system's.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeCertificate {
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EabConfig {
    pub key_id: String,
    /// The HMAC key as the CA hands it out (base64url).
    pub hmac_key: Secret,
}

/// One certificate to keep: its names, and the name of its state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// The first domain: names the state file and the log lines.
    pub name: String,
    pub domains: Vec<String>,
}

mod defaults {
    use std::time::Duration;
    pub fn directory() -> String {
        "letsencrypt".to_owned()
    }
    pub fn state_dir() -> std::path::PathBuf {
        "/var/lib/portcullis/acme".into()
    }
    pub fn renew_remaining_share() -> f64 {
        1.0 / 3.0
    }
    pub fn renew_jitter() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn retry_backoff() -> Duration {
        Duration::from_secs(5 * 60)
    }
    pub fn retry_max_backoff() -> Duration {
        Duration::from_secs(4 * 3600)
    }
}

impl AcmeConfig {
    /// The directory URL, presets resolved.
    pub fn directory_url(&self) -> &str {
        match self.directory.as_str() {
            "letsencrypt" => LETSENCRYPT,
            "letsencrypt-staging" => LETSENCRYPT_STAGING,
            other => other,
        }
    }

    /// Every certificate to keep, names lower-cased, `domains` first.
    pub fn specs(&self) -> Vec<CertSpec> {
        let lists = std::iter::once(&self.domains)
            .filter(|d| !d.is_empty())
            .chain(self.certificates.iter().map(|c| &c.domains));
        lists
            .filter_map(|d| {
                let domains: Vec<String> = d.iter().map(|n| n.to_ascii_lowercase()).collect();
                Some(CertSpec {
                    name: domains.first()?.clone(),
                    domains,
                })
            })
            .collect()
    }

    /// Contacts as the CA wants them (`mailto:` URLs).
    pub fn contact_urls(&self) -> Vec<String> {
        self.contact
            .iter()
            .map(|c| match c.starts_with("mailto:") {
                true => c.clone(),
                false => format!("mailto:{c}"),
            })
            .collect()
    }

    /// Checks that need no network. `http_listen`: whether the plain-HTTP
    /// listener that answers http-01 exists.
    pub fn validate(&self, http_listen: bool) -> Vec<Problem> {
        let key = |k: &str| format!("tls.acme.{k}");
        let mut p = Vec::new();
        let url = self.directory_url();
        match url::Url::parse(url) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {}
            _ => p.push(Problem::new(
                key("directory"),
                "must be letsencrypt, letsencrypt-staging or an https:// directory URL",
            )),
        }
        if self.role == Role::Renew && !self.accept_terms {
            p.push(Problem::new(
                key("accept_terms"),
                format!(
                    "must be true: read the terms of service of the CA at {url} and agree to them explicitly"
                ),
            ));
        }
        for c in &self.contact {
            let addr = c.strip_prefix("mailto:").unwrap_or(c);
            if !addr.contains('@') || addr.contains(char::is_whitespace) {
                p.push(Problem::new(
                    key("contact"),
                    format!("{c:?} is not an e-mail address"),
                ));
            }
        }
        let specs = self.specs();
        if specs.is_empty() {
            p.push(Problem::new(
                key("domains"),
                "no names to get a certificate for (set domains or certificates)",
            ));
        }
        if self.certificates.iter().any(|c| c.domains.is_empty()) {
            p.push(Problem::new(
                key("certificates.domains"),
                "every certificate needs at least one name",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for d in specs.iter().flat_map(|s| &s.domains) {
            if let Err(reason) = check_domain(d) {
                p.push(Problem::new(key("domains"), format!("{d:?}: {reason}")));
            }
            if !seen.insert(d.clone()) {
                p.push(Problem::new(
                    key("domains"),
                    format!("{d:?} is listed more than once"),
                ));
            }
        }
        if self.challenge == ChallengeType::Http01 && !http_listen {
            p.push(Problem::new(
                key("challenge"),
                "http-01 is answered on server.http_listen (port 80): set it, or use tls-alpn-01",
            ));
        }
        if let Some(eab) = &self.eab {
            if eab.key_id.trim().is_empty() {
                p.push(Problem::new(key("eab.key_id"), "must not be empty"));
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            p.push(Problem::new(key("state_dir"), "must not be empty"));
        }
        let share = self.renew_remaining_share;
        if !(share > 0.0 && share < 1.0) {
            p.push(Problem::new(
                key("renew_remaining_share"),
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if self.retry_backoff.is_zero() || self.retry_max_backoff < self.retry_backoff {
            p.push(Problem::new(
                key("retry_backoff"),
                "must be greater than zero and at most retry_max_backoff",
            ));
        }
        p
    }
}

/// A DNS name a public CA can issue for over http-01 or tls-alpn-01.
fn check_domain(d: &str) -> Result<(), &'static str> {
    if d.starts_with("*.") {
        return Err("wildcard names need the dns-01 challenge, which is not supported");
    }
    if d.parse::<std::net::IpAddr>().is_ok() {
        return Err("IP addresses are not supported, only DNS names");
    }
    if d.is_empty() || d.len() > 253 || !d.contains('.') {
        return Err("not a fully qualified DNS name");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !d.split('.').all(label_ok) {
        return Err("not a valid DNS name (letters, digits, '-' and '.'; punycode for IDNs)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> AcmeConfig {
        toml::from_str(t).unwrap()
    }

    fn keys(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn defaults_and_presets() {
        let c = parse("accept_terms = true\ndomains = [\"Registry.Example.com\"]");
        assert_eq!(c.directory_url(), LETSENCRYPT);
        assert_eq!(c.challenge, ChallengeType::TlsAlpn01);
        assert_eq!(c.key_type, KeyType::EcdsaP256);
        assert_eq!(c.role, Role::Renew);
        assert!((c.renew_remaining_share - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(c.specs()[0].name, "registry.example.com");
        assert!(c.validate(false).is_empty(), "{:?}", c.validate(false));
        let s = parse("directory = \"letsencrypt-staging\"");
        assert_eq!(s.directory_url(), LETSENCRYPT_STAGING);
    }

    #[test]
    fn several_certificates() {
        let c = parse(
            r#"accept_terms = true
            domains = ["a.example", "b.example"]
            certificates = [{ domains = ["c.example"] }, { domains = ["d.example", "e.example"] }]"#,
        );
        let specs = c.specs();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[2].name, "d.example");
        assert_eq!(specs[2].domains, ["d.example", "e.example"]);
    }

    #[test]
    fn refuses_what_cannot_work() {
        let c = parse(
            r#"directory = "http://ca.example/dir"
            contact = ["not-an-address"]
            domains = ["*.example.com", "10.0.0.1", "a.example", "A.example", "bad_name.example"]
            challenge = "http-01"
            renew_remaining_share = 1.5
            retry_backoff = "0s""#,
        );
        let p = c.validate(false);
        assert_eq!(
            keys(&p),
            [
                "tls.acme.directory",
                "tls.acme.accept_terms",
                "tls.acme.contact",
                "tls.acme.domains",
                "tls.acme.domains",
                "tls.acme.domains",
                "tls.acme.domains",
                "tls.acme.challenge",
                "tls.acme.renew_remaining_share",
                "tls.acme.retry_backoff",
            ],
            "{p:?}"
        );
        assert!(p[1].reason.contains("terms of service"), "{p:?}");
        assert!(parse("")
            .validate(true)
            .iter()
            .any(|p| p.key == "tls.acme.domains"));
    }

    #[test]
    fn acme_alone_is_a_valid_tls_section() {
        let base = r#"
            [server]
            listen = "127.0.0.1:5443"
            [upstream]
            url = "http://127.0.0.1:5000"
            [auth.htpasswd]
            path = "/etc/portcullis/htpasswd"
            [tls.acme]
            accept_terms = true
            domains = ["registry.example.com"]
        "#;
        let c = crate::config::Config::parse(base).unwrap();
        assert!(c.tls.cert.is_none() && c.tls.acme.is_some());
        let e =
            crate::config::Config::parse(&format!("{base}challenge = \"http-01\"\n")).unwrap_err();
        assert_eq!(keys(&e.problems), ["tls.acme.challenge"], "{e}");
        let e = crate::config::Config::parse(&base.replace("accept_terms = true", "")).unwrap_err();
        assert_eq!(keys(&e.problems), ["tls.acme.accept_terms"], "{e}");
    }

    #[test]
    fn a_follower_agrees_to_nothing() {
        let c = parse("role = \"follow\"\ndomains = [\"a.example\"]");
        assert!(c.validate(false).is_empty());
    }

    #[test]
    fn contacts_become_mailto_urls() {
        let c = parse("contact = [\"ops@example.com\", \"mailto:sec@example.com\"]");
        assert_eq!(
            c.contact_urls(),
            ["mailto:ops@example.com", "mailto:sec@example.com"]
        );
    }
}
