//! proxy.toml for the tests: the options a [`Proxy`] is started with, built
//! from typed parts (users, auth mode, `[[access]]` rules, LDAP) plus raw
//! TOML lines where a test needs a setting of its own, and rendered to text.
//!
//! ```ignore
//! ProxyOptions::basic(&[(USER, PASS), BOB])
//!     .rules(&[Rule::users(&["bob"]).on(&["team-a/**"]).pull(),
//!              Rule::anonymous().on(&["public/**"]).pull()])
//! ```

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
    /// A client certificate and its key (PEM) that the harness's own
    /// clients present: the start-up probe and [`Proxy::client`] (a proxy
    /// with `tls.client_auth.mode = "required"` refuses handshakes
    /// without one).
    pub client_identity: Option<String>,
    /// More names (DNS or IP) of the proxy's server certificate, besides
    /// 127.0.0.1 and localhost.
    pub server_names: Vec<String>,
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
            client_identity: None,
            server_names: Vec::new(),
        }
    }
}

/// The files and port a started proxy's config names.
pub struct ProxyFiles<'a> {
    pub port: u16,
    pub cert: &'a Path,
    pub key: &'a Path,
    pub htpasswd: &'a Path,
}

fn push_line(to: &mut String, line: &str) {
    if !to.is_empty() && !to.ends_with('\n') {
        to.push('\n');
    }
    to.push_str(line);
}

