//! The verified-credential cache.
//!
//! bcrypt is slow on purpose; a 20-layer pull makes ~40 requests, each with
//! the same Basic credentials. Entries are keyed by a keyed hash (a PRF)
//! of user and password under a per-process random key, so the plaintext
//! is never stored. (A dump of the whole memory holds the key too, and with
//! it each entry can be tested against password guesses as fast as the
//! hash runs: what bounds that exposure is the TTL and the entry count.)
//!
//! The key is computed on every request that carries a password, so it is
//! BLAKE3 in keyed mode: one compression for a user and password that fit
//! in 64 bytes, where HMAC-SHA256 takes two SHA-256 blocks even with its key
//! pads prepared (docs/benchmarks.md, "Per request, second pass").

use moka::sync::Cache;
use std::sync::Arc;
use std::time::Duration;

use super::Identity;

type Key = [u8; 32];

pub struct CredentialCache {
    key: [u8; blake3::KEY_LEN],
    /// Hashed with foldhash, not SipHash: a key is already the output of a
    /// keyed PRF, which no client can steer into colliding buckets.
    entries: Cache<Key, Arc<Identity>, foldhash::fast::RandomState>,
}

impl CredentialCache {
    pub fn new(ttl: Duration, max_entries: u64) -> Self {
        CredentialCache {
            key: rand::random(),
            entries: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(max_entries)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// The keyed hash of the user's length (so ("ab","c") and ("a","bc")
    /// differ), the user and the password. Input that fits one 64-byte
    /// block is assembled on the stack and hashed in one call, which skips
    /// the incremental hasher's bookkeeping; longer input streams through it.
    fn key_of(&self, user: &str, password: &str) -> Key {
        let prefix = (user.len() as u64).to_be_bytes();
        let (u, p) = (user.as_bytes(), password.as_bytes());
        let len = prefix.len() + u.len() + p.len();
        let mut block = [0u8; blake3::BLOCK_LEN];
        if let Some(input) = block.get_mut(..len) {
            let (head, rest) = input.split_at_mut(prefix.len());
            let (mid, tail) = rest.split_at_mut(u.len());
            head.copy_from_slice(&prefix);
            mid.copy_from_slice(u);
            tail.copy_from_slice(p);
            return *blake3::keyed_hash(&self.key, input).as_bytes();
        }
        let mut mac = blake3::Hasher::new_keyed(&self.key);
        mac.update(&prefix);
        mac.update(u);
        mac.update(p);
        *mac.finalize().as_bytes()
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

    /// The one-block shortcut hashes exactly what the incremental hasher
    /// does, on either side of the block boundary.
    #[test]
    fn short_and_long_keys_hash_the_same_input() {
        let c = CredentialCache::new(Duration::from_secs(1), 1);
        for ulen in [0, 1, 5, 30, 56, 57, 70] {
            for plen in [0, 1, 7, 8, 9, 40, 100] {
                let (user, password) = ("u".repeat(ulen), "p".repeat(plen));
                let mut mac = blake3::Hasher::new_keyed(&c.key);
                mac.update(&(user.len() as u64).to_be_bytes());
                mac.update(user.as_bytes());
                mac.update(password.as_bytes());
                assert_eq!(c.key_of(&user, &password), *mac.finalize().as_bytes());
            }
        }
        assert_ne!(c.key_of("ab", "c"), c.key_of("a", "bc"));
    }

    #[test]
    fn keys_differ_per_process_key() {
        let a = CredentialCache::new(Duration::from_secs(1), 1);
        let b = CredentialCache::new(Duration::from_secs(1), 1);
        assert_ne!(a.key_of("u", "p"), b.key_of("u", "p"));
    }
}
