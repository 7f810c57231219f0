//! Every response the gateway writes itself, built here and nowhere else:
//! refusals, the JSON answers of its own endpoints and the admin API, the
//! grant of a CORS preflight, and the bytes the edge writes for a refused
//! request head.
//!
//! Every refusal carries the contract's JSON body, `X-Portcullis-Error`,
//! `X-Request-Id` and `Cache-Control: no-store`. The text is fixed per code:
//! no library error string or key material can end up in a body. A store or
//! session failure an endpoint or the admin API meets is logged and counted
//! here, once, on its way to becoming a refusal, by a call its site names
//! (`Refusal::store_failed` and its kin; no `From` hides it behind a `?`)
//! (the revocation view and its
//! follower report their own, as `auth_unavailable` reaches here through
//! [`Refusal::auth`]). A [`Reply`] is the finished status, headers and body; the
//! proxy writes it with [`Reply::send`], the admin listener with
//! [`Reply::into_response`]. An upstream's answer passed through (the login
//! backend's own refusal) is not the gateway's and is not built here.

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, PRAGMA, RETRY_AFTER, SERVER, WWW_AUTHENTICATE,
};
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use serde::Serialize;
use serde_json::Value;

use crate::auth::AuthError;
use crate::metrics::METRICS;
use crate::session::cookie::NotPresented;
use crate::session::{LogoutError, ReauthError, RefreshError, SessionError};
use crate::store::StoreError;
use crate::vocabulary::{ERROR, REQUEST_ID};

pub const SERVER_NAME: &str = "portcullis";

/// A response the gateway produces instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: &'static str,
    pub challenge: Option<String>,
    /// Headers beyond the contract's, such as `Retry-After`.
    pub extra: Vec<(HeaderName, String)>,
    /// Members added to the contract's body, such as a failed reload's
    /// `errors`.
    pub details: Vec<(&'static str, Value)>,
}

/// Who met a store failure: the `operation` label of
/// `portcullis_store_errors_total`, and who the answer goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCaller {
    /// The refresh grant.
    Refresh,
    /// Login (counted with the endpoints, logged under its own target).
    Login,
    /// The gateway's other endpoints: logout, devices.
    Endpoint,
    /// The admin API.
    Admin,
}

impl StoreCaller {
    fn label(self) -> &'static str {
        match self {
            Self::Refresh => "refresh",
            Self::Login | Self::Endpoint => "endpoint",
            Self::Admin => "admin",
        }
    }
}

/// The authentication table of the contract (shared/DESIGN.md).
impl Refusal {
    pub fn auth(error: &AuthError, realm: &str) -> Self {
        Self {
            challenge: error.challenge(realm),
            ..Self::plain(error.status(), error.code(), error.description())
        }
    }

    /// The outcomes whose answer names no realm: `account_disabled` and
    /// `auth_unavailable` carry no `WWW-Authenticate`.
    fn unchallenged(error: &AuthError) -> Self {
        Self::plain(error.status(), error.code(), error.description())
    }

    pub fn account_disabled() -> Self {
        Self::unchallenged(&AuthError::Disabled)
    }

    /// 503 `auth_unavailable`: the store could not answer (fail closed).
    pub fn auth_unavailable() -> Self {
        Self::unchallenged(&AuthError::Unavailable)
    }
}

/// Requests the gateway cannot take, and failures on the way upstream.
impl Refusal {
    const fn plain(status: StatusCode, code: &'static str, description: &'static str) -> Self {
        Self {
            status,
            code,
            description,
            challenge: None,
            extra: Vec::new(),
            details: Vec::new(),
        }
    }

    pub const fn bad_path() -> Self {
        Self::invalid_request("the request path is not acceptable")
    }

    pub const fn bad_request() -> Self {
        Self::invalid_request("the request is malformed")
    }

    /// 400 `invalid_request`, saying what is wrong with it (RFC 6749 §5.2
    /// for the token endpoint; the admin API's validation).
    pub const fn invalid_request(description: &'static str) -> Self {
        Self::plain(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub const fn request_too_large() -> Self {
        Self::plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "the request body is too large",
        )
    }

    pub const fn method_not_allowed() -> Self {
        Self::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the method is not allowed here",
        )
    }

