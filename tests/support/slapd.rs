//! A real OpenLDAP `slapd` on loopback: its own slapd.conf, database and
//! TLS certificate (from a test CA) in a temp dir, the fixtures of
//! `tests/fixtures/ldap/` loaded with `ldapadd`.
//!
//! slapd runs in the foreground with `-d 256` (stats), so its log shows
//! every BIND and SRCH the tests cause. Stopping keeps the database, so
//! `start_again` brings back the same directory on the same ports.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tempfile::TempDir;

use super::*;

pub const BASE_DN: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PW: &str = "admin-secret";
pub const SERVICE_DN: &str = "cn=portcullis,ou=services,dc=example,dc=org";
pub const SERVICE_PW: &str = "service-pw";
/// A directory user (group devs) of the fixture.
pub const ALICE: (&str, &str) = ("alice", "alice-pw");
pub const ALICE_DN: &str = "uid=alice,ou=people,dc=example,dc=org";

#[derive(Debug, Clone, Default)]
pub struct SlapdOptions {
    /// `allow bind_anon_dn`: accept a DN with an empty password as an
    /// unauthenticated (anonymous) bind, as Active Directory and others do.
    /// (`bind_anon_cred` is the other way round: credentials, empty DN.)
    pub allow_unauthenticated_bind: bool,
    /// The ppolicy overlay with a default policy: slapd keeps
    /// `pwdChangedTime` on every password change.
    pub ppolicy: bool,
}

const POLICY_DN: &str = "cn=default,ou=policies,dc=example,dc=org";

pub struct Slapd {
    dir: TempDir,
    pub port: u16,
    pub tls_port: u16,
    child: Option<Child>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ldap")
        .join(name)
}

impl Slapd {
    pub fn start() -> Slapd {
        Self::start_with(SlapdOptions::default())
    }

    pub fn start_with(opts: SlapdOptions) -> Slapd {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        fs::create_dir(d.join("db")).unwrap();
        let ca = Ca::new("portcullis test LDAP CA");
        let leaf = ca.leaf("127.0.0.1");
        fs::write(d.join("ca.pem"), &ca.pem).unwrap();
        fs::write(d.join("cert.pem"), &leaf.cert_pem).unwrap();
        fs::write(d.join("key.pem"), &leaf.key_pem).unwrap();
        let anon = if opts.allow_unauthenticated_bind {
            "allow bind_anon_dn\n"
        } else {
            ""
        };
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             moduleload memberof\n\
             {ppolicy_module}\
             pidfile {d}/slapd.pid\n\
             argsfile {d}/slapd.args\n\
             TLSCACertificateFile {d}/ca.pem\n\
             TLSCertificateFile {d}/cert.pem\n\
             TLSCertificateKeyFile {d}/key.pem\n\
             {anon}\
             database mdb\n\
             maxsize 16777216\n\
             suffix \"{BASE_DN}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PW}\n\
             directory {d}/db\n\
             overlay memberof\n\
             {ppolicy_overlay}",
            d = d.display(),
            ppolicy_module = if opts.ppolicy {
                "moduleload ppolicy\n"
            } else {
                ""
            },
            ppolicy_overlay = if opts.ppolicy {
                format!("overlay ppolicy\nppolicy_default \"{POLICY_DN}\"\n")
            } else {
                String::new()
            },
        );
        fs::write(d.join("slapd.conf"), conf).unwrap();
        let mut s = Slapd {
            dir,
            port: free_port(),
            tls_port: free_port(),
            child: None,
        };
        s.start_again();
        s.ldapadd(&fs::read_to_string(fixture("base.ldif")).unwrap());
        if opts.ppolicy {
            s.ldapadd(&format!(
                "dn: ou=policies,{BASE_DN}\nobjectClass: organizationalUnit\nou: policies\n\n\
                 dn: {POLICY_DN}\nobjectClass: applicationProcess\nobjectClass: pwdPolicy\n\
                 cn: default\npwdAttribute: userPassword\n"
            ));
        }
        s
    }

    /// Sets a user's password as the directory's administrator.
    pub fn set_password(&self, dn: &str, password: &str) {
        self.ldapmodify(&format!(
            "dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: {password}\n"
        ));
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The proxy's `[auth.ldap]` for this directory: search-then-bind as
    /// the service account, groups by `member`; timeouts 2s/1s.
    pub fn ldap_config(&self) -> Ldap {
        Ldap {
            urls: vec![self.url()],
            base_dn: BASE_DN.to_string(),
            bind_dn: SERVICE_DN.to_string(),
            bind_password: SERVICE_PW.to_string(),
            group_search_base: format!("ou=groups,{BASE_DN}"),
            group_filter: "(member={dn})".to_string(),
            timeout: "2s".to_string(),
            connect_timeout: "1s".to_string(),
            cache_ttl: None,
        }
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// BIND requests slapd logged for `dn` so far (one `method=` line
    /// each; the `mech=` line after a success is not counted).
    pub fn binds_as(&self, dn: &str) -> usize {
        let needle = format!("BIND dn=\"{dn}\" method=");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills slapd (SIGKILL: its connections drop at once).
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts slapd (again) on the same ports and database.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "slapd is already running");
        let urls = format!("{}/ {}/", self.url(), self.ldaps_url());
        let child = spawn_logged(
            Command::new("/usr/sbin/slapd")
                .arg("-f")
                .arg(self.dir.path().join("slapd.conf"))
                .args(["-h", &urls, "-d", "256"]),
            &self.log_path(),
        );
        self.child = Some(child);
        let (port, tls_port) = (self.port, self.tls_port);
        wait_until(
            "slapd listening",
            WAIT,
            || port_open(port) && port_open(tls_port),
            || tail(&self.log_path(), 30),
        );
    }

    /// Freezes slapd (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
        // the signal is delivered asynchronously: wait until the kernel
        // reports the process stopped (state T), so nothing slips through
        let pid = self.child.as_ref().expect("slapd running").id();
        let stopped = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('T'))
                })
                .unwrap_or(false)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !stopped() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(stopped(), "slapd {pid} did not stop");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("slapd running").id();
        let o = Command::new("kill")
            .args([sig, &pid.to_string()])
            .output()
            .expect("run kill");
        assert!(o.status.success(), "kill {sig}: {}", out_text(&o));
    }

    pub fn ldapadd(&self, ldif: &str) {
        self.ldap_tool("ldapadd", ldif);
    }

    pub fn ldapmodify(&self, ldif: &str) {
        self.ldap_tool("ldapmodify", ldif);
    }

    fn ldap_tool(&self, tool: &str, ldif: &str) {
        let path = self.dir.path().join("input.ldif");
        fs::write(&path, ldif).unwrap();
        let child = Command::new(tool)
            .args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PW,
                "-f",
            ])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
        let o = wait_output(child, WAIT, tool);
        assert!(
            o.status.success(),
            "{tool} failed: {}\n{}",
            out_text(&o),
            tail(&self.log_path(), 20)
        );
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // a paused slapd ignores nothing but SIGKILL; continue it anyway
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .output();
        }
        kill_child(&mut self.child);
    }
}
