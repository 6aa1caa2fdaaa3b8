//! The command line: serve, check, user add/remove/list, hash.

mod check;
mod password;
mod token;
mod user;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An authenticating TLS proxy for Docker/OCI registries"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Take over the listening sockets of a running portcullis (zero
        /// downtime upgrade): start the new binary with --upgrade, then send
        /// SIGQUIT to the old process; it hands its sockets over over
        /// `server.upgrade_sock`, finishes its transfers and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Load and validate the whole config, including the files it names;
    /// print every problem as `key: reason`.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Explain the access decision for USER (`-` for anonymous), REPO
        /// (`-` for registry-wide) and ACTION (pull, push, delete, catalog);
        /// exits 0 if allowed, 1 if denied.
        #[arg(long, num_args = 3, value_names = ["USER", "REPO", "ACTION"])]
        explain: Option<Vec<String>>,
        /// Look USER up in the directory ([auth.ldap]): print the DN and
        /// groups found, then try a bind with a prompted password (or one
        /// line of stdin with --password-stdin).
        #[arg(long, value_name = "USER", conflicts_with = "explain")]
        ldap: Option<String>,
        /// With --ldap: read the password from stdin.
        #[arg(long, requires = "ldap")]
        password_stdin: bool,
        /// The client address for --explain.
        #[arg(long, default_value = "127.0.0.1", requires = "explain")]
        from: std::net::IpAddr,
    },
    /// Manage the users of an htpasswd file (bcrypt).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage access tokens and robot accounts ([auth.tokens]).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Print a bcrypt hash of a password, for an htpasswd line.
    Hash {
        #[command(flatten)]
        password: PasswordArgs,
    },
}

/// `--config FILE`, as `serve` and `check` take it.
#[derive(clap::Args)]
struct ConfigArg {
    #[arg(
        long = "config",
        short = 'c',
        env = "PORTCULLIS_CONFIG",
        default_value = "/etc/portcullis/proxy.toml"
    )]
    path: PathBuf,
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user, or change the password of an existing one.
    Add {
        #[arg(long, short)]
        file: PathBuf,
        user: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Remove a user; with --config, also revoke the tokens issued to them.
    Remove {
        /// The htpasswd file (default with --config: auth.htpasswd.path).
        #[arg(long, short, required_unless_present = "config")]
        file: Option<PathBuf>,
        /// The proxy's config: the user's issued tokens (access and
        /// refresh) go on its revocation list (auth.token.revocation_file).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        user: String,
    },
    /// List the users.
    List {
        #[arg(long, short)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Make a token; prints its secret once, as the last word of the output.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// The person the token acts for (never more than their rules).
        #[arg(long, required_unless_present = "robot", conflicts_with = "robot")]
        owner: Option<String>,
        /// A robot account: owned by no person, logs in as robot$NAME.
        #[arg(long)]
        robot: bool,
        /// The token's name (a-z, 0-9, '.', '_', '-').
        #[arg(long)]
        name: String,
        /// PATTERN:ACTIONS, e.g. 'team/**:pull,push', or catalog; repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// A robot's groups, for [[access]] rules; repeatable.
        #[arg(long = "group", requires = "robot")]
        groups: Vec<String>,
        /// Lifetime, e.g. 30d, 12h (default: none, unless max_lifetime).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List the tokens (never their secrets).
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// One token's details.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        name: String,
    },
    /// Remove a token, and revoke what was issued with it: refused from the
    /// proxy's next reload on. --subject or --jti revoke issued tokens
    /// (access and refresh) by subject or by id instead.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The access token's name.
        #[arg(required_unless_present_any = ["subject", "jti"], conflicts_with_all = ["subject", "jti"])]
        name: Option<String>,
        /// Every token issued to this user until now ("log out everywhere").
        #[arg(long, conflicts_with = "jti")]
        subject: Option<String>,
        /// One issued token, by its `jti` (the log's "token issued" line).
        #[arg(long)]
        jti: Option<String>,
        /// Why, kept in the revocation list.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(clap::Args)]
struct PasswordArgs {
    /// bcrypt cost (4-31); each step doubles the work.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
    cost: u32,
    /// Read the password from standard input (one line) instead of a prompt.
    #[arg(long)]
    password_stdin: bool,
}

impl Cli {
    pub fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Serve { config, upgrade } => match crate::server::serve(&config.path, upgrade)
            {
                Ok(()) => Ok(()),
                Err(e) => Err(format!("cannot start: {e}")),
            },
            Command::Check {
                ldap: Some(user),
                config,
                password_stdin,
                ..
            } => return check::ldap(&config.path, &user, password_stdin),
            Command::Check {
                config,
                explain,
                from,
                ..
            } => {
                return match explain {
                    Some(args) => check::explain(&config.path, &args, from),
                    None => check::run(&config.path),
                }
            }
            Command::User { action } => match action {
                UserAction::Add {
                    file,
                    user,
                    password,
                } => user::add(&file, &user, &password),
                UserAction::Remove { file, config, user } => {
                    user::remove(file.as_deref(), config.as_deref(), &user)
                }
                UserAction::List { file } => user::list(&file),
            },
            Command::Token { action } => match action {
                TokenAction::Create {
                    config,
                    owner,
                    robot: _,
                    name,
                    scopes,
                    groups,
                    expires,
                } => token::create(
                    &config.path,
                    &token::NewToken {
                        name: &name,
                        owner: owner.as_deref(),
                        groups: &groups,
                        scopes: &scopes,
                        expires,
                    },
                ),
                TokenAction::List { config } => token::list(&config.path),
                TokenAction::Show { config, name } => token::show(&config.path, &name),
                TokenAction::Revoke {
                    config,
                    name,
                    subject,
                    jti,
                    reason,
                } => match (name, subject, jti) {
                    (Some(n), _, _) => Ok(token::Revoke::Token(n)),
                    (_, Some(s), _) => Ok(token::Revoke::Subject(s)),
                    (_, _, Some(j)) => Ok(token::Revoke::Jti(j)),
                    (None, None, None) => Err("give NAME, --subject or --jti".to_owned()),
                }
                .and_then(|what| token::revoke(&config.path, what, reason)),
            },
            Command::Hash { password } => password::hash(&password).map(|h| println!("{h}")),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::FAILURE
            }
        }
    }
}
