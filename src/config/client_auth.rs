//! `[tls.client_auth]`: client certificates (mutual TLS) — which CAs issue
//! them, whether one is required, and how a verified certificate names a
//! user and its groups.

use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;

use super::Problem;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// PEM files of the CAs that issue client certificates: one path or a
    /// list; each file may hold several CAs (a bundle).
    #[serde(deserialize_with = "one_or_many")]
    pub ca_file: Vec<PathBuf>,
    #[serde(default)]
    pub mode: ClientAuthMode,
    /// PEM (or DER) certificate revocation lists of those CAs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl_files: Vec<PathBuf>,
    /// Where the user name comes from.
    #[serde(default)]
    pub user_from: UserFrom,
    /// Subject attributes whose values become the user's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups_from: Vec<GroupsFrom>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// A client without a valid certificate fails the handshake.
    #[default]
    Required,
    /// No certificate is fine (credentials as without client_auth); one
    /// that does not verify fails the handshake.
    Optional,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserFrom {
    /// The subject's common name.
    #[default]
    Cn,
    /// The first DNS name of the subjectAltName.
    SanDns,
    /// The first URI of the subjectAltName (a SPIFFE ID).
    SanUri,
    /// The first email address (rfc822Name) of the subjectAltName.
    SanEmail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupsFrom {
    /// organizationalUnitName
    Ou,
    /// organizationName
    O,
}

impl ClientAuthConfig {
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if self.ca_file.is_empty() {
            p.push(Problem::new(
                "tls.client_auth.ca_file",
                "names no file: give the PEM file (or files) of the CAs that issue client certificates",
            ));
        }
        for (i, g) in self.groups_from.iter().enumerate() {
            if self.groups_from[..i].contains(g) {
                p.push(Problem::new(
                    format!("tls.client_auth.groups_from[{i}]"),
                    "listed twice",
                ));
            }
        }
        p
    }
}

/// A path or a list of paths.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_path_or_a_list() {
        let c: ClientAuthConfig = toml::from_str("ca_file = \"/a.pem\"").unwrap();
        assert_eq!(c.ca_file, [PathBuf::from("/a.pem")]);
        assert_eq!(c.mode, ClientAuthMode::Required);
        assert_eq!(c.user_from, UserFrom::Cn);
        let c: ClientAuthConfig = toml::from_str(
            "ca_file = [\"/a.pem\", \"/b.pem\"]\nmode = \"optional\"\nuser_from = \"san_uri\"\ngroups_from = [\"ou\", \"o\"]",
        )
        .unwrap();
        assert_eq!(c.ca_file.len(), 2);
        assert_eq!(c.mode, ClientAuthMode::Optional);
        assert_eq!(c.user_from, UserFrom::SanUri);
        assert_eq!(c.groups_from, [GroupsFrom::Ou, GroupsFrom::O]);
        assert!(toml::from_str::<ClientAuthConfig>("ca_file = 5").is_err());
        assert!(
            toml::from_str::<ClientAuthConfig>("ca_file = \"/a\"\nuser_from = \"dn\"").is_err()
        );
        let c: ClientAuthConfig = toml::from_str("ca_file = []").unwrap();
        assert_eq!(c.validate()[0].key, "tls.client_auth.ca_file");
    }
}
