//! Errors the proxy answers itself, in the registry's own JSON format, so
//! every client reacts to them as it would to `registry:2`.

use serde::Serialize;

/// The answers, by name: status, code, message.
macro_rules! answers {
    ($($name:ident: $status:literal $code:ident $message:literal,)*) => {
        impl RegistryError {
            $(pub const $name: Self = Self::new($status, ErrorCode::$code, $message);)*
        }
    };
}

answers! {
    UNAUTHORIZED: 401 Unauthorized "authentication required",
    DENIED: 403 Denied "requested access to the resource is denied",
    INSUFFICIENT_SCOPE: 401 Unauthorized "authentication required: the token does not grant this access",
    INVALID_TOKEN: 401 Unauthorized "authentication required: invalid or expired token",
    NOT_FOUND: 404 NotFound "the requested path is not part of the registry API",
    BAD_PATH: 400 Unsupported "malformed request path",
    BAD_CURSOR: 400 PaginationNumberInvalid "unknown or expired catalog cursor: start the listing again",
    BAD_CONNECTION: 400 Unsupported "the Connection header nominates a header the proxy sets itself",
    BAD_HOST: 400 Unsupported "missing or malformed Host header (expected host[:port])",
    NAME_INVALID: 400 NameInvalid "invalid repository name",
    REFERENCE_INVALID: 400 ManifestInvalid "invalid tag or digest",
    MANIFEST_UNKNOWN: 404 ManifestUnknown "manifest unknown",
    BLOB_UNKNOWN: 404 BlobUnknown "blob unknown to registry",
    DIGEST_INVALID: 400 DigestInvalid "invalid digest",
    UPLOAD_UNKNOWN: 404 BlobUploadUnknown "blob upload unknown to registry",
    METHOD_NOT_ALLOWED: 405 Unsupported "the operation is unsupported",
    BAD_GATEWAY: 502 Unavailable "the upstream registry is unreachable",
    UNAVAILABLE: 503 Unavailable "service unavailable",
    GATEWAY_TIMEOUT: 504 Unavailable "the upstream registry did not answer in time",
    TOO_MANY_REQUESTS: 429 TooManyRequests "too many requests",
}

/// The error codes of the distribution spec that the proxy emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthorized,
    Denied,
    NameInvalid,
    ManifestInvalid,
    ManifestUnknown,
    BlobUnknown,
    DigestInvalid,
    BlobUploadUnknown,
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
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
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

    /// The JSON body: `{"errors":[{"code":…,"message":…,"detail":null}]}`.
    pub fn body(&self) -> Vec<u8> {
        self.body_with(&[])
    }

    /// The JSON body with the accesses the request needed as its `detail`
    /// (`null` when there are none), as `registry:2` lists them on a
    /// refusal. A detail also keeps Go clients from decoding the error as a
    /// bare code: the distribution client turns an error whose message is
    /// its code's stock text and whose detail is null into the bare code,
    /// which the Docker engine's retry logic does not recognise, so it
    /// retries a final 403 for a minute.
    pub fn body_with(&self, detail: &[AccessRecord]) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            errors: [Entry<'a>; 1],
        }
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'a str,
            message: &'a str,
            detail: Option<&'a [AccessRecord]>,
        }
        let body = Body {
            errors: [Entry {
                code: self.code.as_str(),
                message: self.message,
                detail: (!detail.is_empty()).then_some(detail),
            }],
        };
        // Serializing a struct of strings cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// One access a refused request needed, in the shape of `registry:2`'s
/// `auth.Access` (`{"Type":"repository","Class":"","Name":…,"Action":…}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessRecord {
    pub r#type: String,
    pub class: String,
    pub name: String,
    pub action: String,
}

impl AccessRecord {
    /// The records of a token scope `type:name:action[,action…]`, one per
    /// action (names have no `:`, but the type and actions are split off
    /// the ends anyway); nothing for a string of another shape.
    pub fn of_scope(scope: &str) -> Vec<AccessRecord> {
        let Some((kind, rest)) = scope.split_once(':') else {
            return Vec::new();
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            return Vec::new();
        };
        actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(|action| AccessRecord {
                r#type: kind.to_owned(),
                class: String::new(),
                name: name.to_owned(),
                action: action.to_owned(),
            })
            .collect()
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
            R::ManifestUnknown => RegistryError::MANIFEST_UNKNOWN,
            R::BlobUnknown => RegistryError::BLOB_UNKNOWN,
            R::DigestInvalid => RegistryError::DIGEST_INVALID,
            R::UploadUnknown => RegistryError::UPLOAD_UNKNOWN,
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
    fn detail_lists_the_accesses_as_registry_2_does() {
        let records = AccessRecord::of_scope("repository:team-a/app:pull,push");
        let v: serde_json::Value =
            serde_json::from_slice(&RegistryError::DENIED.body_with(&records)).unwrap();
        assert_eq!(
            v["errors"][0]["detail"],
            serde_json::json!([
                {"Type": "repository", "Class": "", "Name": "team-a/app", "Action": "pull"},
                {"Type": "repository", "Class": "", "Name": "team-a/app", "Action": "push"},
            ])
        );
        let catalog = AccessRecord::of_scope("registry:catalog:*");
        assert_eq!(
            (catalog[0].r#type.as_str(), catalog[0].name.as_str()),
            ("registry", "catalog")
        );
        assert!(AccessRecord::of_scope("nonsense").is_empty());
    }

    #[test]
    fn route_errors_map_to_statuses() {
        use crate::registry::route::RouteError as R;
        assert_eq!(RegistryError::from(R::Malformed).status, 400);
        assert_eq!(RegistryError::from(R::NotFound).status, 404);
        assert_eq!(RegistryError::from(R::MethodNotAllowed).status, 405);
    }
}
