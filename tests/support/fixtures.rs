//! Test data: users and passwords, htpasswd entries, certificates, blob and
//! image contents (OCI layouts for skopeo/podman).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use sha2::{Digest, Sha256};

use super::*;

pub const USER: &str = "alice";
pub const PASS: &str = "alice-S3cret:with-colon";
pub const REALM: &str = "Docker Registry Realm";
/// A second user (read-only in most rule sets); also in the LDAP fixture.
pub const BOB: (&str, &str) = ("bob", "bob-pw");
pub const CAROL: (&str, &str) = ("carol", "carol-pw");
pub const ADMIN: (&str, &str) = ("admin", "admin-pw");
pub const ROBOT: (&str, &str) = ("robot", "robot-pw");

/// The team-a rule set: alice pulls and pushes team-a and public, bob only
/// pulls team-a, whoever is logged in may do `personal` in
/// `users/${user}/**`, anyone may pull public.
pub fn team_a_rules(personal: &[&str]) -> Vec<Rule> {
    vec![
        Rule::users(&["alice"])
            .on(&["team-a/**", "public/**"])
            .pull_push()
            .comment("alice works on team-a"),
        Rule::users(&["bob"])
            .on(&["team-a/**"])
            .pull()
            .comment("bob reads team-a"),
        Rule::anyone()
            .on(&["users/${user}/**"])
            .may(personal)
            .comment("personal namespaces"),
        Rule::anonymous()
            .on(&["public/**"])
            .pull()
            .comment("public images for everyone"),
    ]
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift64*), for blob contents.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

// ---------------------------------------------------------------------------
// certificates
// ---------------------------------------------------------------------------

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub pem: String,
}

#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    /// A server certificate for 127.0.0.1 and localhost signed by this CA.
    pub fn leaf(&self, common_name: &str) -> Leaf {
        self.leaf_for(common_name, &["127.0.0.1", "localhost"])
    }

    /// A server certificate for these names (IP addresses become IP
    /// subjectAltNames) signed by this CA.
    pub fn leaf_for(&self, common_name: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// What a client certificate of [`Ca::client_cert_with`] says.
#[derive(Clone, Debug)]
pub struct ClientSpec<'a> {
    pub common_name: &'a str,
    pub organizational_units: &'a [&'a str],
    pub organizations: &'a [&'a str],
    /// URI subjectAltNames (a SPIFFE ID).
    pub uris: &'a [&'a str],
    pub serial: u64,
    /// Valid 2020-2021 only.
    pub expired: bool,
}

impl<'a> ClientSpec<'a> {
    pub fn new(common_name: &'a str) -> ClientSpec<'a> {
        ClientSpec {
            common_name,
            organizational_units: &[],
            organizations: &[],
            uris: &[],
            serial: 1,
            expired: false,
        }
    }
}

impl Ca {
    /// A client certificate (clientAuth) for `common_name`.
    pub fn client_cert(&self, common_name: &str) -> Leaf {
        self.client_cert_with(&ClientSpec::new(common_name))
    }

