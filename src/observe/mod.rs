//! What the proxy tells operators: logs, and the in-flight count that lets
//! a graceful shutdown end as soon as transfers are done.

pub mod access_log;
pub mod admin;
pub mod audit;
pub mod drain;
pub mod health;
pub mod logging;
pub mod metrics;
