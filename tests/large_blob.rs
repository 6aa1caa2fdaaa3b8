//! A 1 GiB layer pushed and pulled through the proxy: the bytes arrive intact
//! and the proxy never buffers the body (its RSS stays under 100 MiB).
//!
//! The data is a deterministic pseudo-random stream (AES-CTR of zeros by
//! `openssl enc`) piped straight into curl, and the download is piped straight
//! into `openssl dgst`: neither side holds the blob in memory or on disk.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use support::*;

const SIZE: u64 = 1 << 30;
const RSS_LIMIT_KIB: u64 = 100 * 1024;

fn generator() -> String {
    stream_generator(SIZE)
}

#[test]
fn one_gib_blob_push_and_pull_with_bounded_memory() {
    let (_reg, proxy) = registry_and_proxy(ProxyOptions::default());
    let digest = digest_of_stream(&generator());

    // sample the proxy's RSS while the transfers run
    let pid = proxy.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss) = (stop.clone(), max_rss.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = s
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    {
                        max_rss.fetch_max(kib, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // push: POST, one streamed PATCH (HTTP/1.1, chunked request body), PUT ?digest=
    let r = proxy.send_req(Method::POST, "/v2/big/layer/blobs/uploads/");
    assert_eq!(r.status(), 202, "{}", proxy.logs());
    let loc = absolute(&proxy, &header_of(&r, "location").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let hdr = dir.path().join("patch.headers");
    let o = bash(&format!(
        "{gen} | curl -sS --http1.1 --fail-with-body --max-time 500 --cacert '{ca}' -u '{USER}:{PASS}' -X PATCH \
         -H 'Content-Type: application/octet-stream' -T - -D '{hdr}' -o /dev/null '{loc}'",
        gen = generator(),
        ca = proxy.ca_pem_path().display(),
        hdr = hdr.display(),
    ));
    assert!(
        o.status.success(),
        "streamed PATCH of 1 GiB failed: {}\n{}",
        out_text(&o),
        proxy.logs()
    );
    let headers = std::fs::read_to_string(&hdr).unwrap();
    let patch_loc =
        last_location(&headers).unwrap_or_else(|| panic!("no Location after PATCH: {headers}"));
    assert!(
        headers
            .to_ascii_lowercase()
            .contains(&format!("range: 0-{}", SIZE - 1)),
        "registry did not get all bytes: {headers}"
    );
    let r = proxy.put_digest(&patch_loc, &digest).send().unwrap();
    assert_eq!(r.status(), 201, "PUT ?digest= after 1 GiB: {:?}", r.text());

    let r = proxy.send_req(Method::HEAD, &format!("/v2/big/layer/blobs/{digest}"));
    assert_eq!(r.status(), 200);
    assert_eq!(header_of(&r, "content-length"), Some(SIZE.to_string()));

    // pull over HTTP/2 (curl negotiates it by ALPN), streamed into the digest
    let pulled = digest_of_stream(&format!(
        "curl -sS --fail --max-time 500 --cacert '{ca}' -u '{USER}:{PASS}' '{url}'",
        ca = proxy.ca_pem_path().display(),
        url = proxy.url(&format!("/v2/big/layer/blobs/{digest}")),
    ));
    assert_eq!(
        pulled,
        digest,
        "pulled 1 GiB blob differs\n{}",
        proxy.logs()
    );

    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let hwm = proxy.hwm_kib();
    let sampled = max_rss.load(Ordering::Relaxed);
    eprintln!("proxy VmHWM {hwm} KiB, max sampled VmRSS {sampled} KiB");
    assert!(sampled > 0, "RSS was never sampled");
    assert!(
        sampled < RSS_LIMIT_KIB,
        "proxy RSS reached {sampled} KiB during the transfer (limit {RSS_LIMIT_KIB})"
    );
    assert!(
        hwm < RSS_LIMIT_KIB,
        "proxy VmHWM {hwm} KiB (limit {RSS_LIMIT_KIB})"
    );
}
