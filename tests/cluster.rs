//! `[cluster] redis`: three replicas behind a real HAProxy (round robin,
//! `option forwardfor`) share the login throttle in a real `redis-server`.
//! A password-guessing run spread over the replicas is cut off after
//! `max_failures` in all, not per replica; with Redis killed, logins and
//! pulls go on (the throttle counts per process, with a warning); with
//! Redis back, the fleet counts as one again. A user's `[limits]` bucket
//! is one for the fleet: spent through some replicas, every replica
//! refuses within the sync bound.

mod support;

use std::time::Duration;
use support::redis::RedisServer;
use support::*;

const MAX_FAILURES: u32 = 4;
const IMAGE: &str = "team/app";

struct Fleet {
    reg: Registry,
    replicas: Vec<Proxy>,
    _lb: Haproxy,
    lb_port: u16,
}

fn fleet(redis: &RedisServer) -> Fleet {
    fleet_with(redis, "")
}

/// Three replicas with `extra` TOML each.
fn fleet_with(redis: &RedisServer, extra: &str) -> Fleet {
    let reg = Registry::start();
    push_image_direct(&reg, IMAGE, "v1");
    let rules = [Rule::users(&["alice"]).on(&["team/**"]).pull()];
    let replicas: Vec<Proxy> = (0..3)
        .map(|_| {
            Proxy::start(
                &reg,
                ProxyOptions::basic(&[(USER, PASS)])
                    .rules(&rules)
                    .line_in("server", "trusted_proxies = [\"127.0.0.1/32\"]")
                    .toml(&format!(
                        "[auth.throttle]\nmax_failures = {MAX_FAILURES}\nwindow = \"5m\"\nbackoff = \"5m\"\nmax_backoff = \"10m\"\n\n\
                         [cluster]\nredis = \"{}\"\ntimeout = \"500ms\"\n{extra}",
                        redis.url()
                    )),
            )
        })
        .collect();
    let lb_port = free_port();
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server r{i} 127.0.0.1:{} ssl verify none\n", p.port()))
        .collect();
    let lb = Haproxy::start(
        "http",
        &format!(
            "frontend fe\n  bind 127.0.0.1:{lb_port}\n  option forwardfor\n  default_backend be\n\
             backend be\n  balance roundrobin\n  http-reuse never\n{servers}"
        ),
        &[lb_port],
    );
    Fleet {
        reg,
        replicas,
        _lb: lb,
        lb_port,
    }
}

impl Fleet {
    /// `GET path` through HAProxy from `from`, as alice with `pass`.
    fn get(&self, from: &str, path: &str, pass: &str) -> u16 {
        self.get_as(from, path, USER, pass)
    }

    fn get_as(&self, from: &str, path: &str, user: &str, pass: &str) -> u16 {
        reqwest::blocking::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{}{path}", self.lb_port))
            .basic_auth(user, Some(pass))
            .send()
            .unwrap_or_else(|e| panic!("GET {path} through HAProxy: {e}\n{}", self.logs()))
            .status()
            .as_u16()
    }

