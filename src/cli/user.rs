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

pub fn remove(file: &Path, user: &str) -> Result<(), String> {
    if htpasswd::remove_user(file, user).map_err(|e| e.to_string())? {
        eprintln!("removed user {user} from {}", file.display());
        Ok(())
    } else {
        Err(format!("no user {user} in {}", file.display()))
    }
}

pub fn list(file: &Path) -> Result<(), String> {
    let h = Htpasswd::load(file).map_err(|e| format!("{}: {e}", file.display()))?;
    for u in h.users() {
        println!("{u}");
    }
    Ok(())
}
