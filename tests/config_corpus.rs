//! A corpus of broken configs, one per kind of problem `serve` can hit at
//! start: `portcullis check` and `portcullis serve` must both refuse each,
//! naming the same key. They share one build (`app::build`), and this is
//! what keeps them from drifting apart again.
//!
//! Left out on purpose: a listener address already in use. `serve`
//! refuses it (naming `server.listen`), but `check` does not bind: it is
//! run against the config of a proxy that is running.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

/// A valid config in `dir` (certificate, key, htpasswd exist), over which
/// each case applies its edit; with token keys and a metrics listener.
fn valid(dir: &Path) -> String {
    let base = valid_config(dir);
    let ca = Ca::new("corpus CA");
    fs::write(dir.join("other-key.pem"), &ca.leaf("other").key_pem).unwrap();
    fs::write(
        dir.join("md5-htpasswd"),
        "bob:$apr1$x$abcdefghijklmnopqrstuv\n",
    )
    .unwrap();
    format!(
        "{base}\n[auth.token]\nkey_dir = \"{d}/keys\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
        d = dir.display(),
        metrics = free_port(),
    )
}

/// `[auth.ldap]` (second in the chain) with `extra` keys.
fn with_ldap(t: &str, extra: &str) -> String {
    t.replace("[auth]\n", "[auth]\nbackends = [\"htpasswd\", \"ldap\"]\n")
        .replace(
            "[auth.htpasswd]\n",
            &format!(
                "[auth.ldap]\nurls = [\"ldap://127.0.0.1:1\"]\nbase_dn = \"dc=example,dc=org\"\n\
                 {extra}\n\n[auth.htpasswd]\n"
            ),
        )
}

/// `[upstream]` with `extra` keys after its url.
fn with_upstream(t: &str, extra: &str) -> String {
    let url = "url = \"http://127.0.0.1:5000\"";
    t.replace(url, &format!("{url}\n{extra}"))
}

/// One broken config: the key both commands must name, and the edit.
struct Case {
    key: &'static str,
    edit: fn(&str, &str) -> String,
}