impl ProxyOptions {
    /// Basic mode with these htpasswd users (and no rules yet).
    pub fn basic(users: &[(&str, &str)]) -> ProxyOptions {
        ProxyOptions {
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    /// Token mode (`/token`, keys kept in `key_dir`) with these users.
    pub fn token(users: &[(&str, &str)], key_dir: &Path) -> ProxyOptions {
        Self::token_with(users, key_dir, "")
    }

    /// [`ProxyOptions::token`] with more lines in `[auth.token]`.
    pub fn token_with(users: &[(&str, &str)], key_dir: &Path, token_extra: &str) -> ProxyOptions {
        Self::basic(users)
            .line_in("auth", "mode = \"token\"")
            .toml(&token_toml(key_dir, token_extra))
    }

    /// Appends `[[access]]` rules.
    pub fn rules(self, rules: &[Rule]) -> ProxyOptions {
        self.toml(&rules_toml(rules))
    }

    /// Appends an `[auth.ldap]` table.
    pub fn ldap(self, ldap: &Ldap) -> ProxyOptions {
        self.toml(&ldap.toml())
    }

    /// Appends a `[health]` table: upstream checks every `interval`, down
    /// after `threshold` failures in a row.
    pub fn health(self, interval: &str, threshold: u32) -> ProxyOptions {
        self.toml(&health_toml(interval, threshold))
    }

    /// Appends raw TOML (tables of a test's own) to the config.
    pub fn toml(mut self, raw: &str) -> ProxyOptions {
        push_line(&mut self.extra_toml, raw);
        self
    }

    /// Adds a raw line to the `[server]`, `[upstream]` or `[auth]` table.
    pub fn line_in(mut self, table: &str, line: &str) -> ProxyOptions {
        let lines = match table {
            "server" => &mut self.extra_server,
            "upstream" => &mut self.extra_upstream,
            "auth" => &mut self.extra_auth,
            _ => panic!("no raw lines for [{table}]"),
        };
        push_line(lines, line);
        self
    }

    /// The harness's clients present this certificate (PEM of the
    /// certificate and its key).
    pub fn client_identity(mut self, leaf: &Leaf) -> ProxyOptions {
        self.client_identity = Some(format!("{}{}", leaf.cert_pem, leaf.key_pem));
        self
    }

    /// The TLS listener's host (`[::]` for dual stack).
    pub fn listen_host(mut self, host: &str) -> ProxyOptions {
        self.listen_host = host.to_string();
        self
    }

    /// The proxy.toml text for a proxy on `files.port` with those files.
    pub fn render(&self, files: &ProxyFiles) -> String {
        // a short default grace keeps test teardown quick; tests of the
        // shutdown itself set their own
        let grace = if self.extra_server.contains("grace_period") {
            ""
        } else {
            "grace_period = \"1s\""
        };
        format!(
            r#"[server]
listen = "{listen_host}:{port}"
watch_interval = "{watch}"
{grace}
{extra_server}

[upstream]
url = "{upstream}"
{extra_upstream}

[tls]
cert = "{cert}"
key = "{key}"

[auth]
realm = "{REALM}"
{extra_auth}

[auth.htpasswd]
path = "{htpasswd}"

{metrics}
{token}
[log]
level = "info"
{extra}
"#,
            port = files.port,
            upstream = self.upstream_url.as_deref().expect("upstream URL"),
            watch = self.watch_interval,
            cert = files.cert.display(),
            key = files.key.display(),
            htpasswd = files.htpasswd.display(),
            extra = self.extra_toml,
            // the admin listener's default port would collide between
            // parallel tests: off unless a test configures it
            metrics = if self.extra_toml.contains("[metrics]") {
                ""
            } else {
                "[metrics]\nenabled = false\n"
            },
            // Basic mode with anonymous rules serves tokens too: keep
            // their key beside the config, not in /var/lib/portcullis
            token = if self.extra_toml.contains("[auth.token]") {
                String::new()
            } else {
                let dir = files.htpasswd.parent().expect("htpasswd has a directory");
                format!(
                    "[auth.token]\nkey_dir = \"{}\"\n",
                    dir.join("keys").display()
                )
            },
            extra_server = self.extra_server,
            extra_auth = self.extra_auth,
            extra_upstream = self.extra_upstream,
            listen_host = self.listen_host,
        )
    }
}

/// A TOML string (quoted and escaped).
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML array of strings: `["a", "b"]`.
fn string_array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// One `[[access]]` rule: who (users, groups, anonymous, or anyone logged
/// in), which repositories (none: registry-wide), from which networks, may
/// do what.
#[derive(Clone, Debug, Default)]
pub struct Rule {
    users: Vec<String>,
    groups: Vec<String>,
    anonymous: bool,
    repositories: Vec<String>,
    networks: Vec<String>,
    actions: Vec<String>,
    credential: Option<String>,
    comment: Option<String>,
}

impl Rule {
    /// A rule for these htpasswd or directory users.
    pub fn users(names: &[&str]) -> Rule {
        Rule {
            users: owned(names),
            ..Rule::default()
        }
    }

    /// A rule for members of these directory groups.
    pub fn groups(names: &[&str]) -> Rule {
        Rule {
            groups: owned(names),
            ..Rule::default()
        }
    }

    /// A rule for requests without credentials.
    pub fn anonymous() -> Rule {
        Rule {
            anonymous: true,
            ..Rule::default()
        }
    }

    /// A rule for anyone logged in (e.g. `users/${user}/**`).
    pub fn anyone() -> Rule {
        Rule::default()
    }

    /// The repositories the rule covers.
    pub fn on(mut self, repositories: &[&str]) -> Rule {
        self.repositories = owned(repositories);
        self
    }

    /// The client networks the rule applies to.
    pub fn from(mut self, networks: &[&str]) -> Rule {
        self.networks = owned(networks);
        self
    }

    /// The actions it grants.
    pub fn may(mut self, actions: &[&str]) -> Rule {
        self.actions = owned(actions);
        self
    }

    pub fn pull(self) -> Rule {
        self.may(&["pull"])
    }

    pub fn pull_push(self) -> Rule {
        self.may(&["pull", "push"])
    }

    pub fn all(self) -> Rule {
        self.may(&["*"])
    }

    /// Only for callers who proved who they are this way (`password`,
    /// `token`, `certificate`).
    pub fn credential(mut self, kind: &str) -> Rule {
        self.credential = Some(kind.to_string());
        self
    }

    pub fn comment(mut self, text: &str) -> Rule {
        self.comment = Some(text.to_string());
        self
    }

    /// Whether it is a rule for requests without credentials.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    /// The `[[access]]` table.
    pub fn toml(&self) -> String {
        let mut t = String::from("[[access]]\n");
        let mut line = |key: &str, value: String| t.push_str(&format!("{key} = {value}\n"));
        if !self.users.is_empty() {
            line("users", string_array(&self.users));
        }
        if !self.groups.is_empty() {
            line("groups", string_array(&self.groups));
        }
        if self.anonymous {
            line("anonymous", "true".into());
        }
        if !self.repositories.is_empty() {
            line("repositories", string_array(&self.repositories));
        }
        if !self.networks.is_empty() {
            line("networks", string_array(&self.networks));
        }
        line("actions", string_array(&self.actions));
        if let Some(c) = &self.credential {
            line("credential", quoted(c));
        }
        if let Some(c) = &self.comment {
            line("comment", quoted(c));
        }
        t
    }
}

/// `[[access]]` tables, one blank line apart.
pub fn rules_toml(rules: &[Rule]) -> String {
    let tables: Vec<String> = rules.iter().map(Rule::toml).collect();
    format!("\n{}", tables.join("\n"))
}

/// An `[auth.ldap]` table: search-then-bind with a service account, groups
/// found by a filter.
#[derive(Clone, Debug)]
pub struct Ldap {
    pub urls: Vec<String>,
    pub base_dn: String,
    pub bind_dn: String,
    pub bind_password: String,
    pub group_search_base: String,
    pub group_filter: String,
    pub timeout: String,
    pub connect_timeout: String,
    pub cache_ttl: Option<String>,
}

impl Ldap {
    pub fn timeouts(mut self, timeout: &str, connect_timeout: &str) -> Ldap {
        self.timeout = timeout.to_string();
        self.connect_timeout = connect_timeout.to_string();
        self
    }

    pub fn cache_ttl(mut self, ttl: Option<&str>) -> Ldap {
        self.cache_ttl = ttl.map(str::to_string);
        self
    }

    pub fn toml(&self) -> String {
        let mut t = format!(
            "\n[auth.ldap]\nurls = {}\nbase_dn = {}\nbind_dn = {}\nbind_password = {}\n\
             group_search_base = {}\ngroup_filter = {}\ntimeout = {}\nconnect_timeout = {}\n",
            string_array(&self.urls),
            quoted(&self.base_dn),
            quoted(&self.bind_dn),
            quoted(&self.bind_password),
            quoted(&self.group_search_base),
            quoted(&self.group_filter),
            quoted(&self.timeout),
            quoted(&self.connect_timeout),
        );
        if let Some(ttl) = &self.cache_ttl {
            t.push_str(&format!("cache_ttl = {}\n", quoted(ttl)));
        }
        t
    }
}

/// A `[health]` table (see [`ProxyOptions::health`]).
pub fn health_toml(interval: &str, threshold: u32) -> String {
    format!(
        "[health]\ninterval = {}\nthreshold = {threshold}\n",
        quoted(interval)
    )
}

/// `[auth.token]` with the generated key kept in `key_dir`, plus `extra` lines.
pub fn token_toml(key_dir: &Path, extra: &str) -> String {
    format!(
        "\n[auth.token]\nkey_dir = \"{}\"\n{extra}\n",
        key_dir.display()
    )
}
