//! The LDAP backend against a real slapd: who gets in, with which groups,
//! and that hostile user names and empty passwords get nowhere.
//!
//! The backend is called directly (it is a library); connection handling
//! (TLS, outages, failover, runtimes) is in `ldap_connection.rs`.

mod support;

use std::time::Duration;

use portcullis::auth::authentication::ldap::{LdapBackend, LdapError, LdapVerdict};
use portcullis::config::ldap::{GroupName, LdapConfig};
use portcullis::config::Secret;
use support::slapd::*;

/// Search-then-bind through the service account; "disabled" users are
/// excluded by the filter.
fn config(slapd: &Slapd) -> LdapConfig {
    let mut c = LdapConfig::new(vec![slapd.url().parse().unwrap()], BASE_DN);
    c.bind_dn = Some(SERVICE_DN.into());
    c.bind_password = Some(Secret::Inline(SERVICE_PW.into()));
    c.user_filter =
        Some("(&(objectClass=person)(uid={username})(!(employeeType=disabled)))".into());
    c.connect_timeout = Duration::from_secs(2);
    c.timeout = Duration::from_secs(3);
    c
}

/// The group search that finds groupOfNames, groupOfUniqueNames and
/// posixGroup memberships.
fn with_group_search(mut c: LdapConfig) -> LdapConfig {
    c.group_search_base = Some("ou=groups,dc=example,dc=org".into());
    c.group_filter = Some("(|(member={dn})(uniqueMember={dn})(memberUid={username}))".into());
    c
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

struct Client {
    rt: tokio::runtime::Runtime,
    backend: LdapBackend,
}

impl Client {
    fn new(cfg: &LdapConfig) -> Client {
        Client {
            rt: rt(),
            backend: LdapBackend::new(cfg).expect("backend"),
        }
    }

    fn auth(&self, user: &str, password: &str) -> Result<LdapVerdict, LdapError> {
        self.rt.block_on(self.backend.authenticate(user, password))
    }

    fn verdict(&self, user: &str, password: &str) -> LdapVerdict {
        self.auth(user, password)
            .unwrap_or_else(|e| panic!("{user:?}: {e}"))
    }

    fn groups(&self, user: &str, password: &str) -> Vec<String> {
        match self.verdict(user, password) {
            LdapVerdict::Authenticated { groups, .. } => groups,
            other => panic!("{user:?} not authenticated: {other:?}"),
        }
    }

    fn lookup(&self, user: &str) -> Option<(String, Vec<String>)> {
        self.rt
            .block_on(self.backend.lookup(user))
            .unwrap()
            .map(|e| (e.dn, e.groups))
    }
}

/// The verdict for alice with her password: her entry, group devs.
fn alice_in_devs() -> LdapVerdict {
    LdapVerdict::Authenticated {
        dn: ALICE_DN.into(),
        user: "alice".into(),
        groups: vec!["devs".into()],
        password_changed: None,
    }
}

#[test]
fn search_then_bind() {
    let slapd = Slapd::start();
    let c = Client::new(&config(&slapd));
    assert_eq!(c.verdict(ALICE.0, ALICE.1), alice_in_devs());
    assert_eq!(c.groups("bob", "bob-pw"), ["ci-pushers"]);
    assert_eq!(c.verdict("alice", "wrong"), LdapVerdict::BadPassword);
    assert_eq!(c.verdict("alice", "alice-pw "), LdapVerdict::BadPassword);
    assert_eq!(c.verdict("nobody", "alice-pw"), LdapVerdict::UnknownUser);
    // LDAP matching ignores case: the same entry
    assert_eq!(c.groups("ALICE", "alice-pw"), ["devs"]);
}

/// The identity is the entry's `uid` as the directory stores it, however
/// the name was typed.
#[test]
fn the_identity_is_the_directory_spelling() {
    let slapd = Slapd::start();
    let c = Client::new(&config(&slapd));
    for typed in ["alice", "ALICE", "Alice", "ａｌｉｃｅ"] {
        match c.verdict(typed, "alice-pw") {
            LdapVerdict::Authenticated { user, .. } => assert_eq!(user, "alice", "{typed:?}"),
            // a directory that does not fold this spelling just does not
            // know it
            LdapVerdict::UnknownUser if typed == "ａｌｉｃｅ" => {}
            other => panic!("{typed:?}: {other:?}"),
        }
    }
    let entry =
        c.rt.block_on(c.backend.lookup("ALICE"))
            .unwrap()
            .expect("found");
    assert_eq!(entry.user, "alice");
    // an attribute the entry lacks gives no identity: unknown, not "ALICE"
    let mut cfg = config(&slapd);
    cfg.user_attribute = Some("employeeNumber".into());
    let c = Client::new(&cfg);
    assert_eq!(c.verdict("alice", "alice-pw"), LdapVerdict::UnknownUser);
}

#[test]
fn lookup_finds_dn_and_groups_without_a_password() {
    let slapd = Slapd::start();
    let c = Client::new(&with_group_search(config(&slapd)));
    let binds = slapd.binds_as(ALICE_DN);
    assert_eq!(
        c.lookup("alice"),
        Some((ALICE_DN.into(), vec!["devs".into(), "posix-devs".into()]))
    );
    assert_eq!(slapd.binds_as(ALICE_DN), binds, "lookup must not bind");
    assert_eq!(c.lookup("nobody"), None);
    assert_eq!(c.lookup("twin"), None);
}

#[test]
fn empty_password_never_reaches_slapd() {
    let slapd = Slapd::start();
    let c = Client::new(&config(&slapd));
    assert!(matches!(
        c.verdict("alice", "alice-pw"),
        LdapVerdict::Authenticated { .. }
    ));
    let binds = slapd.binds_as(ALICE_DN);
    assert_eq!(binds, 1, "the log shows binds:\n{}", slapd.log());
    assert_eq!(c.verdict("alice", ""), LdapVerdict::BadPassword);
    // direct-bind mode too
    let mut direct = config(&slapd);
    direct.user_dn_template = Some("uid={username},ou=people,dc=example,dc=org".into());
    let d = Client::new(&direct);
    assert_eq!(d.verdict("alice", ""), LdapVerdict::BadPassword);
    assert_eq!(
        slapd.binds_as(ALICE_DN),
        binds,
        "an empty password was sent"
    );
}

/// On a server that takes "DN + empty password" as an anonymous bind (as
/// Active Directory does), that bind succeeds: only the backend's own
/// check stands between an empty password and a login.
#[test]
fn empty_password_on_a_server_that_accepts_it() {
    let slapd = Slapd::start_with(SlapdOptions {
        allow_unauthenticated_bind: true,
        ..Default::default()
    });
    let rc = rt().block_on(async {
        let (conn, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url()).await.unwrap();
        ldap3::drive!(conn);
        ldap.simple_bind(ALICE_DN, "").await.unwrap().rc
    });
    assert_eq!(rc, 0, "this slapd should accept an unauthenticated bind");
    let binds = slapd.binds_as(ALICE_DN);
    for mode in [None, Some("uid={username},ou=people,dc=example,dc=org")] {
        let mut cfg = config(&slapd);
        cfg.user_dn_template = mode.map(Into::into);
        let c = Client::new(&cfg);
        assert_eq!(c.verdict("alice", ""), LdapVerdict::BadPassword, "{mode:?}");
        assert!(matches!(
            c.verdict("alice", "alice-pw"),
            LdapVerdict::Authenticated { .. }
        ));
    }
    // two real logins, no empty one
    assert_eq!(slapd.binds_as(ALICE_DN), binds + 2, "{}", slapd.log());
}

#[test]
fn injection_in_user_names_finds_nobody() {
    let slapd = Slapd::start();
    let c = Client::new(&config(&slapd));
    let names = [
        "*",
        "*)(uid=*",
        "admin)(|(uid=*",
        "admin)(uid=admin",
        "alice)(objectClass=*",
        "\\00",
        "\\2a",
        "o*",
        "*o",
        "al*",
        "admin\0",
        "(",
        ")",
        "\\",
    ];
    for name in names {
        for password in ["alice-pw", "admin-pw", "star-pw"] {
            assert_eq!(
                c.verdict(name, password),
                LdapVerdict::UnknownUser,
                "{name:?} / {password}"
            );
        }
        assert_eq!(c.lookup(name), None, "{name:?}");
    }
    // the name with a '*' is matched literally, and only by itself
    match c.verdict("o*o", "star-pw") {
        LdapVerdict::Authenticated { dn, .. } => {
            assert_eq!(dn, "uid=o*o,ou=people,dc=example,dc=org")
        }
        other => panic!("o*o: {other:?}"),
    }
    assert_eq!(c.verdict("o*o", "alice-pw"), LdapVerdict::BadPassword);
}

#[test]
fn several_entries_are_an_unknown_user() {
    let slapd = Slapd::start();
    let c = Client::new(&config(&slapd));
    assert_eq!(c.verdict("twin", "twin-pw"), LdapVerdict::UnknownUser);
    // neither entry was tried
    assert_eq!(slapd.binds_as("uid=twin,ou=people,dc=example,dc=org"), 0);
    assert_eq!(
        slapd.binds_as("uid=twin,ou=contractors,dc=example,dc=org"),
        0
    );
}

#[test]
fn filter_excludes_disabled_users() {
    let slapd = Slapd::start();
    let c = Client::new(&config(&slapd));
    assert_eq!(c.verdict("dave", "dave-pw"), LdapVerdict::UnknownUser);
    let mut cfg = config(&slapd);
    cfg.user_filter = None; // the default filter has no exclusion
    assert!(matches!(
        Client::new(&cfg).verdict("dave", "dave-pw"),
        LdapVerdict::Authenticated { .. }
    ));
}

#[test]
fn groups_from_member_of_and_group_search() {
    let slapd = Slapd::start();
    // memberOf (the overlay): direct groupOfNames memberships only
    let c = Client::new(&config(&slapd));
    assert_eq!(c.groups("carol", "carol-pw"), ["inner"]);
    assert_eq!(c.groups("admin", "admin-pw"), ["admins"]);
    // the group search adds posixGroup memberUid
    let c = Client::new(&with_group_search(config(&slapd)));
    assert_eq!(c.groups("alice", "alice-pw"), ["devs", "posix-devs"]);
    assert_eq!(c.groups("carol", "carol-pw"), ["inner"]);
    // group search alone, no memberOf
    let mut cfg = with_group_search(config(&slapd));
    cfg.group_attribute = String::new();
    assert_eq!(
        Client::new(&cfg).groups("alice", "alice-pw"),
        ["devs", "posix-devs"]
    );
    // full DNs
    let mut cfg = config(&slapd);
    cfg.group_name = GroupName::Dn;
    assert_eq!(
        Client::new(&cfg).groups("bob", "bob-pw"),
        ["cn=ci-pushers,ou=groups,dc=example,dc=org"]
    );
}

#[test]
fn nested_groups_by_group_search() {
    let slapd = Slapd::start();
    let mut cfg = with_group_search(config(&slapd));
    cfg.nested_group_depth = 3;
    let c = Client::new(&cfg);
    assert_eq!(c.groups("carol", "carol-pw"), ["inner", "platform"]);
    assert_eq!(c.groups("alice", "alice-pw"), ["devs", "posix-devs"]);
    // a loop in the directory ends
    slapd.ldapmodify(
        "dn: cn=inner,ou=groups,dc=example,dc=org\n\
         changetype: modify\n\
         add: member\n\
         member: cn=platform,ou=groups,dc=example,dc=org\n",
    );
    assert_eq!(c.groups("carol", "carol-pw"), ["inner", "platform"]);
}

#[test]
fn required_group() {
    let slapd = Slapd::start();
    let mut cfg = config(&slapd);
    cfg.required_group = Some("ci-pushers".into());
    let c = Client::new(&cfg);
    assert_eq!(c.groups("bob", "bob-pw"), ["ci-pushers"]);
    let binds = slapd.binds_as(ALICE_DN);
    assert_eq!(c.verdict("alice", "alice-pw"), LdapVerdict::UnknownUser);
    assert_eq!(c.verdict("alice", "wrong"), LdapVerdict::UnknownUser);
    assert_eq!(
        slapd.binds_as(ALICE_DN),
        binds,
        "outside the group, no bind"
    );
    assert_eq!(c.lookup("alice"), None);
    // as a DN, and reached through nesting
    let mut cfg = with_group_search(config(&slapd));
    cfg.required_group = Some("cn=platform,ou=groups,dc=example,dc=org".into());
    cfg.nested_group_depth = 1;
    let c = Client::new(&cfg);
    assert_eq!(c.groups("carol", "carol-pw"), ["inner", "platform"]);
    assert_eq!(c.verdict("bob", "bob-pw"), LdapVerdict::UnknownUser);
}

#[test]
fn direct_bind_with_a_dn_template() {
    let slapd = Slapd::start();
    let mut cfg = config(&slapd);
    cfg.bind_dn = None;
    cfg.bind_password = None;
    cfg.user_dn_template = Some("uid={username},ou=people,dc=example,dc=org".into());
    let c = Client::new(&cfg);
    // the entry and its memberOf are read as the user
    assert_eq!(c.verdict(ALICE.0, ALICE.1), alice_in_devs());
    assert_eq!(c.verdict("alice", "wrong"), LdapVerdict::BadPassword);
    // the directory cannot tell an unknown name from a wrong password
    assert_eq!(c.verdict("nobody", "x"), LdapVerdict::BadPassword);
    // RFC 4514: ',' and '+' in the name stay part of the value
    match c.verdict("a,b+c", "comma-pw") {
        LdapVerdict::Authenticated { dn, .. } => {
            assert!(dn.to_lowercase().starts_with("uid=a\\2cb\\2bc,"), "{dn}")
        }
        other => panic!("a,b+c: {other:?}"),
    }
    // a name that would add RDNs binds as nobody
    assert_eq!(
        c.verdict("alice,ou=people", "alice-pw"),
        LdapVerdict::BadPassword
    );
    // the filter still applies: a disabled user is unknown after the bind
    assert_eq!(c.verdict("dave", "dave-pw"), LdapVerdict::UnknownUser);
    // and the service account, when set, reads the entry instead
    let mut cfg = config(&slapd);
    cfg.user_dn_template = Some("uid={username},ou=people,dc=example,dc=org".into());
    let c = Client::new(&cfg);
    assert_eq!(c.groups("bob", "bob-pw"), ["ci-pushers"]);
    assert_eq!(
        c.lookup("alice"),
        Some((ALICE_DN.into(), vec!["devs".into()]))
    );
}

#[test]
fn wrong_service_password_is_an_error_not_a_refusal() {
    let slapd = Slapd::start();
    let mut cfg = config(&slapd);
    cfg.bind_password = Some(Secret::Inline("not-the-service-pw".into()));
    let c = Client::new(&cfg);
    let e = c.auth("alice", "alice-pw").unwrap_err();
    assert!(matches!(e, LdapError::ServiceBind { .. }), "{e}");
    assert!(!e.is_outage());
}

#[test]
fn concurrent_logins_are_bounded_and_all_answered() {
    let slapd = Slapd::start();
    let mut cfg = with_group_search(config(&slapd));
    cfg.max_concurrency = 2;
    cfg.pool_size = 2;
    let backend = std::sync::Arc::new(LdapBackend::new(&cfg).unwrap());
    // callers on the worker threads of another multi-threaded runtime
    let callers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = callers.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..40 {
            let backend = std::sync::Arc::clone(&backend);
            set.spawn(async move {
                let pw = if i % 2 == 0 { "alice-pw" } else { "wrong" };
                (i, backend.authenticate("alice", pw).await)
            });
        }
        set.join_all().await
    });
    assert_eq!(results.len(), 40);
    for (i, r) in results {
        match (i % 2, r.unwrap()) {
            (0, LdapVerdict::Authenticated { .. }) | (1, LdapVerdict::BadPassword) => {}
            (_, other) => panic!("login {i}: {other:?}"),
        }
    }
}
