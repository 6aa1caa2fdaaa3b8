//! `portcullis user add|remove|list`: edits htpasswd files atomically.

use super::{password, PasswordArgs};
use crate::auth::authentication::htpasswd::{self, Htpasswd};
use std::path::Path;

pub fn add(file: &Path, user: &str, args: &PasswordArgs) -> Result<(), String> {
    if user.is_empty()
        || user.contains(':')
        || user.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("invalid user name {user:?}: no ':' or spaces"));
    }
    let hash = password::hash(args)?;
    let existed = Htpasswd::load(file)
        .map(|h| h.hash_of(user).is_some())
        .unwrap_or(false);
    htpasswd::set_user(file, user, &hash).map_err(|e| e.to_string())?;
    eprintln!(
        "{} user {user} in {}",
        if existed { "updated" } else { "added" },
        file.display()
    );
    Ok(())
}

/// Removes `user` from the htpasswd file; with the proxy's config, the
/// tokens already issued to them are revoked too (their refresh tokens
/// die with the entry anyway; their access tokens would live until `exp`).
pub fn remove(file: Option<&Path>, config: Option<&Path>, user: &str) -> Result<(), String> {
    let cfg = config
        .map(|c| crate::config::Config::load(c).map_err(|e| e.to_string()))
        .transpose()?;
    let file = match (file, &cfg) {
        (Some(f), _) => f.to_owned(),
        (None, Some(cfg)) => match &cfg.auth.htpasswd {
            Some(h) => h.path.clone(),
            None => return Err("the config has no [auth.htpasswd]: give --file".to_owned()),
        },
        (None, None) => return Err("give --file or --config".to_owned()),
    };
    if !htpasswd::remove_user(&file, user).map_err(|e| e.to_string())? {
        return Err(format!("no user {user} in {}", file.display()));
    }
    eprintln!("removed user {user} from {}", file.display());
    match cfg {
        Some(cfg) if super::token::issues_tokens(&cfg) => super::token::revoke_issued(
            &cfg,
            crate::auth::token::revocation::Target::Subject(user.to_owned()),
            Some("user removed".to_owned()),
        ),
        _ => Ok(()),
    }
}

pub fn list(file: &Path) -> Result<(), String> {
    let h = Htpasswd::load(file).map_err(|e| format!("{}: {e}", file.display()))?;
    for u in h.users() {
        println!("{u}");
    }
    Ok(())
}
