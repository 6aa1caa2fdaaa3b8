//! Docker registry token auth (JWT).
//!
//! The pieces of distribution's token protocol (docs/spec/auth/*.md), as a
//! library the proxy wires in: [`scope`] parses what clients ask for,
//! [`keys`] holds the signing key and the certificate registry:2 trusts,
//! [`jwt`] issues and checks access and refresh tokens, [`endpoint`]
//! parses token requests and writes token responses, [`revocation`] lists
//! issued tokens that must stop working before they expire, and
//! [`upstream`] makes the tokens the proxy presents to a registry that
//! runs token auth.
//! Nothing here knows HTTP sessions: the HTTP side is `crate::http::token`.

pub mod endpoint;
pub(crate) mod files;
pub mod jwt;
pub mod keys;
pub mod public;
pub mod revocation;
pub mod scope;
pub mod upstream;
