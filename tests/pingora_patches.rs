//! The Pingora crates that portcullis builds with carry two small patches
//! (vendor/pingora-core-0.9.1 and vendor/pingora-http-0.9.1, see
//! vendor/README.md). Neither changes what goes over the wire, so these
//! tests look at what each one saves: the first test of each pair fails
//! on the published crate, which also notices an upgrade that drops a
//! patch. The others check that the wire is what it was.
#![cfg(feature = "jemalloc")]

use std::io::{Read, Write};
use std::net::TcpListener;

use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::HttpSession;
use pingora::protocols::l4::stream::Stream;

// jemalloc, as in the binary: its per-thread byte counter tells what
// reading a response allocated
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Pingora's body buffer (`BODY_BUFFER_SIZE` in pingora-core).
const BODY_BUFFER: usize = 64 * 1024;

/// Bytes this thread has allocated so far.
fn allocated() -> u64 {
    tikv_jemalloc_ctl::epoch::advance().expect("epoch");
    tikv_jemalloc_ctl::thread::allocatedp::read()
        .expect("thread.allocatedp")
        .get()
}

/// A one-shot HTTP/1.1 upstream on loopback: reads one request head and
/// writes `parts` as the response, flushing after each (the registry's
/// header and body may arrive in one read or in several).
fn upstream(parts: Vec<Vec<u8>>) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            conn.read_exact(&mut byte).expect("request head");
            head.push(byte[0]);
        }
        for part in parts {
            conn.write_all(&part).expect("response");
            conn.flush().expect("flush");
            // let the client read what is there before the next part
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
    });
    (addr, server)
}

/// Sends a GET through Pingora's HTTP/1.1 client and reads the answer:
/// its body, and the bytes this thread allocated while reading it.
fn fetch(parts: Vec<Vec<u8>>) -> (Vec<u8>, u64) {
    let (addr, server) = upstream(parts);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut session = HttpSession::new(Box::new(Stream::from(tcp)));
        let mut req = RequestHeader::build("GET", b"/v2/a/manifests/latest", None).unwrap();
        req.insert_header("Host", "registry.test").unwrap();
        session
            .write_request_header(Box::new(req))
            .await
            .expect("write");
        let before = allocated();
        session.read_response().await.expect("response head");
        let mut body = Vec::new();
        while let Some(chunk) = session.read_body_ref().await.expect("body") {
            body.extend_from_slice(chunk);
        }
        let spent = allocated() - before - body.capacity() as u64;
        (body, spent)
    });
    server.join().expect("upstream thread");
    out
}

fn response(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
         Content-Length: {}\r\nDocker-Distribution-Api-Version: registry/2.0\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn body_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Published pingora-core gives every response with a `Content-Length`
/// a 64 KiB body buffer; the patched one sizes it to the body.
#[test]
fn a_small_response_body_gets_a_buffer_of_its_size() {
    let body = body_of(528);
    let (read, spent) = fetch(vec![response(&body)]);
    assert_eq!(read, body);
    assert!(
        spent < (BODY_BUFFER / 2) as u64,
        "reading a {}-byte response allocated {spent} bytes",
        body.len()
    );
}

/// A small body whose bytes arrive after its header is still read whole
/// (the buffer grows for the read), and a large one streams through the
/// usual 64 KiB buffer.
#[test]
fn split_and_large_bodies_are_read_whole() {
    let body = body_of(528);
    let full = response(&body);
    let head_len = full.len() - body.len();
    let (read, _) = fetch(vec![
        full[..head_len + 100].to_vec(),
        full[head_len + 100..].to_vec(),
    ]);
    assert_eq!(read, body, "body split after 100 bytes");
    let (read, _) = fetch(vec![full[..head_len].to_vec(), body.clone()]);
    assert_eq!(read, body, "body after the header");
    let large = body_of(3 * BODY_BUFFER + 17);
    let (read, _) = fetch(vec![response(&large)]);
    assert_eq!(read.len(), large.len());
    assert!(read == large, "a large body arrives intact");
}

static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Published pingora-http turns a `HeaderName` back into text and parses
/// the text into a new name (a copy, for a name outside the standard
/// set); the patched one stores the name it was given.
#[test]
fn an_inserted_header_name_is_stored_as_given() {
    let mut req = RequestHeader::build_no_case("GET", b"/v2/", None).unwrap();
    req.insert_header(X_FORWARDED_PROTO.clone(), "https")
        .unwrap();
    req.append_header(&X_FORWARDED_PROTO, "http").unwrap();
    let stored: Vec<_> = req.headers.keys().collect();
    assert_eq!(stored, [&X_FORWARDED_PROTO]);
    assert_eq!(
        stored[0].as_str().as_ptr(),
        X_FORWARDED_PROTO.as_str().as_ptr(),
        "the name was copied"
    );
    let values: Vec<_> = req.headers.get_all(&X_FORWARDED_PROTO).iter().collect();
    assert_eq!(values, ["https", "http"]);
}

/// With a case map (a request or response read over HTTP/1.1) every
/// header still goes out under a name: the given case for text, the
/// title case Pingora knows for a standard `HeaderName`, and lowercase
/// for any other; an insert still replaces and an append still adds.
#[test]
fn header_names_keep_their_case_on_the_wire() {
    let mut req = RequestHeader::build("GET", b"/v2/", None).unwrap();
    req.insert_header("X-Original-Case", "1").unwrap();
    req.insert_header(http::header::HOST, "registry.test")
        .unwrap();
    req.insert_header(X_FORWARDED_PROTO.clone(), "http")
        .unwrap();
    req.insert_header(X_FORWARDED_PROTO.clone(), "https")
        .unwrap();
    req.append_header(&X_FORWARDED_PROTO, "h2").unwrap();
    let mut wire = Vec::new();
    req.header_to_h1_wire(&mut wire);
    assert_eq!(
        String::from_utf8(wire).unwrap(),
        "X-Original-Case: 1\r\nHost: registry.test\r\nx-forwarded-proto: https\r\n\
         x-forwarded-proto: h2\r\n"
    );

    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.insert_header(http::header::CONTENT_LENGTH, "0")
        .unwrap();
    resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, "max-age=1")
        .unwrap();
    let mut wire = Vec::new();
    resp.header_to_h1_wire(&mut wire);
    assert_eq!(
        String::from_utf8(wire).unwrap(),
        "Content-Length: 0\r\nstrict-transport-security: max-age=1\r\n"
    );
}
