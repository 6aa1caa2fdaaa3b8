//! The htpasswd file is re-read while serving: added users log in, removed
//! users are refused, and a file portcullis cannot accept ($apr1$ entries)
//! leaves the previous users in place.
//!
//! Polling for a login is slow on purpose (300 ms, watch interval 200 ms) and
//! each test keeps its failed logins few: portcullis throttles an address
//! after repeated failures, which is not what these tests are about.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

fn status(proxy: &Proxy, user: &str, pass: &str) -> u16 {
    // a fresh client each time: new connection, nothing cached client-side
    proxy
        .new_client(true)
        .get(proxy.url("/v2/"))
        .basic_auth(user, Some(pass))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn wait_status(proxy: &Proxy, user: &str, pass: &str, want: u16, what: &str) {
    let last = std::cell::Cell::new(0);
    wait_until_every(
        what,
        WAIT,
        Duration::from_millis(300),
        || {
            last.set(status(proxy, user, pass));
            last.get() == want
        },
        || {
            format!(
                "last status {}\nhtpasswd:\n{}\n{}",
                last.get(),
                std::fs::read_to_string(proxy.htpasswd_path()).unwrap_or_default(),
                proxy.logs()
            )
        },
    );
}

#[test]
fn added_user_logs_in_and_changed_password_applies_without_restart() {
    let (_reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let file = proxy.htpasswd_path();
    let pid = proxy.pid();
    assert_eq!(status(&proxy, USER, PASS), 200);
    assert_eq!(status(&proxy, "bob", "bob-pw"), 401);

    // edited in place by Apache's tool, as an admin would
    htpasswd_add(&file, "bob", "bob-pw");
    wait_status(
        &proxy,
        "bob",
        "bob-pw",
        200,
        "user added with htpasswd -B logs in",
    );
    assert_eq!(
        status(&proxy, USER, PASS),
        200,
        "existing user still logs in"
    );

    // password changed (bob's old password is in the credential cache now)
    htpasswd_add(&file, "bob", "bob-pw-2");
    wait_status(&proxy, "bob", "bob-pw-2", 200, "changed password accepted");
    assert_eq!(
        status(&proxy, "bob", "bob-pw"),
        401,
        "old password refused after change"
    );
    assert_eq!(proxy.pid(), pid, "same process");
}

#[test]
fn removed_user_is_refused_without_restart() {
    let reg = Registry::start();
    let opts = ProxyOptions::basic(&[(USER, PASS), ("bob", "bob-pw")]);
    let proxy = Proxy::start(&reg, opts);
    let file = proxy.htpasswd_path();
    let pid = proxy.pid();
    // both logged in once, so both may sit in the credential cache
    assert_eq!(status(&proxy, USER, PASS), 200);
    assert_eq!(status(&proxy, "bob", "bob-pw"), 200);

    let o = Command::new("htpasswd")
        .arg("-D")
        .arg(&file)
        .arg(USER)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out_text(&o));
    wait_status(
        &proxy,
        USER,
        PASS,
        401,
        "user removed with htpasswd -D is refused",
    );
    assert_eq!(
        status(&proxy, "bob", "bob-pw"),
        200,
        "remaining user still logs in"
    );

    // replaced atomically (rename), as config management tools do
    let content = format!(
        "{}\n",
        htpasswd_line(&["-B", "-C", "5"], "carol", "carol-pw")
    );
    write_atomic(&file, content.as_bytes());
    wait_status(
        &proxy,
        "carol",
        "carol-pw",
        200,
        "user from renamed-in file logs in",
    );
    wait_status(
        &proxy,
        "bob",
        "bob-pw",
        401,
        "user absent from the renamed-in file is refused",
    );
    assert_eq!(proxy.pid(), pid, "same process");
}

#[test]
fn file_changed_to_an_apr1_entry_keeps_previous_users() {
    let (_reg, mut proxy) = registry_and_proxy(ProxyOptions::default());
    let file = proxy.htpasswd_path();
    assert_eq!(status(&proxy, USER, PASS), 200);

    // new content: alice gone, an MD5 ($apr1$) entry that portcullis must refuse
    let apr1 = htpasswd_line(&["-m"], "dave", "dave-pw");
    assert!(apr1.starts_with("dave:$apr1$"), "{apr1}");
    write_atomic(&file, format!("{apr1}\n").as_bytes());

    // give the watcher many intervals (200 ms each) to see the change
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        proxy.is_running(),
        "proxy died on a bad htpasswd file\n{}",
        proxy.logs()
    );
    assert_eq!(
        status(&proxy, USER, PASS),
        200,
        "previous user must be kept when the new file is rejected\n{}",
        proxy.logs()
    );
    assert_eq!(
        status(&proxy, "dave", "dave-pw"),
        401,
        "$apr1$ user must not log in"
    );

    // the watcher is still alive: a good file is picked up afterwards
    let good = format!("{}\n", htpasswd_line(&["-B", "-C", "5"], "erin", "erin-pw"));
    write_atomic(&file, good.as_bytes());
    wait_status(
        &proxy,
        "erin",
        "erin-pw",
        200,
        "good file after a bad one is loaded",
    );
    wait_status(
        &proxy,
        USER,
        PASS,
        401,
        "user missing from the good file is refused",
    );
}
