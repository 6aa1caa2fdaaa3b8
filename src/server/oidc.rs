//! The OpenID Connect background work, as one service that stops on
//! shutdown: the issuers' keys fetched before they are due (so no request
//! waits for them), and the login tokens' provider sessions refreshed.

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::authentication::oidc::Oidc;
use crate::auth::login::Login;

pub struct OidcService {
    pub oidc: Arc<Oidc>,
    pub login: Option<Arc<Login>>,
}

impl OidcService {
    /// How often to look: often enough for the shortest interval
    /// configured, never busier than once a second.
    fn tick(&self) -> Duration {
        let refresh = self
            .login
            .as_ref()
            .map_or(Duration::from_secs(60), |l| l.config().refresh_interval / 4);
        refresh.clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

#[async_trait]
impl pingora::services::background::BackgroundService for OidcService {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        // both are bounded by the HTTP client's timeouts
        super::periodic::every(self.tick(), &mut shutdown, || async {
            self.oidc.refresh_keys().await;
            if let Some(login) = &self.login {
                login.refresh_round().await;
            }
        })
        .await;
    }
}
