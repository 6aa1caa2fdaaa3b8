//! Client certificates as a credential: who a certificate verified in the
//! TLS handshake (`[tls.client_auth]`) names, and its groups.

use crate::config::client_auth::{ClientAuthConfig, GroupsFrom, UserFrom};
use crate::tls::client_auth::PeerCertificate;

use super::{Credential, Identity};

/// How a verified certificate becomes an [`Identity`].
#[derive(Debug, Clone)]
pub struct CertificateMapping {
    user_from: UserFrom,
    groups_from: Vec<GroupsFrom>,
}

/// Why a verified certificate names nobody.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the client certificate {subject:?} has no {wanted} to take the user name from (tls.client_auth.user_from)")]
pub struct NoUserName {
    pub subject: String,
    pub wanted: &'static str,
}

impl CertificateMapping {
    pub fn new(cfg: &ClientAuthConfig) -> Self {
        CertificateMapping {
            user_from: cfg.user_from,
            groups_from: cfg.groups_from.clone(),
        }
    }

    /// The user the certificate names: the first value of `user_from`.
    pub fn identity(&self, cert: &PeerCertificate) -> Result<Identity, NoUserName> {
        let (values, wanted) = match self.user_from {
            UserFrom::Cn => (&cert.common_names, "subject common name"),
            UserFrom::SanDns => (&cert.dns_names, "DNS subjectAltName"),
            UserFrom::SanUri => (&cert.uris, "URI subjectAltName"),
            UserFrom::SanEmail => (&cert.emails, "email subjectAltName"),
        };
        let Some(user) = values.iter().find(|v| !v.trim().is_empty()) else {
            return Err(NoUserName {
                subject: cert.subject.clone(),
                wanted,
            });
        };
        let mut groups = Vec::new();
        for g in &self.groups_from {
            let from = match g {
                GroupsFrom::Ou => &cert.organizational_units,
                GroupsFrom::O => &cert.organizations,
            };
            groups.extend(from.iter().filter(|v| !v.is_empty()).cloned());
        }
        groups.sort();
        groups.dedup();
        Ok(Identity {
            user: user.clone(),
            credential_stamp: None,
            backend: "certificate",
            groups,
            credential: Credential::Certificate {
                subject: cert.subject.clone(),
            },
            restriction: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> PeerCertificate {
        PeerCertificate {
            subject: "CN=alice, OU=dev, OU=ops, O=Example".into(),
            common_names: vec!["alice".into()],
            organizational_units: vec!["dev".into(), "ops".into()],
            organizations: vec!["Example".into()],
            dns_names: vec!["build-1.ci.example".into()],
            uris: vec!["spiffe://example.org/ci/build".into()],
            emails: vec![],
        }
    }

    fn mapping(toml_text: &str) -> CertificateMapping {
        let cfg: ClientAuthConfig =
            toml::from_str(&format!("ca_file = \"/ca.pem\"\n{toml_text}")).unwrap();
        CertificateMapping::new(&cfg)
    }

    #[test]
    fn user_and_groups_by_config() {
        let id = mapping("").identity(&cert()).unwrap();
        assert_eq!(id.user, "alice");
        assert!(id.groups.is_empty());
        assert_eq!(id.backend, "certificate");
        assert_eq!(
            id.credential,
            Credential::Certificate {
                subject: "CN=alice, OU=dev, OU=ops, O=Example".into()
            }
        );
        let id = mapping("user_from = \"san_uri\"\ngroups_from = [\"ou\", \"o\"]")
            .identity(&cert())
            .unwrap();
        assert_eq!(id.user, "spiffe://example.org/ci/build");
        assert_eq!(id.groups, ["Example", "dev", "ops"]);
        let id = mapping("user_from = \"san_dns\"")
            .identity(&cert())
            .unwrap();
        assert_eq!(id.user, "build-1.ci.example");
        let e = mapping("user_from = \"san_email\"")
            .identity(&cert())
            .unwrap_err();
        assert_eq!(e.wanted, "email subjectAltName");
    }
}