    pub const fn cors_rejected() -> Self {
        Self::plain(
            StatusCode::FORBIDDEN,
            "cors_rejected",
            "the origin, method or headers are not allowed for cross-origin calls",
        )
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
}

/// Request heads the edge refuses before the engine parses them.
impl Refusal {
    pub const fn uri_too_long() -> Self {
        Self::plain(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "the request target is too long",
        )
    }

    pub const fn headers_too_large() -> Self {
        Self::plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "the request header is too large",
        )
    }

    /// `CONNECT` and other methods the gateway never proxies.
    pub const fn method_not_served() -> Self {
        Self::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the method is not allowed",
        )
    }

    /// A begun request head, or a body the gateway reads itself (its
    /// endpoints, the admin API), not complete within `header_read_timeout`.
    pub const fn request_timeout() -> Self {
        Self::plain(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request was not received in time",
        )
    }
}

/// The session endpoints: login, refresh (RFC 6749 §5.2), logout, devices.
impl Refusal {
    pub const fn no_signing_key() -> Self {
        Self::plain(
            StatusCode::NOT_FOUND,
            "not_found",
            "this gateway issues no tokens: no signing key is configured",
        )
    }

    pub const fn login_not_configured() -> Self {
        Self::plain(
            StatusCode::NOT_FOUND,
            "not_found",
            "login is not configured",
        )
    }

    pub const fn no_such_session() -> Self {
        Self::plain(StatusCode::NOT_FOUND, "not_found", "no such session")
    }

    pub const fn no_such_api_key() -> Self {
        Self::plain(StatusCode::NOT_FOUND, "not_found", "no such API key")
    }

    pub const fn cross_site() -> Self {
        Self::plain(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "cookie-authenticated calls must come from an allowed origin",
        )
    }

    pub const fn unsupported_grant_type() -> Self {
        Self::plain(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only the refresh_token grant is supported",
        )
    }

    pub const fn invalid_grant() -> Self {
        Self::plain(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the refresh token is invalid, expired or revoked",
        )
    }

    /// A refresh token that failed too often waits `retry_after` seconds.
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut refusal = Self::plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "this refresh token failed too often; retry later",
        );
        refusal.extra.push((RETRY_AFTER, retry_after.to_string()));
        refusal
    }
}

/// Rate limits and login throttling (`proxy::rate_limit`, `/auth/login`).
impl Refusal {
    /// 429 `rate_limited`: wait `retry_after` seconds, then retry.
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut refusal = Self::plain(
            StatusCode::TOO_MANY_REQUESTS,
            crate::vocabulary::RATE_LIMITED,
            "too many requests; retry after the time Retry-After gives",
        );
        refusal
            .extra
            .push((RETRY_AFTER, retry_after.max(1).to_string()));
        refusal
    }
}

/// An API key whose id failed too often waits `retry_after` seconds.
impl Refusal {
    pub fn api_key_throttled(retry_after: u64) -> Self {
        let mut refusal = Self::plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "this API key failed too often; retry later",
        );
        refusal.extra.push((RETRY_AFTER, retry_after.to_string()));
        refusal
    }
}

/// The admin API.
impl Refusal {
    pub const fn admin_disabled() -> Self {
        Self::plain(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is disabled: no admin token is configured",
        )
    }

    /// A wrong method on an admin path. Most admin writes are `POST`s; the
    /// text says so even on `/admin/sessions/{sid}`, whose write is a `DELETE`.
    pub const fn admin_method_not_allowed() -> Self {
        Self::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST",
        )
    }

    /// Applied on the primary, but a failover now could lose it: the caller
    /// must not take it as done. Every admin write is idempotent, so
    /// repeating it is the answer.
    pub const fn not_replicated() -> Self {
        Self::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_replicated",
            "the change was not confirmed by enough replicas in time; repeat the request",
        )
    }

    /// A reload that found errors in the file, each `file:line:col: message`;
    /// the running configuration stays.
    pub fn config_invalid(errors: Vec<String>) -> Self {
        let mut refusal = Self::plain(
            StatusCode::BAD_REQUEST,
            "config_invalid",
            "the configuration file has errors; the running configuration stays",
        );
        refusal.details = vec![("reloaded", Value::Bool(false)), ("errors", errors.into())];
        refusal
    }
}

