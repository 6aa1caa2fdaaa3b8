//! `[cluster]`: state shared by the replicas of a fleet, in Redis: the
//! login throttle's counters and blocks, so N replicas behind a load
//! balancer give an attacker `max_failures` attempts in all, not N times
//! as many; and the revocation list (`server::cluster_sync`).
//!
//! Redis is asked only on the cold path (a login that is not cached and
//! is about to cost a bcrypt or a directory bind) and on failures; a
//! cached login and every pull never wait on it. Each call is bounded by
//! `cluster.timeout`; when Redis cannot be reached the throttle counts per
//! process, as without `[cluster]`, with a WARN line (at most one per 10 s)
//! and `portcullis_cluster_up` at 0, and shares again once Redis answers
//! (the connection is re-made in the background of later calls).

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ClusterConfig;

#[derive(Debug, thiserror::Error)]
#[error("cluster.redis: {0}")]
pub struct ClusterError(pub String);

pub struct Cluster {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    conn: ArcSwapOption<ConnectionManager>,
    /// One connection attempt at a time, at most every `RECONNECT_EVERY`.
    connecting: tokio::sync::Mutex<Option<Instant>>,
    up: AtomicBool,
    last_warning: Mutex<Option<Instant>>,
}

const RECONNECT_EVERY: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Cluster {
    pub fn new(cfg: &ClusterConfig, url: &str) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(url).map_err(|e| {
            // the URL may hold a password: say what is wrong, not what it is
            ClusterError(format!("not a redis:// or rediss:// URL ({:?})", e.kind()))
        })?;
        Ok(Cluster {
            client,
            prefix: cfg.key_prefix.clone(),
            timeout: cfg.timeout,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(None),
            up: AtomicBool::new(false),
            last_warning: Mutex::new(None),
        })
    }

    /// The full name of a key.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                k.push(':');
            }
            k.push_str(p);
        }
        k
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.load_full() {
            return Some((*c).clone());
        }
        let mut last = self.connecting.try_lock().ok()?;
        if last.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
            return None;
        }
        *last = Some(Instant::now());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        match tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        {
            Ok(Ok(c)) => {
                self.conn.store(Some(Arc::new(c.clone())));
                tracing::info!(target: "cluster", "connected to Redis: the login throttle is shared");
                Some(c)
            }
            Ok(Err(e)) => {
                self.failed("connect", &e.to_string());
                None
            }
            Err(_) => {
                self.failed("connect", "timed out");
                None
            }
        }
    }

    /// Runs `pipe`; `None` (and per-process behaviour) when Redis cannot be
    /// asked within the timeout.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        op: &str,
        pipe: &redis::Pipeline,
    ) -> Option<T> {
        let mut conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    crate::observe::metrics::metrics().cluster_up.set(1);
                }
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(op, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(op, "timed out");
                None
            }
        }
    }

    fn failed(&self, op: &str, error: &str) {
        let m = crate::observe::metrics::metrics();
        m.cluster_errors.with_label_values(&[op]).inc();
        m.cluster_up.set(0);
        self.up.store(false, Ordering::Relaxed);
        let warn = self
            .last_warning
            .lock()
            .map(|mut t| {
                let due = t.is_none_or(|t| t.elapsed() >= WARN_EVERY);
                if due {
                    *t = Some(Instant::now());
                }
                due
            })
            .unwrap_or(true);
        if warn {
            tracing::warn!(target: "cluster", op, error, "Redis cannot be reached: the login throttle and rate limits count per process until it answers");
        }
    }
}
