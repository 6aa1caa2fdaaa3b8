//! `[limits]`: request rate limits per client address and per user, on top
//! of the login throttle (which only counts failures).

use serde::{Deserialize, Serialize};

use super::Problem;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Every request from one address (IPv6: one /64, which one host can
    /// fill with addresses).
    pub per_address: Option<RateConfig>,
    /// Every authenticated request of one user, from wherever.
    pub per_user: Option<RateConfig>,
    /// Networks no limit applies to (CI runners, the balancer's checks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<ipnet::IpNet>,
}

/// A token bucket: `burst` requests at once, refilled at `rate` a second.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Requests per second, sustained.
    pub rate: f64,
    /// Requests at once, after a quiet spell; at least 1.
    pub burst: u32,
}

impl LimitsConfig {
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        for (key, r) in [
            ("per_address", self.per_address),
            ("per_user", self.per_user),
        ] {
            let Some(r) = r else { continue };
            if !(r.rate.is_finite() && r.rate > 0.0) {
                p.push(Problem::new(
                    format!("limits.{key}.rate"),
                    "must be a number of requests per second above zero",
                ));
            }
            if r.burst == 0 {
                p.push(Problem::new(
                    format!("limits.{key}.burst"),
                    "must be at least 1 (requests allowed at once)",
                ));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml_text: &str) -> Vec<String> {
        let cfg: LimitsConfig = toml::from_str(toml_text).unwrap();
        cfg.validate().iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn bad_limits_name_their_keys() {
        let p =
            problems("[per_user]\nrate = 0\nburst = 0\n[per_address]\nrate = -1.5\nburst = 3\n");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("limits.per_address.rate: "), "{p:?}");
        assert!(p[1].starts_with("limits.per_user.rate: "), "{p:?}");
        assert!(
            p[2].starts_with("limits.per_user.burst: must be at least 1"),
            "{p:?}"
        );
        assert!(problems("[per_user]\nrate = 0.5\nburst = 1\n").is_empty());
        assert!(toml::from_str::<LimitsConfig>("[per_user]\nrate = 1\n").is_err());
    }
}
