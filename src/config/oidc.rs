//! `[auth.oidc]`: OpenID Connect. Issuers whose ID tokens are accepted as
//! the password (workload identity: CI jobs, Kubernetes service accounts),
//! and the provider people log in with in a browser (`[auth.oidc.login]`)
//! to get an access token.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::secret::Secret;
use super::Problem;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// PEM roots for issuers behind a private CA (added to the public ones).
    pub ca_file: Option<PathBuf>,
    /// How often each issuer's keys (JWKS) are fetched in the background.
    #[serde(default = "defaults::key_refresh", with = "humantime_serde")]
    pub key_refresh: Duration,
    /// How long keys are used without a successful fetch; after that, ID
    /// tokens of that issuer are refused with 503 (fail closed).
    #[serde(default = "defaults::max_key_age", with = "humantime_serde")]
    pub max_key_age: Duration,
    /// A token signed by a key the cache does not hold makes the keys be
    /// fetched again, at most this often per issuer.
    #[serde(default = "defaults::min_refetch_interval", with = "humantime_serde")]
    pub min_refetch_interval: Duration,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "defaults::leeway", with = "humantime_serde")]
    pub leeway: Duration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<IssuerConfig>,
    pub login: Option<LoginConfig>,
}

/// `[[auth.oidc.issuers]]`: one issuer of ID tokens accepted as passwords.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` of its tokens, and where its discovery document is.
    pub issuer: url::Url,
    /// What `aud` must contain (one of these): one string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// The claim whose (string) value is the user name.
    #[serde(default = "defaults::user_claim")]
    pub user_claim: String,
    /// Put before the claim's value, so a token's user can never be an
    /// htpasswd or directory user of the same name (e.g. `"github:"`).
    #[serde(default)]
    pub user_prefix: String,
    /// A claim holding a string or a list of strings: the user's groups.
    pub groups_claim: Option<String>,
    /// Claims that must have these values; a list means any one of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_claims: BTreeMap<String, ClaimValues>,
    /// Groups every user of this issuer is in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// How an ID token's claims become a user and groups, and which tokens
/// are accepted at all: an issuer's keys, or the login's.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimMapping {
    pub user_claim: String,
    pub user_prefix: String,
    pub groups_claim: Option<String>,
    pub required_claims: BTreeMap<String, ClaimValues>,
    /// Groups every user is in.
    pub groups: Vec<String>,
}

impl IssuerConfig {
    pub fn mapping(&self) -> ClaimMapping {
        ClaimMapping {
            user_claim: self.user_claim.clone(),
            user_prefix: self.user_prefix.clone(),
            groups_claim: self.groups_claim.clone(),
            required_claims: self.required_claims.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// A required claim's accepted values: one, or a list of which any one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimValues(pub Vec<ClaimValue>);

/// A scalar claim value as TOML writes it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ClaimValue {
    String(String),
    Bool(bool),
    Integer(i64),
}

impl<'de> Deserialize<'de> for ClaimValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(
            untagged,
            expecting = "a string, boolean or integer, or a list of them"
        )]
        enum OneOrMany {
            One(ClaimValue),
            Many(Vec<ClaimValue>),
        }
        Ok(ClaimValues(match OneOrMany::deserialize(d)? {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }))
    }
}

impl ClaimValue {
    /// Whether a claim of the token has this value; a list claim (such as
    /// `groups`) has it if one of its items is it.
    pub fn matches(&self, v: &serde_json::Value) -> bool {
        match (self, v) {
            (_, serde_json::Value::Array(items)) => {
                items.iter().any(|i| !i.is_array() && self.matches(i))
            }
            (ClaimValue::String(s), serde_json::Value::String(t)) => s == t,
            (ClaimValue::Bool(b), serde_json::Value::Bool(t)) => b == t,
            (ClaimValue::Integer(i), serde_json::Value::Number(n)) => n.as_i64() == Some(*i),
            _ => false,
        }
    }
}

