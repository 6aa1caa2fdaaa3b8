//! `[auth.ldap]`: where the directory is, how users and groups are found.
//!
//! Only the shape and the checks that need no network live here; the
//! backend (`auth::ldap`) turns this into queries and connections.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use super::{Problem, Secret};

/// Which kind of directory the defaults are for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LdapPreset {
    /// OpenLDAP, 389 DS and the like: `uid`, `memberOf`, `groupOfNames`.
    #[default]
    Openldap,
    /// Active Directory: `sAMAccountName`, disabled accounts excluded,
    /// nested groups through `LDAP_MATCHING_RULE_IN_CHAIN`.
    ActiveDirectory,
}

/// How a group entry is named for the access rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupName {
    /// The value of the group's first RDN (`cn=devs,ou=groups,…` → `devs`).
    #[default]
    Cn,
    /// The group's full DN, as the directory writes it.
    Dn,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://` or `ldaps://` servers, tried in order (failover).
    pub urls: Vec<url::Url>,
    /// PEM roots for the directory's certificate; default: the system's.
    pub ca_file: Option<PathBuf>,
    /// Upgrade `ldap://` connections with StartTLS (refused if it fails).
    #[serde(default)]
    pub starttls: bool,
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound on each LDAP operation (bind, search).
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Service account for searches; anonymous searches when unset.
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret>,
    pub base_dn: String,
    #[serde(default)]
    pub preset: LdapPreset,
    /// `{username}` is replaced by the escaped (RFC 4515) user name.
    /// Default: per `preset`.
    pub user_filter: Option<String>,
    /// Direct bind: a DN (`uid={username},ou=people,…`, RFC 4514 escaped)
    /// or a UPN (`{username}@corp.example`) to bind as, without a search.
    pub user_dn_template: Option<String>,
    /// Only members of this group (a name as `group_name` makes them, or
    /// a DN) may log in.
    pub required_group: Option<String>,
    /// The attribute whose value (as the directory stores it) is the
    /// user's identity in rules, tokens and logs. Default: per `preset`
    /// (`uid`, or `sAMAccountName` for Active Directory).
    pub user_attribute: Option<String>,
    /// An attribute that changes when the user's password does; refresh
    /// tokens minted before the change are refused. Default: per `preset`
    /// (`pwdChangedTime`, kept by OpenLDAP's ppolicy overlay, or
    /// `pwdLastSet`); `""` to not read one.
    pub password_changed_attribute: Option<String>,
    /// User attribute listing the user's group DNs; `""` to not read one.
    #[serde(default = "defaults::group_attribute")]
    pub group_attribute: String,
    /// Where `group_filter` searches; default: `base_dn`.
    pub group_search_base: Option<String>,
    /// Group search, with `{dn}` (the user's DN) and `{username}`.
    /// Default: none for OpenLDAP, the in-chain `member` match for AD.
    pub group_filter: Option<String>,
    #[serde(default)]
    pub group_name: GroupName,
    /// Levels of groups-in-groups followed with `group_filter` (OpenLDAP
    /// has no in-chain matching rule); 0 = direct groups only.
    #[serde(default)]
    pub nested_group_depth: u32,
    /// Idle connections kept open, per kind (service, user binds).
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// LDAP logins in flight at once; more wait (up to `timeout`).
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Whether a login verified before a directory outage keeps working
    /// until its cache entry expires. Off: an outage refuses everyone.
    #[serde(default)]
    pub allow_stale_on_outage: bool,
    /// Credential-cache TTL for LDAP logins; default: `auth.cache_ttl`.
    #[serde(default, with = "humantime_serde::option")]
    pub cache_ttl: Option<Duration>,
}

/// Deepest group nesting followed (a loop in the directory must end).
pub const MAX_NESTED_GROUP_DEPTH: u32 = 10;

mod defaults {
    use std::time::Duration;
    pub fn timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn group_attribute() -> String {
        "memberOf".to_owned()
    }
    pub fn pool_size() -> usize {
        4
    }
    pub fn max_concurrency() -> usize {
        8
    }
}

impl LdapConfig {
    /// A config with defaults for everything but the servers and base.
    pub fn new(urls: Vec<url::Url>, base_dn: impl Into<String>) -> Self {
        LdapConfig {
            urls,
            ca_file: None,
            starttls: false,
            connect_timeout: defaults::timeout(),
            timeout: defaults::timeout(),
            bind_dn: None,
            bind_password: None,
            base_dn: base_dn.into(),
            preset: LdapPreset::default(),
            user_filter: None,
            user_dn_template: None,
            user_attribute: None,
            password_changed_attribute: None,
            required_group: None,
            group_attribute: defaults::group_attribute(),
            group_search_base: None,
            group_filter: None,
            group_name: GroupName::default(),
            nested_group_depth: 0,
            pool_size: defaults::pool_size(),
            max_concurrency: defaults::max_concurrency(),
            allow_stale_on_outage: false,
            cache_ttl: None,
        }
    }

