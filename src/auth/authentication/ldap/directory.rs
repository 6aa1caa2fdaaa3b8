//! The login itself: find the user, collect their groups, check the
//! password. Runs on the backend's runtime only.

use std::collections::HashMap;

use ldap3::{Ldap, LdapResult, Scope, SearchEntry, SearchOptions, SearchResult};

use super::groups::GroupSet;
use super::pool::{Kind, Lease, Pool};
use super::query::{BindMode, Queries};
use super::{LdapEntry, LdapError, LdapVerdict};
use crate::config::ldap::GroupName;

/// Group DNs asked about per nested-group search.
const NESTED_CHUNK: usize = 50;
/// Most groups collected for one user (a runaway directory must end).
const MAX_GROUPS: usize = 1000;

const SUCCESS: u32 = 0;
const SIZE_LIMIT_EXCEEDED: u32 = 4;
const NO_SUCH_OBJECT: u32 = 32;
/// Answers to a bind that mean "not with this password": invalid
/// credentials, inappropriate authentication, insufficient access,
/// unwilling to perform (e.g. a locked account).
const BIND_REFUSED: [u32; 4] = [49, 48, 50, 53];

pub struct Directory {
    pub pool: Pool,
    pub queries: Queries,
    pub group_name: GroupName,
    pub required_group: Option<String>,
    pub nested_depth: u32,
}

/// The user's entry: DN and the group attribute's values.
struct Found {
    dn: String,
    attrs: HashMap<String, Vec<String>>,
}

/// One search, as data, so a retry can send it again.
struct Search {
    what: &'static str,
    base: String,
    scope: Scope,
    filter: String,
    attrs: Vec<String>,
    limit: i32,
}

impl Search {
    async fn send(&self, mut l: Ldap) -> ldap3::result::Result<SearchResult> {
        l.with_search_options(SearchOptions::new().sizelimit(self.limit))
            .search(&self.base, self.scope, &self.filter, &self.attrs)
            .await
    }
}

impl Directory {
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<LdapVerdict, LdapError> {
        match &self.queries.mode {
            BindMode::Search => self.search_then_bind(user, password).await,
            BindMode::Dn(_) | BindMode::Upn(_) => self.direct_bind(user, password).await,
        }
    }

    /// The entry and groups of `user`, without a password check: what
    /// [`Directory::authenticate`] finds before it binds.
    pub async fn find(&self, user: &str) -> Result<Option<LdapEntry>, LdapError> {
        let name = match &self.queries.mode {
            BindMode::Search => None,
            BindMode::Dn(_) | BindMode::Upn(_) => match self.queries.bind_name(user) {
                Some(n) => Some(n),
                None => return Ok(None),
            },
        };
        let search = self.user_search(user, name.as_deref());
        let (mut lease, res) = self
            .pool
            .first(Kind::Service, search.what, |l| search.send(l))
            .await?;
        let Some(found) = one_entry(res, &search)? else {
            return Ok(None);
        };
        let groups = self.groups(&mut lease, &found, user).await?;
        Ok(self.entry(found, &groups))
    }

    async fn search_then_bind(&self, user: &str, password: &str) -> Result<LdapVerdict, LdapError> {
        let Some(entry) = self.find(user).await? else {
            return Ok(LdapVerdict::UnknownUser);
        };
        // Outside the required group the password is not even tried.
        if !entry.in_required_group {
            return Ok(LdapVerdict::UnknownUser);
        }
        let (_lease, r) = self
            .pool
            .first(Kind::Bind, "bind", |l| bind(l, &entry.dn, password))
            .await?;
        if !bind_accepted(&r)? {
            return Ok(LdapVerdict::BadPassword);
        }
        Ok(authenticated(entry))
    }

    async fn direct_bind(&self, user: &str, password: &str) -> Result<LdapVerdict, LdapError> {
        let Some(name) = self.queries.bind_name(user) else {
            return Ok(LdapVerdict::UnknownUser);
        };
        let (mut lease, r) = self
            .pool
            .first(Kind::Bind, "bind", |l| bind(l, &name, password))
            .await?;
        if !bind_accepted(&r)? {
            // Here the directory does not tell an unknown name from a
            // wrong password.
            return Ok(LdapVerdict::BadPassword);
        }
        let entry = if self.pool.has_service_account() {
            drop(lease);
            self.find(user).await?
        } else {
            // Read the entry as the user just bound.
            let search = self.user_search(user, Some(&name));
            let res = lease.op(search.what, |l| search.send(l)).await?;
            match one_entry(res, &search)? {
                Some(found) => {
                    let groups = self.groups(&mut lease, &found, user).await?;
                    self.entry(found, &groups)
                }
                None => None,
            }
        };
        match entry {
            Some(e) if e.in_required_group => Ok(authenticated(e)),
            _ => Ok(LdapVerdict::UnknownUser),
        }
    }

    /// The search that finds the user's entry: with a DN template, a
    /// base-scope read of that DN (still through `user_filter`, so its
    /// exclusions apply); otherwise a subtree search under `base_dn`.
    fn user_search(&self, user: &str, bind_name: Option<&str>) -> Search {
        let (base, scope) = match (&self.queries.mode, bind_name) {
            (BindMode::Dn(_), Some(dn)) => (dn.to_owned(), Scope::Base),
            _ => (self.queries.base_dn.clone(), Scope::Subtree),
        };
        Search {
            what: "user search",
            base,
            scope,
            filter: self.queries.user_filter.filter(user, ""),
            attrs: std::iter::once(self.queries.user_attribute.clone())
                .chain(self.queries.group_attribute.clone())
                .chain(self.queries.password_changed_attribute.clone())
                .collect(),
            // one entry is the answer; a second means "several"
            limit: 2,
        }
    }