/// `(text, dir) -> broken text`
const CASES: &[Case] = &[
    // the file's shape
    Case {
        key: "server.lisen",
        edit: |t, _| t.replacen("listen = ", "lisen = \"x\"\nlisten = ", 1),
    },
    Case {
        key: "upstream.url",
        edit: |t, _| t.replace("http://127.0.0.1:5000", "ftp://127.0.0.1:5000"),
    },
    // compiled values
    Case {
        key: "access[0].actions",
        edit: |t, _| format!("{t}\n[[access]]\nusers = [\"alice\"]\nactions = [\"fly\"]\n"),
    },
    Case {
        key: "auth.token.algorithm",
        edit: |t, _| t.replace("[auth.token]", "[auth.token]\nalgorithm = \"HS256\""),
    },
    Case {
        key: "log.level",
        edit: |t, _| t.replace("level = \"info\"", "level = \"[broken\""),
    },
    Case {
        key: "auth.ldap.user_filter",
        edit: |t, _| with_ldap(t, "user_filter = \"(uid={user})\""),
    },
    // files the config names
    Case {
        key: "tls.cert",
        edit: |t, d| t.replace(&format!("{d}/cert.pem"), &format!("{d}/missing.pem")),
    },
    Case {
        key: "tls.key",
        edit: |t, d| t.replace(&format!("{d}/key.pem"), &format!("{d}/other-key.pem")),
    },
    Case {
        key: "tls.client_auth.ca_file",
        edit: |t, d| format!("{t}\n[tls.client_auth]\nca_file = \"{d}/no-client-ca.pem\"\n"),
    },
    Case {
        key: "tls.client_auth.crl_files",
        edit: |t, d| {
            format!(
                "{t}\n[tls.client_auth]\nca_file = \"{d}/cert.pem\"\ncrl_files = [\"{d}/htpasswd\"]\n"
            )
        },
    },
    Case {
        key: "access[0].credential",
        edit: |t, _| {
            format!("{t}\n[[access]]\nanonymous = true\ncredential = \"certificate\"\nactions = [\"pull\"]\n")
        },
    },
    Case {
        key: "auth.htpasswd.path",
        edit: |t, d| t.replace(&format!("{d}/htpasswd"), &format!("{d}/md5-htpasswd")),
    },
    Case {
        key: "auth.tokens.path",
        // a token file that is no token file (the directory itself)
        edit: |t, d| format!("{t}\n[auth.tokens]\npath = \"{d}\"\n"),
    },
    Case {
        key: "auth.groups_file",
        edit: |t, d| {
            t.replace(
                "[auth]\n",
                &format!("[auth]\ngroups_file = \"{d}/no-groups\"\n"),
            )
        },
    },
    Case {
        key: "upstream.ca_file",
        edit: |t, d| {
            with_upstream(t, &format!("ca_file = \"{d}/no-ca.pem\""))
                .replace("http://127.0.0.1:5000", "https://127.0.0.1:5000")
        },
    },
    Case {
        key: "log.audit_file",
        edit: |t, d| {
            t.replace(
                "[log]\n",
                &format!("[log]\naudit_file = \"{d}/no-dir/audit.log\"\n"),
            )
        },
    },
    Case {
        key: "auth.token.signing_key",
        edit: |t, d| {
            t.replace("[auth]\n", "[auth]\nmode = \"token\"\n").replace(
                "[auth.token]",
                &format!("[auth.token]\nsigning_key = \"{d}/no-key.pem\""),
            )
        },
    },
    // `check` used to miss these three: token keys for upstream.token_auth
    // in Basic mode, the scrape secrets, the directory's bind password
    Case {
        key: "auth.token.signing_key",
        edit: |t, d| {
            with_upstream(t, "token_auth = true").replace(
                "[auth.token]",
                &format!("[auth.token]\nsigning_key = \"{d}/no-key.pem\""),
            )
        },
    },
    Case {
        key: "metrics.password",
        edit: |t, _| {
            t.replace(
                "[metrics]\n",
                "[metrics]\nusername = \"prom\"\npassword = { env = \"PORTCULLIS_CORPUS_UNSET\" }\n",
            )
        },
    },
    Case {
        key: "metrics.bearer_token",
        edit: |t, d| {
            t.replace(
                "[metrics]\n",
                &format!("[metrics]\nbearer_token = {{ file = \"{d}/no-token\" }}\n"),
            )
        },
    },
    Case {
        key: "auth.ldap.bind_password",
        edit: |t, _| {
            with_ldap(
                t,
                "bind_dn = \"cn=svc,dc=example,dc=org\"\n\
                 bind_password = { env = \"PORTCULLIS_CORPUS_UNSET\" }",
            )
        },
    },
    Case {
        key: "upstream.password",
        edit: |t, _| {
            with_upstream(
                t,
                "username = \"u\"\npassword = { env = \"PORTCULLIS_CORPUS_UNSET\" }",
            )
        },
    },
];

/// Whether `output` has a problem line for `key` (`key: reason`, as
/// `check` prints it and `serve`'s error lists it).
fn names(output: &str, key: &str) -> bool {
    output.lines().any(|l| {
        let l = l.trim_start_matches("portcullis: cannot start: ");
        l.starts_with(&format!("{key}: "))
    })
}

fn run(args: &[&str]) -> (bool, String) {
    let child = Command::new(bin())
        .args(args)
        .env_remove("PORTCULLIS_CORPUS_UNSET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portcullis");
    // serve must refuse before it listens: one that starts is killed here
    let o = wait_output(child, Duration::from_secs(30), &format!("{args:?}"));
    (o.status.success(), out_text(&o))
}

#[test]
fn check_and_serve_refuse_the_same_broken_configs_naming_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = valid(dir.path());
    let path = dir.path().join("proxy.toml");
    let path_s = path.to_str().unwrap();
    // the base itself is accepted by check (serve is started by the others)
    fs::write(&path, &base).unwrap();
    let (ok, out) = run(&["check", "--config", path_s]);
    assert!(ok, "the corpus' base config is refused: {out}");

    let d = dir.path().display().to_string();
    let mut failures = Vec::new();
    for case in CASES {
        let text = (case.edit)(&base, &d);
        assert_ne!(text, base, "case {}: the edit changed nothing", case.key);
        fs::write(&path, &text).unwrap();
        for command in ["check", "serve"] {
            let (ok, out) = run(&[command, "--config", path_s]);
            if ok || !names(&out, case.key) {
                failures.push(format!(
                    "{command} {}: exit ok = {ok}, key not named or accepted:\n{out}",
                    case.key
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs disagree:\n{}",
        failures.len(),
        CASES.len() * 2,
        failures.join("\n\n")
    );
}
