//! Test harness: starts a real `docker-registry` and a real `portcullis serve`
//! on loopback ports, with certificates, htpasswd and proxy.toml in temp dirs.
//!
//! Every wait loop is bounded and panics with the tail of the process logs.
//! One file per concern; this one only declares and re-exports them.
#![allow(dead_code)]

pub mod clients;
pub mod config;
pub mod docker;
pub mod echo_upstream;
pub mod fixtures;
pub mod haproxy;
pub mod images;
pub mod modes;
pub mod oidc;
pub mod pebble;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod redis;
pub mod registry;
pub mod samba;
pub mod slapd;

#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use config::*;
#[allow(unused_imports)]
pub use docker::*;
#[allow(unused_imports)]
pub use echo_upstream::*;
#[allow(unused_imports)]
pub use fixtures::*;
#[allow(unused_imports)]
pub use haproxy::*;
#[allow(unused_imports)]
pub use images::*;
#[allow(unused_imports)]
pub use modes::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use proxy::*;
#[allow(unused_imports)]
pub use registry::*;
