//! One line per request, under the tracing target `access`.
//!
//! Only the path is logged, never the query (upload state tokens live
//! there) nor any header: credentials cannot end up in the log.

pub struct AccessRecord<'a> {
    pub client: String,
    pub user: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'static str>,
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub duration_ms: u128,
    pub upstream_ms: Option<u128>,
    pub error: Option<&'static str>,
}

pub fn write(r: &AccessRecord<'_>) {
    tracing::info!(
        target: "access",
        client = %r.client,
        user = r.user.unwrap_or("-"),
        method = r.method,
        path = r.path,
        route = r.route.unwrap_or("-"),
        status = r.status,
        bytes_in = r.bytes_in,
        bytes_out = r.bytes_out,
        duration_ms = r.duration_ms as u64,
        upstream_ms = r.upstream_ms.map(|v| v as i64).unwrap_or(-1),
        error = r.error.unwrap_or("-"),
    );
}
