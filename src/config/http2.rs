//! `[server.http2]`: the flow-control windows and frame size the TLS
//! listener offers HTTP/2 clients. Every Go registry client (the Docker
//! engine, containerd, podman, skopeo, crane) speaks HTTP/2 when offered,
//! and the protocol's defaults (64 KiB windows) cap a pushed layer at one
//! window per round trip.

use serde::{Deserialize, Serialize};

use super::Problem;

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Http2Config {
    /// Bytes a client may send on one stream before we acknowledge them
    /// (`SETTINGS_INITIAL_WINDOW_SIZE`).
    #[serde(default = "defaults::stream_window")]
    pub stream_window: u32,
    /// Bytes a client may send on all streams of a connection before we
    /// acknowledge them: the most a connection buffers.
    #[serde(default = "defaults::connection_window")]
    pub connection_window: u32,
    /// The largest frame a client may send us (`SETTINGS_MAX_FRAME_SIZE`).
    #[serde(default = "defaults::max_frame_size")]
    pub max_frame_size: u32,
    /// Bytes of response data queued per stream before the upstream is
    /// read further.
    #[serde(default = "defaults::send_buffer")]
    pub send_buffer: u32,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            stream_window: defaults::stream_window(),
            connection_window: defaults::connection_window(),
            max_frame_size: defaults::max_frame_size(),
            send_buffer: defaults::send_buffer(),
        }
    }
}

/// RFC 9113 §6.5.2 and §6.9.1.
const MAX_WINDOW: u32 = (1 << 31) - 1;
const MIN_FRAME: u32 = 1 << 14;
const MAX_FRAME: u32 = (1 << 24) - 1;

mod defaults {
    pub fn stream_window() -> u32 {
        1 << 20
    }
    pub fn connection_window() -> u32 {
        2 << 20
    }
    pub fn max_frame_size() -> u32 {
        1 << 14
    }
    pub fn send_buffer() -> u32 {
        400 << 10
    }
}

impl Http2Config {
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        for (key, v) in [
            ("stream_window", self.stream_window),
            ("connection_window", self.connection_window),
        ] {
            if !(65_535..=MAX_WINDOW).contains(&v) {
                p.push(Problem::new(
                    format!("server.http2.{key}"),
                    format!(
                        "must be between 65535 (the protocol's default) and {MAX_WINDOW} bytes"
                    ),
                ));
            }
        }
        if self.connection_window < self.stream_window {
            p.push(Problem::new(
                "server.http2.connection_window",
                "must be at least server.http2.stream_window",
            ));
        }
        if !(MIN_FRAME..=MAX_FRAME).contains(&self.max_frame_size) {
            p.push(Problem::new(
                "server.http2.max_frame_size",
                format!("must be between {MIN_FRAME} and {MAX_FRAME} bytes"),
            ));
        }
        if self.send_buffer < MIN_FRAME {
            p.push(Problem::new(
                "server.http2.send_buffer",
                format!("must be at least {MIN_FRAME} bytes (one frame)"),
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_name_their_keys() {
        assert!(Http2Config::default().validate().is_empty());
        let bad = Http2Config {
            stream_window: 1000,
            connection_window: 1 << 31,
            max_frame_size: 1 << 24,
            send_buffer: 10,
        };
        let p: Vec<String> = bad.validate().iter().map(ToString::to_string).collect();
        let keys: Vec<&str> = p.iter().map(|s| s.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "server.http2.stream_window",
                "server.http2.connection_window",
                "server.http2.max_frame_size",
                "server.http2.send_buffer"
            ],
            "{p:?}"
        );
        let small_conn = Http2Config {
            stream_window: 1 << 20,
            connection_window: 1 << 19,
            ..Default::default()
        };
        assert_eq!(small_conn.validate().len(), 1);
    }
}
