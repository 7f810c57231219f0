//! The demo's stand-in for a legacy backend: it knows nothing about tokens,
//! checks passwords its own way at `POST /login`, lets a user change their
//! password at `POST /account/password` (and asks the gateway to end their
//! other sessions), and shows what the gateway told it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;

use crate::vocabulary::{
    LOGIN_CLAIMS_HEADER, LOGIN_ROLES_HEADER, LOGIN_SUBJECT_HEADER, SESSION_CONTROL_HEADER,
    USER_ID_HEADER,
};

/// The demo's users: name, password, roles.
pub const DEMO_USERS: [(&str, &str, &str); 2] = [
    ("alice", "wonderland", "user"),
    ("root", "changeme", "admin,user"),
];

const LOGIN_PAGE: &str = include_str!("login.html");
/// The browser client the page is built on, served from this repository's copy.
const CLIENT_LIBRARY: &str = include_str!("../../clients/js/index.js");

/// The backend, with its page written for the gateway in front of it.
pub struct DemoBackend {
    page: String,
    /// Passwords by user, starting from [`DEMO_USERS`]; changed in memory.
    passwords: Mutex<HashMap<String, String>>,
}

impl DemoBackend {
    /// `refresh_hint` is the gateway's `[tokens] refresh_hint`, so the page
    /// states the window the gateway really uses; `None` where that
    /// configuration is not known here (the standalone `demo-backend`).
    pub fn new(refresh_hint: Option<Duration>) -> Self {
        let window = match refresh_hint {
            Some(hint) => format!("{} seconds", hint.as_secs()),
            None => "stretch (the gateway's <code>refresh_hint</code>)".to_owned(),
        };
        let passwords = DEMO_USERS
            .iter()
            .map(|(user, password, _)| ((*user).to_owned(), (*password).to_owned()))
            .collect();
        Self {
            page: LOGIN_PAGE.replace("{{REFRESH_HINT}}", &window),
            passwords: Mutex::new(passwords),
        }
    }
}

#[async_trait]
impl ServeHttp for DemoBackend {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        if session.req_header().method == Method::POST && path == "/login" {
            let fields = read_form(session).await;
            return self.login(&fields);
        }
        if session.req_header().method == Method::POST && path == "/account/password" {
            let user = session.req_header().headers.get(USER_ID_HEADER).cloned();
            let fields = read_form(session).await;
            let user = user.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            return self.change_password(user.as_deref(), &fields);
        }
        if path == "/public/" || path == "/public/index.html" {
            return respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                self.page.as_bytes().to_vec(),
                &[],
            );
        }
        if path == "/public/portcullis-client.js" {
            return respond(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                CLIENT_LIBRARY.as_bytes().to_vec(),
                &[],
            );
        }
        let request = session.req_header();
        let headers: serde_json::Map<String, serde_json::Value> = request
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string(),
                    json!(String::from_utf8_lossy(value.as_bytes())),
                )
            })
            .collect();
        let user = request
            .headers
            .get(USER_ID_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = if path.starts_with("/public") {
            json!({ "page": "public", "message": "anyone may read this; the gateway checked no token" })
        } else if path.starts_with("/admin") {
            json!({ "page": "admin", "message": "only tokens with the admin role get here", "user": user })
        } else {
            json!({ "page": "echo", "method": request.method.as_str(), "path": path, "headers_received": headers })
        };
        let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
        respond(StatusCode::OK, "application/json", body, &[])
    }
}

/// A request's form (or JSON object) fields, read up to 16 KiB.
async fn read_form(session: &mut ServerSession) -> HashMap<String, String> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        body.extend_from_slice(&chunk);
        if body.len() > 16 * 1024 {
            break;
        }
    }
    let mut fields: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if let Ok(serde_json::Value::Object(json)) = serde_json::from_slice(&body) {
        fields = json
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_str()?.to_owned())))
            .collect();
    }
    fields
}

impl DemoBackend {
    /// Whether `password` is `user`'s current one.
    fn password_matches(&self, user: &str, password: &str) -> bool {
        self.passwords
            .lock()
            .is_ok_and(|known| known.get(user).is_some_and(|p| p == password))
    }

    /// The backend's own credential check: on success it names the user in
    /// response headers, which the gateway turns into a session.
    fn login(&self, fields: &HashMap<String, String>) -> Response<Vec<u8>> {
        let field = |name: &str| fields.get(name).map_or("", String::as_str);
        let (user, password) = (field("username"), field("password"));
        let found = DEMO_USERS.iter().find(|(u, _, _)| *u == user);
        match found.filter(|_| self.password_matches(user, password)) {
            Some((user, _, roles)) => {
                let claims = format!("{{\"email\":\"{user}@demo.example\"}}");
                let headers = [
                    // The gateway's `[login]` defaults, which the demo keeps.
                    (LOGIN_SUBJECT_HEADER, *user),
                    (LOGIN_ROLES_HEADER, *roles),
                    (LOGIN_CLAIMS_HEADER, claims.as_str()),
                ];
                respond(StatusCode::OK, "text/plain", b"welcome".to_vec(), &headers)
            }
            None => respond(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                b"wrong user name or password\n".to_vec(),
                &[],
            ),
        }
    }

    /// The password-change page of a legacy application: it checks the
    /// current password itself, stores the new one, and asks the gateway
    /// (one response header) to sign the user out everywhere but here.
    fn change_password(
        &self,
        user: Option<&str>,
        fields: &HashMap<String, String>,
    ) -> Response<Vec<u8>> {
        let field = |name: &str| fields.get(name).map_or("", String::as_str);
        let (current, new) = (field("current_password"), field("new_password"));
        let Some(user) = user.filter(|u| self.password_matches(u, current)) else {
            let body = json!({ "changed": false, "message": "the current password is wrong" });
            return respond_json(StatusCode::FORBIDDEN, &body, &[]);
        };
        if new.is_empty() {
            let body = json!({ "changed": false, "message": "the new password is empty" });
            return respond_json(StatusCode::BAD_REQUEST, &body, &[]);
        }
        if let Ok(mut known) = self.passwords.lock() {
            known.insert(user.to_owned(), new.to_owned());
        }
        let body = json!({
            "changed": true,
            "message": "password changed: your other devices are signed out, this one stays signed in",
        });
        let control = [(SESSION_CONTROL_HEADER, "end-other-sessions")];
        respond_json(StatusCode::OK, &body, &control)
    }
}

fn respond_json(
    status: StatusCode,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> Response<Vec<u8>> {
    let body = serde_json::to_vec_pretty(body).unwrap_or_default();
    respond(status, "application/json", body, headers)
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Response<Vec<u8>> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}
