//! `/v2/_catalog`, filtered to the repositories the caller may pull.
//!
//! The upstream's catalog lists everything; forwarding it would tell every
//! user the name of every repository. Instead the proxy pages through the
//! upstream catalog itself and keeps what the caller may see, so `n`,
//! `last` and the `Link` header stay correct for the filtered list.

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("upstream catalog request failed: {0}")]
    Upstream(String),
    #[error("upstream catalog answered {0}")]
    Status(u16),
    #[error("unknown or damaged catalog cursor")]
    BadCursor,
    #[error("cannot make the cursor key (no system randomness)")]
    Key,
}

/// Default and largest page size (distribution's own limits).
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// Upstream pages (of [`MAX_PAGE`] names) walked for one client page at
/// most: a caller who may see almost nothing costs the registry at most
/// this many catalog requests per request of theirs.
const MAX_UPSTREAM_PAGES: usize = 10;

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    repositories: Vec<String>,
}

/// Where the next page of the filtered catalog starts.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// After this name, which the caller has just been shown.
    After(String),
    /// The walk stopped at its bound on a name the caller may not see:
    /// the `Link` carries it sealed, never in clear.
    Hidden(String),
}

/// One page of the filtered catalog.
#[derive(Debug, PartialEq, Eq)]
pub struct Filtered {
    pub repositories: Vec<String>,
    /// Where the next page starts, if more visible repositories may follow.
    pub next: Option<Next>,
}

/// One upstream page: the names, and whether the upstream has more.
pub type UpstreamPage = Result<(Vec<String>, bool), CatalogError>;

/// Fetches one upstream page: names after `last`, and whether the upstream
/// says more follow.
#[async_trait::async_trait]
pub trait CatalogSource {
    async fn page(&self, last: Option<&str>, n: usize) -> UpstreamPage;
}

/// Collects up to `n` names after `last` that `visible` accepts.
pub async fn filtered(
    source: &(dyn CatalogSource + Sync),
    last: Option<&str>,
    n: usize,
    visible: impl Fn(&str) -> bool,
) -> Result<Filtered, CatalogError> {
    let mut out = Vec::new();
    let mut cursor = last.map(str::to_owned);
    for _ in 0..MAX_UPSTREAM_PAGES {
        let (names, upstream_more) = source.page(cursor.as_deref(), MAX_PAGE).await?;
        let count = names.len();
        for (i, name) in names.into_iter().enumerate() {
            cursor = Some(name.clone());
            if visible(&name) {
                out.push(name);
                if out.len() == n {
                    let more = i + 1 < count || upstream_more;
                    let next = if more {
                        out.last().cloned().map(Next::After)
                    } else {
                        None
                    };
                    return Ok(Filtered {
                        repositories: out,
                        next,
                    });
                }
            }
        }
        if !upstream_more || count == 0 {
            return Ok(Filtered {
                repositories: out,
                next: None,
            });
        }
    }
    // Gave up walking: more may follow, from the last name walked — which
    // the caller may not see.
    let next = match (cursor, out.last()) {
        (Some(c), Some(shown)) if &c == shown => Some(Next::After(c)),
        (Some(c), _) => Some(Next::Hidden(c)),
        (None, _) => None,
    };
    Ok(Filtered {
        repositories: out,
        next,
    })
}

/// Seals give-up cursors (ChaCha20-Poly1305, a key per process) so a
/// `Link` never names a hidden repository. A sealed cursor starts with
/// `~`, which no repository name can.
pub struct CursorKey(ring::aead::LessSafeKey);

const SEALED: char = '~';

