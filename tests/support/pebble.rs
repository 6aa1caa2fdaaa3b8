//! A real ACME CA for the tests: `pebble` with `pebble-challtestsrv` as
//! its DNS (every name resolves to 127.0.0.1), and portcullis started
//! with `[tls.acme]` pointing at it.
//!
//! pebble validates on the ports of the proxy under test, so the test
//! picks those ports first ([`AcmePorts`]), then starts pebble, then the
//! proxy. Nonce rejection and authorization reuse stay at pebble's
//! defaults, so the client's retries run for real.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use tempfile::TempDir;

use super::*;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;

/// The proxy's listeners, known before pebble starts.
#[derive(Clone, Copy, Debug)]
pub struct AcmePorts {
    pub tls: u16,
    pub http: u16,
}

impl AcmePorts {
    pub fn new() -> AcmePorts {
        AcmePorts {
            tls: free_port(),
            http: free_port(),
        }
    }
}

pub struct Pebble {
    pub dir: TempDir,
    pub port: u16,
    pub mgmt: u16,
    dns: u16,
    dns_mgmt: u16,
    ca: Ca,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
    log: PathBuf,
}

impl Pebble {
    /// `validity`: lifetime of issued certificates in seconds (pebble's
    /// default is five years).
    pub fn start(ports: AcmePorts, validity: Option<u64>) -> Pebble {
        let dir = temp_dir("portcullis-pebble-");
        let ca = Ca::new("pebble listener test CA");
        let leaf = ca.leaf("pebble");
        fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        fs::write(dir.path().join("cert.pem"), &leaf.cert_pem).unwrap();
        fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
        let port = free_port();
        let mgmt = free_port();
        let mut cfg = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": ports.http,
            "tlsPort": ports.tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(v) = validity {
            cfg["certificateValidityPeriod"] = v.into();
        }
        fs::write(
            dir.path().join("pebble.json"),
            serde_json::json!({ "pebble": cfg }).to_string(),
        )
        .unwrap();
        let log = dir.path().join("pebble.log");
        let mut p = Pebble {
            dir,
            port,
            mgmt,
            dns: free_port(),
            dns_mgmt: free_port(),
            ca,
            pebble: None,
            challtestsrv: None,
            log,
        };
        p.start_dns();
        p.start_again();
        p
    }

    fn start_dns(&mut self) {
        let child = spawn_logged(
            Command::new("/usr/bin/pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{}", self.dns)])
                .args(["-management", &format!("127.0.0.1:{}", self.dns_mgmt)])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""]),
            &self.log,
        );
        self.challtestsrv = Some(child);
        let (port, log) = (self.dns_mgmt, self.log.clone());
        wait_until(
            "pebble-challtestsrv management port",
            WAIT,
            || super::port_open(port),
            || tail(&log, 30),
        );
    }

    /// (Re)starts pebble itself; a restarted pebble has a new root and
    /// has forgotten every account and order.
    pub fn start_again(&mut self) {
        assert!(self.pebble.is_none(), "pebble is running");
        let child = spawn_logged(
            Command::new("/usr/bin/pebble")
                .arg("-config")
                .arg(self.dir.path().join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns)])
                .env("PEBBLE_VA_NOSLEEP", "1")
                // pebble rejects 5 % of valid nonces by default to exercise
                // clients' retries; instant-acme retries a badNonce, but
                // three in a row (seen once under a loaded CI run) fail an
                // issuance the renewal tests count on
                .env("PEBBLE_WFE_NONCEREJECT", "0"),
            &self.log,
        );
        self.pebble = Some(child);
        let (port, mgmt) = (self.port, self.mgmt);
        wait_until(
            "pebble listening",
            WAIT,
            || super::port_open(port) && super::port_open(mgmt),
            || self.log(),
        );
    }

    pub fn stop(&mut self) {
        kill_child(&mut self.pebble);
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA of pebble's own HTTPS listener (tls.acme.ca_file).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn https(&self) -> Client {
        Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// The root that issued certificates chain to (new after a restart).
    pub fn root_pem(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.mgmt);
        let resp = self.https().get(&url).send().expect("GET pebble root");
        assert_eq!(resp.status(), 200, "GET {url}");
        resp.text().unwrap()
    }

    /// Makes challtestsrv answer SERVFAIL for `host`: validation fails.
    pub fn servfail(&self, host: &str) {
        let url = format!("http://127.0.0.1:{}/set-servfail", self.dns_mgmt);
        let resp = Client::new()
            .post(&url)
            .body(serde_json::json!({ "host": host }).to_string())
            .send()
            .expect("POST set-servfail");
        assert!(resp.status().is_success(), "set-servfail: {:?}", resp);
    }

    /// New orders pebble received (each POST to its newOrder URL).
    pub fn orders(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("POST /order-plz")
            .count()
    }

    pub fn log(&self) -> String {
        format!("--- pebble log (tail)\n{}", tail(&self.log, 40))
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        kill_child(&mut self.pebble);
        kill_child(&mut self.challtestsrv);
    }
}

