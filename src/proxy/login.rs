//! `POST /auth/login`, delegated to the backend's own credential check.
//!
//! The client's request goes to `[login]` as it came, less hop-by-hop
//! headers and the gateway's own credentials (identity and forwarding
//! headers set by the gateway, as on every route). A 2xx answer
//! names the user in response headers; the gateway removes them, opens a
//! session and answers with a token pair instead. Anything else goes back
//! to the client unchanged, so the backend's own "wrong password" page
//! still works.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING, USER_AGENT};
use http::StatusCode;
use pingora_core::connectors::http::Connector;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use serde_json::Value;

use super::endpoints::{body_fields, issuer, read_body, token_answer};
use super::respond::{send_json, Refusal, ERROR_HEADER, REQUEST_ID_HEADER};
use crate::auth::AuthError;
use crate::config::{LoginSettings, Runtime};
use crate::session::service::{NewSession, SessionError};
use crate::session::Grants;
use crate::state::AppState;

/// Largest login response the gateway reads from the backend.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Longest device label kept.
const MAX_DEVICE_CHARS: usize = 128;
/// Hop-by-hop headers (RFC 9110 §7.6.1) never copied between connections;
/// the client's `Connection` may name more.
/// `Expect` is dropped too: the gateway has read the whole body already,
/// and a backend's `100 Continue` would only be one more answer to skip.
const HOP_BY_HOP: [&str; 12] = [
    "expect",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "content-length",
];

fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

/// The backend's answer.
struct LoginResponse {
    header: ResponseHeader,
    body: Bytes,
}

pub async fn serve(
    state: &AppState,
    runtime: &Runtime,
    session: &mut Session,
    id: &str,
) -> Result<&'static str, Refusal> {
    let login = runtime.login.as_ref().ok_or(Refusal::other(
        StatusCode::NOT_FOUND,
        "not_found",
        "login is not configured",
    ))?;
    let issuer = issuer(runtime)?;
    // In cookie mode a cross-site form could log the victim's browser into
    // the attacker's account (login CSRF): same rule as for refresh. A
    // browser is answered in the cookie; another client (no `Origin`, no
    // `Sec-Fetch-Site`) gets its refresh token in the body.
    let cookie_mode = super::endpoints::browser_request(&session.req_header().headers);
    if let Some(cookie) = runtime
        .sessions
        .settings
        .cookie
        .as_ref()
        .filter(|_| cookie_mode)
    {
        if !super::endpoints::same_site_call(session, cookie) {
            return Err(super::endpoints::cross_site());
        }
    }
    let body = read_body(session).await?;
    let device = device_label(session, &body);
    let request = upstream_request(runtime, login, session, body.len(), id)?;
    let response = tokio::time::timeout(login.timeout, call(login, request, body))
        .await
        .map_err(|_| Refusal::gateway_timeout())?
        .map_err(|e| {
            tracing::warn!(error = %e, "login upstream failed");
            Refusal::bad_gateway()
        })?;
    if !response.header.status.is_success() {
        let status = response.header.status.as_u16();
        tracing::info!(target: "portcullis::session", request_id = id, status, "login refused by the backend");
        pass_through(session, runtime, login, response, id).await;
        return Ok(LOGIN_REFUSED);
    }
    let new = identity(login, &response.header, device)?;
    let (pair, opened) = runtime
        .sessions
        .open(state.view.store().as_ref(), &issuer, new)
        .await
        .map_err(|e| match e {
            SessionError::Disabled => Refusal::auth(&AuthError::Disabled, &runtime.realm),
            SessionError::Store(e) => {
                tracing::warn!(error = %e, "login failed: store unavailable");
                Refusal::auth(&AuthError::Unavailable, &runtime.realm)
            }
            SessionError::Internal(what) => {
                tracing::error!(what, "login failed");
                Refusal::internal()
            }
        })?;
    tracing::info!(target: "portcullis::session", request_id = id, sub = %opened.sub, sid = %opened.sid, "login");
    let (body, headers) = token_answer(runtime, &pair, cookie_mode);
    if let Err(e) = send_json(session, StatusCode::OK, &body, &headers, id).await {
        tracing::debug!(error = %e, "could not write the login answer");
    }
    Ok("ok")
}

/// The outcome logged and counted when the backend refused the
/// credentials and its answer went back to the client unchanged.
pub const LOGIN_REFUSED: &str = "login_refused";

/// The device label: a `device_name` field, else `X-Device-Name`, else the
/// User-Agent; printable characters only, bounded.
fn device_label(session: &Session, body: &[u8]) -> String {
    let headers = &session.req_header().headers;
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let label = body_fields(content_type, body)
        .remove("device_name")
        .or_else(|| header("x-device-name"))
        .or_else(|| header(USER_AGENT.as_str()))
        .unwrap_or_else(|| "unknown device".to_owned());
    label
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DEVICE_CHARS)
        .collect()
}