/// `[auth.oidc.login]`: people log in at `/login` with this provider
/// (authorization code flow with PKCE) and get an access token.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    pub issuer: url::Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// This proxy's `/login/callback` as the provider knows it (registered
    /// there as the client's redirect URI).
    pub redirect_url: url::Url,
    #[serde(default = "defaults::scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "defaults::login_user_claim")]
    pub user_claim: String,
    #[serde(default)]
    pub user_prefix: String,
    #[serde(default = "defaults::login_groups_claim")]
    pub groups_claim: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_claims: BTreeMap<String, ClaimValues>,
    /// The lifetime of the access tokens the page gives; never longer than
    /// `auth.tokens.max_lifetime`.
    #[serde(default = "defaults::token_lifetime", with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// How often each token's provider session is refreshed: a person the
    /// provider no longer knows, or no longer maps to an allowed user,
    /// loses the token within this.
    #[serde(default = "defaults::refresh_interval", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// When the provider cannot be reached, tokens keep working this long
    /// after their last successful refresh, then are refused until one
    /// succeeds.
    #[serde(default = "defaults::max_offline", with = "humantime_serde")]
    pub max_offline: Duration,
}

impl LoginConfig {
    /// The login's claim mapping: as an issuer's, with defaults for people.
    pub fn mapping(&self) -> ClaimMapping {
        ClaimMapping {
            user_claim: self.user_claim.clone(),
            user_prefix: self.user_prefix.clone(),
            groups_claim: self.groups_claim.clone(),
            required_claims: self.required_claims.clone(),
            groups: Vec::new(),
        }
    }
}

impl OidcConfig {
    /// `tokens`: whether `[auth.tokens]` is configured (the login mints
    /// access tokens into its file), and its `max_lifetime`.
    pub fn validate(&self, tokens: Option<Option<Duration>>) -> Vec<Problem> {
        let mut p = Vec::new();
        for (key, d) in [
            ("auth.oidc.key_refresh", self.key_refresh),
            ("auth.oidc.max_key_age", self.max_key_age),
        ] {
            if d.is_zero() {
                p.push(Problem::new(key, "must be greater than zero"));
            }
        }
        if self.max_key_age < self.key_refresh {
            p.push(Problem::new(
                "auth.oidc.max_key_age",
                "must be at least auth.oidc.key_refresh: keys would expire between two fetches",
            ));
        }
        for (i, iss) in self.issuers.iter().enumerate() {
            let key = format!("auth.oidc.issuers[{i}]");
            p.extend(check_issuer_url(&iss.issuer, &format!("{key}.issuer")));
            if iss.audience.is_empty() || iss.audience.iter().any(String::is_empty) {
                p.push(Problem::new(
                    format!("{key}.audience"),
                    "give the audience (aud) this proxy's tokens are minted for",
                ));
            }
            if self.issuers[..i].iter().any(|o| o.issuer == iss.issuer) {
                p.push(Problem::new(
                    format!("{key}.issuer"),
                    "listed twice: one entry per issuer",
                ));
            }
            p.extend(check_mapping(&iss.mapping(), &key));
        }
        if let Some(l) = &self.login {
            let key = "auth.oidc.login";
            p.extend(check_issuer_url(&l.issuer, &format!("{key}.issuer")));
            if l.client_id.is_empty() {
                p.push(Problem::new(format!("{key}.client_id"), "is empty"));
            }
            if l.redirect_url.scheme() != "https" || !l.redirect_url.path().ends_with("/callback") {
                p.push(Problem::new(
                    format!("{key}.redirect_url"),
                    "must be this proxy's https://HOST[:PORT]/login/callback",
                ));
            }
            if !l.scopes.iter().any(|s| s == "openid") {
                p.push(Problem::new(
                    format!("{key}.scopes"),
                    "must include \"openid\"",
                ));
            }
            p.extend(check_mapping(&l.mapping(), key));
            for (k, d) in [
                ("token_lifetime", l.token_lifetime),
                ("refresh_interval", l.refresh_interval),
            ] {
                if d.is_zero() {
                    p.push(Problem::new(
                        format!("{key}.{k}"),
                        "must be greater than zero",
                    ));
                }
            }
            if l.max_offline < l.refresh_interval {
                p.push(Problem::new(
                    format!("{key}.max_offline"),
                    "must be at least refresh_interval",
                ));
            }
            match tokens {
                None => p.push(Problem::new(
                    key,
                    "needs [auth.tokens]: the login page gives access tokens of its file",
                )),
                Some(Some(max)) if l.token_lifetime > max => p.push(Problem::new(
                    format!("{key}.token_lifetime"),
                    format!(
                        "is longer than auth.tokens.max_lifetime ({})",
                        humantime::format_duration(max)
                    ),
                )),
                Some(_) => {}
            }
        }
        p
    }
}