impl CursorKey {
    pub fn random() -> Result<CursorKey, CatalogError> {
        let rng = ring::rand::SystemRandom::new();
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut bytes).map_err(|_| CatalogError::Key)?;
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &bytes)
            .map_err(|_| CatalogError::Key)?;
        Ok(CursorKey(ring::aead::LessSafeKey::new(key)))
    }

    fn seal(&self, name: &str) -> Option<String> {
        use base64::Engine;
        let mut nonce = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).ok()?;
        let mut data = name.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut data,
            )
            .ok()?;
        let mut all = nonce.to_vec();
        all.extend_from_slice(&data);
        Some(format!(
            "{SEALED}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(all)
        ))
    }

    fn open(&self, cursor: &str) -> Option<String> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor.strip_prefix(SEALED)?)
            .ok()?;
        if raw.len() < 12 {
            return None;
        }
        let (nonce, rest) = raw.split_at(12);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, ring::aead::Aad::empty(), &mut data)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// The name a client's `last` stands for: itself, or what a sealed
    /// cursor holds. `Err` for a sealed cursor this process did not make.
    pub fn start_after(&self, last: Option<&str>) -> Result<Option<String>, CatalogError> {
        match last {
            Some(l) if l.starts_with(SEALED) => {
                self.open(l).map(Some).ok_or(CatalogError::BadCursor)
            }
            other => Ok(other.map(str::to_owned)),
        }
    }
}

/// The upstream registry's catalog over HTTP.
pub struct UpstreamCatalog {
    pub client: reqwest::Client,
    pub base: String,
    pub authorization: Option<String>,
}

impl UpstreamCatalog {
    /// The catalog of `upstream`, with `authorization` when the registry
    /// runs token auth (else the upstream's own credentials, if any).
    pub fn of(
        upstream: &crate::upstream::Upstream,
        authorization: Option<String>,
    ) -> Result<Self, reqwest::Error> {
        Ok(UpstreamCatalog {
            client: upstream.client()?,
            base: upstream.api_base(),
            authorization: authorization.or_else(|| upstream.authorization().map(str::to_owned)),
        })
    }
}

#[async_trait::async_trait]
impl CatalogSource for UpstreamCatalog {
    async fn page(&self, last: Option<&str>, n: usize) -> UpstreamPage {
        let mut url = url::Url::parse(&format!("{}/v2/_catalog", self.base))
            .map_err(|e| CatalogError::Upstream(e.to_string()))?;
        url.query_pairs_mut().append_pair("n", &n.to_string());
        if let Some(last) = last {
            url.query_pairs_mut().append_pair("last", last);
        }
        let mut req = self.client.get(url);
        if let Some(a) = &self.authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CatalogError::Upstream(e.without_url().to_string()))?;
        if !resp.status().is_success() {
            return Err(CatalogError::Status(resp.status().as_u16()));
        }
        let more = resp
            .headers()
            .get(http::header::LINK)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("rel=\"next\""));
        let page: Page = resp
            .json()
            .await
            .map_err(|e| CatalogError::Upstream(e.without_url().to_string()))?;
        Ok((page.repositories, more))
    }
}

