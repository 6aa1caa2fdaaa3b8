//! `[server.http2]` reaches the wire: a real HTTP/2 client (nghttp, from
//! Debian's nghttp2-client) sees the stream window and frame size in the
//! proxy's SETTINGS frame and the connection window in its first
//! WINDOW_UPDATE, both with the defaults and with configured values; and an
//! upload larger than every window goes through.

mod support;

use std::process::Command;
use support::*;

/// What the proxy told nghttp in its first SETTINGS frame and in the
/// WINDOW_UPDATE on stream 0 that follows it.
#[derive(Debug, PartialEq, Eq)]
struct Advertised {
    stream_window: u64,
    max_frame_size: u64,
    connection_increment: u64,
}

/// `nghttp -nv` prints every frame; only the ones received count.
fn advertised(proxy: &Proxy) -> Advertised {
    let out = Command::new("nghttp")
        .args(["-nv", "--timeout=20"])
        .arg(proxy.url("/v2/"))
        .output()
        .expect("run nghttp (Debian package nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("recv SETTINGS frame"),
        "nghttp saw no SETTINGS from the proxy:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let setting = |name: &str| -> Option<u64> {
        let recv = text.split("recv SETTINGS frame").nth(1)?;
        let block = recv.split("\n[").next()?;
        let at = block.find(name)?;
        let rest = &block[at..];
        let value = rest.split(':').nth(1)?.split(']').next()?;
        value.trim().parse().ok()
    };
    let stream_window = setting("SETTINGS_INITIAL_WINDOW_SIZE(0x04)");
    let max_frame_size = setting("SETTINGS_MAX_FRAME_SIZE(0x05)");
    let connection_increment = text
        .split("recv WINDOW_UPDATE frame")
        .skip(1)
        .find(|f| f.contains("stream_id=0>"))
        .and_then(|f| f.split("window_size_increment=").nth(1))
        .and_then(|v| v.split(')').next())
        .and_then(|v| v.trim().parse().ok());
    Advertised {
        // An absent setting is the protocol's default (RFC 9113 §6.5.2).
        stream_window: stream_window.unwrap_or(65_535),
        max_frame_size: max_frame_size.unwrap_or(16_384),
        // The connection window starts at 65535; the update adds the rest.
        connection_increment: connection_increment.unwrap_or(0),
    }
}

#[test]
fn the_default_windows_are_advertised() {
    let (_reg, proxy) = registry_and_proxy(ProxyOptions::basic(&[(USER, PASS)]));
    assert_eq!(advertised(&proxy), windows(1 << 20, 2 << 20, 16_384));
}

/// What a proxy with these windows and frame size advertises.
fn windows(stream: u64, connection: u64, max_frame_size: u64) -> Advertised {
    Advertised {
        stream_window: stream,
        max_frame_size,
        // the connection window starts at 65535; the update adds the rest
        connection_increment: connection - 65_535,
    }
}

#[test]
fn configured_windows_are_advertised_and_an_upload_larger_than_them_goes_through() {
    let (_reg, proxy) = registry_and_proxy(ProxyOptions::basic(&[(USER, PASS)]).toml(
        "[server.http2]\nstream_window = 3145728\nconnection_window = 6291456\nmax_frame_size = 65536",
    ));
    assert_eq!(advertised(&proxy), windows(3 << 20, 6 << 20, 65_536));

    // 8 MiB over HTTP/2 in one monolithic PUT: more than both windows, so
    // the proxy must keep sending WINDOW_UPDATEs as it forwards the body.
    let tmp = tempfile::tempdir().unwrap();
    let blob = tmp.path().join("blob");
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&blob, &data).unwrap();
    let digest = sha256_digest(&data);
    let auth = format!("{USER}:{PASS}");
    let start = proxy.curl(
        "/v2/team-a/h2/blobs/uploads/",
        &["--http2", "-u", &auth, "-X", "POST"],
    );
    assert_eq!(start.status, 202, "{}", start.text());
    let location = start
        .header("location")
        .expect("upload location")
        .to_owned();
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = proxy.curl(
        &format!("{}{sep}digest={digest}", path_of(&location)),
        &[
            "--http2",
            "-u",
            &auth,
            "-X",
            "PUT",
            "-H",
            "content-type: application/octet-stream",
            "--data-binary",
            &format!("@{}", blob.display()),
        ],
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let back = proxy.curl(
        &format!("/v2/team-a/h2/blobs/{digest}"),
        &["--http2", "-u", &auth, "-L"],
    );
    assert_eq!(back.status, 200);
    assert!(back.body == data, "the blob came back changed");
}

/// The path and query of an absolute or relative Location.
fn path_of(location: &str) -> &str {
    match location.find("://") {
        Some(i) => {
            let rest = &location[i + 3..];
            &rest[rest.find('/').unwrap_or(rest.len())..]
        }
        None => location,
    }
}
