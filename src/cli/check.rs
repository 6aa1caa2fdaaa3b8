//! `portcullis check`: everything `serve` would load, without serving.

use crate::auth::htpasswd::Htpasswd;
use crate::config::{Config, Problem};
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
