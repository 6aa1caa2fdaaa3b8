//! The verified-credential cache.
//!
//! bcrypt is slow on purpose; a 20-layer pull makes ~40 requests, each with
//! the same Basic credentials. Entries are keyed by an HMAC of user and
//! password under a per-process random key: the plaintext is never stored,
//! and a dump of memory does not yield an offline-crackable fast hash.
//!
//! The key is computed on every request that carries a password, so it is
//! ring's HMAC: the keyed inner and outer states are prepared once in
//! [`ring::hmac::Key`], leaving two SHA-256 blocks per request in ring's
//! assembly (the `hmac` crate re-derived the key pads each time: four).

use moka::sync::Cache;
use ring::hmac;
use std::sync::Arc;
use std::time::Duration;

use super::Identity;

type Key = [u8; 32];

pub struct CredentialCache {
    key: hmac::Key,
    entries: Cache<Key, Arc<Identity>>,
}

impl CredentialCache {
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        CredentialCache {
            key: hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()),
            entries: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(max_entries)
                .build(),
        }
    }

    fn key_of(&self, user: &str, password: &str) -> Key {
        let mut mac = hmac::Context::with_key(&self.key);
        // Length-prefix the user so ("ab","c") and ("a","bc") differ.
        mac.update(&(user.len() as u64).to_be_bytes());
        mac.update(user.as_bytes());
        mac.update(password.as_bytes());
        let mut key = [0u8; 32];
        // (HMAC-SHA256 tags are 32 bytes)
        key.copy_from_slice(mac.sign().as_ref());
        key
    }

    pub fn get(&self, user: &str, password: &str) -> Option<Arc<Identity>> {
        self.entries.get(&self.key_of(user, password))
    }

    pub fn insert(&self, user: &str, password: &str, identity: Arc<Identity>) {
        self.entries.insert(self.key_of(user, password), identity);
    }

    /// Forget everything, e.g. when the htpasswd file changed: a removed
    /// user or a changed password must not keep working until the TTL ends.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(u: &str) -> Arc<Identity> {
        Arc::new(Identity {
            credential_stamp: None,
            user: u.into(),
            backend: "htpasswd",
            groups: Vec::new(),
            credential: crate::auth::authentication::Credential::Password,
            restriction: None,
        })
    }

    #[test]
    fn hit_only_for_same_user_and_password() {
        let c = CredentialCache::new(Duration::from_secs(60), 100);
        c.insert("alice", "pw", id("alice"));
        assert_eq!(c.get("alice", "pw").unwrap().user, "alice");
        assert!(c.get("alice", "pw2").is_none());
        assert!(c.get("alicep", "w").is_none());
        assert!(c.get("bob", "pw").is_none());
        c.clear();
        assert!(c.get("alice", "pw").is_none());
    }

    #[test]
    fn entries_expire() {
        let c = CredentialCache::new(Duration::from_millis(50), 100);
        c.insert("alice", "pw", id("alice"));
        std::thread::sleep(Duration::from_millis(120));
        assert!(c.get("alice", "pw").is_none());
    }

    #[test]
    fn keys_differ_per_process_key() {
        let a = CredentialCache::new(Duration::from_secs(1), 1);
        let b = CredentialCache::new(Duration::from_secs(1), 1);
        assert_ne!(a.key_of("u", "p"), b.key_of("u", "p"));
    }
}
