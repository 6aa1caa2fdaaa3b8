//! skopeo / podman with their state confined to a temp dir.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use super::*;

/// Runs a client program with its auth file, tmp and config dirs in `state`.
pub fn tool_run(state: &Path, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let auth = state.join("auth.json");
    if !auth.exists() {
        fs::write(&auth, "{}").unwrap();
    }
    let tmp = state.join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    run_bounded(
        Command::new(program)
            .args(args)
            .env("REGISTRY_AUTH_FILE", &auth)
            .env("TMPDIR", &tmp)
            .env("HOME", state)
            .env("XDG_RUNTIME_DIR", state.join("xdg"))
            .env("XDG_CONFIG_HOME", state.join("config")),
        stdin,
        Duration::from_secs(240),
        &format!("{program} {args:?}"),
    )
}

/// How a client's `login` gets the password.
#[derive(Clone, Copy)]
pub enum Password<'a> {
    /// `--password P`
    Arg(&'a str),
    /// `--password-stdin`, with this text on stdin.
    Stdin(&'a str),
}

/// A registry client program (skopeo, podman) with its state in a temp dir.
pub trait Cli {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output;

    /// [`Cli::run`], asserting success (with the proxy's logs on failure);
    /// returns stdout + stderr.
    fn ok(&self, what: &str, args: &[&str], stdin: Option<&str>, proxy: &Proxy) -> String {
        client_ok(what, self.run(args, stdin), proxy)
    }

    /// `login [flags] -u USER --password… HOST`.
    fn login(&self, flags: &[&str], user: &str, password: Password, host: &str) -> Output {
        let mut args = vec!["login"];
        args.extend_from_slice(flags);
        args.extend(["-u", user]);
        let stdin = match password {
            Password::Arg(p) => {
                args.extend(["--password", p]);
                None
            }
            Password::Stdin(text) => {
                args.push("--password-stdin");
                Some(text)
            }
        };
        args.push(host);
        self.run(&args, stdin)
    }

    /// A login with `wrong` as the password fails; then `user`'s password
    /// (on stdin, newline-terminated) logs in.
    fn login_wrong_then_right(
        &self,
        what: &str,
        flags: &[&str],
        (user, pass): (&str, &str),
        wrong: &str,
        host: &str,
        proxy: &Proxy,
    ) {
        let o = self.login(flags, user, Password::Arg(wrong), host);
        assert_failed(&format!("{what} with a wrong password"), &o);
        let o = self.login(flags, user, Password::Stdin(&format!("{pass}\n")), host);
        client_ok(what, o, proxy);
    }
}

/// skopeo with its state (auth file, tmp) in `state`.
pub struct Skopeo<'a> {
    pub state: &'a Path,
}

impl<'a> Skopeo<'a> {
    pub fn in_dir(state: &'a Path) -> Skopeo<'a> {
        Skopeo { state }
    }

    /// `skopeo copy` of `tag` of the OCI layout `src` to `dest`
    /// (`docker://…`) as `creds`, trusting the proxy's CA.
    pub fn push_layout(
        &self,
        proxy: &Proxy,
        creds: &str,
        src: &Path,
        tag: &str,
        dest: &str,
    ) -> String {
        let from = format!("oci:{}:{tag}", src.display());
        self.copy(proxy, "dest", creds, &from, dest)
    }

    /// `skopeo copy` of `from` (`docker://…`) as `creds` into `tag` of a new
    /// OCI layout `out`, trusting the proxy's CA.
    pub fn pull_layout(
        &self,
        proxy: &Proxy,
        creds: &str,
        from: &str,
        out: &Path,
        tag: &str,
    ) -> String {
        let to = format!("oci:{}:{tag}", out.display());
        self.copy(proxy, "src", creds, from, &to)
    }

    /// `skopeo copy --{side}-creds C --{side}-cert-dir D from to`, asserting it worked.
    fn copy(&self, proxy: &Proxy, side: &str, creds: &str, from: &str, to: &str) -> String {
        let cert_dir = proxy.cert_dir();
        let (creds_flag, cert_flag) = (format!("--{side}-creds"), format!("--{side}-cert-dir"));
        let cert_dir = cert_dir.to_str().unwrap();
        let args = ["copy", &creds_flag, creds, &cert_flag, cert_dir, from, to];
        self.ok(&format!("skopeo copy {from} -> {to}"), &args, None, proxy)
    }
}

impl Cli for Skopeo<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        tool_run(self.state, "skopeo", args, stdin)
    }
}

/// Asserts a client run succeeded (with the proxy's logs if not); returns
/// its stdout + stderr.
pub fn client_ok(what: &str, o: Output, proxy: &Proxy) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        out_text(&o),
        proxy.logs()
    );
    both(&o)
}

/// Asserts a run failed.
pub fn assert_failed(what: &str, o: &Output) {
    assert!(!o.status.success(), "{what} succeeded: {}", out_text(o));
}

/// A refusal as the clients print it: the registry error code DENIED, or
/// the bare 403 of a response without a body (a HEAD probing for blobs).
pub fn refused_text(o: &Output) -> bool {
    let t = both(o).to_lowercase();
    t.contains("denied") || t.contains("403 (forbidden)")
}

/// A podman with its own storage (vfs), run root and auth file.
pub struct PodmanCli {
    pub state: TempDir,
    pub root: PathBuf,
    pub runroot: PathBuf,
}

impl Default for PodmanCli {
    fn default() -> Self {
        Self::new()
    }
}

impl PodmanCli {
    pub fn new() -> PodmanCli {
        let state = tempfile::Builder::new()
            .prefix("portcullis-podman-")
            .tempdir()
            .unwrap();
        let root = state.path().join("root");
        let runroot = state.path().join("runroot");
        PodmanCli {
            state,
            root,
            runroot,
        }
    }

    /// `containers-storage:` reference of an image in this podman's store.
    pub fn storage_ref(&self, name: &str) -> String {
        format!(
            "containers-storage:[vfs@{}+{}]{name}",
            self.root.display(),
            self.runroot.display()
        )
    }
}

impl Cli for PodmanCli {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let ptmp = self.state.path().join("libpod-tmp");
        let mut all: Vec<String> = vec![
            "--root".into(),
            self.root.display().to_string(),
            "--runroot".into(),
            self.runroot.display().to_string(),
            "--tmpdir".into(),
            ptmp.display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
            "--events-backend".into(),
            "none".into(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        tool_run(self.state.path(), "podman", &refs, stdin)
    }
}

/// stdout + stderr of a client run.
pub fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
