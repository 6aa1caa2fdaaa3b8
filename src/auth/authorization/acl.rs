//! Access rules: who may do what to which repositories, from where.
//!
//! Rules are ordered and the first one whose conditions match the caller
//! and the repository decides; its `actions` are what is granted (a rule
//! with `actions = []` is an explicit deny). Nothing matching means deny.
//! Rules match on the caller and resource, not on the action, so an earlier
//! read-only rule cannot be bypassed by a later, broader one.

use globset::{Glob, GlobBuilder, GlobMatcher};
use ipnet::IpNet;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{CredentialKind, Problem, RuleConfig};
use crate::registry::route::{Action, RepoName};

/// A set of actions, as granted by a rule or a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const ALL: Actions = Actions(0b1111);
    /// What can be done to a repository (catalog is registry-wide).
    pub const ALL_REPO: Actions = Actions(0b0111);

    fn bit(a: Action) -> u8 {
        match a {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
            Action::Catalog => 8,
        }
    }

    pub fn of(list: &[Action]) -> Actions {
        Actions(list.iter().fold(0, |acc, &a| acc | Self::bit(a)))
    }

    pub fn contains(self, a: Action) -> bool {
        self.0 & Self::bit(a) != 0
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        [Action::Pull, Action::Push, Action::Delete, Action::Catalog]
            .into_iter()
            .filter(move |&a| self.contains(a))
    }

    /// Parses `pull`, `push`, `delete`, `catalog` and `*`.
    pub fn parse(words: &[String]) -> Result<Actions, String> {
        let mut set = Actions::NONE;
        for w in words {
            set.0 |= match w.as_str() {
                "*" => Actions::ALL.0,
                "pull" => 1,
                "push" => 2,
                "delete" => 4,
                "catalog" => 8,
                other => {
                    return Err(format!(
                        "unknown action {other:?} (expected pull, push, delete, catalog or *)"
                    ))
                }
            };
        }
        Ok(set)
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Action::as_str).collect();
        if names.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    /// `None` for a request without credentials.
    pub user: Option<&'a str>,
    pub groups: &'a [String],
    pub ip: IpAddr,
    /// How the caller proved who it is. `None` for anonymous callers, and
    /// for bearer tokens of the token endpoint: those carry what the rules
    /// granted the credential they were issued for, so a rule's
    /// `credential` does not restrict them again.
    pub credential: Option<CredentialKind>,
}

/// A repository pattern; `${user}` is replaced by the caller's name.
enum RepoPattern {
    Fixed(GlobMatcher),
    PerUser(String),
}

pub struct Rule {
    /// 1-based position in the config, for `explain` and logs.
    pub number: usize,
    users: Option<Vec<GlobMatcher>>,
    groups: Option<Vec<String>>,
    anonymous: bool,
    repositories: Option<Vec<RepoPattern>>,
    networks: Option<Vec<IpNet>>,
    credential: Option<CredentialKind>,
    pub actions: Actions,
    pub comment: Option<String>,
}

fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    // `*` stays within one path component, `**` crosses them.
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()?
        .compile_matcher())
}