/// The JSON body and `Link` header value of a filtered page.
pub fn render(page: &Filtered, n: usize, key: &CursorKey) -> (Vec<u8>, Option<String>) {
    let body = serde_json::json!({ "repositories": page.repositories });
    let last = match &page.next {
        Some(Next::After(name)) => Some(name.clone()),
        Some(Next::Hidden(name)) => key.seal(name),
        None => None,
    };
    let link = match last {
        Some(last) => {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("last", &last)
                .append_pair("n", &n.to_string())
                .finish();
            Some(format!("</v2/_catalog?{q}>; rel=\"next\""))
        }
        None => None,
    };
    (serde_json::to_vec(&body).unwrap_or_default(), link)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog of `total` names served `page` at a time, like distribution.
    struct Fake {
        names: Vec<String>,
        page: usize,
    }

    #[async_trait::async_trait]
    impl CatalogSource for Fake {
        async fn page(&self, last: Option<&str>, n: usize) -> UpstreamPage {
            let start = match last {
                Some(l) => self
                    .names
                    .iter()
                    .position(|x| x.as_str() > l)
                    .unwrap_or(self.names.len()),
                None => 0,
            };
            let take = n.min(self.page);
            let end = (start + take).min(self.names.len());
            Ok((self.names[start..end].to_vec(), end < self.names.len()))
        }
    }

    fn fake(total: usize, page: usize) -> Fake {
        let mut names: Vec<String> = (0..total).map(|i| format!("repo{i:04}")).collect();
        names.sort();
        Fake { names, page }
    }

    #[tokio::test]
    async fn filters_across_upstream_pages() {
        let src = fake(50, 7);
        // only even repos are visible
        let even = |s: &str| s[4..].parse::<u32>().unwrap() % 2 == 0;
        let p = filtered(&src, None, 5, even).await.unwrap();
        assert_eq!(
            p.repositories,
            ["repo0000", "repo0002", "repo0004", "repo0006", "repo0008"]
        );
        assert!(p.next.is_some());
        assert_eq!(p.next, Some(Next::After("repo0008".into())));
        let p2 = filtered(&src, Some("repo0008"), 5, even).await.unwrap();
        assert_eq!(p2.repositories[0], "repo0010");
        // walk to the end: every visible repo exactly once
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let p = filtered(&src, last.as_deref(), 4, even).await.unwrap();
            all.extend(p.repositories.clone());
            match p.next {
                None => break,
                Some(Next::After(n)) => last = Some(n),
                Some(Next::Hidden(n)) => panic!("walk gave up at {n}"),
            }
        }
        assert_eq!(all.len(), 25);
        assert_eq!(all.last().unwrap(), "repo0048");
    }

    #[tokio::test]
    async fn exact_end_has_no_next_link() {
        let src = fake(6, 100);
        let p = filtered(&src, None, 6, |_| true).await.unwrap();
        assert_eq!(p.repositories.len(), 6);
        assert!(p.next.is_none());
        let (_, link) = render(&p, 6, &CursorKey::random().unwrap());
        assert_eq!(link, None);
    }

    #[tokio::test]
    async fn nothing_visible() {
        let src = fake(30, 10);
        let p = filtered(&src, None, 5, |_| false).await.unwrap();
        assert!(p.repositories.is_empty());
        assert!(p.next.is_none());
    }

    #[tokio::test]
    async fn a_walk_that_gives_up_names_no_hidden_repository() {
        // 30 000 hidden names, then one visible
        let mut names: Vec<String> = (0..30_000).map(|i| format!("hidden/r{i:05}")).collect();
        names.push("public/x".into());
        let src = Fake { names, page: 1000 };
        let visible = |s: &str| s.starts_with("public/");
        let key = CursorKey::random().unwrap();
        let p = filtered(&src, None, 5, visible).await.unwrap();
        assert!(p.repositories.is_empty());
        let (_, link) = render(&p, 5, &key);
        let link = link.expect("more may follow");
        assert!(!link.contains("hidden"), "{link}");
        // the cursor is sealed (base64url: never a name's `/`), not a name;
        // a random two-letter fragment such as "r0" can occur in it
        let mut last = link_last(&link);
        assert!(!last.contains('/') && !last.contains("hidden"), "{link}");
        // following the sealed cursor gets on, and reaches the visible name
        let mut seen = Vec::new();
        for _ in 0..10 {
            let start = key.start_after(Some(&last)).unwrap();
            let p = filtered(&src, start.as_deref(), 5, visible).await.unwrap();
            seen.extend(p.repositories.clone());
            match render(&p, 5, &key).1 {
                Some(l) => last = link_last(&l),
                None => break,
            }
        }
        assert_eq!(seen, ["public/x"]);
        // a sealed cursor of another process (or a forged one) is refused
        let other = CursorKey::random().unwrap();
        assert!(matches!(
            other.start_after(Some(&link_last(&link))),
            Err(CatalogError::BadCursor)
        ));
        assert!(matches!(
            key.start_after(Some("~AAAA")),
            Err(CatalogError::BadCursor)
        ));
        assert_eq!(
            key.start_after(Some("a/b")).unwrap().as_deref(),
            Some("a/b")
        );
    }

    fn link_last(link: &str) -> String {
        let q = link
            .trim_start_matches("</v2/_catalog?")
            .split('>')
            .next()
            .unwrap();
        crate::registry::route::query_param(Some(q), "last").unwrap()
    }

    #[test]
    fn link_header_points_at_the_proxy() {
        let (body, link) = render(
            &Filtered {
                repositories: vec!["a/b".into()],
                next: Some(Next::After("a/b".into())),
            },
            1,
            &CursorKey::random().unwrap(),
        );
        assert_eq!(
            link.as_deref(),
            Some("</v2/_catalog?last=a%2Fb&n=1>; rel=\"next\"")
        );
        assert_eq!(body, br#"{"repositories":["a/b"]}"#);
    }
}
