//! `[cluster]`: the revocation list shared by the fleet, as a background
//! service that stops on shutdown. Every `cluster.sync_interval` each
//! replica writes what it revoked (its revocation file's entries, and the
//! users it saw removed or re-passworded) into one Redis hash, and reads
//! back everyone's: a token revoked on one replica is refused by all of
//! them within two intervals (after the revoking replica reloaded its
//! file). When Redis cannot be reached, the last copy stays and the
//! replica's own file still applies; the sync catches up when it answers.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::token::revocation::{Entry, RevocationList};
use crate::cluster::Cluster;

pub struct RevocationSync {
    pub cluster: Arc<Cluster>,
    pub list: Arc<RevocationList>,
    pub interval: Duration,
}

impl RevocationSync {
    async fn round(&self) {
        let key = self.cluster.key(&["revoked"]);
        let mut pipe = redis::pipe();
        let mine = self.list.local_entries();
        if !mine.is_empty() {
            let fields: Vec<(String, String)> = mine
                .iter()
                .filter_map(|e| {
                    let target = serde_json::to_string(&e.target).ok()?;
                    Some((format!("{target}@{}", e.at), serde_json::to_string(e).ok()?))
                })
                .collect();
            pipe.cmd("HSET").arg(&key).arg(fields).ignore();
        }
        pipe.cmd("HGETALL").arg(&key);
        let Some((all,)) = self
            .cluster
            .query::<(HashMap<String, String>,)>("revocation_sync", &pipe)
            .await
        else {
            return;
        };
        let now = std::time::SystemTime::now();
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (field, value) in all {
            match serde_json::from_str::<Entry>(&value) {
                Ok(e) if humantime::parse_rfc3339(&e.until).is_ok_and(|u| u > now) => live.push(e),
                // past its `until` (no token it matches is valid) or unreadable
                _ => gone.push(field),
            }
        }
        let n = self.list.set_shared(live);
        tracing::debug!(target: "cluster", revoked = n, "revocation list synced");
        if !gone.is_empty() {
            let mut prune = redis::pipe();
            prune.cmd("HDEL").arg(&key).arg(gone).ignore();
            let _: Option<()> = self.cluster.query("revocation_prune", &prune).await;
        }
    }
}

#[async_trait]
impl pingora::services::background::BackgroundService for RevocationSync {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        super::periodic::every(self.interval, &mut shutdown, || self.round()).await;
    }
}
