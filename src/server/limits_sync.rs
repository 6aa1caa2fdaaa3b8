//! `[cluster]` + `[limits]`: the fleet's rate-limit buckets, as a
//! background service that stops on shutdown. Every `cluster.sync_interval`
//! each replica adds what it admitted since the last round to each key's
//! arrival time in Redis (one script call, Redis's clock) and moves its own
//! buckets to the fleet's. A client spread over N replicas gets one bucket:
//! at most one interval's admissions per replica beyond it. When Redis
//! cannot be reached, each replica limits on its own (N buckets) until it
//! answers; no request ever waits on Redis.

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::limits::Limits;

/// KEYS: the buckets; ARGV: per key, the cost admitted and the tolerance.
/// Returns, per key, how many seconds the fleet's bucket is from full.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for i, key in ipairs(KEYS) do
  local cost = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  tat = tat + cost
  local ttl = math.ceil((tat - now + tau) * 1000) + 1000
  redis.call('SET', key, string.format('%.6f', tat), 'PX', ttl)
  out[i] = string.format('%.6f', tat - now)
end
return out
";

/// Keys per script call: bounded, so that one round never holds Redis long.
const BATCH: usize = 500;

pub struct LimitsSync {
    pub cluster: Arc<Cluster>,
    pub limits: Arc<Limits>,
    pub interval: Duration,
}

impl LimitsSync {
    async fn round(&self) {
        let drained = self.limits.drain();
        for chunk in drained.chunks(BATCH) {
            let mut pipe = redis::pipe();
            let cmd = pipe.cmd("EVAL").arg(SCRIPT).arg(chunk.len());
            for (kind, key, _) in chunk {
                cmd.arg(self.cluster.key(&["rate", kind.as_str(), key]));
            }
            for (kind, _, cost) in chunk {
                cmd.arg(format!("{cost:.6}"))
                    .arg(format!("{:.6}", self.limits.tolerance(*kind)));
            }
            let Some((debts,)) = self
                .cluster
                .query::<(Vec<String>,)>("limits_sync", &pipe)
                .await
            else {
                return;
            };
            for ((kind, key, _), debt) in chunk.iter().zip(debts) {
                if let Ok(debt) = debt.parse::<f64>() {
                    self.limits.absorb(*kind, key, debt);
                }
            }
        }
    }
}

#[async_trait]
impl pingora::services::background::BackgroundService for LimitsSync {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        super::periodic::every(self.interval, &mut shutdown, || self.round()).await;
    }
}
