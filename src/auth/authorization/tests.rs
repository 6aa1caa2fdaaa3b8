use super::*;
use crate::auth::authentication::Identity;
use crate::auth::refusal::{Challenge, Mode};
use crate::auth::token::scope::parse_scope;
use crate::config::RuleConfig;
use std::collections::HashMap;

fn acl() -> Arc<Acl> {
    let rules = vec![
        RuleConfig {
            users: Some(vec!["alice".into()]),
            repositories: Some(vec!["team/*".into()]),
            actions: vec!["pull".into(), "push".into()],
            ..Default::default()
        },
        RuleConfig {
            users: Some(vec!["admin".into()]),
            actions: vec!["*".into()],
            ..Default::default()
        },
        RuleConfig {
            anonymous: true,
            repositories: Some(vec!["public/**".into()]),
            actions: vec!["pull".into()],
            ..Default::default()
        },
    ];
    Acl::compile(&rules, HashMap::new()).unwrap()
}

fn user(name: &str) -> Principal {
    let identity = Identity {
        credential_stamp: None,
        user: name.into(),
        backend: "htpasswd",
        groups: Vec::new(),
        credential: crate::auth::authentication::Credential::Password,
        restriction: None,
    };
    Principal::user_of(Arc::new(identity), &[])
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn check(p: &Principal, needs: &[(Option<&RepoName>, Action)]) -> Result<(), Refusal> {
    Authorization::new(acl(), p, IP).check(needs)
}

fn grant(p: &Principal, list: &[&str]) -> Vec<Access> {
    let scopes: Vec<Scope> = list.iter().map(|s| parse_scope(s).unwrap()).collect();
    Authorization::new(acl(), p, IP).grant(&scopes)
}

#[test]
fn base_needs_credentials() {
    let e = check(&Principal::Anonymous, &[]).unwrap_err();
    assert_eq!(e.error().status, 401);
    assert_eq!(e.challenge(Mode::Basic), Some(Challenge::Basic));
    assert!(check(&user("bob"), &[]).is_ok());
}

#[test]
fn anonymous_pull_but_push_asks_for_login() {
    let r = repo("public/tools");
    assert!(check(&Principal::Anonymous, &[(Some(&r), Action::Pull)]).is_ok());
    let e = check(&Principal::Anonymous, &[(Some(&r), Action::Push)]).unwrap_err();
    assert_eq!(e.error().status, 401);
    assert_eq!(
        e.challenge(Mode::Token),
        Some(Challenge::Bearer {
            scope: Some("repository:public/tools:push".into()),
            error: None
        })
    );
}

#[test]
fn authenticated_but_not_allowed_is_denied() {
    let r = repo("private/x");
    let e = check(&user("bob"), &[(Some(&r), Action::Pull)]).unwrap_err();
    assert_eq!(
        e,
        Refusal::Denied {
            scope: "repository:private/x:pull".into()
        }
    );
    assert_eq!(e.challenge(Mode::Basic), None);
    assert!(check(&user("admin"), &[(Some(&r), Action::Delete)]).is_ok());
}

#[test]
fn mount_needs_both_repositories() {
    let (dst, src) = (repo("public/x"), repo("private/y"));
    // bob may pull public/x but push nothing
    let needs = [(Some(&dst), Action::Push), (Some(&src), Action::Pull)];
    assert_eq!(
        check(&user("bob"), &needs),
        Err(Refusal::Denied {
            scope: "repository:public/x:push".into()
        })
    );
}

#[test]
fn partial_grants_are_the_intersection() {
    let g = grant(&user("alice"), &["repository:team/app:pull,push,delete"]);
    assert_eq!(g[0].actions, ["pull", "push"]);
    let g = grant(&user("alice"), &["repository:other/app:pull"]);
    assert!(g[0].actions.is_empty());
    let g = grant(&user("alice"), &["repository:team/app:*"]);
    assert_eq!(g[0].actions, ["pull", "push"]);
}

#[test]
fn catalog_scope_needs_the_catalog_action() {
    let g = grant(&user("admin"), &["registry:catalog:*"]);
    assert_eq!(g[0].actions, ["*"]);
    let g = grant(&user("alice"), &["registry:catalog:*"]);
    assert!(g[0].actions.is_empty());
}

#[test]
fn anonymous_gets_only_anonymous_grants() {
    let g = grant(
        &Principal::Anonymous,
        &["repository:public/x:pull,push", "repository:team/app:pull"],
    );
    assert_eq!(g[0].actions, ["pull"]);
    assert!(g[1].actions.is_empty());
}

#[test]
fn invalid_names_and_types_get_nothing() {
    let g = grant(&user("admin"), &["repository:UPPER:pull", "thing:x:pull"]);
    assert!(g.iter().all(|a| a.actions.is_empty()));
}
