//! `portcullis check`: everything `serve` would load, without serving.

use crate::auth::acl::Caller;
use crate::auth::htpasswd::Htpasswd;
use crate::config::{Config, Problem};
use crate::registry::route::{Action, RepoName};
use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path) -> ExitCode {
    let problems = match Config::load(path) {
        Ok(cfg) => deep_check(&cfg),
        Err(e) => e.problems,
    };
    if problems.is_empty() {
        println!("{}: OK", path.display());
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        println!("{p}");
    }
    eprintln!("{}: {} problem(s)", path.display(), problems.len());
    ExitCode::FAILURE
}

/// Problems in the files and secrets a valid config refers to.
pub fn deep_check(cfg: &Config) -> Vec<Problem> {
    let mut p = Vec::new();
    if let Err(e) = crate::tls::check(&cfg.tls) {
        p.push(Problem::new("tls", e.to_string()));
    }
    if let Some(h) = &cfg.auth.htpasswd {
        if let Err(e) = Htpasswd::load(&h.path) {
            p.push(Problem::new(
                "auth.htpasswd.path",
                format!("{}: {e}", h.path.display()),
            ));
        }
    }
    if let Err(e) = crate::server::build_acl(cfg) {
        p.extend(e.problems);
    }
    if cfg.auth.mode == crate::config::AuthMode::Token {
        if let Err(e) = crate::server::build_issuer(&cfg.auth.token) {
            p.push(Problem::new("auth.token", e.to_string()));
        }
    }
    if let Some(secret) = &cfg.upstream.password {
        if let Err(e) = secret.resolve() {
            p.push(Problem::new("upstream.password", e.to_string()));
        }
    }
    if let Some(ca) = &cfg.upstream.ca_file {
        if let Err(e) = std::fs::metadata(ca) {
            p.push(Problem::new(
                "upstream.ca_file",
                format!("{}: {e}", ca.display()),
            ));
        }
    }
    if let Err(e) = crate::upstream::Upstream::new(&cfg.upstream) {
        p.push(Problem::new("upstream.url", e.to_string()));
    }
    p
}

/// `check --explain USER REPO ACTION`: which rule decides, and why.
pub fn explain(path: &Path, args: &[String], from: std::net::IpAddr) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            println!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let acl = match crate::server::build_acl(&cfg) {
        Ok(a) => a,
        Err(e) => {
            println!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let [user, repo, action] = args else {
        eprintln!("--explain takes USER REPO ACTION");
        return ExitCode::FAILURE;
    };
    let action = match action.as_str() {
        "pull" => Action::Pull,
        "push" => Action::Push,
        "delete" => Action::Delete,
        "catalog" => Action::Catalog,
        other => {
            eprintln!("unknown action {other:?}: pull, push, delete or catalog");
            return ExitCode::FAILURE;
        }
    };
    let user = (user != "-").then_some(user.as_str());
    let repo = (repo != "-" && action != Action::Catalog).then_some(repo.as_str());
    if let Some(r) = repo {
        if RepoName::parse(r).is_err() {
            eprintln!("{r:?} is not a valid repository name");
            return ExitCode::FAILURE;
        }
    }
    let groups = user
        .map(|u| acl.static_groups(u).to_vec())
        .unwrap_or_default();
    let caller = Caller {
        user,
        groups: &groups,
        ip: from,
    };
    print!("{}", acl.explain(&caller, repo, action));
    if acl.check(&caller, repo, action).allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