/// Faults on the way to an answer: logged and counted here, once.
impl Refusal {
    /// A store that failed `caller`: warned about with its source and
    /// counted, answered 503 `auth_unavailable` (fail closed).
    pub fn store_failed(error: &StoreError, caller: StoreCaller) -> Self {
        let operation = caller.label();
        METRICS.store_errors.with_label_values(&[operation]).inc();
        // Targets kept from before the code moved: operators filter on them.
        match caller {
            StoreCaller::Admin => {
                tracing::warn!(target: "portcullis::admin", error = %error, operation, "store unavailable")
            }
            StoreCaller::Login => {
                tracing::warn!(target: "portcullis::proxy::login", error = %error, operation, "store unavailable")
            }
            StoreCaller::Refresh | StoreCaller::Endpoint => {
                tracing::warn!(target: "portcullis::proxy::endpoints", error = %error, operation, "store unavailable")
            }
        }
        match (caller, error) {
            (StoreCaller::Admin, StoreError::NotReplicated { .. }) => Self::not_replicated(),
            _ => Self::auth_unavailable(),
        }
    }

    /// Opening a session failed.
    pub fn session_failed(error: SessionError, caller: StoreCaller) -> Self {
        match error {
            SessionError::Disabled => Self::account_disabled(),
            SessionError::Store(e) => Self::store_failed(&e, caller),
            SessionError::Internal(what) => {
                match caller {
                    StoreCaller::Admin => {
                        tracing::error!(target: "portcullis::admin", what, "opening a session failed")
                    }
                    _ => tracing::error!(target: "portcullis::proxy::login", what, "login failed"),
                }
                Self::internal()
            }
        }
    }

    /// The refresh grant failed: a refused or limited token, or a fault
    /// (a store failure is logged and counted as `refresh`).
    pub fn refresh_failed(error: RefreshError) -> Self {
        match error {
            RefreshError::InvalidGrant(_) => Self::invalid_grant(),
            RefreshError::Limited(wait) => Self::too_many_requests(wait),
            RefreshError::Store(e) => Self::store_failed(&e, StoreCaller::Refresh),
            RefreshError::Internal(what) => {
                tracing::error!(target: "portcullis::proxy::endpoints", what, "refresh failed");
                Self::internal()
            }
        }
    }

    /// A login that presented a refresh token could not keep its session:
    /// the credentials were another user's (400 `invalid_request`, nothing
    /// changed), or a fault (counted like a login's).
    pub fn reauth_failed(error: ReauthError) -> Self {
        match error {
            ReauthError::OtherUser => Self::invalid_request(
                "the refresh token belongs to another user; log out before logging in as another",
            ),
            ReauthError::Store(e) => Self::store_failed(&e, StoreCaller::Login),
            ReauthError::Internal(what) => {
                tracing::error!(target: "portcullis::proxy::login", what, "re-authentication failed");
                Self::internal()
            }
        }
    }

    /// Logout failed: a token it cannot end, or a store failure (logged
    /// and counted with the endpoints).
    pub fn logout_failed(error: LogoutError) -> Self {
        match error {
            LogoutError::NoJti => Self::invalid_request(
                "this token carries no jti and cannot be logged out; revoke the user instead",
            ),
            LogoutError::Store(e) => Self::store_failed(&e, StoreCaller::Endpoint),
        }
    }
}

impl From<NotPresented> for Refusal {
    fn from(error: NotPresented) -> Self {
        match error {
            NotPresented::Missing => Self::invalid_request("refresh_token is required"),
            NotPresented::CrossSite => Self::cross_site(),
            NotPresented::BrowserBodyToken => {
                Self::invalid_request("a browser presents its refresh token in the cookie only")
            }
        }
    }
}

/// The response itself.
impl Refusal {
    /// The contract's JSON body.
    pub fn body(&self, request_id: &str) -> Bytes {
        let mut body = serde_json::json!({
            "error": self.code,
            "error_description": self.description,
            "request_id": request_id,
        });
        if let Value::Object(members) = &mut body {
            for (name, value) in &self.details {
                members.insert((*name).to_owned(), value.clone());
            }
        }
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
            (ERROR, self.code),
            (REQUEST_ID, request_id),
        ]
        .into_iter()
        .chain(self.challenge.as_deref().map(|c| (WWW_AUTHENTICATE, c)))
        .chain(self.extra.iter().map(|(n, v)| (n.clone(), v.as_str())))
    }

    pub fn reply(&self, request_id: &str) -> Reply {
        let headers = self.headers(request_id);
        Reply {
            status: self.status,
            headers: headers.map(|(n, v)| (n, v.to_owned())).collect(),
            body: self.body(request_id),
        }
    }

    /// Writes the refusal. A request read completely keeps its connection;
    /// one with an unread body gets `Connection: close` from pingora rather
    /// than the gateway reading a body it will not admit.
    pub async fn send(&self, session: &mut Session, request_id: &str) -> pingora_core::Result<()> {
        self.reply(request_id).send(session).await
    }
}

