//! A fake upstream: a tiny HTTP/1.1 server on loopback that records every
//! request head (for what the proxy forwards, and how).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let n = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == n)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A tiny HTTP/1.1 upstream on loopback that records every request head and
/// answers 200 `{}` — or, for `POST .../blobs/uploads/`, 202 with an absolute
/// `Location` on its own address; for `/tags/list`, a `Link` on its own address.
pub struct EchoUpstream {
    port: u16,
    pub requests: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl EchoUpstream {
    pub fn start() -> EchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let reqs = reqs.clone();
                std::thread::spawn(move || {
                    let _ = serve_echo(conn, port, reqs);
                });
            }
        });
        EchoUpstream { port, requests }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_echo(
    conn: TcpStream,
    port: u16,
    reqs: Arc<Mutex<Vec<RecordedRequest>>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let close = headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
        reqs.lock().unwrap().push(RecordedRequest {
            method: method.clone(),
            target: target.clone(),
            headers,
        });

        let path = target.split('?').next().unwrap_or("").to_string();
        let mut extra = String::new();
        let status = if method == "POST" && path.ends_with("/blobs/uploads/") {
            extra.push_str(&format!(
                "Location: http://127.0.0.1:{port}{path}0a1b2c3d-uuid?_state=abc\r\nDocker-Upload-Uuid: 0a1b2c3d-uuid\r\nRange: 0-0\r\n"
            ));
            "202 Accepted"
        } else {
            if path.ends_with("/tags/list") {
                extra.push_str(&format!(
                    "Link: <http://127.0.0.1:{port}{path}?last=a&n=1>; rel=\"next\"\r\n"
                ));
            }
            "200 OK"
        };
        let body = if status.starts_with("202") { "" } else { "{}" };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nDocker-Distribution-Api-Version: registry/2.0\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        writer.write_all(resp.as_bytes())?;
        writer.flush()?;
        if close {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}
