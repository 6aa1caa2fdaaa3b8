//! The HTTP layer: what the proxy answers itself, and how.
//!
//! [`reply`] is the one reply type and its writer; [`token`] reads token
//! requests off the session for the token protocol in `auth`; [`plain`] is
//! the plain-HTTP listener (ACME http-01 and redirects to https); [`served`]
//! counts and logs every answered request; [`login`] and [`page`] are the
//! browser login's routes and pages.

pub mod login;
pub mod page;
pub mod plain;
pub mod reply;
pub mod served;
pub mod token;
