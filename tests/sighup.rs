//! SIGHUP (systemctl reload, logrotate) reloads at once, whatever
//! `server.watch_interval` is: the watcher used to read the signal's flag
//! only after its sleep, so with a long interval a reload waited for it.

mod support;

use reqwest::Method;
use std::time::Duration;
use support::*;

#[test]
fn sighup_reloads_at_once_with_a_long_watch_interval() {
    let reg = Registry::start();
    let proxy = Proxy::start(
        &reg,
        ProxyOptions {
            watch_interval: "1h".to_string(),
            ..Default::default()
        },
    );
    let carol = |proxy: &Proxy| {
        proxy
            .req_as(Method::GET, "/v2/", "carol", "carol-pass")
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(carol(&proxy), 401, "carol is not a user yet");
    htpasswd_add(&proxy.htpasswd_path(), "carol", "carol-pass");
    // the file changed, but the next poll is an hour away
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(carol(&proxy), 401, "reloaded without a signal");
    proxy.sighup();
    wait_until(
        "SIGHUP reloads the htpasswd file at once",
        Duration::from_secs(15),
        || proxy.log_text().contains("htpasswd file reloaded"),
        || proxy.logs(),
    );
    assert_eq!(carol(&proxy), 200, "carol logs in after SIGHUP");
    assert!(proxy.log_text().contains("SIGHUP: reloading"));
}