impl Rule {
    fn compile(number: usize, cfg: &RuleConfig, problems: &mut Vec<Problem>) -> Option<Rule> {
        let key = |k: &str| format!("access[{}].{k}", number - 1);
        let before = problems.len();
        let users = cfg.users.as_ref().map(|list| {
            list.iter()
                .filter_map(|u| {
                    Glob::new(u)
                        .map(|g| g.compile_matcher())
                        .map_err(|e| problems.push(Problem::new(key("users"), e.to_string())))
                        .ok()
                })
                .collect()
        });
        let repositories = cfg.repositories.as_ref().map(|list| {
            list.iter()
                .filter_map(|p| {
                    let checked = glob(&p.replace("${user}", "u"));
                    match checked {
                        Err(e) => {
                            problems.push(Problem::new(key("repositories"), format!("{p:?}: {e}")));
                            None
                        }
                        Ok(_) if p.contains("${user}") => Some(RepoPattern::PerUser(p.clone())),
                        Ok(m) => Some(RepoPattern::Fixed(m)),
                    }
                })
                .collect()
        });
        let networks = cfg.networks.as_ref().map(|list| {
            list.iter()
                .filter_map(|n| {
                    n.parse::<IpNet>()
                        .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| {
                            problems.push(Problem::new(
                                key("networks"),
                                format!("{n:?} is not a CIDR network or address"),
                            ))
                        })
                        .ok()
                })
                .collect()
        });
        let actions = Actions::parse(&cfg.actions)
            .map_err(|e| problems.push(Problem::new(key("actions"), e)))
            .unwrap_or_default();
        // (`*` there means every repository action: pull, push, delete)
        if cfg.repositories.is_some() && cfg.actions.iter().any(|a| a == "catalog") {
            problems.push(Problem::new(
                key("actions"),
                "`catalog` is registry-wide and a rule with `repositories` never matches it: \
                 grant `catalog` in a rule without `repositories` (the listing shows only \
                 what the caller may pull)",
            ));
        }
        if cfg.anonymous && cfg.actions.iter().any(|a| a != "pull" && a != "catalog") {
            problems.push(Problem::new(
                key("actions"),
                "a rule matching anonymous callers may only grant pull and catalog",
            ));
        }
        if cfg.anonymous && cfg.credential.is_some() {
            problems.push(Problem::new(
                key("credential"),
                "anonymous callers present no credential: a rule with `credential` cannot \
                 also match them (write two rules)",
            ));
        }
        if problems.len() > before {
            return None;
        }
        Some(Rule {
            number,
            users,
            groups: cfg.groups.clone(),
            anonymous: cfg.anonymous,
            repositories,
            networks,
            credential: cfg.credential,
            actions,
            comment: cfg.comment.clone(),
        })
    }

    /// Whether the rule is about this caller and this repository; `None`
    /// repository means a registry-wide request (the catalog).
    fn matches(&self, caller: &Caller<'_>, repo: Option<&str>) -> Result<(), String> {
        match caller.user {
            None if !self.anonymous => return Err("does not match anonymous callers".into()),
            None => {}
            Some(user) => {
                let by_user = self
                    .users
                    .as_ref()
                    .map(|us| us.iter().any(|g| g.is_match(user)));
                let by_group = self
                    .groups
                    .as_ref()
                    .map(|gs| gs.iter().any(|g| caller.groups.contains(g)));
                match (by_user, by_group) {
                    (None, None) | (Some(true), _) | (_, Some(true)) => {}
                    _ => return Err(format!("user {user:?} is not among its users or groups")),
                }
                match (self.credential, caller.credential) {
                    (Some(wanted), Some(used)) if wanted != used => {
                        return Err(format!(
                            "it asks for a {} and the caller used a {}",
                            credential_name(wanted),
                            credential_name(used)
                        ))
                    }
                    _ => {}
                }
            }
        }
        if let Some(nets) = &self.networks {
            if !nets.iter().any(|n| n.contains(&caller.ip)) {
                return Err(format!("client {} is outside its networks", caller.ip));
            }
        }
        if let Some(patterns) = &self.repositories {
            // A registry-wide request (the catalog) is about no repository,
            // so a rule limited to some repositories is not about it.
            let Some(repo) = repo else {
                return Err("it names repositories; the catalog is registry-wide".into());
            };
            let hit = patterns.iter().any(|p| match p {
                RepoPattern::Fixed(g) => g.is_match(repo),
                RepoPattern::PerUser(p) => caller
                    .user
                    // only names that are one valid repository component:
                    // `carol/sub` must not own `users/carol/sub/**`
                    .filter(|u| RepoName::is_component(u))
                    // (so they hold no glob metacharacters)
                    .and_then(|u| glob(&p.replace("${user}", u)).ok())
                    .is_some_and(|g| g.is_match(repo)),
            });
            if !hit {
                return Err(format!("repository {repo:?} matches none of its patterns"));
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.comment {
            parts.push(format!("{c:?}"));
        }
        parts.push(format!("grants {}", self.actions));
        parts.join(", ")
    }
}

fn credential_name(c: CredentialKind) -> &'static str {
    match c {
        CredentialKind::Password => "password",
        CredentialKind::Token => "token",
        CredentialKind::Certificate => "certificate",
        CredentialKind::Oidc => "oidc",
    }
}

