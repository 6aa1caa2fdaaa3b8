//! Container images made on this machine, for an [`Engine`] of a test:
//! nothing can be pulled from a public registry, so the Debian base is made
//! with `debootstrap` from the Debian mirror apt uses (once per machine, the
//! tarball cached), the portcullis image is `deploy/Dockerfile` packing the
//! binary this test build made, and a stand-in for `registry:2` is Debian's
//! `docker-registry` on the same base.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::*;

/// The suite of the base image (`debian:bookworm-slim`, the Dockerfile's
/// `DEBIAN_SUITE`).
pub const DEBIAN_SUITE: &str = "bookworm";
/// The tag the base is imported as: what `FROM debian:${DEBIAN_SUITE}-slim`
/// resolves to.
pub const DEBIAN_BASE: &str = "debian:bookworm-slim";
/// How the base tarball is made; part of its cache key, so a change of the
/// recipe rebuilds it.
const BASE_RECIPE: &str = "debootstrap --variant=minbase; no .debs, no apt lists; tar | gzip -1";
/// A cached base older than this is made again (the mirror moves on:
/// point releases, security fixes).
const BASE_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600);
/// The tag of the portcullis image the tests build.
pub const PORTCULLIS_IMAGE: &str = "portcullis:test";

/// The Debian mirror apt uses for `DEBIAN_SUITE` (the `URIs:` of a deb822
/// source or the URL of a `deb` line in /etc/apt/sources.list*), or
/// `PORTCULLIS_DEBIAN_MIRROR`.
pub fn debian_mirror() -> String {
    if let Ok(m) = std::env::var("PORTCULLIS_DEBIAN_MIRROR") {
        return m;
    }
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in &files {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        if let Some(m) = mirror_in(&text) {
            return m;
        }
    }
    panic!("no apt source for {DEBIAN_SUITE} main in {files:?} (set PORTCULLIS_DEBIAN_MIRROR)")
}

/// The mirror of `DEBIAN_SUITE` named in one sources file (either format).
pub fn mirror_in(text: &str) -> Option<String> {
    // one-line format: deb [options] URL SUITE COMPONENTS…
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']')).unwrap_or(0);
            rest.drain(..=end);
        }
        if rest.len() >= 3 && rest[1] == DEBIAN_SUITE && rest[2..].contains(&"main") {
            return Some(rest[0].to_string());
        }
    }
    // deb822: stanzas separated by blank lines
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        if field("Types").contains(&"deb".to_string())
            && field("Suites").contains(&DEBIAN_SUITE.to_string())
            && field("Components").contains(&"main".to_string())
        {
            if let Some(uri) = field("URIs").into_iter().next() {
                return Some(uri);
            }
        }
    }
    None
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// /var/cache/portcullis-ci/images when it can be written (one per
/// machine, kept across target dirs), else the target dir's tmp.
fn machine_cache() -> PathBuf {
    let shared = Path::new("/var/cache/portcullis-ci/images");
    if fs::create_dir_all(shared).is_ok() && writable(shared) {
        return shared.to_path_buf();
    }
    let local = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    fs::create_dir_all(&local).unwrap();
    local
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = fs::write(&probe, b"").is_ok();
    let _ = fs::remove_file(probe);
    ok
}

fn fresh(path: &Path, max_age: Duration) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() < max_age)
}