    pub fn client_cert_with(&self, spec: &ClientSpec) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let dn = &mut params.distinguished_name;
        dn.push(DnType::CommonName, spec.common_name);
        for o in spec.organizations {
            dn.push(DnType::OrganizationName, *o);
        }
        for ou in spec.organizational_units {
            dn.push(DnType::OrganizationalUnitName, *ou);
        }
        params.subject_alt_names = spec
            .uris
            .iter()
            .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
            .collect();
        params.serial_number = Some(rcgen::SerialNumber::from(spec.serial));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        if spec.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A CRL (PEM) of this CA revoking the certificates of these serials.
    pub fn crl(&self, revoked: &[u64]) -> String {
        rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: rcgen::SerialNumber::from(revoked.len() as u64 + 1),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: rcgen::date_time_ymd(2020, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.cert, &self.key)
        .unwrap()
        .pem()
        .unwrap()
    }
}

// ---------------------------------------------------------------------------
// htpasswd
// ---------------------------------------------------------------------------

/// Adds (or replaces) a bcrypt entry with Apache's `htpasswd -B -C 5`.
pub fn htpasswd_add(file: &Path, user: &str, pass: &str) {
    let mut cmd = Command::new("htpasswd");
    if !file.exists() {
        cmd.arg("-c");
    }
    let o = cmd
        .args(["-B", "-C", "5", "-b"])
        .arg(file)
        .arg(user)
        .arg(pass)
        .output()
        .expect("run htpasswd");
    assert!(o.status.success(), "htpasswd -B failed: {}", out_text(&o));
}

/// An htpasswd line (`user:hash`) produced by `htpasswd -n` with the given flags.
pub fn htpasswd_line(flags: &[&str], user: &str, pass: &str) -> String {
    let o = Command::new("htpasswd")
        .arg("-n")
        .args(flags)
        .arg("-b")
        .arg(user)
        .arg(pass)
        .output()
        .unwrap();
    assert!(o.status.success(), "htpasswd -n failed: {}", out_text(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// (AES-CTR of zeros), for streaming large bodies without holding them.
pub fn stream_generator(size: u64) -> String {
    format!(
        // openssl dies of SIGPIPE when head has enough: not an error under pipefail
        "{{ openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 0f0e0d0c0b0a09080706050403020100 -in /dev/zero 2>/dev/null || true; }} | head -c {size}"
    )
}

/// `sha256:…` of what a shell command prints.
pub fn digest_of_stream(cmd: &str) -> String {
    let o = bash(&format!("{cmd} | openssl dgst -sha256 -r"));
    assert!(o.status.success(), "digest pipeline: {}", out_text(&o));
    let hex = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    format!("sha256:{hex}")
}

// ---------------------------------------------------------------------------
// OCI image layout built by hand (for skopeo / podman)
// ---------------------------------------------------------------------------

pub struct OciImage {
    pub dir: PathBuf,
    pub tag: String,
    pub layer_digests: Vec<String>,
    pub config_digest: String,
    pub manifest_digest: String,
}

impl OciImage {
    /// Asserts that the registry itself (not the proxy) holds this image as
    /// `repo:tag`: its manifest names exactly these layers and this config.
    pub fn assert_stored(&self, reg: &Registry, repo: &str, tag: &str) {
        let m = reg.stored_manifest(repo, tag);
        let layers: Vec<String> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(layers, self.layer_digests, "layers stored in the registry");
        assert_eq!(m["config"]["digest"].as_str().unwrap(), self.config_digest);
    }
}

/// Builds an OCI image layout in `dir` with `layers` gzip'd tar layers
/// (each with a text file and some pseudo-random bytes).
pub fn make_oci_layout(dir: &Path, tag: &str, layers: usize, seed: u64) -> OciImage {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let d = sha256_digest(data);
        fs::write(blobs.join(d.trim_start_matches("sha256:")), data).unwrap();
        d
    };
    let work = tempfile::tempdir().unwrap();
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    for i in 0..layers {
        let root = work.path().join(format!("layer{i}"));
        fs::create_dir_all(root.join(format!("data{i}"))).unwrap();
        fs::write(
            root.join(format!("data{i}/hello{i}.txt")),
            format!("layer {i} of {tag} seed {seed}\n"),
        )
        .unwrap();
        fs::write(
            root.join(format!("data{i}/random.bin")),
            pseudo_random(64 * 1024 * (i + 1), seed * 31 + i as u64),
        )
        .unwrap();
        let tar = Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-C",
            ])
            .arg(&root)
            .args(["-cf", "-", "."])
            .output()
            .unwrap();
        assert!(tar.status.success(), "tar: {}", out_text(&tar));
        diff_ids.push(sha256_digest(&tar.stdout));
        let mut gz = Command::new("gzip")
            .args(["-n", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = gz.stdin.take().unwrap();
        let input = tar.stdout.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = gz.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        let d = put(&out.stdout);
        layer_digests.push(d.clone());
        layer_descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": out.stdout.len()
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": (0..layers).map(|i| serde_json::json!({"created_by": format!("layer {i}")})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let config_digest = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layer_descs,
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    OciImage {
        dir: dir.to_path_buf(),
        tag: tag.to_string(),
        layer_digests,
        config_digest,
        manifest_digest,
    }
}

/// Layer digests of the (single) image in an OCI layout dir.
pub fn oci_layer_digests(dir: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(md)).unwrap()).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A complete, valid config in `dir` (cert, key, htpasswd exist); returns its text.
pub fn valid_config(dir: &Path) -> String {
    let ca = Ca::new("cli CA");
    let leaf = ca.leaf("cli");
    fs::write(dir.join("cert.pem"), &leaf.cert_pem).unwrap();
    fs::write(dir.join("key.pem"), &leaf.key_pem).unwrap();
    let ht = dir.join("htpasswd");
    if !ht.exists() {
        htpasswd_add(&ht, USER, PASS);
    }
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
watch_interval = "200ms"
grace_period = "1s"

[upstream]
url = "http://127.0.0.1:5000"

[tls]
cert = "{d}/cert.pem"
key = "{d}/key.pem"

[auth]
realm = "Docker Registry Realm"

[auth.htpasswd]
path = "{d}/htpasswd"

[log]
level = "info"
"#,
        port = free_port(),
        d = dir.display()
    )
}
