//! The filters and bind names the backend sends, built from the config's
//! templates with the user's input escaped.
//!
//! Templates are parsed once, so a value is substituted exactly once: a
//! user name such as `{dn}` stays text and is never expanded again.

use ldap3::{dn_escape, ldap_escape};

use crate::config::ldap::{LdapConfig, LdapPreset};

pub const OPENLDAP_USER_FILTER: &str = "(&(objectClass=person)(uid={username}))";
/// Active Directory users log in by either name they have: the
/// pre-Windows 2000 `sAMAccountName` (`jdoe`) or the userPrincipalName
/// (`jdoe@corp.example`). A name that matches two entries is refused as
/// ambiguous, like any other.
pub const AD_USER_FILTER: &str = "(&(objectCategory=person)(objectClass=user)\
     (|(sAMAccountName={username})(userPrincipalName={username})))";
/// `userAccountControl` bit 2 (ACCOUNTDISABLE), tested bitwise
/// (LDAP_MATCHING_RULE_BIT_AND).
pub const AD_ENABLED_ONLY: &str = "(!(userAccountControl:1.2.840.113556.1.4.803:=2))";
/// Every group the user is in, nested ones included
/// (LDAP_MATCHING_RULE_IN_CHAIN).
pub const AD_GROUP_FILTER: &str = "(&(objectClass=group)(member:1.2.840.113556.1.4.1941:={dn}))";

/// Longest user name sent to the directory.
const MAX_USERNAME: usize = 256;

