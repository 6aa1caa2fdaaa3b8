//! The rustls that portcullis builds with (vendor/rustls-0.23.46, see
//! vendor/README.md) keeps room for a whole TLS record in its read buffer
//! once a record has needed more than one read. Published rustls 0.23
//! shrinks that buffer to 4 KiB each time it drains, so after a drained
//! record a `read_tls` takes at most 4 KiB: the first test fails on it, and
//! so it also notices when a rustls upgrade drops the patch.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

/// A bigger plaintext than rustls's 4 KiB read size: one full record.
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// A client and a server connection that have completed a TLS 1.3
/// handshake in memory.
fn connected_pair() -> (Connection, Connection) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["registry.test".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let cert_der = CertificateDer::from(cert.der().to_vec());
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(default_provider());

    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .expect("server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();

    let name = ServerName::try_from("registry.test").expect("name");
    let mut client =
        Connection::from(ClientConnection::new(Arc::new(client_config), name).expect("client"));
    let mut server =
        Connection::from(ServerConnection::new(Arc::new(server_config)).expect("server"));
    while client.is_handshaking() || server.is_handshaking() {
        move_all(&mut client, &mut server);
        move_all(&mut server, &mut client);
    }
    (client, server)
}

/// Everything `from` has to send, read by `to` in as many calls as it takes.
fn move_all(from: &mut Connection, to: &mut Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).expect("write_tls");
    }
    feed(to, &wire);
}

/// `wire` read by `to` in as many `read_tls` calls as it takes; their number.
fn feed(to: &mut Connection, wire: &[u8]) -> usize {
    let mut rest = wire;
    let mut reads = 0;
    while !rest.is_empty() {
        to.read_tls(&mut rest).expect("read_tls");
        to.process_new_packets().expect("process");
        reads += 1;
    }
    reads
}

/// One record of `RECORD_PLAINTEXT` bytes from the client, as it goes on the wire.
fn client_record(client: &mut Connection, fill: u8) -> Vec<u8> {
    client
        .writer()
        .write_all(&[fill; RECORD_PLAINTEXT])
        .expect("plaintext");
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).expect("write_tls");
    }
    assert!(
        wire.len() > RECORD_PLAINTEXT,
        "one sealed record, {} bytes",
        wire.len()
    );
    wire
}

/// Reads and decrypts all the plaintext the server has, checking its bytes.
fn drain_plaintext(server: &mut Connection, fill: u8) {
    let mut got = vec![0u8; RECORD_PLAINTEXT];
    server.reader().read_exact(&mut got).expect("plaintext");
    assert!(got.iter().all(|b| *b == fill), "the bytes the client sent");
}

#[test]
fn after_a_drained_record_the_next_read_takes_a_whole_record() {
    let (mut client, mut server) = connected_pair();
    // The first large record is read 4 KiB at a time and makes the room.
    let wire = client_record(&mut client, 0x01);
    feed(&mut server, &wire);
    drain_plaintext(&mut server, 0x01);
    for (round, fill) in [(1, 0xa5u8), (2, 0x5a), (3, 0x3c)] {
        let wire = client_record(&mut client, fill);
        // Published rustls reads 4096 bytes here: its buffer shrank to
        // 4 KiB when the previous record drained.
        let read = server.read_tls(&mut &wire[..]).expect("read_tls");
        assert_eq!(
            read,
            wire.len(),
            "round {round}: one read_tls for the whole record"
        );
        server.process_new_packets().expect("process");
        drain_plaintext(&mut server, fill);
    }
}

#[test]
fn small_records_keep_the_buffer_at_one_read() {
    // A connection that has only sent small records (requests without a
    // body) keeps the 4 KiB buffer: its first large record is read 4 KiB
    // at a time, as published rustls reads it.
    let (mut client, mut server) = connected_pair();
    const REQUEST: &[u8] = b"GET /v2/ HTTP/1.1\r\nhost: registry.test\r\n\r\n";
    for _ in 0..3 {
        client.writer().write_all(REQUEST).expect("plaintext");
        move_all(&mut client, &mut server);
        let mut request = vec![0u8; REQUEST.len()];
        server.reader().read_exact(&mut request).expect("request");
        assert_eq!(request, REQUEST, "the request arrived");
    }
    let wire = client_record(&mut client, 0x77);
    let read = server.read_tls(&mut &wire[..]).expect("read_tls");
    assert_eq!(read, 4096, "one 4 KiB read, not a record's room");
}

#[test]
fn records_split_across_reads_still_decrypt_in_order() {
    // The buffer keeps a record's room, not more: a record and a half in one
    // read leaves the half for the next, and nothing is lost or reordered.
    let (mut client, mut server) = connected_pair();
    let mut wire = client_record(&mut client, 0x11);
    wire.extend(client_record(&mut client, 0x22));
    let reads = feed(&mut server, &wire);
    assert!(reads >= 2, "two records cannot fit in one record's room");
    drain_plaintext(&mut server, 0x11);
    drain_plaintext(&mut server, 0x22);
}
