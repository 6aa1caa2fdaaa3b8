//! The docker-registry behind the proxy, and a v2 API client that pushes
//! to it directly or through the proxy.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use tempfile::TempDir;

use super::*;

pub struct Registry {
    pub dir: TempDir,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// The statuses of `GET /v2/` that mean "ready".
    ready: Vec<u16>,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(None, "", &[200])
    }

    /// A registry on `port` (or a free one) with `extra_yaml` appended to its
    /// config (top-level keys such as `auth:`). Ready once `GET /v2/`
    /// answers one of `ready` (a registry with its own auth answers 401).
    pub fn start_with(port: Option<u16>, extra_yaml: &str, ready: &[u16]) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-reg-")
            .tempdir()
            .unwrap();
        let port = port.unwrap_or_else(free_port);
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: portcullis-test-secret\n{extra_yaml}\n",
            root = dir.path().join("data").display()
        );
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = dir.path().join("registry.log");
        let mut r = Registry {
            dir,
            port,
            child: None,
            log,
            ready: ready.to_vec(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = spawn_logged(
            Command::new("/usr/bin/docker-registry")
                .arg("serve")
                .arg(self.dir.path().join("config.yml")),
            &self.log,
        );
        self.child = Some(child);
        let url = format!("{}/v2/", self.url());
        let client = Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let ready = &self.ready;
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                panic!("docker-registry exited: {st}\n{}", tail(&self.log, 40));
            }
            if matches!(client.get(&url).send(), Ok(r) if ready.contains(&r.status().as_u16())) {
                return;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "docker-registry did not answer GET {url} with {ready:?} within {WAIT:?}\n{}",
                    tail(&self.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the registry and waits until its port is closed.
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
        let port = self.port;
        wait_until(
            "registry port closed",
            WAIT,
            || !port_open(port),
            || tail(&self.log, 20),
        );
    }

    /// Starts the registry again on the same port with the same storage.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "registry still running");
        self.spawn();
    }

    /// Everything the registry logged so far (it logs each request it served).
    pub fn registry_log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The request URIs the registry logged, from both of its log forms: the
    /// app log (`http.request.uri=...`, only for routed requests) and the
    /// access log (`"GET /uri HTTP/1.1"`, for every request, routed or not).
    pub fn logged_uris(&self) -> Vec<String> {
        let mut uris = Vec::new();
        for l in self.registry_log().lines() {
            if let Some(i) = l.find("http.request.uri=") {
                let rest = &l[i + "http.request.uri=".len()..];
                let v = if let Some(r) = rest.strip_prefix('"') {
                    r.split('"').next().unwrap_or("")
                } else {
                    rest.split(' ').next().unwrap_or("")
                };
                uris.push(v.to_string());
            } else if let Some(i) = l.find("] \"") {
                // 127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "agent"
                let req = l[i + 3..].split('"').next().unwrap_or("");
                let mut parts = req.split(' ');
                if let (Some(_method), Some(uri)) = (parts.next(), parts.next()) {
                    uris.push(uri.to_string());
                }
            }
        }
        uris
    }

    /// A plain HTTP client talking to the registry directly (bypassing the proxy).
    pub fn direct(&self) -> Client {
        Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// Asserts the registry logged no request URI containing `part`.
    pub fn assert_never_asked_for(&self, part: &str, what: &str) {
        let uris = self.logged_uris();
        assert!(
            !uris.iter().any(|u| u.contains(part)),
            "{what} reached the registry: {uris:?}"
        );
    }

    /// The v2 API of the registry itself, without credentials.
    pub fn v2(&self) -> V2<'static> {
        V2 {
            client: self.direct(),
            base: self.url(),
            auth: Auth::None,
            logs_of: None,
        }
    }

    /// A request straight to the registry (`path` below its URL), with a
    /// Bearer token if given.
    pub fn send_direct(&self, method: Method, path: &str, bearer: Option<&str>) -> Response {
        let mut req = self
            .direct()
            .request(method, format!("{}{path}", self.url()));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        req.send().unwrap()
    }

    /// The manifest the registry itself holds as `repo:tag` (OCI or Docker
    /// schema 2, as it was pushed); fails the test if there is none.
    pub fn stored_manifest(&self, repo: &str, tag: &str) -> serde_json::Value {
        let r = self
            .direct()
            .get(format!("{}/v2/{repo}/manifests/{tag}", self.url()))
            .header(
                "accept",
                "application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "{repo}:{tag}: manifest not in the registry"
        );
        r.json().unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// v2 API pushes, straight to a registry or through the proxy
// ---------------------------------------------------------------------------

/// The credentials a [`V2`] client sends.
#[derive(Clone)]
pub enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

/// A client of the registry v2 API at `base`: the registry itself
/// ([`Registry::v2`]) or the proxy ([`Proxy::v2`]).
pub struct V2<'a> {
    pub client: Client,
    pub base: String,
    pub auth: Auth,
    /// The proxy whose logs to show when a push fails.
    pub logs_of: Option<&'a Proxy>,
}

impl V2<'_> {
    /// A request to `location` (a path or an absolute URL) with the credentials.
    pub fn request(&self, method: Method, location: &str) -> RequestBuilder {
        let url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        };
        let req = self.client.request(method, url);
        match &self.auth {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p)),
            Auth::Bearer(t) => req.bearer_auth(t),
        }
    }

    /// `PUT` of `body` as `content_type`.
    pub fn put(&self, location: &str, content_type: &str, body: &[u8]) -> Response {
        self.request(Method::PUT, location)
            .header("content-type", content_type)
            .body(body.to_vec())
            .send()
            .unwrap()
    }

    fn diag(&self) -> String {
        self.logs_of.map(Proxy::logs).unwrap_or_default()
    }

    /// Monolithic upload (POST, then PUT with the body and ?digest=): the
    /// digest, or the status and answer of the step that was refused.
    pub fn try_blob(&self, repo: &str, data: &[u8]) -> Result<String, (u16, String)> {
        let digest = sha256_digest(data);
        let r = self
            .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .unwrap();
        if r.status() != 202 {
            let st = r.status().as_u16();
            let c = header_of(&r, "www-authenticate").unwrap_or_default();
            return Err((st, format!("POST: {c} {}", r.text().unwrap_or_default())));
        }
        let loc = header_of(&r, "location").expect("upload Location");
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={digest}");
        let r = self.put(&put, "application/octet-stream", data);
        match r.status().as_u16() {
            201 => Ok(digest),
            st => Err((st, format!("PUT: {}", r.text().unwrap_or_default()))),
        }
    }

    /// [`V2::try_blob`], asserting it worked.
    pub fn blob(&self, repo: &str, data: &[u8]) -> String {
        self.try_blob(repo, data).unwrap_or_else(|(st, text)| {
            panic!("blob upload to {repo}: {st} {text}\n{}", self.diag())
        })
    }

    /// Pushes `config` and one `layer`, then their OCI manifest as `tag`;
    /// returns (manifest bytes, manifest digest).
    pub fn image(&self, repo: &str, tag: &str, config: &[u8], layer: &[u8]) -> (Vec<u8>, String) {
        let cfg_digest = self.blob(repo, config);
        let layer_digest = self.blob(repo, layer);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
        }))
        .unwrap();
        let path = format!("/v2/{repo}/manifests/{tag}");
        let r = self.put(
            &path,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        );
        assert_eq!(
            r.status(),
            201,
            "PUT manifest {repo}:{tag}: {:?}\n{}",
            r.text(),
            self.diag()
        );
        let digest = sha256_digest(&manifest);
        (manifest, digest)
    }
}

/// Pushes a blob straight to the registry (POST, then PUT ?digest=).
pub fn direct_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    reg.v2().blob(repo, data)
}

/// Pushes a small image (config + one layer) straight to the registry,
/// bypassing the proxy. Returns the manifest digest.
pub fn push_image_direct(reg: &Registry, repo: &str, tag: &str) -> String {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":[]}},"repo":"{repo}","tag":"{tag}"}}"#
    );
    let layer = pseudo_random(2048, repo.len() as u64 * 131 + tag.len() as u64);
    reg.v2().image(repo, tag, config.as_bytes(), &layer).1
}
