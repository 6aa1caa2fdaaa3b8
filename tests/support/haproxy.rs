//! A real HAProxy (Debian's `haproxy`) in front of portcullis, in the
//! foreground with its log to a file, on loopback ports of the test's.

use std::process::{Child, Command};

use super::*;

pub struct Haproxy {
    child: Option<Child>,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// HAProxy in `mode` (`http` or `tcp`) with these frontends and
    /// backends, once it listens on every one of `ports`.
    pub fn start(mode: &str, sections: &str, ports: &[u16]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "global\n  log stderr format raw local0 warning\n\
             defaults\n  mode {mode}\n  log global\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             {sections}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let log = dir.path().join("haproxy.log");
        let child = spawn_logged(
            Command::new("/usr/sbin/haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&path),
            &log,
        );
        wait_until(
            "haproxy listening",
            WAIT,
            || ports.iter().all(|p| port_open(*p)),
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        Haproxy {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn logs(&self) -> String {
        tail(&self.log, 40)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}