    /// The entry as a user; `None` (an unknown user) when it has no
    /// value of `user_attribute`: there is no identity to give it.
    fn entry(&self, found: Found, groups: &GroupSet) -> Option<LdapEntry> {
        let value = |attr: &str| {
            found
                .attrs
                .get(&attr.to_ascii_lowercase())
                .and_then(|v| v.first())
                .cloned()
        };
        let Some(user) = value(&self.queries.user_attribute).filter(|u| !u.is_empty()) else {
            tracing::warn!(
                target: "auth",
                dn = %found.dn,
                attribute = %self.queries.user_attribute,
                "LDAP entry has no value of auth.ldap.user_attribute: refused as unknown"
            );
            return None;
        };
        let password_changed = self
            .queries
            .password_changed_attribute
            .as_deref()
            .and_then(value);
        Some(LdapEntry {
            dn: found.dn,
            user,
            password_changed,
            groups: groups.names(self.group_name),
            in_required_group: self
                .required_group
                .as_deref()
                .is_none_or(|g| groups.contains(g)),
        })
    }

    /// Group DNs from the user's group attribute and the group search,
    /// then `nested_group_depth` levels of groups containing those.
    async fn groups(
        &self,
        lease: &mut Lease<'_>,
        found: &Found,
        user: &str,
    ) -> Result<GroupSet, LdapError> {
        let mut set = GroupSet::default();
        if let Some(attr) = &self.queries.group_attribute {
            for dn in found
                .attrs
                .get(&attr.to_ascii_lowercase())
                .into_iter()
                .flatten()
            {
                set.insert(dn);
            }
        }
        let Some(filter) = &self.queries.group_filter else {
            return Ok(set);
        };
        self.group_search(lease, filter.filter(user, &found.dn), &mut set)
            .await?;
        let mut frontier = set.dns().to_vec();
        for _ in 0..self.nested_depth {
            let mut next = Vec::new();
            for chunk in frontier.chunks(NESTED_CHUNK) {
                if set.len() >= MAX_GROUPS {
                    break;
                }
                let any: String = chunk.iter().map(|g| filter.filter(user, g)).collect();
                let new = self
                    .group_search(lease, format!("(|{any})"), &mut set)
                    .await?;
                next.extend(new);
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok(set)
    }

    /// Adds the groups `filter` finds; returns the DNs that were new.
    async fn group_search(
        &self,
        lease: &mut Lease<'_>,
        filter: String,
        set: &mut GroupSet,
    ) -> Result<Vec<String>, LdapError> {
        let search = Search {
            what: "group search",
            base: self.queries.group_base.clone(),
            scope: Scope::Subtree,
            filter,
            attrs: vec!["1.1".to_owned()],
            limit: MAX_GROUPS as i32,
        };
        let SearchResult(entries, res) = lease.op(search.what, |l| search.send(l)).await?;
        match res.rc {
            SUCCESS => {}
            // fewer groups is fewer rights: use what came
            SIZE_LIMIT_EXCEEDED => tracing::warn!(
                limit = MAX_GROUPS,
                "LDAP group search hit its size limit; some groups are left out"
            ),
            _ => return Err(search_failed(&search, &res)),
        }
        let mut new = Vec::new();
        for e in entries {
            let dn = SearchEntry::construct(e).dn;
            if set.insert(&dn) {
                new.push(dn);
            }
        }
        Ok(new)
    }
}

fn authenticated(e: LdapEntry) -> LdapVerdict {
    LdapVerdict::Authenticated {
        dn: e.dn,
        user: e.user,
        groups: e.groups,
        password_changed: e.password_changed,
    }
}

async fn bind(mut l: Ldap, name: &str, password: &str) -> ldap3::result::Result<LdapResult> {
    l.simple_bind(name, password).await
}

/// Whether the directory accepted a user's bind.
fn bind_accepted(r: &LdapResult) -> Result<bool, LdapError> {
    match r.rc {
        SUCCESS => Ok(true),
        rc if BIND_REFUSED.contains(&rc) => Ok(false),
        _ => Err(LdapError::Directory {
            op: "bind",
            reason: r.to_string(),
        }),
    }
}

/// The single entry of a user search; `None` for zero or several.
fn one_entry(res: SearchResult, search: &Search) -> Result<Option<Found>, LdapError> {
    let SearchResult(mut entries, r) = res;
    match r.rc {
        SUCCESS if entries.len() == 1 => {}
        SUCCESS | SIZE_LIMIT_EXCEEDED => {
            tracing::debug!(
                entries = entries.len(),
                "LDAP user search did not find exactly one entry"
            );
            return Ok(None);
        }
        // a DN-template read of a DN that does not exist
        NO_SUCH_OBJECT if search.scope == Scope::Base => return Ok(None),
        _ => return Err(search_failed(search, &r)),
    }
    let Some(raw) = entries.pop() else {
        return Ok(None);
    };
    let e = SearchEntry::construct(raw);
    let attrs = e
        .attrs
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    Ok(Some(Found { dn: e.dn, attrs }))
}

fn search_failed(search: &Search, r: &LdapResult) -> LdapError {
    LdapError::Directory {
        op: search.what,
        reason: format!("under {:?}: {r}", search.base),
    }
}