/// The outcome of a check, with the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow { rule: Option<usize> },
    Deny { rule: Option<usize> },
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// The compiled rules, plus the static groups of htpasswd users.
pub struct Acl {
    rules: Vec<Rule>,
    /// No rules configured at all: every authenticated user may do
    /// everything (the nginx + htpasswd recipe's behaviour).
    open: bool,
    groups: HashMap<String, Vec<String>>,
}

/// Whether any of `rules` could let an anonymous caller in.
pub fn grants_anonymous(rules: &[Rule]) -> bool {
    rules
        .iter()
        .any(|r| r.anonymous && r.actions != Actions::NONE)
}

/// Compiles `[[access]]` (rule numbers from 1), every problem named.
pub fn compile_rules(rules: &[RuleConfig]) -> Result<Vec<Rule>, Vec<Problem>> {
    let mut problems = Vec::new();
    let compiled: Vec<Rule> = rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Rule::compile(i + 1, r, &mut problems))
        .collect();
    match problems.is_empty() {
        true => Ok(compiled),
        false => Err(problems),
    }
}

impl Acl {
    pub fn compile(
        rules: &[RuleConfig],
        groups: HashMap<String, Vec<String>>,
    ) -> Result<Arc<Acl>, Vec<Problem>> {
        Ok(Acl::new(compile_rules(rules)?, groups))
    }

