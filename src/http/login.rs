//! The HTTP side of the browser login: `GET /login` (off to the provider)
//! and `GET /login/callback` (back, with the new token's page). The flow
//! itself is `auth::login`; the pages are [`page`](super::page).

use super::page::{self, Page};
use super::reply::Reply;
use crate::auth::login::{Login, COOKIE};
use crate::registry::errors::RegistryError;

/// The two paths, from `redirect_url`: `…/callback` and the one above it.
pub struct LoginPaths {
    pub start: String,
    pub callback: String,
}

impl LoginPaths {
    pub fn of(login: &Login) -> LoginPaths {
        let callback = login.config().redirect_url.path().to_owned();
        let start = callback
            .strip_suffix("/callback")
            .filter(|s| !s.is_empty())
            .unwrap_or("/login")
            .to_owned();
        LoginPaths { start, callback }
    }

    pub fn matches(&self, path: &str) -> bool {
        path == self.start || path == self.callback
    }
}

/// Answers a request for one of the login's paths.
pub async fn serve(
    req: &pingora::http::RequestHeader,
    login: &Login,
    paths: &LoginPaths,
    client: std::net::IpAddr,
) -> Reply {
    let metric = |result: &str| {
        crate::observe::metrics::metrics()
            .oidc_logins
            .with_label_values(&[result])
            .inc()
    };
    if req.method != http::Method::GET {
        return RegistryError::METHOD_NOT_ALLOWED.into();
    }
    let query = req.uri.query();
    if req.uri.path() == paths.start {
        let lifetime =
            query_param(query, "lifetime").and_then(|l| humantime::parse_duration(&l).ok());
        return match login.start(lifetime).await {
            Ok(started) => Reply::Page(Page::redirect(started.location).with_cookie(format!(
                "{COOKIE}={}; Path=/; Max-Age=600; Secure; HttpOnly; SameSite=Lax",
                started.binding
            ))),
            Err(e) => {
                metric("error");
                tracing::warn!(target: "auth", error = %e, "browser login cannot start");
                Reply::Page(page::error(&e, &paths.start))
            }
        };
    }
    let binding = cookie(&req.headers, COOKIE);
    let cleared = format!("{COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax");
    let host = login.config().redirect_url.host_str().unwrap_or("registry");
    let registry = match login.config().redirect_url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    match login.finish(query, binding.as_deref(), client).await {
        Ok(done) => {
            metric("ok");
            Reply::Page(page::token(&done, &registry).with_cookie(cleared))
        }
        Err(e) => {
            metric(if e.status() == 403 {
                "refused"
            } else {
                "error"
            });
            tracing::info!(target: "auth", error = %e, status = e.status(), "browser login failed");
            Reply::Page(page::error(&e, &paths.start).with_cookie(cleared))
        }
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; __Host-portcullis-login=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        let mut two = http::HeaderMap::new();
        two.append(http::header::COOKIE, "a=1".parse().unwrap());
        two.append(
            http::header::COOKIE,
            "__Host-portcullis-login=q".parse().unwrap(),
        );
        assert_eq!(cookie(&two, COOKIE).as_deref(), Some("q"));
    }
}
