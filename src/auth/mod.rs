//! Who is calling, and what may they do — by layer:
//!
//! - [`authentication`]: credentials (Basic, htpasswd, the directory, with
//!   their cache, hash pool and throttle) → one `Identity`;
//! - [`principal`]: the one type for the caller of a request, made from an
//!   identity or a bearer token, or anonymous;
//! - [`authorization`]: the access rules and the one decision what a
//!   principal may do (route needs, token scopes, catalog entries);
//! - [`token`]: Docker token auth as a protocol (JWT, scopes, keys), with
//!   no HTTP in it; [`token_endpoint`] is its grant, issue and refresh
//!   logic;
//! - [`refusal`]: why a request is refused and the challenge that follows;
//! - [`gate`]: the one object the proxy asks, holding all of the above;
//! - [`login`]: the browser login over OpenID Connect, which gives people
//!   access tokens tied to their provider session.
//!
//! Nothing here knows Pingora sessions: reading requests and writing
//! answers is `crate::http`.

pub mod authentication;
pub mod authorization;
pub mod gate;
pub mod login;
pub mod principal;
pub mod refusal;
pub mod token;
pub mod token_endpoint;

// The paths the config, the CLI and the tests name these by.
