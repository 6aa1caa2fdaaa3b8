//! Errors the proxy answers itself, in the registry's own JSON format, so
//! every client reacts to them as it would to `registry:2`.

use serde::Serialize;

/// The error codes of the distribution spec that the proxy emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthorized,
    Denied,
    NameInvalid,
    ManifestInvalid,
    Unsupported,
    NotFound,
    Unavailable,
    TooManyRequests,
    PaginationNumberInvalid,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
        }
    }
}

/// One answer the proxy produces on its own: status, code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryError {
    pub status: u16,
    pub code: ErrorCode,
    pub message: &'static str,
}

impl RegistryError {
    pub const fn new(status: u16, code: ErrorCode, message: &'static str) -> Self {
        RegistryError {
            status,
            code,
            message,
        }
    }

    pub const UNAUTHORIZED: Self =
        Self::new(401, ErrorCode::Unauthorized, "authentication required");
    pub const DENIED: Self = Self::new(
        403,
        ErrorCode::Denied,
        "requested access to the resource is denied",
    );
    pub const INSUFFICIENT_SCOPE: Self = Self::new(
        401,
        ErrorCode::Unauthorized,
        "authentication required: the token does not grant this access",
    );
    pub const INVALID_TOKEN: Self = Self::new(
        401,
        ErrorCode::Unauthorized,
        "authentication required: invalid or expired token",
    );
    pub const NOT_FOUND: Self = Self::new(
        404,
        ErrorCode::NotFound,
        "the requested path is not part of the registry API",
    );
    pub const BAD_PATH: Self = Self::new(400, ErrorCode::Unsupported, "malformed request path");
    pub const BAD_CURSOR: Self = Self::new(
        400,
        ErrorCode::PaginationNumberInvalid,
        "unknown or expired catalog cursor: start the listing again",
    );
    pub const BAD_CONNECTION: Self = Self::new(
        400,
        ErrorCode::Unsupported,
        "the Connection header nominates a header the proxy sets itself",
    );
    pub const BAD_HOST: Self = Self::new(
        400,
        ErrorCode::Unsupported,
        "missing or malformed Host header (expected host[:port])",
    );
    pub const NAME_INVALID: Self =
        Self::new(400, ErrorCode::NameInvalid, "invalid repository name");
    pub const REFERENCE_INVALID: Self =
        Self::new(400, ErrorCode::ManifestInvalid, "invalid tag or digest");
    pub const METHOD_NOT_ALLOWED: Self =
        Self::new(405, ErrorCode::Unsupported, "the operation is unsupported");
    pub const BAD_GATEWAY: Self = Self::new(
        502,
        ErrorCode::Unavailable,
        "the upstream registry is unreachable",
    );
    pub const UNAVAILABLE: Self = Self::new(503, ErrorCode::Unavailable, "service unavailable");
    pub const GATEWAY_TIMEOUT: Self = Self::new(
        504,
        ErrorCode::Unavailable,
        "the upstream registry did not answer in time",
    );
    pub const TOO_MANY_REQUESTS: Self =
        Self::new(429, ErrorCode::TooManyRequests, "too many requests");

    /// The JSON body: `{"errors":[{"code":…,"message":…,"detail":null}]}`.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            errors: [Entry<'a>; 1],
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'a str,
            message: &'a str,
            detail: Option<()>,
        }
        let body = Body {
            errors: [Entry {
                code: self.code.as_str(),
                message: self.message,
                detail: None,
            }],
        };
        // Serializing a struct of strings cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl From<super::route::RouteError> for RegistryError {
    fn from(e: super::route::RouteError) -> Self {
        use super::route::RouteError as R;
        match e {
            R::Malformed => RegistryError::BAD_PATH,
            R::NotFound => RegistryError::NOT_FOUND,
            R::NameInvalid => RegistryError::NAME_INVALID,
            R::ReferenceInvalid => RegistryError::REFERENCE_INVALID,
            R::MethodNotAllowed => RegistryError::METHOD_NOT_ALLOWED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_registry_json() {
        let v: serde_json::Value =
            serde_json::from_slice(&RegistryError::UNAUTHORIZED.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED");
        assert_eq!(v["errors"][0]["message"], "authentication required");
        assert!(v["errors"][0]["detail"].is_null());
        assert_eq!(v["errors"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn route_errors_map_to_statuses() {
        use crate::registry::route::RouteError as R;
        assert_eq!(RegistryError::from(R::Malformed).status, 400);
        assert_eq!(RegistryError::from(R::NotFound).status, 404);
        assert_eq!(RegistryError::from(R::MethodNotAllowed).status, 405);
    }
}
