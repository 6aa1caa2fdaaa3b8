//! Knowledge of the v2 registry API: routes, error bodies, headers, the
//! parameters the registry reads.

pub mod catalog;
pub mod errors;
pub mod headers;
pub mod location;
pub mod parameters;
pub mod route;