/// The gzipped tarball of a minbase `DEBIAN_SUITE` made by debootstrap,
/// cached in [`machine_cache`] under a name keyed by recipe, suite, mirror
/// and architecture (and remade when older than [`BASE_MAX_AGE`]).
pub fn debian_base_tarball() -> PathBuf {
    let mirror = debian_mirror();
    let arch = std::env::consts::ARCH;
    let key = Sha256::digest(format!("{BASE_RECIPE}\n{DEBIAN_SUITE}\n{mirror}\n{arch}"));
    let dir = machine_cache();
    let name = format!("debian-{DEBIAN_SUITE}-minbase-{}.tar.gz", &hex(&key)[..16]);
    let tarball = dir.join(&name);
    if fresh(&tarball, BASE_MAX_AGE) {
        return tarball;
    }
    let start = Instant::now();
    let root = tempfile::Builder::new()
        .prefix("debootstrap-")
        .tempdir_in(&dir)
        .unwrap();
    let partial = root.path().with_extension("tar.gz");
    let o = bash(&format!(
        "debootstrap --variant=minbase {DEBIAN_SUITE} '{root}/fs' '{mirror}' >'{root}/log' 2>&1 \
           || {{ tail -n 30 '{root}/log'; exit 1; }}
         rm -rf '{root}'/fs/var/cache/apt/archives/*.deb '{root}'/fs/var/lib/apt/lists/*
         tar -C '{root}/fs' --numeric-owner -c . | gzip -1 >'{partial}'",
        root = root.path().display(),
        partial = partial.display(),
    ));
    assert!(
        o.status.success(),
        "debootstrap {DEBIAN_SUITE} from {mirror} (apt-get install debootstrap; tests/run.sh does): {}",
        out_text(&o)
    );
    fs::rename(&partial, &tarball).unwrap();
    // older tarballs of this suite (another recipe or mirror) go
    for e in fs::read_dir(&dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&format!("debian-{DEBIAN_SUITE}-minbase-")) && n != name {
            let _ = fs::remove_file(e.path());
        }
    }
    eprintln!(
        "debootstrap {DEBIAN_SUITE} from {mirror}: {:?} -> {}",
        start.elapsed(),
        tarball.display()
    );
    tarball
}

/// Imports the Debian base into the engine as [`DEBIAN_BASE`].
pub fn import_debian_base(docker: &Docker) {
    let tarball = debian_base_tarball();
    let start = Instant::now();
    docker.stdout_ok(&["import", tarball.to_str().unwrap(), DEBIAN_BASE]);
    eprintln!("docker import {DEBIAN_BASE}: {:?}", start.elapsed());
}

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The inputs of the portcullis image: (file in the build context, source).
fn image_inputs() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("Dockerfile", repo_root().join("deploy/Dockerfile")),
        (
            "Dockerfile.dockerignore",
            repo_root().join("deploy/Dockerfile.dockerignore"),
        ),
        ("proxy.toml", repo_root().join("proxy.toml")),
    ]
}

/// A key of everything the portcullis image is made from: the Dockerfile,
/// its ignore file, proxy.toml, the base tarball's name and the binary
/// (its path, size and modification time: cargo writes a new file on
/// every link).
fn portcullis_image_key(base: &Path) -> String {
    let mut h = Sha256::new();
    for (name, path) in image_inputs() {
        h.update(name.as_bytes());
        h.update(fs::read(&path).unwrap());
    }
    h.update(base.file_name().unwrap().to_string_lossy().as_bytes());
    let meta = fs::metadata(bin()).unwrap();
    h.update(format!("{} {} {:?}", bin(), meta.len(), meta.modified().unwrap()).as_bytes());
    hex(&h.finalize())[..16].to_string()
}

/// Builds [`PORTCULLIS_IMAGE`] from deploy/Dockerfile with
/// `BINARY_SOURCE=prebuilt`: a copy of this test build's binary without
/// its debug info, in a build context of its own (never the engine's data
/// root). Each test has an engine of its own, so the image is also saved
/// (`docker save`, under the target dir, keyed by its inputs) and loaded
/// by the next test instead of built again. Returns how long it took and
/// whether it was built (false: loaded).
pub fn portcullis_image(docker: &Docker) -> (Duration, bool) {
    let start = Instant::now();
    let base = debian_base_tarball();
    let key = portcullis_image_key(&base);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
    fs::create_dir_all(&cache).unwrap();
    let saved = cache.join(format!("portcullis-image-{key}.tar"));
    if saved.exists() {
        docker.stdout_ok(&["load", "--input", saved.to_str().unwrap()]);
        return (start.elapsed(), false);
    }
    if !docker.has_image(DEBIAN_BASE) {
        import_debian_base(docker);
    }
    let ctx = temp_dir("pc-image-context-");
    fs::create_dir_all(ctx.path().join("target/debug")).unwrap();
    let packed = ctx.path().join("target/debug/portcullis");
    // keeps the symbols (backtraces), drops DWARF: a fraction of the size
    let o = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(bin())
        .arg(&packed)
        .output()
        .expect("objcopy (apt-get install binutils; tests/run.sh does)");
    assert!(
        o.status.success(),
        "objcopy --strip-debug: {}",
        out_text(&o)
    );
    fs::copy(
        repo_root().join("proxy.toml"),
        ctx.path().join("proxy.toml"),
    )
    .unwrap();
    let dockerfile = repo_root().join("deploy/Dockerfile");
    docker.build_kit(&[
        // the engine has no default bridge: apt-get reaches the mirror
        // over the host's network
        "--network",
        "host",
        "--build-arg",
        "BINARY_SOURCE=prebuilt",
        "--build-arg",
        "PORTCULLIS_BINARY=target/debug/portcullis",
        "--tag",
        PORTCULLIS_IMAGE,
        "--file",
        dockerfile.to_str().unwrap(),
        ctx.path().to_str().unwrap(),
    ]);
    let built = start.elapsed();
    // only the newest image is kept
    for e in fs::read_dir(&cache).unwrap().flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with("portcullis-image-")
        {
            let _ = fs::remove_file(e.path());
        }
    }
    let partial = saved.with_extension("partial");
    docker.stdout_ok(&[
        "save",
        "--output",
        partial.to_str().unwrap(),
        PORTCULLIS_IMAGE,
    ]);
    fs::rename(&partial, &saved).unwrap();
    eprintln!(
        "built {PORTCULLIS_IMAGE} in {built:?} (saved in {:?} more)",
        start.elapsed() - built
    );
    (built, true)
}

/// The registry's config in the `registry:2` image (distribution's
/// cmd/registry/config-dev.yml less the debug listener): no auth, storage
/// under /var/lib/registry. Debian's /etc/docker/registry/config.yml
/// turns htpasswd auth on, so the stand-in carries this one.
const REGISTRY_CONFIG: &str = "version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";

/// What `registry:2` offers the compose file: `registry serve` of that
/// config, port 5000, a /var/lib/registry volume, and `wget` for its
/// healthcheck (busybox's in the real image).
const REGISTRY_DOCKERFILE: &str = r#"FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker-registry wget \
 && rm -rf /var/lib/apt/lists/* \
 && install -d /var/lib/registry
COPY config.yml /etc/docker/registry/config.yml
VOLUME ["/var/lib/registry"]
EXPOSE 5000
ENTRYPOINT ["/usr/bin/docker-registry", "serve"]
CMD ["/etc/docker/registry/config.yml"]
"#;

/// Builds a stand-in for `tag` (the compose file's `registry:2`) from
/// Debian's docker-registry (distribution 2.8) on the Debian base.
pub fn registry_image(docker: &Docker, tag: &str) -> Duration {
    let start = Instant::now();
    if !docker.has_image(DEBIAN_BASE) {
        import_debian_base(docker);
    }
    let ctx = temp_dir("pc-registry-context-");
    fs::write(ctx.path().join("Dockerfile"), REGISTRY_DOCKERFILE).unwrap();
    fs::write(ctx.path().join("config.yml"), REGISTRY_CONFIG).unwrap();
    docker.build_kit(&[
        "--network",
        "host",
        "--tag",
        tag,
        ctx.path().to_str().unwrap(),
    ]);
    start.elapsed()
}
