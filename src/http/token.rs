//! The HTTP side of the token endpoint: the method, the query or form and
//! the `Authorization` header off the session; the token protocol itself
//! (who gets what) is `auth::token_endpoint`.

use bytes::Bytes;
use pingora::proxy::Session;
use std::net::IpAddr;

use super::reply::Reply;
use crate::auth::authentication::basic;
use crate::auth::gate::{Gate, LoginOutcome};
use crate::auth::principal::Principal;
use crate::auth::token::endpoint::{self as wire, EndpointError};
use crate::auth::token_endpoint::{Endpoint, TokenFailure};
use crate::registry::errors::RegistryError;
use crate::tls::client_auth::PeerCertificate;

/// What a token request got: the reply, the principal a token was issued
/// to (for the access log), and how its login went (for logs and metrics).
pub struct Exchanged {
    pub reply: Reply,
    pub principal: Option<Principal>,
    pub login: Option<LoginOutcome>,
}

impl Exchanged {
    fn reply(reply: Reply) -> Self {
        Exchanged {
            reply,
            principal: None,
            login: None,
        }
    }
}

/// Answers `GET` (query) and `POST` (form) token requests.
pub async fn serve(
    session: &mut Session,
    endpoint: &Endpoint,
    gate: &Gate,
    peer: Option<&PeerCertificate>,
    ip: IpAddr,
) -> pingora::Result<Exchanged> {
    let req = session.req_header();
    let parsed = if req.method == http::Method::GET {
        wire::parse_get(req.uri.query().unwrap_or(""))
    } else if req.method == http::Method::POST {
        match read_form(session).await? {
            Some(body) => wire::parse_post(&body),
            None => Err(EndpointError::TooLarge),
        }
    } else {
        return Ok(Exchanged::reply(RegistryError::METHOD_NOT_ALLOWED.into()));
    };
    let request = match parsed {
        Ok(r) => r,
        Err(e) => return Ok(Exchanged::reply(bad_request(&e))),
    };
    let header = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| basic::parse(v.as_bytes()));
    let (issued, login) = endpoint.exchange(gate, request, header, peer, ip).await;
    Ok(match issued {
        Ok(issued) => Exchanged {
            reply: Reply::Token {
                status: 200,
                json: issued.json,
            },
            principal: Some(issued.principal),
            login,
        },
        Err(TokenFailure::BadRequest(e)) => Exchanged {
            login,
            ..Exchanged::reply(bad_request(&e))
        },
        Err(TokenFailure::Refused(r)) => Exchanged {
            login,
            ..Exchanged::reply(r.into())
        },
    })
}

fn bad_request(e: &EndpointError) -> Reply {
    Reply::Token {
        status: e.status(),
        json: e.body(),
    }
}

/// Reads a small form body; `None` if it is larger than the endpoint takes.
async fn read_form(session: &mut Session) -> pingora::Result<Option<Bytes>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > wire::MAX_FORM_BODY {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(Bytes::from(body)))
}