    /// `n` wrong-password logins from `from`: their statuses.
    fn guess(&self, from: &str, n: usize) -> Vec<u16> {
        (0..n)
            .map(|i| self.get(from, "/v2/", &format!("guess-{i}")))
            .collect()
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .enumerate()
            .map(|(i, p)| format!("--- replica {i} ---\n{}", p.logs()))
            .collect()
    }
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn a_fleet_shares_the_login_throttle_and_survives_redis_going_away() {
    let mut redis = RedisServer::start();
    let f = fleet(&redis);
    let manifest = format!("/v2/{IMAGE}/tags/list");
    assert_eq!(f.get("127.0.0.2", &manifest, PASS), 200, "{}", f.logs());

    // 12 guesses spread over 3 replicas: 4 verified in all, then 429s
    let statuses = f.guess("127.0.0.3", 12);
    assert_eq!(
        count(&statuses, 401),
        MAX_FAILURES as usize,
        "verified guesses before the fleet cut them off: {statuses:?}\n{}",
        f.logs()
    );
    assert_eq!(
        count(&statuses, 429),
        12 - MAX_FAILURES as usize,
        "{statuses:?}"
    );
    let refused_on: Vec<usize> = f
        .replicas
        .iter()
        .map(|p| p.logs().matches("login refused").count())
        .collect();
    assert!(
        refused_on.iter().filter(|n| **n > 0).count() >= 2,
        "the guesses reached several replicas: {refused_on:?}"
    );
    // the blocked address is blocked for the right password too, on every
    // replica; another address is not
    for _ in 0..3 {
        assert_eq!(f.get("127.0.0.3", "/v2/", PASS), 429);
    }
    assert_eq!(f.get("127.0.0.2", "/v2/", PASS), 200);

    // Redis goes away in the middle of pulls: they go on
    redis.kill();
    for _ in 0..6 {
        assert_eq!(
            f.get("127.0.0.2", &manifest, PASS),
            200,
            "a pull without Redis\n{}",
            f.logs()
        );
    }
    // a cold login (a new address, a replica's first bcrypt) still works
    assert_eq!(f.get("127.0.0.4", "/v2/", PASS), 200, "{}", f.logs());
    let statuses = f.guess("127.0.0.5", 3);
    assert_eq!(
        count(&statuses, 401),
        3,
        "guesses without Redis are counted per replica"
    );
    assert!(
        f.logs().contains("Redis cannot be reached"),
        "a warning says the throttle counts per process\n{}",
        f.logs()
    );

    // Redis is back (empty): the fleet counts as one again
    redis.restart();
    wait_until(
        "the replicas use Redis again",
        Duration::from_secs(30),
        || {
            // (another user and address: alice's count stays clean)
            f.get_as("127.0.0.6", "/v2/", "probe", "probe");
            f.replicas
                .iter()
                .all(|p| p.logs().contains("connected to Redis"))
        },
        || f.logs(),
    );
    let statuses = f.guess("127.0.0.7", 12);
    assert_eq!(
        count(&statuses, 401),
        MAX_FAILURES as usize,
        "after Redis returned: {statuses:?}\n{}",
        f.logs()
    );
    assert_eq!(f.get("127.0.0.2", &manifest, PASS), 200);
    drop(f.reg);
}

/// Token mode, three replicas with one signing key and a revocation file
/// each: a `token revoke` on one replica reaches the others through Redis.
#[test]
fn a_token_revoked_on_one_replica_is_refused_by_every_replica() {
    let redis = RedisServer::start();
    let reg = Registry::start();
    push_image_direct(&reg, IMAGE, "v1");
    let keys = tempfile::tempdir().unwrap();
    let rules = [Rule::users(&["alice"]).on(&["team/**"]).pull()];
    let replicas: Vec<Proxy> = (0..3)
        .map(|i| {
            let own = keys.path().join(format!("revoked-{i}.json"));
            Proxy::start(
                &reg,
                ProxyOptions::token_with(
                    &[(USER, PASS)],
                    keys.path(),
                    &format!(
                        "lifetime = \"1h\"\nrevocation_file = \"{}\"\n",
                        own.display()
                    ),
                )
                .rules(&rules)
                .toml(&format!(
                    "[cluster]\nredis = \"{}\"\nsync_interval = \"500ms\"\n",
                    redis.url()
                )),
            )
        })
        .collect();
    let path = format!("/v2/{IMAGE}/tags/list");
    let scope = ["repository:team/app:pull"];
    let revoked = replicas[0].token(Some((USER, PASS)), &scope);
    let kept = replicas[1].token(Some((USER, PASS)), &scope);
    let status = |r: &Proxy, t: &str| {
        r.send_bearer(reqwest::Method::GET, &path, t)
            .status()
            .as_u16()
    };
    for (i, r) in replicas.iter().enumerate() {
        assert_eq!(
            status(r, &revoked),
            200,
            "replica {i} takes replica 0's token\n{}",
            r.logs()
        );
    }
    let jti = jwt_claims(&revoked)["jti"].as_str().unwrap().to_owned();
    let config = replicas[0].config_path().display().to_string();
    let o = portcullis(
        &["token", "revoke", "--config", &config, "--jti", &jti],
        None,
    );
    assert!(o.status.success(), "token revoke: {}", out_text(&o));
    for (i, r) in replicas.iter().enumerate() {
        wait_until(
            &format!("replica {i} refuses the revoked token"),
            Duration::from_secs(15),
            || status(r, &revoked) == 401,
            || r.logs(),
        );
        assert_eq!(
            status(r, &kept),
            200,
            "replica {i}: another token is not revoked"
        );
    }
}

/// `[limits.per_user]` burst 12 over three replicas: 12 requests through
/// HAProxy (4 per replica, a third of each replica's own burst) spend the
/// fleet's bucket. Then rounds of one request to each replica, a sync
/// interval and a half apart, until all three refuse: with one bucket for
/// the fleet at most the sync slack gets through (here: ≤ 6), where three
/// buckets would admit 24 more. The refusal is 429 with Retry-After; with
/// Redis gone, requests still get answers at once.
#[test]
fn a_users_rate_limit_is_one_bucket_for_the_fleet() {
    let mut redis = RedisServer::start();
    let f = fleet_with(
        &redis,
        "sync_interval = \"200ms\"\n\n[limits.per_user]\nrate = 0.01\nburst = 12\n",
    );
    let manifest = format!("/v2/{IMAGE}/tags/list");
    for i in 0..12 {
        assert_eq!(
            f.get("127.0.0.2", &manifest, PASS),
            200,
            "request {i}\n{}",
            f.logs()
        );
    }
    let direct = |p: &Proxy| {
        p.client()
            .get(p.url("/v2/"))
            .basic_auth(USER, Some(PASS))
            .send()
            .unwrap()
    };
    let mut admitted = 0;
    let mut all_refused = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(300));
        let statuses: Vec<u16> = f
            .replicas
            .iter()
            .map(|p| direct(p).status().as_u16())
            .collect();
        admitted += statuses.iter().filter(|s| **s == 200).count();
        if statuses.iter().all(|s| *s == 429) {
            all_refused = true;
            break;
        }
    }
    assert!(all_refused, "the replicas never all refused\n{}", f.logs());
    assert!(
        admitted <= 6,
        "{admitted} requests admitted after the fleet's bucket was spent\n{}",
        f.logs()
    );
    let r = direct(&f.replicas[0]);
    assert_eq!(r.status(), 429);
    assert!(header_of(&r, "retry-after").is_some());
    assert_eq!(
        error_codes(&r.bytes().unwrap()).unwrap(),
        ["TOOMANYREQUESTS"]
    );
    // "probe" (in no file) is not a user: 401, not 429
    assert_eq!(f.get_as("127.0.0.3", "/v2/", "probe", "probe"), 401);

    // Redis gone: answers come at once, the spent bucket stays spent here
    redis.kill();
    assert_eq!(f.get("127.0.0.2", "/v2/", PASS), 429);
    drop(f.reg);
}
