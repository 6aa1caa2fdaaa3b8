//! portcullis: an authenticating, TLS-terminating reverse proxy for
//! Docker/OCI registries, built on Pingora.
//!
//! Where things live: [`proxy`] is the request pipeline; [`http`] writes
//! the proxy's own answers and serves the plain-HTTP listener;
//! [`registry`] knows the v2 API; [`auth`] decides who is calling and what
//! they may do; [`tls`] serves certificates; [`upstream`] talks to the
//! registry; [`observe`] logs; [`config`] is `proxy.toml`.

pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod http;
pub mod limits;
pub mod listeners;
pub mod observe;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod watch;
