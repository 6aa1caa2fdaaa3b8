//! `portcullis check`: everything `serve` would load, without serving.

use crate::auth::authentication::Identity;
use crate::auth::authorization::Authorization;
use crate::auth::principal::Principal;
use crate::config::Config;
use crate::registry::route::{Action, RepoName};
use std::path::Path;
use std::process::ExitCode;

pub fn run(path: &Path) -> ExitCode {
    // exactly what `serve` builds, without starting it
    let problems = match Config::load(path) {
        Ok(cfg) => {
            // plus what serve tolerates at start but a checked machine
            // should not have (see `acme::check_ready`)
            let mut p = cfg
                .tls
                .acme
                .as_ref()
                .map(crate::tls::acme::check_ready)
                .unwrap_or_default();
            match crate::app::build(cfg) {
                Ok(app) => print_notes(&app),
                Err(problems) => p.extend(problems),
            }
            p
        }
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

/// What a valid config means for clients that is easy to miss.
fn print_notes(app: &crate::app::App) {
    if app.token_endpoint && app.config.auth.mode == crate::config::AuthMode::Basic {
        println!(
            "note: auth.mode = \"basic\" with anonymous [[access]] rules: requests without \
             credentials are challenged with Bearer and {} serves tokens, so Docker clients \
             can pull anonymously (a Basic challenge stops them); Basic credentials work on \
             every request, and auth.token.key_dir holds the signing key",
            app.config.auth.token.path
        );
    }
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
    let acl =
        match crate::app::compile(&cfg).and_then(|c| crate::app::policy::access(&cfg, c.rules)) {
            Ok(a) => a,
            Err(problems) => {
                println!("{}", crate::config::ConfigError { problems });
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
    // the caller as a login of `user` would make it (without directory
    // groups: `--ldap` shows those)
    let principal = match user {
        Some(u) => Principal::user_of(
            std::sync::Arc::new(Identity {
                user: u.to_owned(),
                credential_stamp: None,
                backend: "check",
                groups: Vec::new(),
                credential: crate::auth::authentication::Credential::Password,
                restriction: None,
            }),
            acl.static_groups(u),
        ),
        None => Principal::Anonymous,
    };
    let authorization = Authorization::new(std::sync::Arc::clone(&acl), &principal, from);
    print!("{}", authorization.explain(repo, action));
    if authorization.permits(repo, action) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `check --ldap USER`: what the directory says about a user.
pub fn ldap(path: &Path, user: &str, password_stdin: bool) -> ExitCode {
    use crate::auth::authentication::ldap::{LdapBackend, LdapVerdict};
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            println!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(ldap_cfg) = &cfg.auth.ldap else {
        println!("auth.ldap: not configured in {}", path.display());
        return ExitCode::FAILURE;
    };
    let backend = match LdapBackend::new(ldap_cfg) {
        Ok(b) => b,
        Err(e) => {
            println!("auth.ldap: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cannot start a runtime");
        return ExitCode::FAILURE;
    };
    let entry = match rt.block_on(backend.find(user)) {
        Ok(Some(e)) => e,
        Ok(None) => {
            println!("{user}: not found (no entry, or several entries, match the user filter)");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            println!("directory error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("dn: {}", entry.dn);
    // the spelling rules, tokens and logs will see
    println!("identity: {}", entry.user);
    println!("groups: {}", entry.groups.join(", "));
    if !entry.in_required_group {
        println!("not in auth.ldap.required_group: logins are refused");
        return ExitCode::FAILURE;
    }
    let args = super::PasswordArgs {
        cost: 4,
        password_stdin,
    };
    let password = match super::password::read_once(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(backend.authenticate(user, &password)) {
        Ok(LdapVerdict::Authenticated { .. }) => {
            println!("bind: ok");
            ExitCode::SUCCESS
        }
        Ok(other) => {
            println!("bind: refused ({other:?})");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("bind: directory error: {e}");
            ExitCode::FAILURE
        }
    }
}