    /// Compiled rules joined with the groups (group → members).
    pub fn new(rules: Vec<Rule>, groups: HashMap<String, Vec<String>>) -> Arc<Acl> {
        // invert group → members into user → groups
        let mut by_user: HashMap<String, Vec<String>> = HashMap::new();
        for (group, members) in groups {
            for m in members {
                by_user.entry(m).or_default().push(group.clone());
            }
        }
        for g in by_user.values_mut() {
            g.sort();
            g.dedup();
        }
        Arc::new(Acl {
            open: rules.is_empty(),
            rules,
            groups: by_user,
        })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Groups a user belongs to by the config (htpasswd users).
    pub fn static_groups(&self, user: &str) -> &[String] {
        self.groups.get(user).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether some rule asks about membership of `group`: only those
    /// groups are worth recording in a token.
    pub fn names_group(&self, group: &str) -> bool {
        self.rules.iter().any(|r| {
            r.groups
                .as_ref()
                .is_some_and(|gs| gs.iter().any(|g| g == group))
        })
    }

    /// Whether any rule could let an anonymous caller in; if none, requests
    /// without credentials are challenged at once.
    pub fn allows_anonymous(&self) -> bool {
        grants_anonymous(&self.rules)
    }

    /// What the caller may do to `repo` (`None`: registry-wide).
    pub fn granted(&self, caller: &Caller<'_>, repo: Option<&str>) -> (Actions, Option<usize>) {
        if self.open {
            return match caller.user {
                Some(_) => (Actions::ALL, None),
                None => (Actions::NONE, None),
            };
        }
        for rule in &self.rules {
            if rule.matches(caller, repo).is_ok() {
                return (rule.actions, Some(rule.number));
            }
        }
        (Actions::NONE, None)
    }

    pub fn check(&self, caller: &Caller<'_>, repo: Option<&str>, action: Action) -> Decision {
        let (actions, rule) = self.granted(caller, repo);
        if actions.contains(action) {
            Decision::Allow { rule }
        } else {
            Decision::Deny { rule }
        }
    }

    /// A human account of the decision: every rule tried and why it did or
    /// did not match, for `portcullis check --explain`.
    pub fn explain(&self, caller: &Caller<'_>, repo: Option<&str>, action: Action) -> String {
        let mut out = String::new();
        let who = caller
            .user
            .map_or("anonymous".to_owned(), |u| format!("user {u:?}"));
        out.push_str(&format!(
            "{who} (groups: {:?}) from {} wants {} on {}\n",
            caller.groups,
            caller.ip,
            action.as_str(),
            repo.map_or("the registry".to_owned(), |r| format!("{r:?}"))
        ));
        if self.open {
            let verdict = if caller.user.is_some() {
                "allowed"
            } else {
                "denied"
            };
            out.push_str(&format!(
                "no [[access]] rules are configured: every authenticated user may do everything → {verdict}\n"
            ));
            return out;
        }
        for rule in &self.rules {
            match rule.matches(caller, repo) {
                Ok(()) => {
                    let verdict = if rule.actions.contains(action) {
                        "allowed"
                    } else {
                        "denied"
                    };
                    out.push_str(&format!(
                        "rule {} matches ({}) → {verdict}\n",
                        rule.number,
                        rule.describe()
                    ));
                    return out;
                }
                Err(why) => out.push_str(&format!("rule {} skipped: {why}\n", rule.number)),
            }
        }
        out.push_str("no rule matches → denied (default deny)\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(toml_text: &str) -> Result<Arc<Acl>, Vec<Problem>> {
        #[derive(serde::Deserialize)]
        struct T {
            access: Vec<RuleConfig>,
        }
        let t: T = toml::from_str(toml_text).unwrap();
        let mut groups = HashMap::new();
        groups.insert("ci".to_owned(), vec!["robot".to_owned()]);
        Acl::compile(&t.access, groups)
    }

    fn rules(toml_text: &str) -> Arc<Acl> {
        compile(toml_text).unwrap_or_else(|p| panic!("rules refused: {p:?}"))
    }

    fn allows(acl: &Acl, caller: &Caller<'_>, repo: &str, action: Action) -> bool {
        acl.check(caller, Some(repo), action).allowed()
    }

    fn caller<'a>(user: Option<&'a str>, groups: &'a [String], ip: &str) -> Caller<'a> {
        Caller {
            user,
            groups,
            ip: ip.parse().unwrap(),
            credential: user.map(|_| CredentialKind::Password),
        }
    }

    #[test]
    fn credential_condition() {
        let acl = rules(
            r#"
[[access]]
users = ["alice"]
repositories = ["team-a/**"]
credential = "certificate"
actions = ["pull", "push"]

[[access]]
users = ["alice"]
repositories = ["team-a/**"]
actions = ["pull"]
"#,
        );
        let none: Vec<String> = vec![];
        let with = |credential| Caller {
            credential,
            ..caller(Some("alice"), &none, "192.0.2.1")
        };
        let cert = with(Some(CredentialKind::Certificate));
        assert!(allows(&acl, &cert, "team-a/app", Action::Push));
        let password = with(Some(CredentialKind::Password));
        assert!(!allows(&acl, &password, "team-a/app", Action::Push));
        assert!(allows(&acl, &password, "team-a/app", Action::Pull));
        let token = with(Some(CredentialKind::Token));
        assert!(!allows(&acl, &token, "team-a/app", Action::Push));
        assert!(acl
            .explain(&password, Some("team-a/app"), Action::Push)
            .contains("rule 1 skipped: it asks for a certificate and the caller used a password"));
        // a bearer token of the token endpoint: decided when it was issued
        let bearer = with(None);
        assert!(allows(&acl, &bearer, "team-a/app", Action::Push));
        // never anonymous
        let e = compile(
            "[[access]]\nanonymous = true\ncredential = \"password\"\nactions = [\"pull\"]\n",
        )
        .err()
        .unwrap();
        assert_eq!(e[0].key, "access[0].credential");
        let typo = toml::from_str::<RuleConfig>("credential = \"passkey\"\nactions = [\"pull\"]");
        assert!(typo.unwrap_err().to_string().contains("unknown variant"));
        let ok = toml::from_str::<RuleConfig>("credential = \"token\"\nactions = [\"pull\"]");
        assert_eq!(ok.unwrap().credential, Some(CredentialKind::Token));
    }

    /// The rules most tests decide with.
    const RULES: &str = include_str!("testdata/rules.toml");

    #[test]
    fn first_match_decides() {
        let acl = rules(RULES);
        let ci = vec!["ci".to_owned()];
        let none: Vec<String> = vec![];
        let admin = caller(Some("admin"), &none, "192.0.2.1");
        assert!(allows(&acl, &admin, "anything/at/all", Action::Delete));
        let robot = caller(Some("robot"), &ci, "192.0.2.1");
        assert!(allows(&acl, &robot, "team-a/app", Action::Push));
        assert!(!allows(&acl, &robot, "team-a/app", Action::Delete));
        // `*` stays within one component
        assert!(!allows(&acl, &robot, "team-a/app/sub", Action::Pull));
        let ro = caller(Some("readonly"), &none, "192.0.2.1");
        assert!(allows(&acl, &ro, "team-a/app", Action::Pull));
        assert_eq!(
            acl.check(&ro, Some("team-a/app"), Action::Push),
            Decision::Deny { rule: Some(4) }
        );
        let other = caller(Some("mallory"), &none, "192.0.2.1");
        assert_eq!(
            acl.check(&other, Some("team-a/app"), Action::Pull),
            Decision::Deny { rule: Some(7) }
        );
        assert_eq!(
            acl.check(&other, Some("nothing/here"), Action::Pull),
            Decision::Deny { rule: None }
        );
    }

    #[test]
    fn personal_namespaces() {
        let acl = rules(RULES);
        let none: Vec<String> = vec![];
        let alice = caller(Some("alice"), &none, "192.0.2.1");
        assert!(allows(&acl, &alice, "users/alice/app", Action::Push));
        assert!(allows(&acl, &alice, "users/alice/deep/app", Action::Delete));
        assert!(!allows(&acl, &alice, "users/bob/app", Action::Pull));
        // a user name that is not a valid component never matches
        let weird = caller(Some("Al*ce"), &none, "192.0.2.1");
        assert!(!allows(&acl, &weird, "users/al/app", Action::Pull));
        // anonymous callers have no namespace
        let anon = caller(None, &none, "192.0.2.1");
        assert!(!allows(&acl, &anon, "users/alice/app", Action::Pull));
    }

    #[test]
    fn anonymous_and_networks() {
        let acl = rules(RULES);
        let none: Vec<String> = vec![];
        let anon = caller(None, &none, "192.0.2.1");
        assert!(allows(&acl, &anon, "public/tools", Action::Pull));
        assert!(!allows(&acl, &anon, "public/tools", Action::Push));
        assert!(!allows(&acl, &anon, "team-a/app", Action::Pull));
        assert!(acl.allows_anonymous());
        let inside = caller(Some("bob"), &none, "10.1.2.3");
        let outside = caller(Some("bob"), &none, "192.0.2.1");
        assert!(allows(&acl, &inside, "internal/x", Action::Pull));
        assert!(!allows(&acl, &outside, "internal/x", Action::Pull));
    }

    #[test]
    fn no_rules_means_authenticated_may_do_everything() {
        let acl = Acl::compile(&[], HashMap::new()).unwrap();
        let none: Vec<String> = vec![];
        assert!(acl
            .check(&caller(Some("u"), &none, "::1"), Some("a"), Action::Delete)
            .allowed());
        assert!(!acl
            .check(&caller(None, &none, "::1"), Some("a"), Action::Pull)
            .allowed());
        assert!(!acl.allows_anonymous());
    }

    #[test]
    fn user_placeholder_is_one_component() {
        let acl = rules(RULES);
        let none: Vec<String> = vec![];
        // `carol/sub` is a valid repository name but not one component
        let sub = caller(Some("carol/sub"), &none, "192.0.2.1");
        assert!(!allows(&acl, &sub, "users/carol/sub/app", Action::Push));
        let carol = caller(Some("carol"), &none, "192.0.2.1");
        assert!(allows(&acl, &carol, "users/carol/sub/app", Action::Push));
    }

    #[test]
    fn catalog_is_decided_by_rules_without_repositories() {
        let acl = rules(include_str!("testdata/catalog.toml"));
        let none: Vec<String> = vec![];
        let anon = caller(None, &none, "192.0.2.1");
        let alice = caller(Some("alice"), &none, "192.0.2.1");
        // the public rule is about repositories: not about the catalog
        assert_eq!(
            acl.check(&anon, None, Action::Catalog),
            Decision::Deny { rule: None }
        );
        // `*` in a repository rule grants no catalog; the catalog rule does
        assert_eq!(
            acl.check(&alice, None, Action::Catalog),
            Decision::Allow { rule: Some(3) }
        );
        assert!(allows(&acl, &alice, "team/x", Action::Delete));
        let text = acl.explain(&anon, None, Action::Catalog);
        assert!(text.contains("the catalog is registry-wide"), "{text}");
    }

    #[test]
    fn catalog_with_repositories_is_refused() {
        let refused = compile(
            r#"
            [[access]]
            anonymous = true
            repositories = ["public/**"]
            actions = ["pull", "catalog"]
            "#,
        );
        let Err(problems) = refused else {
            panic!("catalog with repositories accepted")
        };
        assert_eq!(problems[0].key, "access[0].actions");
        assert!(problems[0].to_string().contains("registry-wide"));
    }

    #[test]
    fn bad_rules_are_named() {
        let refused = compile(
            r#"
            [[access]]
            actions = ["pull", "fly"]
            [[access]]
            networks = ["10.0.0.0/33"]
            repositories = ["a/[b"]
            actions = ["pull"]
            [[access]]
            anonymous = true
            actions = ["push"]
            "#,
        );
        let Err(problems) = refused else {
            panic!("bad rules accepted")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "access[0].actions",
                "access[1].repositories",
                "access[1].networks",
                "access[2].actions"
            ]
        );
    }

    #[test]
    fn explain_names_the_deciding_rule() {
        let acl = rules(RULES);
        let none: Vec<String> = vec![];
        let text = acl.explain(
            &caller(Some("readonly"), &none, "192.0.2.1"),
            Some("team-a/app"),
            Action::Push,
        );
        assert!(text.contains("rule 1 skipped"), "{text}");
        assert!(
            text.contains("rule 4 matches (grants pull) → denied"),
            "{text}"
        );
        let text = acl.explain(
            &caller(Some("x"), &none, "192.0.2.1"),
            Some("zzz"),
            Action::Pull,
        );
        assert!(
            text.ends_with("no rule matches → denied (default deny)\n"),
            "{text}"
        );
    }

    #[test]
    fn action_sets() {
        let a = Actions::parse(&["pull".into(), "push".into()]).unwrap();
        assert!(a.contains(Action::Pull) && !a.contains(Action::Delete));
        assert_eq!(a.to_string(), "pull,push");
        assert_eq!(Actions::parse(&["*".into()]).unwrap(), Actions::ALL);
        assert_eq!(
            a.intersect(Actions::of(&[Action::Push, Action::Delete]))
                .to_string(),
            "push"
        );
        assert_eq!(Actions::NONE.to_string(), "nothing");
    }
}
