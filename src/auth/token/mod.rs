//! Docker registry token auth (JWT).