// ---------------------------------------------------------------------------
// portcullis with [tls.acme]
// ---------------------------------------------------------------------------

pub struct AcmeProxyOptions {
    /// Lines added to `[tls.acme]` (domains, challenge, renewal settings).
    pub acme: String,
    /// Also serve a file certificate as the default (for other names).
    pub file_cert: bool,
    /// The state directory; default: one in the proxy's temp dir.
    pub state_dir: Option<PathBuf>,
}

impl AcmeProxyOptions {
    /// These `[tls.acme]` lines, no file certificate, the default state dir.
    pub fn acme(lines: &str) -> AcmeProxyOptions {
        AcmeProxyOptions {
            acme: lines.to_owned(),
            file_cert: false,
            state_dir: None,
        }
    }

    /// Also a file certificate, served for other names.
    pub fn with_file_cert(mut self) -> AcmeProxyOptions {
        self.file_cert = true;
        self
    }

    /// The ACME state in `dir` (shared by replicas).
    pub fn state_dir(mut self, dir: PathBuf) -> AcmeProxyOptions {
        self.state_dir = Some(dir);
        self
    }
}

/// A registry, and pebble (certificates valid `validity` seconds, or its
/// default) with the ports an ACME proxy uses.
pub fn acme_world(validity: Option<u64>) -> (Registry, AcmePorts, Pebble) {
    let reg = Registry::start();
    let ports = AcmePorts::new();
    let pebble = Pebble::start(ports, validity);
    (reg, ports, pebble)
}

pub struct AcmeProxy {
    pub dir: TempDir,
    pub ports: AcmePorts,
    pub state_dir: PathBuf,
    /// The file certificate's CA, when `file_cert`.
    pub file_ca: Ca,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    config: PathBuf,
}

impl AcmeProxy {
    pub fn start(
        reg: &Registry,
        pebble: &Pebble,
        ports: AcmePorts,
        opts: AcmeProxyOptions,
    ) -> AcmeProxy {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-acme-")
            .tempdir()
            .unwrap();
        let file_ca = Ca::new("portcullis test CA");
        let htpasswd = dir.path().join("htpasswd");
        htpasswd_add(&htpasswd, USER, PASS);
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("acme"));
        let files = if opts.file_cert {
            let leaf = file_ca.leaf("portcullis-file-cert");
            fs::write(dir.path().join("cert.pem"), &leaf.cert_pem).unwrap();
            fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
            format!(
                "cert = \"{}\"\nkey = \"{}\"\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            )
        } else {
            String::new()
        };
        let config = format!(
            r#"[server]
listen = "127.0.0.1:{tls}"
http_listen = "127.0.0.1:{http}"
watch_interval = "200ms"
grace_period = "1s"

[upstream]
url = "{upstream}"

[tls]
{files}
[tls.acme]
directory = "{directory}"
ca_file = "{ca_file}"
accept_terms = true
contact = ["ops@registry.test"]
state_dir = "{state}"
renew_jitter = "0s"
{acme}

[auth]
realm = "{REALM}"

[auth.htpasswd]
path = "{htpasswd}"

[metrics]
enabled = false

[log]
level = "info,acme=debug"
"#,
            tls = ports.tls,
            http = ports.http,
            upstream = reg.url(),
            directory = pebble.directory(),
            ca_file = pebble.ca_file().display(),
            state = state_dir.display(),
            acme = opts.acme,
            htpasswd = htpasswd.display(),
        );
        let config_path = dir.path().join("proxy.toml");
        fs::write(&config_path, config).unwrap();
        let mut p = AcmeProxy {
            stdout: dir.path().join("portcullis.stdout"),
            stderr: dir.path().join("portcullis.stderr"),
            dir,
            ports,
            state_dir,
            file_ca,
            child: None,
            config: config_path,
        };
        p.start_again();
        p
    }

