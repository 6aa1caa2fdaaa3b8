//! `portcullis token create|list|show|revoke`: the access tokens of
//! `[auth.tokens]`. Only `create` ever sees a secret, and prints it once,
//! as the last word of its output.

use std::path::Path;
use std::time::Duration;

use crate::auth::authentication::htpasswd::Htpasswd;
use crate::auth::authentication::tokens::file::{self, HashKey, TokenEntry, TokenFile};
use crate::auth::authentication::tokens::{self, scopes::Restriction};
use crate::auth::token::revocation::{RevocationFile, Target};
use crate::config::{AccessTokensConfig, Config};
use crate::observe::audit::{AuditEvent, AuditLog};

/// What `token create` was asked for.
pub struct NewToken<'a> {
    pub name: &'a str,
    pub owner: Option<&'a str>,
    pub groups: &'a [String],
    pub scopes: &'a [String],
    pub expires: Option<Duration>,
}

fn tokens_config(config: &Path) -> Result<(Config, AccessTokensConfig), String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let tokens = cfg
        .auth
        .tokens
        .clone()
        .ok_or_else(|| format!("{}: no [auth.tokens] table (path = …)", config.display()))?;
    Ok((cfg, tokens))
}

fn load(t: &AccessTokensConfig) -> Result<TokenFile, String> {
    let f = TokenFile::load(&t.path).map_err(|e| e.to_string())?;
    tokens::compile(&f).map_err(|e| format!("{}: {e}", t.path.display()))?;
    Ok(f)
}

pub fn create(config: &Path, new: &NewToken<'_>) -> Result<(), String> {
    let (cfg, t) = tokens_config(config)?;
    if !tokens::valid_name(new.name) {
        return Err(format!(
            "invalid token name {:?}: 1-64 of a-z, 0-9, '.', '_' and '-'",
            new.name
        ));
    }
    Restriction::parse(new.scopes)?;
    if let Some(max) = t.max_lifetime {
        match new.expires {
            None => {
                return Err(format!(
                    "auth.tokens.max_lifetime is {}: give --expires",
                    humantime::format_duration(max)
                ))
            }
            Some(e) if e > max => {
                return Err(format!(
                    "--expires {} is longer than auth.tokens.max_lifetime ({})",
                    humantime::format_duration(e),
                    humantime::format_duration(max)
                ))
            }
            Some(_) => {}
        }
    }
    // a person in the htpasswd file is checked here; a directory user
    // when the token is used (this command does not ask the directory)
    if let (Some(owner), Some(h), None) = (new.owner, &cfg.auth.htpasswd, &cfg.auth.ldap) {
        let users = Htpasswd::load(&h.path).map_err(|e| format!("{}: {e}", h.path.display()))?;
        if users.hash_of(owner).is_none() {
            return Err(format!("no user {owner} in {}", h.path.display()));
        }
    }
    let mut f = load(&t)?;
    if f.tokens.iter().any(|e| e.name == new.name) {
        return Err(format!(
            "a token named {} exists: revoke it first",
            new.name
        ));
    }
    let key = HashKey::load_or_create(&t.key_path()).map_err(|e| e.to_string())?;
    let (secret, id) = file::new_secret();
    let entry = TokenEntry {
        name: new.name.to_owned(),
        id,
        owner: new.owner.map(str::to_owned),
        groups: new.groups.to_vec(),
        issuer: None,
        scopes: new.scopes.to_vec(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        expires: new.expires.map(tokens::expiry_after),
        hash: key.hash(&secret),
    };
    let user = entry.user();
    let expires = entry.expires.clone().unwrap_or_else(|| "never".into());
    f.tokens.push(entry.clone());
    tokens::compile(&f)?;
    f.save(&t.path).map_err(|e| e.to_string())?;
    audit_token(&cfg, "token_create", &entry);
    println!(
        "token {} for {user} (scopes {}; expires {expires}); log in as {user} with: {secret}",
        new.name,
        new.scopes.join(" ")
    );
    Ok(())
}

pub fn list(config: &Path) -> Result<(), String> {
    let (_, t) = tokens_config(config)?;
    let f = load(&t)?;
    let used = tokens::read_last_used(&t.last_used_path());
    println!("NAME\tUSER\tSCOPES\tCREATED\tEXPIRES\tLAST USED");
    for e in &f.tokens {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            e.name,
            e.user(),
            e.scopes.join(","),
            e.created,
            e.expires.as_deref().unwrap_or("never"),
            used.get(&e.id).map(String::as_str).unwrap_or("never"),
        );
    }
    Ok(())
}

