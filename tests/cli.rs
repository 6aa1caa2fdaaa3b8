//! The command line: `check`, `user add|remove|list`, `hash`.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use support::*;

fn check(dir: &Path, config: &str) -> std::process::Output {
    let path = dir.join("proxy.toml");
    fs::write(&path, config).unwrap();
    portcullis(&["check", "--config", path.to_str().unwrap()], None)
}

fn all_output(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_accepts_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let o = check(dir.path(), &valid_config(dir.path()));
    assert!(
        o.status.success(),
        "valid config rejected: {}",
        out_text(&o)
    );
}

#[test]
fn check_accepts_the_shipped_example_keys() {
    // every key of the repository's proxy.toml must be known to the parser;
    // only file paths are pointed at real files.
    let dir = tempfile::tempdir().unwrap();
    valid_config(dir.path());
    let example = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")).unwrap();
    let d = dir.path().display().to_string();
    let config = example
        .replace(
            "/etc/letsencrypt/live/registry.example.com/fullchain.pem",
            &format!("{d}/cert.pem"),
        )
        .replace(
            "/etc/letsencrypt/live/registry.example.com/privkey.pem",
            &format!("{d}/key.pem"),
        )
        .replace("/etc/portcullis/htpasswd", &format!("{d}/htpasswd"));
    let o = check(dir.path(), &config);
    let out = all_output(&o);
    assert!(
        !out.contains("unknown"),
        "example config has keys the parser does not know: {}",
        out_text(&o)
    );
    assert!(
        o.status.success(),
        "shipped example proxy.toml (with real file paths) rejected: {}",
        out_text(&o)
    );
}

/// `check` of the valid config with `from` replaced by `to` fails and
/// names `key`.
fn assert_check_names(from: &str, to: &str, key: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = valid_config(dir.path());
    assert!(config.contains(from), "{from:?} not in the valid config");
    let o = check(dir.path(), &config.replace(from, to));
    assert!(!o.status.success(), "{to:?} accepted: {}", out_text(&o));
    assert!(
        all_output(&o).contains(key),
        "output does not name {key}: {}",
        out_text(&o)
    );
}

#[test]
fn check_names_a_misspelled_key() {
    assert_check_names("listen = ", "lisen = ", "server.lisen");
}

#[test]
fn check_names_a_misspelled_key_in_a_nested_table() {
    assert_check_names(
        "[auth.htpasswd]\npath",
        "[auth.htpasswd]\npaht",
        "auth.htpasswd.paht",
    );
}

#[test]
fn check_names_an_invalid_duration() {
    assert_check_names(
        "watch_interval = \"200ms\"",
        "watch_interval = \"soon\"",
        "server.watch_interval",
    );
}

/// `[tls.acme]` appended to the valid config, with the given ca_file,
/// EAB key and state_dir.
fn acme_section(ca_file: &Path, hmac_key: &str, state_dir: &Path, role: &str) -> String {
    format!(
        r#"
[tls.acme]
directory = "https://127.0.0.1:14000/dir"
accept_terms = true
domains = ["registry.example.org"]
challenge = "tls-alpn-01"
role = "{role}"
state_dir = "{state}"
ca_file = "{ca}"

[tls.acme.eab]
key_id = "kid-1"
hmac_key = "{hmac_key}"
"#,
        state = state_dir.display(),
        ca = ca_file.display(),
    )
}

