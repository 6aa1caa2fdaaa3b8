//! A real `redis-server` (Debian) on a loopback port, no persistence.

use std::process::{Child, Command};

use super::*;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("redis.log");
        let mut r = RedisServer {
            child: None,
            port,
            log,
            _dir: dir,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts it (again) on the same port, empty.
    pub fn restart(&mut self) {
        kill_child(&mut self.child);
        let child = spawn_logged(
            Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"]),
            &self.log,
        );
        self.child = Some(child);
        let port = self.port;
        wait_until(
            "redis-server listening",
            WAIT,
            || port_open(port),
            || tail(&self.log, 20),
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}