/// A finished response of the gateway's own: status, headers (all but
/// `Content-Length`, which each writer sets from the body) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    headers: Vec<(HeaderName, String)>,
    body: Bytes,
}

impl Reply {
    /// A JSON answer, never cached: RFC 6749 §5.1 asks it of every
    /// response that carries tokens, and the others are per caller.
    pub fn json(status: StatusCode, body: &impl Serialize, request_id: &str) -> Self {
        // The gateway's own answers are plain structs and JSON values, which
        // always serialise; `null` stands in should one ever fail.
        let body = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
        let headers = vec![
            (CONTENT_TYPE, "application/json".to_owned()),
            (SERVER, SERVER_NAME.to_owned()),
            (REQUEST_ID, request_id.to_owned()),
            (CACHE_CONTROL, "no-store".to_owned()),
            (PRAGMA, "no-cache".to_owned()),
        ];
        Self {
            status,
            headers,
            body: Bytes::from(body),
        }
    }

    /// The grant of a CORS preflight: 204 with the `Access-Control-*`
    /// headers, no body. Every granted value is visible ASCII (configured
    /// origins, methods and header names, or the request's own values read
    /// as text); one that were not would be left out, never sent broken.
    pub fn preflight(granted: Vec<(HeaderName, HeaderValue)>, request_id: &str) -> Self {
        let mut headers: Vec<(HeaderName, String)> = granted
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.to_str().ok()?.to_owned())))
            .collect();
        headers.push((SERVER, SERVER_NAME.to_owned()));
        headers.push((REQUEST_ID, request_id.to_owned()));
        Self {
            status: StatusCode::NO_CONTENT,
            headers,
            body: Bytes::new(),
        }
    }

    /// The Prometheus text page.
    pub fn metrics(page: Vec<u8>) -> Self {
        let content_type = "text/plain; version=0.0.4; charset=utf-8".to_owned();
        Self {
            status: StatusCode::OK,
            headers: vec![(CONTENT_TYPE, content_type)],
            body: Bytes::from(page),
        }
    }

    /// One more header, such as `Set-Cookie`.
    pub fn with_header(mut self, name: HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Public and kept for `max_age` seconds instead of `no-store`: an
    /// answer that is the same for everyone (the JWKS).
    pub fn cacheable_for(mut self, max_age: u64) -> Self {
        self.headers
            .retain(|(name, _)| *name != CACHE_CONTROL && *name != PRAGMA);
        self.with_header(CACHE_CONTROL, format!("public, max-age={max_age}"))
    }

    /// Writes the reply on the proxy listener.
    pub async fn send(self, session: &mut Session) -> pingora_core::Result<()> {
        let mut header = ResponseHeader::build(self.status, Some(self.headers.len() + 1))?;
        for (name, value) in self.headers {
            header.append_header(name, value)?;
        }
        header.insert_header(CONTENT_LENGTH, self.body.len())?;
        let no_body = self.body.is_empty();
        session
            .write_response_header(Box::new(header), no_body)
            .await?;
        if no_body {
            return Ok(());
        }
        session.write_response_body(Some(self.body), true).await
    }

    /// The reply as HTTP/1.1 bytes that end the connection: for the edge,
    /// which answers a refused head before the engine has a session.
    pub fn into_closing_http1(self) -> Vec<u8> {
        use std::fmt::Write;
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status.as_u16());
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        let length = self.body.len();
        let _ = write!(
            head,
            "content-length: {length}\r\nconnection: close\r\n\r\n"
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The reply as the admin listener's answer.
    pub fn into_response(self) -> http::Response<Vec<u8>> {
        let mut response = http::Response::new(self.body.to_vec());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            match HeaderValue::try_from(value) {
                Ok(value) => {
                    headers.append(name, value);
                }
                Err(_) => tracing::debug!(header = %name, "dropped a header that is not valid"),
            }
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        response
    }
}