/// A template problem, named by the config key it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub key: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Username,
    Dn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A string with `{username}` / `{dn}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    fn parse(text: &str, allowed: &[Var]) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let end = rest[start..]
                .find('}')
                .map(|e| start + e)
                .ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
            let var = match &rest[start + 1..end] {
                "username" => Var::Username,
                "dn" => Var::Dn,
                other => return Err(format!("unknown placeholder {{{other}}} in {text:?}")),
            };
            if !allowed.contains(&var) {
                return Err(format!("{{{}}} cannot be used here", &rest[start + 1..end]));
            }
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            pieces.push(Piece::Var(var));
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template(pieces))
    }

    fn uses(&self, var: Var) -> bool {
        self.0.contains(&Piece::Var(var))
    }

    fn render(&self, username: &str, dn: &str, escape: impl Fn(&str) -> String) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Var(Var::Username) => escape(username),
                Piece::Var(Var::Dn) => escape(dn),
            })
            .collect()
    }

    /// A filter with every value escaped per RFC 4515.
    pub fn filter(&self, username: &str, dn: &str) -> String {
        self.render(username, dn, |v| ldap_escape(v).into_owned())
    }
}

/// How the user's password is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindMode {
    /// Find the entry with `user_filter`, then bind as its DN.
    Search,
    /// Bind as the DN the template makes (values escaped per RFC 4514).
    Dn(Template),
    /// Bind as a userPrincipalName (`{username}@corp.example`).
    Upn(Template),
}

/// Everything the backend sends, ready to render.
#[derive(Debug, Clone)]
pub struct Queries {
    pub mode: BindMode,
    /// Effective user filter (preset default, AD exclusions added).
    pub user_filter: Template,
    pub group_filter: Option<Template>,
    pub base_dn: String,
    pub group_base: String,
    /// `None` when no attribute is read.
    pub group_attribute: Option<String>,
    /// Its value is the user's identity.
    pub user_attribute: String,
    /// Changes with the password; `None` when none is read.
    pub password_changed_attribute: Option<String>,
}

impl Queries {
    pub fn new(cfg: &LdapConfig) -> Result<Queries, QueryError> {
        let ad = cfg.preset == LdapPreset::ActiveDirectory;
        let mode = match &cfg.user_dn_template {
            None => BindMode::Search,
            Some(t) => {
                let err = |reason| QueryError {
                    key: "user_dn_template",
                    reason,
                };
                let tpl = Template::parse(t, &[Var::Username]).map_err(err)?;
                if !tpl.uses(Var::Username) {
                    return Err(err(format!("{t:?} has no {{username}}")));
                }
                if t.contains('=') {
                    BindMode::Dn(tpl)
                } else {
                    BindMode::Upn(tpl)
                }
            }
        };
        let base_user_filter = cfg.user_filter.as_deref().unwrap_or(if ad {
            AD_USER_FILTER
        } else {
            OPENLDAP_USER_FILTER
        });
        let user_filter = if ad {
            format!("(&{base_user_filter}{AD_ENABLED_ONLY})")
        } else {
            base_user_filter.to_owned()
        };
        let user_filter = Template::parse(&user_filter, &[Var::Username])
            .and_then(|t| check_filter(&t).map(|()| t))
            .map_err(|reason| QueryError {
                key: "user_filter",
                reason,
            })?;
        // With a DN template the filter reads the entry at that DN; in the
        // other modes it must single out the user.
        if !matches!(mode, BindMode::Dn(_)) && !user_filter.uses(Var::Username) {
            return Err(QueryError {
                key: "user_filter",
                reason: "must contain {username}".to_owned(),
            });
        }
        let group_filter = match cfg.group_filter.as_deref() {
            Some(f) => Some(f),
            None if ad => Some(AD_GROUP_FILTER),
            None => None,
        };
        let group_filter = group_filter
            .map(|f| {
                Template::parse(f, &[Var::Username, Var::Dn])
                    .and_then(|t| check_filter(&t).map(|()| t))
                    .map_err(|reason| QueryError {
                        key: "group_filter",
                        reason,
                    })
            })
            .transpose()?;
        if group_filter.is_none() && cfg.nested_group_depth > 0 {
            return Err(QueryError {
                key: "nested_group_depth",
                reason: "nested groups are followed with group_filter: set one".to_owned(),
            });
        }
        Ok(Queries {
            mode,
            user_filter,
            group_filter,
            base_dn: cfg.base_dn.clone(),
            group_base: cfg
                .group_search_base
                .clone()
                .unwrap_or_else(|| cfg.base_dn.clone()),
            group_attribute: Some(cfg.group_attribute.trim())
                .filter(|a| !a.is_empty())
                .map(str::to_owned),
            user_attribute: cfg
                .user_attribute
                .clone()
                .unwrap_or_else(|| if ad { "sAMAccountName" } else { "uid" }.to_owned()),
            password_changed_attribute: match cfg.password_changed_attribute.as_deref() {
                Some("") => None,
                Some(a) => Some(a.to_owned()),
                None => Some(if ad { "pwdLastSet" } else { "pwdChangedTime" }.to_owned()),
            },
        })
    }

    /// The name to bind as in direct-bind mode; `None` if the user name
    /// cannot be one (the user is then unknown).
    pub fn bind_name(&self, username: &str) -> Option<String> {
        match &self.mode {
            BindMode::Search => None,
            BindMode::Dn(t) => Some(t.render(username, "", |v| dn_escape(v).into_owned())),
            // A UPN is not a DN and has no escaping: refuse what Active
            // Directory refuses in account names, and '@'.
            BindMode::Upn(t) => {
                let bad = |c: char| c.is_whitespace() || "\"/\\[]:;|=,+*?<>@".contains(c);
                (!username.chars().any(bad)).then(|| t.render(username, "", str::to_owned))
            }
        }
    }
}

/// Whether a user name may be sent at all: no directory has empty names,
/// control characters or names of kilobytes.
pub fn plausible_username(username: &str) -> bool {
    !username.is_empty()
        && username.len() <= MAX_USERNAME
        && !username.chars().any(char::is_control)
}

/// Parses the template rendered with sample values, as the client will.
fn check_filter(t: &Template) -> Result<(), String> {
    let sample = t.filter("user", "cn=group,dc=example,dc=org");
    ldap3::parse_filter(&sample)
        .map(|_| ())
        .map_err(|()| format!("{sample:?} is not a valid LDAP filter (RFC 4515)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(f: impl FnOnce(&mut LdapConfig)) -> LdapConfig {
        let mut c = LdapConfig::new(
            vec!["ldap://127.0.0.1".parse().unwrap()],
            "dc=example,dc=org",
        );
        f(&mut c);
        c
    }

    fn user_filter(c: &LdapConfig, user: &str) -> String {
        Queries::new(c).unwrap().user_filter.filter(user, "")
    }

    #[test]
    fn filter_values_are_escaped() {
        let c = cfg(|_| {});
        let f = |u| user_filter(&c, u);
        assert_eq!(f("alice"), "(&(objectClass=person)(uid=alice))");
        assert_eq!(f("*"), "(&(objectClass=person)(uid=\\2a))");
        assert_eq!(
            f("*)(uid=*"),
            "(&(objectClass=person)(uid=\\2a\\29\\28uid=\\2a))"
        );
        assert_eq!(
            f("admin)(|(uid=*"),
            "(&(objectClass=person)(uid=admin\\29\\28|\\28uid=\\2a))"
        );
        assert_eq!(f("\\00"), "(&(objectClass=person)(uid=\\5c00))");
        assert_eq!(f("a\0b"), "(&(objectClass=person)(uid=a\\00b))");
        // every escaped filter still parses as one equality match
        for u in ["*", "*)(uid=*", "admin)(|(uid=*", "\\00", "a\0b", "(", ")"] {
            assert!(ldap3::parse_filter(f(u)).is_ok(), "{u:?}");
        }
    }

    #[test]
    fn placeholders_are_expanded_once() {
        let c = cfg(|c| c.group_filter = Some("(|(member={dn})(memberUid={username}))".into()));
        let q = Queries::new(&c).unwrap();
        let g = q.group_filter.unwrap();
        assert_eq!(
            g.filter("{dn}", "cn=a\\,b,dc=x"),
            "(|(member=cn=a\\5c,b,dc=x)(memberUid={dn}))"
        );
    }

    #[test]
    fn dn_template_escapes_per_rfc4514() {
        let c =
            cfg(|c| c.user_dn_template = Some("uid={username},ou=people,dc=example,dc=org".into()));
        let q = Queries::new(&c).unwrap();
        assert!(matches!(q.mode, BindMode::Dn(_)));
        let b = |u| q.bind_name(u).unwrap();
        assert_eq!(b("alice"), "uid=alice,ou=people,dc=example,dc=org");
        assert_eq!(
            b("a,uid=admin"),
            "uid=a\\2cuid\\3dadmin,ou=people,dc=example,dc=org"
        );
        assert_eq!(b("a+cn=x"), "uid=a\\2bcn\\3dx,ou=people,dc=example,dc=org");
        assert_eq!(b("\"q\""), "uid=\\22q\\22,ou=people,dc=example,dc=org");
        assert_eq!(b("#hash"), "uid=\\23hash,ou=people,dc=example,dc=org");
        assert_eq!(b(" lead"), "uid=\\20lead,ou=people,dc=example,dc=org");
        assert_eq!(b("trail "), "uid=trail\\20,ou=people,dc=example,dc=org");
        assert_eq!(b("back\\"), "uid=back\\5c,ou=people,dc=example,dc=org");
        assert_eq!(b("nul\0"), "uid=nul\\00,ou=people,dc=example,dc=org");
        assert_eq!(b("*"), "uid=*,ou=people,dc=example,dc=org");
    }

    #[test]
    fn upn_template_refuses_structure() {
        let c = cfg(|c| c.user_dn_template = Some("{username}@corp.example".into()));
        let q = Queries::new(&c).unwrap();
        assert!(matches!(q.mode, BindMode::Upn(_)));
        assert_eq!(q.bind_name("jdoe").as_deref(), Some("jdoe@corp.example"));
        assert_eq!(
            q.bind_name("j.doe-2").as_deref(),
            Some("j.doe-2@corp.example")
        );
        for bad in ["a@b", "cn=x,dc=y", "CORP\\admin", "a b", "x*"] {
            assert_eq!(q.bind_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn active_directory_preset() {
        let c = cfg(|c| c.preset = LdapPreset::ActiveDirectory);
        let q = Queries::new(&c).unwrap();
        assert_eq!(
            q.user_filter.filter("j*doe", ""),
            "(&(&(objectCategory=person)(objectClass=user)\
             (|(sAMAccountName=j\\2adoe)(userPrincipalName=j\\2adoe)))\
             (!(userAccountControl:1.2.840.113556.1.4.803:=2)))"
        );
        // a UPN is looked up as a userPrincipalName (and as an account name)
        assert_eq!(
            q.user_filter.filter("jdoe@corp.example", ""),
            "(&(&(objectCategory=person)(objectClass=user)\
             (|(sAMAccountName=jdoe@corp.example)(userPrincipalName=jdoe@corp.example)))\
             (!(userAccountControl:1.2.840.113556.1.4.803:=2)))"
        );
        assert!(ldap3::parse_filter(q.user_filter.filter("a)(b", "")).is_ok());
        assert_eq!(
            q.group_filter
                .unwrap()
                .filter("jdoe", "CN=J\\, Doe,DC=corp"),
            "(&(objectClass=group)(member:1.2.840.113556.1.4.1941:=CN=J\\5c, Doe,DC=corp))"
        );
        assert_eq!(q.group_base, "dc=example,dc=org");
        // a custom filter keeps the disabled-account exclusion
        let c = cfg(|c| {
            c.preset = LdapPreset::ActiveDirectory;
            c.user_filter = Some("(userPrincipalName={username}@corp.example)".into());
            c.group_filter = Some("(member={dn})".into());
        });
        let q = Queries::new(&c).unwrap();
        assert_eq!(
            q.user_filter.filter("jdoe", ""),
            "(&(userPrincipalName=jdoe@corp.example)\
             (!(userAccountControl:1.2.840.113556.1.4.803:=2)))"
        );
        assert_eq!(q.group_filter.unwrap().filter("", "x"), "(member=x)");
    }

    #[test]
    fn bad_templates_are_named() {
        type Set = fn(&mut LdapConfig);
        let key = |f: Set| Queries::new(&cfg(f)).unwrap_err().key;
        let cases: [(Set, &str); 5] = [
            (|c| c.user_filter = Some("(uid={dn})".into()), "user_filter"),
            (
                |c| c.user_filter = Some("(&(uid={username})".into()),
                "user_filter",
            ),
            (
                |c| c.group_filter = Some("(member={dn}".into()),
                "group_filter",
            ),
            (
                |c| c.group_filter = Some("(member={x})".into()),
                "group_filter",
            ),
            (
                |c| c.user_dn_template = Some("uid={dn},dc=x".into()),
                "user_dn_template",
            ),
        ];
        for (set, expected) in cases {
            assert_eq!(key(set), expected);
        }
    }

    #[test]
    fn usernames_worth_sending() {
        assert!(plausible_username("alice"));
        assert!(plausible_username("o*o"));
        assert!(!plausible_username(""));
        assert!(!plausible_username("a\0b"));
        assert!(!plausible_username("a\nb"));
        assert!(!plausible_username(&"a".repeat(300)));
    }
}