    /// Starts the proxy (again) with the same config and state directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "proxy is running");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stdout)
            .unwrap();
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let child = Command::new(bin())
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn portcullis serve");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("portcullis exited early: {st}\n{}", self.logs());
            }
            if served_chain(self.ports.tls, "registry.test").is_ok() {
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("portcullis TLS listener not up within 30s\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        kill_child(&mut self.child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("proxy running").id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Everything the proxy logged so far.
    pub fn log_text(&self) -> String {
        let mut s = fs::read_to_string(&self.stdout).unwrap_or_default();
        s.push_str(&fs::read_to_string(&self.stderr).unwrap_or_default());
        s
    }

    pub fn logs(&self) -> String {
        format!(
            "--- portcullis stdout (tail)\n{}\n--- portcullis stderr (tail)\n{}",
            tail(&self.stdout, 40),
            tail(&self.stderr, 40)
        )
    }

    /// Waits until a new connection with SNI `name` gets a certificate
    /// that chains to `root_pem` (and so is valid for `name`).
    pub fn wait_for_acme_cert(&self, name: &str, root_pem: &str, limit: Duration) -> Vec<u8> {
        wait_for(
            &format!("a certificate from the ACME CA for {name}"),
            limit,
            Duration::from_millis(200),
            || verified_chain(self.ports.tls, name, root_pem).map(|chain| chain[0].to_vec()),
            || self.logs(),
        )
    }

    /// An HTTPS client for the TLS port with `name` resolved to 127.0.0.1,
    /// trusting only `root_pem`.
    pub fn client(&self, name: &str, root_pem: &str) -> Client {
        Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .resolve(
                name,
                format!("127.0.0.1:{}", self.ports.tls).parse().unwrap(),
            )
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    pub fn url(&self, name: &str, path: &str) -> String {
        format!("https://{name}:{}{path}", self.ports.tls)
    }
}

impl Drop for AcmeProxy {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// looking at what the TLS port serves
// ---------------------------------------------------------------------------

type Signed = rustls::DigitallySignedStruct;
type SignatureCheck = Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>;

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// Accepts any certificate: for looking at what is served.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &Signed,
    ) -> SignatureCheck {
        rustls::crypto::verify_tls12_signature(m, c, d, &algorithms())
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &Signed,
    ) -> SignatureCheck {
        rustls::crypto::verify_tls13_signature(m, c, d, &algorithms())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        algorithms().supported_schemes()
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn roots(root_pem: &str) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// A TLS connection (HTTP/1.1 by ALPN) to 127.0.0.1:`port` with SNI `name`.
pub type Conn = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(port: u16, name: &str, config: rustls::ClientConfig) -> Result<Conn, String> {
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), server).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(s)
}

/// The chain served to SNI `name`, unverified.
pub fn served_chain(port: u16, name: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    peer_chain(&connect(port, name, config)?)
}

/// The certificates the server of `conn` presented.
fn peer_chain(conn: &Conn) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = conn.conn.peer_certificates().ok_or("no certificates")?;
    Ok(certs.iter().map(|c| c.clone().into_owned()).collect())
}

/// A connection whose certificate verified against `root_pem` for `name`.
pub fn verified_conn(port: u16, name: &str, root_pem: &str) -> Result<Conn, String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(root_pem))
        .with_no_client_auth();
    connect(port, name, config)
}

pub fn verified_chain(
    port: u16,
    name: &str,
    root_pem: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    peer_chain(&verified_conn(port, name, root_pem)?)
}

/// One `GET path` on an open connection (keep-alive); the status code.
pub fn get_on(conn: &mut Conn, host: &str, path: &str) -> u16 {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n\r\n"
    )
    .unwrap();
    conn.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).expect("response body");
    status
}

/// SAN DNS names and serial of a certificate.
pub fn names_and_serial(der: &[u8]) -> (Vec<String>, String) {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let names = cert
        .subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    (names, cert.raw_serial_as_string())
}
