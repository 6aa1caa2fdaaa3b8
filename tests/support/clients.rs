//! skopeo / podman with their state confined to a temp dir.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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
    let mut child = Command::new(program)
        .args(args)
        .env("REGISTRY_AUTH_FILE", &auth)
        .env("TMPDIR", &tmp)
        .env("HOME", state)
        .env("XDG_RUNTIME_DIR", state.join("xdg"))
        .env("XDG_CONFIG_HOME", state.join("config"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input.as_bytes()).unwrap();
    }
    wait_output(
        child,
        Duration::from_secs(240),
        &format!("{program} {args:?}"),
    )
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

    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
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

    /// `containers-storage:` reference of an image in this podman's store.
    pub fn storage_ref(&self, name: &str) -> String {
        format!(
            "containers-storage:[vfs@{}+{}]{name}",
            self.root.display(),
            self.runroot.display()
        )
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
