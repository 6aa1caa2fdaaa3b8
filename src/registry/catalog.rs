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
}

/// Default and largest page size (distribution's own limits).
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;
/// Upstream pages fetched for one client page at most, so a caller who may
/// see almost nothing cannot make one request walk a huge catalog.
const MAX_UPSTREAM_PAGES: usize = 50;

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    repositories: Vec<String>,
}

/// One page of the filtered catalog.
#[derive(Debug, PartialEq, Eq)]
pub struct Filtered {
    pub repositories: Vec<String>,
    /// Where the next page starts (`last=` of the `Link: …; rel="next"`),
    /// if more visible repositories may follow.
    pub next: Option<String>,
}

/// Fetches one upstream page: names after `last`, and whether the upstream
/// says more follow.
#[async_trait::async_trait]
pub trait CatalogSource {
    async fn page(&self, last: Option<&str>, n: usize)
        -> Result<(Vec<String>, bool), CatalogError>;
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
                    let next = if more { out.last().cloned() } else { None };
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
    // Gave up walking: say more may follow; the client continues from the
    // last name we return.
    Ok(Filtered {
        repositories: out,
        next: cursor,
    })
}

/// The upstream registry's catalog over HTTP.
pub struct UpstreamCatalog {
    pub client: reqwest::Client,
    pub base: String,
    pub authorization: Option<String>,
}

#[async_trait::async_trait]
impl CatalogSource for UpstreamCatalog {
    async fn page(
        &self,
        last: Option<&str>,
        n: usize,
    ) -> Result<(Vec<String>, bool), CatalogError> {
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
pub fn render(page: &Filtered, n: usize) -> (Vec<u8>, Option<String>) {
    let body = serde_json::json!({ "repositories": page.repositories });
    let link = match &page.next {
        Some(last) => {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("last", last)
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
        async fn page(
            &self,
            last: Option<&str>,
            n: usize,
        ) -> Result<(Vec<String>, bool), CatalogError> {
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
                Some(n) => last = Some(n),
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
        let (_, link) = render(&p, 6);
        assert_eq!(link, None);
    }

    #[tokio::test]
    async fn nothing_visible() {
        let src = fake(30, 10);
        let p = filtered(&src, None, 5, |_| false).await.unwrap();
        assert!(p.repositories.is_empty());
        assert!(p.next.is_none());
    }

    #[test]
    fn link_header_points_at_the_proxy() {
        let (body, link) = render(
            &Filtered {
                repositories: vec!["a/b".into()],
                next: Some("a/b".into()),
            },
            1,
        );
        assert_eq!(
            link.as_deref(),
            Some("</v2/_catalog?last=a%2Fb&n=1>; rel=\"next\"")
        );
        assert_eq!(body, br#"{"repositories":["a/b"]}"#);
    }
}
