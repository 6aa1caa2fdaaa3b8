//! proxy.toml for the tests: the options a [`Proxy`] is started with.

use std::path::Path;

use super::*;

#[derive(Clone)]
pub struct ProxyOptions {
    pub users: Vec<(String, String)>,
    /// Upstream URL; defaults to the registry's.
    pub upstream_url: Option<String>,
    /// Put cert/key in a certbot layout (live/ symlinks into archive/).
    pub certbot_layout: bool,
    pub watch_interval: String,
    /// Raw TOML lines added to the `[server]` table.
    pub extra_server: String,
    /// Raw TOML appended to the generated config.
    pub extra_toml: String,
    /// Raw TOML lines added to the `[auth]` table (e.g. `mode = "token"`).
    pub extra_auth: String,
    /// Raw TOML lines added to the `[upstream]` table.
    pub extra_upstream: String,
    /// The TLS listener's address without the port (`[::]` for a
    /// dual-stack listener); default `127.0.0.1`.
    pub listen_host: String,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            users: vec![(USER.to_string(), PASS.to_string())],
            upstream_url: None,
            certbot_layout: false,
            watch_interval: "200ms".to_string(),
            extra_server: String::new(),
            extra_toml: String::new(),
            extra_auth: String::new(),
            extra_upstream: String::new(),
            listen_host: "127.0.0.1".to_string(),
        }
    }
}

/// `[auth.token]` with the generated key kept in `key_dir`, plus `extra` lines.
pub fn token_toml(key_dir: &Path, extra: &str) -> String {
    format!(
        "\n[auth.token]\nkey_dir = \"{}\"\n{extra}\n",
        key_dir.display()
    )
}

/// Options for a token-mode proxy: `users`, `[[access]]` rules and more TOML.
pub fn token_options(
    users: &[(&str, &str)],
    key_dir: &Path,
    token_extra: &str,
    rules: &str,
) -> ProxyOptions {
    ProxyOptions {
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect(),
        extra_auth: "mode = \"token\"".into(),
        extra_toml: format!("{}\n{rules}", token_toml(key_dir, token_extra)),
        ..Default::default()
    }
}

/// Options for a Basic-mode proxy: `users` and `[[access]]` rules.
pub fn basic_options(users: &[(&str, &str)], rules: &str) -> ProxyOptions {
    ProxyOptions {
        users: users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect(),
        extra_toml: rules.to_string(),
        ..Default::default()
    }
}