fn check_issuer_url(url: &url::Url, key: &str) -> Vec<Problem> {
    let mut p = Vec::new();
    if url.scheme() != "https" || url.host_str().is_none() {
        p.push(Problem::new(key, "must be an https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        p.push(Problem::new(key, "must have no query or fragment"));
    }
    p
}

fn check_mapping(m: &ClaimMapping, key: &str) -> Vec<Problem> {
    let mut p = Vec::new();
    if m.user_claim.is_empty() {
        p.push(Problem::new(format!("{key}.user_claim"), "is empty"));
    }
    for (claim, values) in &m.required_claims {
        if values.0.is_empty() {
            p.push(Problem::new(
                format!("{key}.required_claims.{claim}"),
                "lists no value: no token could match",
            ));
        }
    }
    p
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a string or a list of strings")]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

mod defaults {
    use std::time::Duration;
    pub fn key_refresh() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn max_key_age() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn min_refetch_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn leeway() -> Duration {
        Duration::from_secs(60)
    }
    pub fn user_claim() -> String {
        "sub".into()
    }
    pub fn login_user_claim() -> String {
        "preferred_username".into()
    }
    pub fn login_groups_claim() -> Option<String> {
        Some("groups".into())
    }
    pub fn scopes() -> Vec<String> {
        ["openid", "profile", "email", "offline_access"]
            .map(String::from)
            .to_vec()
    }
    pub fn token_lifetime() -> Duration {
        Duration::from_secs(30 * 24 * 3600)
    }
    pub fn refresh_interval() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn max_offline() -> Duration {
        Duration::from_secs(24 * 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_parse_with_defaults_and_claims() {
        let c: OidcConfig = toml::from_str(
            r#"
[[issuers]]
issuer = "https://token.actions.githubusercontent.com"
audience = "https://registry.example.com"
user_prefix = "github:"
required_claims = { repository_owner = "acme", ref = ["refs/heads/main", "refs/heads/release"], email_verified = true }
"#,
        )
        .unwrap();
        let i = &c.issuers[0];
        assert_eq!(i.audience, ["https://registry.example.com"]);
        assert_eq!(i.user_claim, "sub");
        assert_eq!(i.required_claims["ref"].0.len(), 2);
        assert!(i.required_claims["email_verified"].0[0].matches(&serde_json::json!(true)));
        assert!(!i.required_claims["repository_owner"].0[0].matches(&serde_json::json!(1)));
        let owner = &i.required_claims["repository_owner"].0[0];
        assert!(
            owner.matches(&serde_json::json!(["x", "acme"])),
            "one item of a list claim"
        );
        assert!(!owner.matches(&serde_json::json!(["x", ["acme"]])));
        assert_eq!(c.max_key_age, Duration::from_secs(86400));
        assert!(c.validate(None).is_empty());
    }

    #[test]
    fn problems_name_their_keys() {
        let c: OidcConfig = toml::from_str(
            r#"
[[issuers]]
issuer = "http://idp.example.com"
audience = []
[login]
issuer = "https://idp.example.com"
client_id = "portcullis"
client_secret = "s"
redirect_url = "https://registry.example.com/elsewhere"
scopes = ["profile"]
token_lifetime = "400d"
"#,
        )
        .unwrap();
        let keys: Vec<String> = c
            .validate(Some(Some(Duration::from_secs(90 * 86400))))
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "auth.oidc.issuers[0].issuer",
                "auth.oidc.issuers[0].audience",
                "auth.oidc.login.redirect_url",
                "auth.oidc.login.scopes",
                "auth.oidc.login.token_lifetime",
            ]
        );
        assert_eq!(c.validate(None).last().unwrap().key, "auth.oidc.login");
        assert!(toml::from_str::<OidcConfig>(
            "[[issuers]]\nissuer = \"https://a\"\naudience = \"x\"\nusr_claim = \"sub\""
        )
        .is_err());
    }
}
