//! The v2 API forwarded through portcullis to a real docker-registry:
//! uploads (chunked, monolithic, mount), blobs (HEAD, Range), manifests,
//! pagination, response headers, over HTTP/1.1 and HTTP/2.

mod support;

use reqwest::{Method, Version};
use support::*;

fn setup() -> (Registry, Proxy) {
    let (reg, proxy) = registry_and_proxy(ProxyOptions::default());
    (reg, proxy)
}

#[test]
fn base_endpoint_with_credentials_is_200_with_registry_headers() {
    let (_reg, proxy) = setup();
    let r = proxy.send_req(Method::GET, "/v2/");
    assert_eq!(r.status(), 200, "{}", proxy.logs());
    assert_common_headers("GET /v2/", |h| header_of(&r, h));
    assert_eq!(r.text().unwrap().trim(), "{}");
}

#[test]
fn every_kind_of_response_carries_the_common_headers() {
    let (_reg, proxy) = setup();
    let c = proxy.client();

    // the proxy's own 401
    let r = c.get(proxy.url("/v2/")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_common_headers("401 GET /v2/ without credentials", |h| header_of(&r, h));

    // the proxy's own 404 outside /v2/
    let r = proxy.send_req(Method::GET, "/not-the-api");
    assert_eq!(r.status(), 404);
    assert_common_headers("404 GET /not-the-api", |h| header_of(&r, h));

    // the registry's 404 passed through
    let r = proxy.send_req(Method::GET, "/v2/some/repo/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000");
    assert_eq!(r.status(), 404);
    assert_common_headers("upstream 404 blob unknown", |h| header_of(&r, h));
    assert_eq!(
        error_codes(&r.bytes().unwrap()).unwrap(),
        vec!["BLOB_UNKNOWN"]
    );

    // the registry's 202
    let r = proxy.send_req(Method::POST, "/v2/some/repo/blobs/uploads/");
    assert_eq!(r.status(), 202);
    assert_common_headers("202 POST upload", |h| header_of(&r, h));

    // HEAD
    let r = proxy.send_req(Method::HEAD, "/v2/");
    assert_eq!(r.status(), 200);
    assert_common_headers("HEAD /v2/", |h| header_of(&r, h));

    // over HTTP/1.1 too
    let r = get_as_user(&proxy.new_client(true), &proxy.url("/v2/"));
    assert_eq!(r.version(), Version::HTTP_11);
    assert_common_headers("GET /v2/ over HTTP/1.1", |h| header_of(&r, h));
}

/// POST, PATCH (two chunks, each following the last Location), PUT ?digest=, GET back.
fn chunked_upload(
    proxy: &Proxy,
    reg: &Registry,
    client: reqwest::blocking::Client,
    want: Version,
    repo: &str,
) {
    let data = pseudo_random(3 * 1024 * 1024 + 17, 42 + repo.len() as u64);
    let digest = sha256_digest(&data);
    let (a, b) = data.split_at(1024 * 1024 + 5);

    let r = client
        .post(proxy.url(&format!("/v2/{repo}/blobs/uploads/")))
        .basic_auth(USER, Some(PASS))
        .send()
        .unwrap();
    assert_eq!(r.version(), want, "POST upload protocol version");
    assert_eq!(r.status(), 202, "POST upload: {}", proxy.logs());
    let mut loc = header_of(&r, "location").expect("Location on 202");
    assert_points_at_proxy("POST upload Location", &loc, proxy, reg.port());
    assert!(
        header_of(&r, "docker-upload-uuid").is_some(),
        "Docker-Upload-Uuid"
    );

    let mut offset = 0usize;
    for chunk in [a, b] {
        let r = client
            .patch(absolute(proxy, &loc))
            .basic_auth(USER, Some(PASS))
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{}-{}", offset, offset + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.version(), want);
        assert_eq!(r.status(), 202, "PATCH chunk at {offset}: {:?}", r.text());
        offset += chunk.len();
        assert_eq!(
            header_of(&r, "range").as_deref(),
            Some(format!("0-{}", offset - 1).as_str()),
            "Range after PATCH"
        );
        loc = header_of(&r, "location").expect("Location after PATCH");
        assert_points_at_proxy("PATCH Location", &loc, proxy, reg.port());
    }

    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = client
        .put(format!("{}{sep}digest={digest}", absolute(proxy, &loc)))
        .basic_auth(USER, Some(PASS))
        .send()
        .unwrap();
    assert_eq!(r.version(), want);
    assert_common_headers("201 PUT ?digest=", |h| header_of(&r, h));
    assert_eq!(r.status(), 201, "PUT ?digest=: {:?}", r.text());
    assert_eq!(
        header_of(&r, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    let blob_loc = header_of(&r, "location").expect("Location of the blob");
    assert_points_at_proxy("PUT Location", &blob_loc, proxy, reg.port());

    let r = get_as_user(&client, &absolute(proxy, &blob_loc));
    assert_eq!(r.version(), want);
    assert_eq!(r.status(), 200);
    let got = r.bytes().unwrap();
    assert_eq!(got.len(), data.len(), "blob length");
    assert_eq!(sha256_digest(&got), digest, "blob content");
}

#[test]
fn chunked_upload_over_http1() {
    let (reg, proxy) = setup();
    chunked_upload(
        &proxy,
        &reg,
        proxy.new_client(true),
        Version::HTTP_11,
        "chunked/h1",
    );
}

#[test]
fn chunked_upload_over_http2_negotiated_by_alpn() {
    let (reg, proxy) = setup();
    chunked_upload(
        &proxy,
        &reg,
        proxy.new_client(false),
        Version::HTTP_2,
        "chunked/h2",
    );
}

#[test]
fn monolithic_upload_then_head_blob() {
    let (reg, proxy) = setup();
    let data = pseudo_random(200_000, 7);
    let digest = push_blob(&proxy, "mono/repo", &data);
    // registry stored exactly these bytes
    let direct = reg.send_direct(Method::GET, &format!("/v2/mono/repo/blobs/{digest}"), None);
    assert_eq!(direct.status(), 200);
    assert_eq!(direct.bytes().unwrap().as_ref(), &data[..]);

    let r = proxy.send_req(Method::HEAD, &format!("/v2/mono/repo/blobs/{digest}"));
    assert_eq!(r.status(), 200);
    assert_eq!(header_of(&r, "content-length").as_deref(), Some("200000"));
    assert_eq!(
        header_of(&r, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    assert_common_headers("HEAD blob", |h| header_of(&r, h));
}

#[test]
fn cross_repository_blob_mount() {
    let (reg, proxy) = setup();
    let data = pseudo_random(50_000, 9);
    let digest = push_blob(&proxy, "mount/a", &data);
    let r = proxy.send_req(
        Method::POST,
        &format!("/v2/mount/b/blobs/uploads/?mount={digest}&from=mount/a"),
    );
    assert_eq!(r.status(), 201, "mount: {:?}", r.text());
    assert_eq!(
        header_of(&r, "docker-content-digest").as_deref(),
        Some(digest.as_str())
    );
    let loc = header_of(&r, "location").expect("Location of mounted blob");
    assert_points_at_proxy("mount Location", &loc, &proxy, reg.port());

    let r = proxy.send_req(Method::HEAD, &format!("/v2/mount/b/blobs/{digest}"));
    assert_eq!(r.status(), 200);
    assert_eq!(header_of(&r, "content-length").as_deref(), Some("50000"));
}

#[test]
fn range_request_returns_206_and_the_right_bytes() {
    let (_reg, proxy) = setup();
    let data = pseudo_random(100_000, 11);
    let digest = push_blob(&proxy, "range/repo", &data);
    for (client, name) in [
        (proxy.new_client(true), "h1"),
        (proxy.new_client(false), "h2"),
    ] {
        let r = client
            .get(proxy.url(&format!("/v2/range/repo/blobs/{digest}")))
            .basic_auth(USER, Some(PASS))
            .header("range", "bytes=1000-1999")
            .send()
            .unwrap();
        assert_eq!(r.status(), 206, "{name}: Range request status");
        assert_common_headers("206 Range", |h| header_of(&r, h));
        assert_eq!(
            header_of(&r, "content-range").as_deref(),
            Some("bytes 1000-1999/100000"),
            "{name}"
        );
        assert_eq!(
            r.bytes().unwrap().as_ref(),
            &data[1000..2000],
            "{name}: range bytes"
        );
    }
}

#[test]
fn manifest_put_get_head_delete() {
    let (_reg, proxy) = setup();
    let (manifest, digest) = push_image(&proxy, "man/repo", "v1");
    let accept = "application/vnd.oci.image.manifest.v1+json";

    for reference in ["v1", digest.as_str()] {
        let r = accepting(
            proxy.req(Method::GET, &format!("/v2/man/repo/manifests/{reference}")),
            accept,
        );
        assert_eq!(r.status(), 200, "GET manifest {reference}");
        assert_eq!(
            header_of(&r, "docker-content-digest").as_deref(),
            Some(digest.as_str())
        );
        assert_eq!(header_of(&r, "content-type").as_deref(), Some(accept));
        assert_eq!(
            r.bytes().unwrap().as_ref(),
            &manifest[..],
            "manifest bytes for {reference}"
        );
    }
    let r = accepting(proxy.req(Method::HEAD, "/v2/man/repo/manifests/v1"), accept);
    assert_eq!(r.status(), 200);
    assert_eq!(
        header_of(&r, "content-length"),
        Some(manifest.len().to_string())
    );

    let r = proxy.send_req(Method::DELETE, &format!("/v2/man/repo/manifests/{digest}"));
    assert_eq!(r.status(), 202, "DELETE manifest: {:?}", r.text());
    let r = accepting(
        proxy.req(Method::GET, &format!("/v2/man/repo/manifests/{digest}")),
        accept,
    );
    assert_eq!(r.status(), 404, "manifest gone after DELETE");
    assert_eq!(
        error_codes(&r.bytes().unwrap()).unwrap(),
        vec!["MANIFEST_UNKNOWN"]
    );
}

fn link_next(resp: &reqwest::blocking::Response) -> Option<String> {
    let link = header_of(resp, "link")?;
    let start = link.find('<')? + 1;
    let end = link.find('>')?;
    assert!(
        link.contains("rel=\"next\""),
        "Link without rel=next: {link}"
    );
    Some(link[start..end].to_string())
}

#[test]
fn catalog_and_tags_list_paginate_with_link_pointing_at_proxy() {
    let (reg, proxy) = setup();
    for repo in ["pag/a", "pag/b", "pag/c"] {
        push_image(&proxy, repo, "t1");
    }
    push_image(&proxy, "pag/a", "t2");
    push_image(&proxy, "pag/a", "t3");

    // catalog, one repository per page
    let mut seen = Vec::new();
    let mut next = Some("/v2/_catalog?n=1".to_string());
    let mut pages = 0;
    while let Some(target) = next.take() {
        pages += 1;
        assert!(pages < 10, "catalog pagination does not end");
        let r = get_as_user(&proxy.client(), &absolute(&proxy, &target));
        assert_eq!(r.status(), 200, "GET {target}");
        next = link_next(&r);
        if let Some(n) = &next {
            assert_points_at_proxy("catalog Link", n, &proxy, reg.port());
            assert!(n.contains("last="), "catalog Link without last=: {n}");
        }
        let v: serde_json::Value = r.json().unwrap();
        let repos = v["repositories"].as_array().unwrap();
        assert!(repos.len() <= 1, "n=1 returned {repos:?}");
        seen.extend(repos.iter().map(|x| x.as_str().unwrap().to_string()));
    }
    assert_eq!(seen, vec!["pag/a", "pag/b", "pag/c"]);

    // the same with `last`
    let r = proxy.send_req(Method::GET, "/v2/_catalog?n=5&last=pag/a");
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["pag/b", "pag/c"]));

    // tags list
    let r = proxy.send_req(Method::GET, "/v2/pag/a/tags/list");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["name"], "pag/a");
    let mut tags: Vec<String> = strings(&v["tags"]);
    tags.sort();
    assert_eq!(tags, vec!["t1", "t2", "t3"]);

    let r = proxy.send_req(Method::GET, "/v2/pag/a/tags/list?n=2");
    assert_eq!(r.status(), 200);
    if let Some(n) = link_next(&r) {
        assert_points_at_proxy("tags Link", &n, &proxy, reg.port());
    }
}

#[test]
fn credentials_are_stripped_and_forwarded_headers_set_by_the_proxy() {
    let up = EchoUpstream::start();
    let proxy = Proxy::start_upstream(&up.url(), ProxyOptions::default());
    let host = format!("127.0.0.1:{}", proxy.port());

    for (client, name) in [
        (proxy.new_client(true), "h1"),
        (proxy.new_client(false), "h2"),
    ] {
        let before = up.recorded().len();
        let r = client
            .get(proxy.url(&format!("/v2/hdr/{name}/tags/list")))
            .basic_auth(USER, Some(PASS))
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-host", "evil.example")
            .header("x-real-ip", "6.6.6.6")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{name}: {}", proxy.logs());
        let recs = up.recorded();
        let rec = recs[before..]
            .iter()
            .find(|r| r.target.contains(&format!("/v2/hdr/{name}/tags/list")))
            .unwrap_or_else(|| panic!("{name}: request not seen upstream: {recs:?}"));

        assert!(
            rec.header_values("authorization").is_empty(),
            "{name}: Authorization reached upstream: {rec:?}"
        );
        let xff = rec.header_values("x-forwarded-for");
        assert_eq!(
            xff,
            vec!["127.0.0.1".to_string()],
            "{name}: X-Forwarded-For upstream (client value must be replaced)"
        );
        assert_eq!(
            rec.header_values("x-forwarded-proto"),
            vec!["https".to_string()],
            "{name}: X-Forwarded-Proto"
        );
        assert_eq!(
            rec.header_values("x-forwarded-host"),
            vec![host.clone()],
            "{name}: X-Forwarded-Host"
        );
        let all = format!("{:?}", rec.headers);
        assert!(
            !all.contains("6.6.6.6") && !all.contains("evil.example"),
            "{name}: client's forwarding headers reached upstream: {all}"
        );
    }
}

#[test]
fn absolute_upstream_location_and_link_are_rewritten_to_the_proxy() {
    // An upstream that ignores X-Forwarded-* and answers with its own address
    // (like a registry configured with http.host).
    let up = EchoUpstream::start();
    let proxy = Proxy::start_upstream(&up.url(), ProxyOptions::default());

    let r = proxy.send_req(Method::POST, "/v2/rw/repo/blobs/uploads/");
    assert_eq!(r.status(), 202, "{}", proxy.logs());
    let loc = header_of(&r, "location").expect("Location");
    assert_points_at_proxy("rewritten upload Location", &loc, &proxy, up.port());
    assert!(
        loc.contains("/v2/rw/repo/blobs/uploads/0a1b2c3d-uuid?_state=abc"),
        "Location path/query kept: {loc}"
    );

    let r = proxy.send_req(Method::GET, "/v2/rw/repo/tags/list?n=1");
    assert_eq!(r.status(), 200);
    let link = header_of(&r, "link").expect("Link");
    assert!(
        !link.contains(&format!(":{}", up.port())),
        "Link points at the upstream: {link}"
    );
    assert!(
        link.contains("/v2/rw/repo/tags/list?last=a&n=1"),
        "Link path/query kept: {link}"
    );
}

#[test]
fn concurrent_uploads_and_downloads_share_connections() {
    let (_reg, proxy) = setup();
    for http1 in [false, true] {
        // one client: over HTTP/2 the requests are multiplexed on one connection
        let client = proxy.new_client(http1);
        let want = if http1 {
            Version::HTTP_11
        } else {
            Version::HTTP_2
        };
        std::thread::scope(|s| {
            for i in 0..6u64 {
                let client = client.clone();
                let proxy = &proxy;
                s.spawn(move || {
                    let repo = format!("conc/{}{i}", if http1 { "h1-" } else { "h2-" });
                    let data = pseudo_random(512 * 1024 + i as usize, 100 + i);
                    let digest = sha256_digest(&data);
                    let r = client
                        .post(proxy.url(&format!("/v2/{repo}/blobs/uploads/")))
                        .basic_auth(USER, Some(PASS))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    assert_eq!(r.version(), want);
                    let loc = absolute(proxy, &header_of(&r, "location").unwrap());
                    let sep = if loc.contains('?') { '&' } else { '?' };
                    let r = client
                        .put(format!("{loc}{sep}digest={digest}"))
                        .basic_auth(USER, Some(PASS))
                        .body(data.clone())
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 201, "{repo}: {:?}", r.text());
                    for _ in 0..3 {
                        let r =
                            get_as_user(&client, &proxy.url(&format!("/v2/{repo}/blobs/{digest}")));
                        assert_eq!(r.status(), 200);
                        assert_eq!(
                            sha256_digest(&r.bytes().unwrap()),
                            digest,
                            "{repo}: content"
                        );
                    }
                });
            }
        });
    }
}
