//! Group DNs → the names the access rules use, and the required-group test.
//!
//! Groups are collected as DNs (from `memberOf` and from group searches
//! alike) so they can be compared and deduplicated in one way, and named
//! only at the end.

use std::collections::BTreeSet;

use crate::config::ldap::GroupName;

/// The group DNs found for a user, deduplicated ignoring ASCII case (DNs
/// compare case-insensitively in practice).
#[derive(Debug, Clone, Default)]
pub struct GroupSet {
    dns: Vec<String>,
    seen: BTreeSet<String>,
}

impl GroupSet {
    /// Adds `dn`; true if it was new.
    pub fn insert(&mut self, dn: &str) -> bool {
        let dn = dn.trim();
        if dn.is_empty() || !self.seen.insert(dn.to_ascii_lowercase()) {
            return false;
        }
        self.dns.push(dn.to_owned());
        true
    }

    /// The DNs, in the order found.
    pub fn dns(&self) -> &[String] {
        &self.dns
    }

    pub fn len(&self) -> usize {
        self.dns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dns.is_empty()
    }

    /// Whether `required` — a DN if it has a '=', else a group name — is
    /// one of the groups. Case is ignored, as the directory ignores it.
    pub fn contains(&self, required: &str) -> bool {
        let required = required.trim();
        if required.contains('=') {
            self.seen.contains(&required.to_ascii_lowercase())
        } else {
            self.dns
                .iter()
                .filter_map(|dn| rdn_value(dn))
                .any(|n| n.eq_ignore_ascii_case(required))
        }
    }

    /// Sorted names for the access rules. With [`GroupName::Cn`] a group
    /// whose DN cannot be read (a multi-valued or hex-encoded first RDN) is
    /// left out rather than guessed at.
    pub fn names(&self, how: GroupName) -> Vec<String> {
        let names: BTreeSet<String> = match how {
            GroupName::Dn => self.dns.iter().cloned().collect(),
            GroupName::Cn => self.dns.iter().filter_map(|dn| rdn_value(dn)).collect(),
        };
        names.into_iter().collect()
    }
}

/// The value of a DN's first RDN (`cn=a\,b,ou=g` → `a,b`), unescaped per
/// RFC 4514; `None` for forms a group name should not come from.
pub fn rdn_value(dn: &str) -> Option<String> {
    let (_, value) = dn.split_once('=')?;
    let value = value.trim_start();
    if value.starts_with('#') || value.starts_with('"') {
        return None;
    }
    let mut out = Vec::new();
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b',' | b';' => break,
            // a second attribute in the same RDN: ambiguous as a name
            b'+' => return None,
            b'\\' => {
                let first = bytes.next()?;
                if first.is_ascii_hexdigit() {
                    let second = bytes.next().filter(u8::is_ascii_hexdigit)?;
                    let hex = [first, second];
                    let text = std::str::from_utf8(&hex).ok()?;
                    out.push(u8::from_str_radix(text, 16).ok()?);
                } else if b" \"#+,;<=>\\".contains(&first) {
                    out.push(first);
                } else {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    let name = String::from_utf8(out).ok()?;
    let name = name.trim_end();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdn_values() {
        assert_eq!(
            rdn_value("cn=devs,ou=groups,dc=example,dc=org").unwrap(),
            "devs"
        );
        assert_eq!(
            rdn_value("CN=Dev\\, Team,OU=G,DC=corp").unwrap(),
            "Dev, Team"
        );
        assert_eq!(rdn_value("cn=a\\2cb,dc=x").unwrap(), "a,b");
        assert_eq!(rdn_value("cn=caf\\c3\\a9,dc=x").unwrap(), "café");
        assert_eq!(rdn_value("cn = spaced , dc=x").unwrap(), "spaced");
        assert_eq!(rdn_value("cn=only").unwrap(), "only");
        assert_eq!(rdn_value("cn=x+uid=y,dc=z"), None);
        assert_eq!(rdn_value("cn=#04024869,dc=z"), None);
        assert_eq!(rdn_value("cn=a\\=b\\ ,dc=x").unwrap(), "a=b");
        assert_eq!(rdn_value("cn=bad\\zz,dc=x"), None);
        assert_eq!(rdn_value("cn=bad\\"), None);
        assert_eq!(rdn_value("cn=bad\\f"), None);
        assert_eq!(rdn_value("cn=\\ff,dc=x"), None);
        assert_eq!(rdn_value("nodn"), None);
        assert_eq!(rdn_value("cn=,dc=x"), None);
    }

    #[test]
    fn set_dedups_and_names() {
        let mut s = GroupSet::default();
        assert!(s.insert("cn=devs,ou=groups,dc=example,dc=org"));
        assert!(!s.insert("CN=devs,OU=groups,DC=example,DC=org"));
        assert!(s.insert("cn=ci-pushers,ou=groups,dc=example,dc=org"));
        assert!(!s.insert(" "));
        assert_eq!(s.len(), 2);
        assert_eq!(s.names(GroupName::Cn), ["ci-pushers", "devs"]);
        assert_eq!(
            s.names(GroupName::Dn),
            [
                "cn=ci-pushers,ou=groups,dc=example,dc=org",
                "cn=devs,ou=groups,dc=example,dc=org"
            ]
        );
        assert!(s.contains("DEVS"));
        assert!(s.contains("cn=devs,ou=groups,dc=Example,dc=org"));
        assert!(!s.contains("cn=devs,ou=other,dc=example,dc=org"));
        assert!(!s.contains("admins"));
    }
}
