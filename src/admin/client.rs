//! `portcullis admin …`: the admin API from the shell.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin API at {url}: {source}")]
    Transport {
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("the admin API answered {status} with a body that is not JSON")]
    NotJson { status: u16 },
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
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        Self::finish(&url, request.call())
    }

    /// `POST path` with an optional JSON body.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.agent.post(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        };
        Self::finish(&url, response)
    }

    fn finish(
        url: &str,
        response: Result<http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Value), ClientError> {
        let mut response = response.map_err(|source| ClientError::Transport {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value = serde_json::from_str(&text).map_err(|_| ClientError::NotJson { status })?;
        Ok((status, value))
    }
}

/// The path segment for a user id, percent-encoded.
pub fn user_path(sub: &str, action: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(sub, percent_encoding::NON_ALPHANUMERIC);
    format!("/admin/users/{encoded}/{action}")
}