#[test]
fn check_finds_unusable_acme_files_and_keys_before_the_ca_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let base = valid_config(dir.path());
    // a CA file without a certificate, an EAB key that is not base64url,
    // and a state_dir below a regular file (it can never be created)
    let empty_ca = dir.path().join("empty-ca.pem");
    fs::write(&empty_ca, "not a certificate\n").unwrap();
    let blocker = dir.path().join("a-file");
    fs::write(&blocker, "x").unwrap();
    let bad_key = "sekrit!!not*base64";
    let config = base.clone() + &acme_section(&empty_ca, bad_key, &blocker.join("acme"), "renew");
    let o = check(dir.path(), &config);
    let out = all_output(&o);
    assert!(
        !o.status.success(),
        "unusable ACME settings accepted: {out}"
    );
    for key in [
        "tls.acme.ca_file",
        "tls.acme.eab.hmac_key",
        "tls.acme.state_dir",
    ] {
        assert!(out.contains(key), "output does not name {key}: {out}");
    }
    assert!(!out.contains(bad_key), "output shows the EAB key: {out}");

    // a follower only reads: a missing state_dir is a problem for it
    let ca = Ca::new("acme server CA");
    let ca_file = dir.path().join("acme-ca.pem");
    fs::write(&ca_file, &ca.pem).unwrap();
    let good_key = "c2VjcmV0LWtleS1mcm9tLXRoZS1jYQ";
    let missing = dir.path().join("not-there");
    let o = check(
        dir.path(),
        &(base.clone() + &acme_section(&ca_file, good_key, &missing, "follow")),
    );
    let out = all_output(&o);
    assert!(
        !o.status.success(),
        "missing follower state_dir accepted: {out}"
    );
    assert!(out.contains("tls.acme.state_dir"), "{out}");
    assert!(
        !out.contains("tls.acme.ca_file"),
        "good CA file refused: {out}"
    );
    assert!(!out.contains("hmac_key"), "good EAB key refused: {out}");

    // the same settings made usable pass; a renewer's state_dir may not
    // exist yet (serve creates it), and check does not create it
    let o = check(
        dir.path(),
        &(base + &acme_section(&ca_file, good_key, &missing, "renew")),
    );
    assert!(
        o.status.success(),
        "usable ACME settings refused: {}",
        out_text(&o)
    );
    assert!(!missing.exists(), "check created the state_dir");
}

#[test]
fn check_rejects_an_apr1_htpasswd_entry_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = valid_config(dir.path());
    let bcrypt_line = htpasswd_line(&["-B", "-C", "5"], USER, PASS);
    let apr1 = htpasswd_line(&["-m"], "dave", "dave-pw");
    fs::write(
        dir.path().join("htpasswd"),
        format!("{bcrypt_line}\n{apr1}\n"),
    )
    .unwrap();
    let o = check(dir.path(), &config);
    assert!(
        !o.status.success(),
        "$apr1$ entry accepted: {}",
        out_text(&o)
    );
    let out = all_output(&o);
    assert!(
        out.contains("dave") || out.contains("line 2") || out.contains(":2"),
        "output names neither the user nor line 2: {}",
        out_text(&o)
    );
    let hash = apr1.split_once(':').unwrap().1;
    assert!(!out.contains(hash), "output leaks the hash: {out}");
}

fn verify(file: &Path, user: &str, pass: &str) -> bool {
    Command::new("htpasswd")
        .arg("-vb")
        .arg(file)
        .arg(user)
        .arg(pass)
        .output()
        .unwrap()
        .status
        .success()
}

fn mode(file: &Path) -> u32 {
    fs::metadata(file).unwrap().permissions().mode() & 0o777
}

/// `portcullis user add --file FILE --cost 5 --password-stdin USER` with
/// `stdin` as the password input.
fn user_add(file: &str, user: &str, stdin: &str) -> std::process::Output {
    let args = [
        "user",
        "add",
        "--file",
        file,
        "--cost",
        "5",
        "--password-stdin",
        user,
    ];
    portcullis(&args, Some(stdin))
}

