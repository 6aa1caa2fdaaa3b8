//! Knowledge of the v2 registry API: routes, error bodies, headers.

pub mod catalog;
pub mod errors;
pub mod headers;
pub mod location;
pub mod route;