pub fn show(config: &Path, name: &str) -> Result<(), String> {
    let (_, t) = tokens_config(config)?;
    let f = load(&t)?;
    let e = f
        .tokens
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| format!("no token {name} in {}", t.path.display()))?;
    let used = tokens::read_last_used(&t.last_used_path());
    println!("name: {}", e.name);
    println!("id: {}", e.id);
    println!("user: {}", e.user());
    println!(
        "kind: {}",
        if e.owner.is_some() { "person" } else { "robot" }
    );
    if !e.groups.is_empty() {
        println!("groups: {}", e.groups.join(", "));
    }
    println!("scopes: {}", e.scopes.join(" "));
    println!("created: {}", e.created);
    println!("expires: {}", e.expires.as_deref().unwrap_or("never"));
    println!(
        "last used: {}",
        used.get(&e.id).map(String::as_str).unwrap_or("never")
    );
    Ok(())
}

/// What `token revoke` revokes.
pub enum Revoke {
    /// An access token of `[auth.tokens]` by name, and what it minted.
    Token(String),
    /// Every token issued to a subject until now.
    Subject(String),
    /// One issued token by `jti`.
    Jti(String),
}

pub fn revoke(config: &Path, what: Revoke, reason: Option<String>) -> Result<(), String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let target = match what {
        Revoke::Token(name) => {
            let (_, t) = tokens_config(config)?;
            let mut f = load(&t)?;
            let Some(i) = f.tokens.iter().position(|e| e.name == name) else {
                return Err(format!("no token {name} in {}", t.path.display()));
            };
            let entry = f.tokens.remove(i);
            f.save(&t.path).map_err(|e| e.to_string())?;
            audit_token(&cfg, "token_revoke", &entry);
            eprintln!(
                "revoked token {name}: refused as soon as the proxy reloads {} (server.watch_interval, or SIGHUP)",
                t.path.display()
            );
            if !issues_tokens(&cfg) {
                return Ok(());
            }
            Target::AccessToken(entry.id)
        }
        Revoke::Subject(user) => Target::Subject(user),
        Revoke::Jti(jti) => Target::Jti(jti),
    };
    revoke_issued(&cfg, target, reason)
}

/// Whether the config runs a token endpoint whose tokens a revocation
/// must reach (token mode, or Basic mode with anonymous rules).
pub(super) fn issues_tokens(cfg: &Config) -> bool {
    cfg.auth.mode == crate::config::AuthMode::Token
        || crate::app::compile(cfg).is_ok_and(|c| crate::app::anonymous_needs_tokens(cfg, &c.rules))
}

/// Puts `target` on the config's revocation list of issued tokens.
pub(super) fn revoke_issued(
    cfg: &Config,
    target: Target,
    reason: Option<String>,
) -> Result<(), String> {
    let path = cfg.auth.token.revocation_path();
    let what = match &target {
        Target::AccessToken(id) => format!("the tokens issued with access token {id}"),
        Target::Subject(user) => format!("every token issued to {user}"),
        Target::Jti(jti) => format!("the token with jti {jti}"),
    };
    RevocationFile::revoke(&path, target, cfg.auth.token.longest_lifetime(), reason)
        .map_err(|e| e.to_string())?;
    eprintln!(
        "revoked {what} until now: refused as soon as the proxy reloads {} (server.watch_interval, or SIGHUP)",
        path.display()
    );
    Ok(())
}

/// A `token_create` / `token_revoke` line in the config's audit log (the
/// proxy's own file: lines are appended with one write each).
fn audit_token(cfg: &Config, action: &str, entry: &TokenEntry) {
    let Some(path) = &cfg.log.audit_file else {
        return;
    };
    let user = entry.user();
    let event = AuditEvent::token(action, &user, &entry.name, "cli".into(), None);
    match AuditLog::open(path, cfg.log.audit_max_bytes) {
        Ok(log) => log.write(&event),
        Err(e) => eprintln!(
            "warning: cannot write the audit log {}: {e}",
            path.display()
        ),
    }
}