#[test]
fn user_add_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    let f = file.to_str().unwrap();

    let o = user_add(f, "alice", "alice-pw\n");
    assert!(o.status.success(), "user add: {}", out_text(&o));
    assert_eq!(mode(&file), 0o600, "new htpasswd file mode");
    assert!(
        verify(&file, "alice", "alice-pw"),
        "htpasswd -vb rejects alice (trailing newline must not be part of the password)\n{}",
        fs::read_to_string(&file).unwrap()
    );
    assert!(
        !verify(&file, "alice", "wrong"),
        "htpasswd -vb accepts a wrong password?"
    );
    let content = fs::read_to_string(&file).unwrap();
    assert!(
        content.starts_with("alice:$2"),
        "bcrypt entry expected: {content}"
    );

    let o = user_add(f, "bob", "bob-pw");
    assert!(o.status.success(), "user add bob: {}", out_text(&o));
    assert!(
        verify(&file, "alice", "alice-pw") && verify(&file, "bob", "bob-pw"),
        "both users verify"
    );
    assert_eq!(mode(&file), 0o600);

    // same user again replaces the password (or is refused, but never duplicates)
    let o = user_add(f, "bob", "bob-pw-2");
    let content = fs::read_to_string(&file).unwrap();
    assert_eq!(
        content.lines().filter(|l| l.starts_with("bob:")).count(),
        1,
        "duplicate entry: {content}"
    );
    if o.status.success() {
        assert!(
            verify(&file, "bob", "bob-pw-2"),
            "re-add did not change the password"
        );
    }

    let o = portcullis(&["user", "list", "--file", f], None);
    assert!(o.status.success(), "user list: {}", out_text(&o));
    let listed: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        listed.contains(&"alice".to_string()) && listed.contains(&"bob".to_string()),
        "list: {listed:?}"
    );
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("$2"),
        "list prints hashes"
    );

    let o = portcullis(&["user", "remove", "--file", f, "alice"], None);
    assert!(o.status.success(), "user remove: {}", out_text(&o));
    assert!(!verify(&file, "alice", "alice-pw"), "alice still in file");
    assert!(
        fs::read_to_string(&file)
            .unwrap()
            .lines()
            .any(|l| l.starts_with("bob:")),
        "bob lost"
    );
    assert_eq!(mode(&file), 0o600, "mode after remove");
    let o = portcullis(&["user", "list", "--file", f], None);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        !out.lines().any(|l| l.trim() == "alice") && out.lines().any(|l| l.trim() == "bob"),
        "list after remove: {out}"
    );

    // removing an unknown user is an error
    let o = portcullis(&["user", "remove", "--file", f, "nobody"], None);
    assert!(
        !o.status.success(),
        "removing an unknown user succeeded: {}",
        out_text(&o)
    );
}

#[test]
fn user_add_keeps_entries_written_by_apache_htpasswd() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    htpasswd_add(&file, "carol", "carol-pw");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let o = user_add(file.to_str().unwrap(), "dan", "dan-pw\n");
    assert!(o.status.success(), "{}", out_text(&o));
    assert!(verify(&file, "carol", "carol-pw"), "existing entry damaged");
    assert!(verify(&file, "dan", "dan-pw"));
}

#[test]
fn hash_prints_a_bcrypt_hash_of_stdin() {
    let o = portcullis(&["hash", "--password-stdin"], Some("hash-me\n"));
    assert!(o.status.success(), "hash: {}", out_text(&o));
    let h = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(h.starts_with("$2"), "not bcrypt: {h}");
    assert!(
        bcrypt::verify("hash-me", &h).unwrap(),
        "hash does not verify"
    );
    assert!(
        !bcrypt::verify("hash-me\n", &h).unwrap_or(false),
        "newline was hashed"
    );
}

/// `serve` with an address already taken stops at once with an error naming
/// the key, instead of running without that listener.
#[test]
fn serve_refuses_a_busy_listen_address_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = valid_config(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let free_admin = format!("127.0.0.1:{}", free_port());
    for (key, text) in [
        (
            "server.listen",
            config.replacen(
                "listen = \"127.0.0.1:",
                &format!("listen = \"{busy}\"\n#"),
                1,
            ) + &format!("\n[metrics]\nlisten = \"{free_admin}\"\n"),
        ),
        (
            "metrics.listen",
            config.clone() + &format!("\n[metrics]\nlisten = \"{busy}\"\n"),
        ),
    ] {
        let path = dir.path().join("proxy.toml");
        fs::write(&path, &text).unwrap();
        let child = Command::new(bin())
            .args(["serve", "--config", path.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(
            child,
            std::time::Duration::from_secs(20),
            "serve on a busy port",
        );
        let text = all_output(&out);
        assert!(!out.status.success(), "{key}: {text}");
        assert!(
            text.contains(&format!("{key}: cannot listen on {busy}")),
            "{key}: {text}"
        );
    }
}
