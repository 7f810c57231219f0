//! Responses the gateway itself writes: built here and nowhere else.
//!
//! Every refusal carries the contract's JSON body, `X-Portcullis-Error`,
//! `X-Request-Id` and `Cache-Control: no-store`. The text is fixed per code:
//! no library error string or key material can end up in a body.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, SERVER, WWW_AUTHENTICATE};
use http::{HeaderName, StatusCode};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::auth::AuthError;

pub const ERROR_HEADER: &str = "x-portcullis-error";
pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const SERVER_NAME: &str = "portcullis";

/// A response the gateway produces instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: &'static str,
    pub challenge: Option<String>,
}

impl Refusal {
    pub fn auth(error: &AuthError, realm: &str) -> Self {
        Self {
            status: error.status(),
            code: error.code(),
            description: error.description(),
            challenge: error.challenge(realm),
        }
    }

    const fn plain(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        Self {
            status,
            code,
            description,
            challenge: None,
        }
    }

    pub const fn bad_path() -> Self {
        Self::plain(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request path is not acceptable",
        )
    }

    pub const fn bad_request() -> Self {
        Self::plain(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request is malformed",
        )
    }

    /// A refusal with a code outside the authentication table.
    pub const fn other(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        Self::plain(status, code, description)
    }

    pub const fn no_route() -> Self {
        Self::plain(
            StatusCode::NOT_FOUND,
            "not_found",
            "no route matches the request",
        )
    }

    pub const fn bad_gateway() -> Self {
        Self::plain(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            "the upstream is unavailable",
        )
    }

    pub const fn no_healthy_upstream() -> Self {
        Self::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_healthy_upstream",
            "no upstream target is healthy",
        )
    }

    pub const fn gateway_timeout() -> Self {
        Self::plain(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            "the upstream did not answer in time",
        )
    }

    pub const fn internal() -> Self {
        Self::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the gateway failed to handle the request",
        )
    }

    /// The contract's JSON body.
    pub fn body(&self, request_id: &str) -> Bytes {
        let body = serde_json::json!({
            "error": self.code,
            "error_description": self.description,
            "request_id": request_id,
        });
        Bytes::from(body.to_string())
    }

    /// Every header of the response but `Content-Length`.
    pub fn headers<'a>(
        &'a self,
        request_id: &'a str,
    ) -> impl Iterator<Item = (HeaderName, &'a str)> {
        [
            (CONTENT_TYPE, "application/json"),
            (CACHE_CONTROL, "no-store"),
            (SERVER, SERVER_NAME),
            (HeaderName::from_static(ERROR_HEADER), self.code),
            (HeaderName::from_static(REQUEST_ID_HEADER), request_id),
        ]
        .into_iter()
        .chain(self.challenge.as_deref().map(|c| (WWW_AUTHENTICATE, c)))
    }

    /// The response header and body for this refusal.
    pub fn render(&self, request_id: &str) -> pingora_core::Result<(ResponseHeader, Bytes)> {
        let body = self.body(request_id);
        let mut header = ResponseHeader::build(self.status, Some(8))?;
        for (name, value) in self.headers(request_id) {
            header.insert_header(name, value)?;
        }
        header.insert_header(CONTENT_LENGTH, body.len())?;
        Ok((header, body))
    }

    /// Writes the refusal, with extra headers (e.g. `Retry-After`).
    pub async fn send_with(
        &self,
        session: &mut Session,
        request_id: &str,
        extra: &[(HeaderName, String)],
    ) -> pingora_core::Result<()> {
        let (mut header, body) = self.render(request_id)?;
        for (name, value) in extra {
            header.insert_header(name.clone(), value.as_str())?;
        }
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await
    }

    /// Writes the refusal. A request read completely keeps its connection;
    /// one with an unread body gets `Connection: close` from pingora rather
    /// than the gateway reading a body it will not admit.
    pub async fn send(&self, session: &mut Session, request_id: &str) -> pingora_core::Result<()> {
        let (header, body) = self.render(request_id)?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await
    }
}

/// Writes a JSON answer of the gateway's own endpoints; never cached.
pub async fn send_json(
    session: &mut Session,
    status: StatusCode,
    body: &serde_json::Value,
    extra: &[(HeaderName, String)],
    request_id: &str,
) -> pingora_core::Result<()> {
    let body = Bytes::from(body.to_string());
    let mut header = ResponseHeader::build(status, Some(8))?;
    header.insert_header(CONTENT_TYPE, "application/json")?;
    header.insert_header(CONTENT_LENGTH, body.len())?;
    header.insert_header(SERVER, SERVER_NAME)?;
    header.insert_header(REQUEST_ID_HEADER, request_id)?;
    let mut cache_set = false;
    for (name, value) in extra {
        cache_set |= *name == CACHE_CONTROL;
        header.append_header(name.clone(), value.as_str())?;
    }
    if !cache_set {
        // RFC 6749 §5.1: responses carrying tokens must not be cached.
        header.insert_header(CACHE_CONTROL, "no-store")?;
        header.insert_header(http::header::PRAGMA, "no-cache")?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}
