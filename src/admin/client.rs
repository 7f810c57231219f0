//! `portcullis admin …`: the admin API from the shell.

use std::time::Duration;

use serde_json::Value;

/// What went wrong, in the words an operator needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The reason is the transport's own text, kept out of the source chain
    /// so that it is printed once.
    #[error("no gateway at {base}: {reason}")]
    Unreachable { base: String, reason: String },
    #[error("admin token missing: set PORTCULLIS_ADMIN_TOKEN (or pass --token)")]
    TokenMissing,
    #[error("wrong admin token: the gateway at {base} refused it")]
    WrongToken { base: String },
    #[error("the admin API at {base} is disabled: the gateway has no admin token configured (its admin_token_env variable is unset)")]
    Disabled { base: String },
    #[error(
        "{base} answered {status} with a body that is not JSON: is it a portcullis admin listener?"
    )]
    NotJson { base: String, status: u16 },
}

/// A client for one gateway's admin listener.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl AdminClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    /// `GET path`; returns the status and the JSON body.
    pub fn get(&self, path: &str) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.get(&url);
        if is_admin(path) {
            request = request.header("Authorization", self.bearer()?);
        }
        self.finish(request.call())
    }

    /// `POST path` with an optional JSON body.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", self.base);
        let request = self
            .agent
            .post(&url)
            .header("Authorization", self.bearer()?);
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        };
        self.finish(response)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", self.base);
        let request = self
            .agent
            .delete(&url)
            .header("Authorization", self.bearer()?);
        self.finish(request.call())
    }

    /// The `Authorization` value; `/admin/*` cannot be called without it.
    fn bearer(&self) -> Result<String, ClientError> {
        match &self.token {
            Some(token) if !token.is_empty() => Ok(format!("Bearer {token}")),
            _ => Err(ClientError::TokenMissing),
        }
    }

    fn finish(
        &self,
        response: Result<http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Value), ClientError> {
        let base = self.base.clone();
        let mut response = response.map_err(|e| ClientError::Unreachable {
            base: base.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).map_err(|_| ClientError::NotJson {
            base: base.clone(),
            status,
        })?;
        match (status, value["error"].as_str()) {
            (401, Some(_)) => Err(ClientError::WrongToken { base }),
            (403, Some("admin_disabled")) => Err(ClientError::Disabled { base }),
            _ => Ok((status, value)),
        }
    }
}

fn is_admin(path: &str) -> bool {
    path.starts_with("/admin/")
}

/// The path segment for a session id, percent-encoded.
pub fn session_path(sid: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(sid, percent_encoding::NON_ALPHANUMERIC);
    format!("/admin/sessions/{encoded}")
}

/// The path segment for a user id, percent-encoded.
pub fn user_path(sub: &str, action: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(sub, percent_encoding::NON_ALPHANUMERIC);
    format!("/admin/users/{encoded}/{action}")
}

/// The path of one API key, by id, percent-encoded.
pub fn api_key_path(id: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
    format!("/admin/api-keys/{encoded}")
}