    /// Whether any connection is made over TLS (ldaps:// or StartTLS).
    pub fn uses_tls(&self) -> bool {
        self.starttls || self.urls.iter().any(|u| u.scheme() == "ldaps")
    }

    /// Checks that need neither the network nor the files the config
    /// names; keys are reported under `prefix` (`auth.ldap`).
    pub fn validate(&self, prefix: &str) -> Vec<Problem> {
        let key = |k: &str| format!("{prefix}.{k}");
        let mut p = Vec::new();
        if self.urls.is_empty() {
            p.push(Problem::new(key("urls"), "at least one server is needed"));
        }
        for u in &self.urls {
            if let Err(reason) = check_url(u) {
                p.push(Problem::new(key("urls"), format!("{u}: {reason}")));
            }
        }
        if self.ca_file.is_some() && !self.uses_tls() {
            p.push(Problem::new(
                key("ca_file"),
                "only used with ldaps:// urls or starttls = true",
            ));
        }
        for (k, d) in [
            ("connect_timeout", self.connect_timeout),
            ("timeout", self.timeout),
        ] {
            if d.is_zero() {
                p.push(Problem::new(key(k), "must be greater than zero"));
            }
        }
        if self.cache_ttl.is_some_and(|d| d.is_zero()) {
            p.push(Problem::new(key("cache_ttl"), "must be greater than zero"));
        }
        if self.bind_dn.is_some() != self.bind_password.is_some() {
            p.push(Problem::new(
                key("bind_password"),
                "bind_dn and bind_password go together",
            ));
        }
        if self.bind_dn.as_deref().is_some_and(|d| d.trim().is_empty()) {
            p.push(Problem::new(key("bind_dn"), "must not be empty"));
        }
        if self.base_dn.trim().is_empty() {
            p.push(Problem::new(key("base_dn"), "must not be empty"));
        }
        let attr_ok = |a: &str| {
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b';')
        };
        if let Some(a) = &self.user_attribute {
            if a.is_empty() || !attr_ok(a) {
                p.push(Problem::new(
                    key("user_attribute"),
                    format!("{a:?} is not an attribute name"),
                ));
            }
        }
        if let Some(a) = &self.password_changed_attribute {
            if !attr_ok(a) {
                p.push(Problem::new(
                    key("password_changed_attribute"),
                    format!("{a:?} is not an attribute name (\"\" reads none)"),
                ));
            }
        }
        if self.required_group.as_deref().is_some_and(str::is_empty) {
            p.push(Problem::new(key("required_group"), "must not be empty"));
        }
        if self.max_concurrency == 0 {
            p.push(Problem::new(key("max_concurrency"), "must be at least 1"));
        }
        if self.nested_group_depth > MAX_NESTED_GROUP_DEPTH {
            p.push(Problem::new(
                key("nested_group_depth"),
                format!("must be at most {MAX_NESTED_GROUP_DEPTH}"),
            ));
        }
        p
    }
}

fn check_url(u: &url::Url) -> Result<(), &'static str> {
    if !matches!(u.scheme(), "ldap" | "ldaps") {
        return Err("scheme must be ldap or ldaps");
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("has no host");
    }
    if !matches!(u.path(), "" | "/") || u.query().is_some() {
        return Err("must not have a DN or query: set base_dn and user_filter instead");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not carry credentials: set bind_dn and bind_password");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        ldap: LdapConfig,
    }

    fn parse(extra: &str) -> LdapConfig {
        let text = format!(
            "[ldap]\nurls = [\"ldap://127.0.0.1:389\"]\nbase_dn = \"dc=example,dc=org\"\n{extra}"
        );
        toml::from_str::<T>(&text).unwrap().ldap
    }

    fn problem_keys(c: &LdapConfig) -> Vec<String> {
        c.validate("auth.ldap").into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn defaults() {
        let c = parse("");
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.group_attribute, "memberOf");
        assert_eq!((c.pool_size, c.max_concurrency), (4, 8));
        assert!(!c.allow_stale_on_outage && !c.starttls);
        assert_eq!(c.preset, LdapPreset::Openldap);
        assert!(problem_keys(&c).is_empty(), "{:?}", c.validate("auth.ldap"));
    }

    #[test]
    fn preset_names() {
        let c = parse("preset = \"active_directory\"\ngroup_name = \"dn\"");
        assert_eq!(c.preset, LdapPreset::ActiveDirectory);
        assert_eq!(c.group_name, GroupName::Dn);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "[ldap]\nurls = []\nbase_dn = \"x\"\nbind_pw = \"x\"\n";
        assert!(toml::from_str::<T>(text).is_err());
    }

    #[test]
    fn problems_are_named() {
        let mut c = parse("bind_dn = \"cn=svc\"\nca_file = \"/ca.pem\"\ntimeout = \"0s\"");
        c.urls.push("http://x".parse().unwrap());
        c.urls.push("ldap://h/dc=example".parse().unwrap());
        assert_eq!(
            problem_keys(&c),
            [
                "auth.ldap.urls",
                "auth.ldap.urls",
                "auth.ldap.ca_file",
                "auth.ldap.timeout",
                "auth.ldap.bind_password"
            ]
        );
    }
}