/// The client's request for the backend: its headers minus hop-by-hop
/// ones (its `Connection` nominations included), gateway-owned ones and
/// the gateway's own credentials (the refresh cookie; a bearer token
/// unless `forward_token`), plus this hop's forwarding headers.
fn upstream_request(
    runtime: &Runtime,
    login: &LoginSettings,
    session: &Session,
    body_len: usize,
    id: &str,
) -> Result<RequestHeader, Refusal> {
    let client = session.req_header();
    let nominated =
        super::headers::connection_nominations(&client.headers).ok_or_else(Refusal::bad_request)?;
    let mut request = RequestHeader::build("POST", login.path.as_bytes(), None)
        .map_err(|_| Refusal::internal())?;
    let build = |request: &mut RequestHeader| -> pingora_core::Result<()> {
        for (name, value) in client.headers.iter() {
            let name_str = name.as_str();
            if !HOP_BY_HOP.contains(&name_str)
                && !nominated.iter().any(|n| n == name_str)
                && !runtime.header_rules.is_reserved(name_str)
            {
                request.append_header(name.clone(), value.clone())?;
            }
        }
        super::headers::strip_gateway_credentials(request, runtime, true);
        // The same forwarding headers as any proxied request.
        let client = super::client_addr::of_session(session, &runtime.server.trusted_proxies);
        super::set_forwarding(session, request, id, client.as_ref())?;
        request.insert_header(CONTENT_LENGTH, body_len)?;
        Ok(())
    };
    build(&mut request).map_err(|_| Refusal::bad_request())?;
    Ok(request)
}

async fn call(
    login: &LoginSettings,
    request: RequestHeader,
    body: Vec<u8>,
) -> pingora_core::Result<LoginResponse> {
    let backend = login.upstream.select().ok_or_else(|| {
        pingora_core::Error::explain(pingora_core::ErrorType::ConnectNoRoute, "no login target")
    })?;
    let peer = login.upstream.peer(&backend);
    let (mut http, _reused) = connector().get_http_session(&peer).await?;
    http.write_request_header(Box::new(request)).await?;
    http.write_request_body(Bytes::from(body), true).await?;
    http.finish_request_body().await?;
    // Informational answers (100 Continue, 103 Early Hints) come before the
    // real one and carry no body: skip them (RFC 9110 §15.2).
    loop {
        http.read_response_header().await?;
        if !http
            .response_header()
            .is_some_and(|h| h.status.is_informational())
        {
            break;
        }
    }
    let header = http.response_header().cloned().ok_or_else(|| {
        pingora_core::Error::explain(
            pingora_core::ErrorType::InvalidHTTPHeader,
            "no response header",
        )
    })?;
    let mut body = Vec::new();
    while let Some(chunk) = http.read_response_body().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return pingora_core::Error::e_explain(
                pingora_core::ErrorType::ReadError,
                "login response too large",
            );
        }
        body.extend_from_slice(&chunk);
    }
    connector()
        .release_http_session(http, &peer, Some(Duration::from_secs(60)))
        .await;
    Ok(LoginResponse {
        header,
        body: Bytes::from(body),
    })
}

/// Who the backend says logged in. A 2xx without a subject is the
/// backend's fault: 502.
fn identity(
    login: &LoginSettings,
    header: &ResponseHeader,
    device: String,
) -> Result<NewSession, Refusal> {
    let text = |name: &http::HeaderName| {
        header
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let sub = text(&login.subject_header)
        .filter(|s| !s.is_empty() && s.len() <= 512)
        .ok_or_else(|| {
            tracing::warn!("login upstream answered 2xx without a subject header");
            Refusal::bad_gateway()
        })?;
    let roles = text(&login.roles_header)
        .map(|r| {
            r.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let claims = match text(&login.claims_header) {
        None => serde_json::Map::new(),
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(map)) => map,
            _ => {
                tracing::warn!("login upstream sent claims that are not a JSON object");
                return Err(Refusal::bad_gateway());
            }
        },
    };
    let scope = claims
        .get("scope")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let grants = Grants {
        roles,
        scope,
        claims,
    }
    .without_reserved_claims();
    Ok(NewSession {
        sub: sub.to_owned(),
        grants,
        device,
    })
}

/// A non-2xx answer goes back as it came, less hop-by-hop headers and the
/// identity headers (which only mean something on success).
async fn pass_through(
    session: &mut Session,
    runtime: &Runtime,
    login: &LoginSettings,
    response: LoginResponse,
    id: &str,
) {
    let mut header = response.header;
    for name in HOP_BY_HOP.iter().copied().chain([ERROR_HEADER]) {
        header.remove_header(name);
    }
    for name in [
        &login.subject_header,
        &login.roles_header,
        &login.claims_header,
    ] {
        header.remove_header(name);
    }
    header.remove_header(&TRANSFER_ENCODING);
    super::cors::strip_upstream(&mut header, &runtime.cors.global);
    let written = async {
        header.insert_header(CONTENT_LENGTH, response.body.len())?;
        header.insert_header(REQUEST_ID_HEADER, id)?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(response.body), true).await
    };
    if let Err(e) = written.await {
        tracing::debug!(error = %e, "could not pass the login answer through");
    }
}
