//! The `xcam` client commands: they talk to the API (never to the database), so every write
//! goes through the same validation as the web page's.

mod commands;
mod progress;

pub use commands::{ClientCommand, Target, run};

use std::time::Duration;

use serde_json::Value;

/// Exit statuses of the client commands.
pub mod exit {
    /// Every item succeeded (or the command did what was asked).
    pub const OK: u8 = 0;
    /// The command could not run: bad arguments, an API error, an unreachable server.
    pub const ERROR: u8 = 1;
    /// The batch ended with some items failed or rejected.
    pub const SOME_FAILED: u8 = 3;
    /// The batch failed as a whole or was cancelled.
    pub const BATCH_FAILED: u8 = 4;
}

/// An error a command reports as one readable line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the xcam API at {url}: {reason} (set XCAM_URL or --url)")]
    Unreachable { url: String, reason: String },
    #[error("{code}: {message}")]
    Api { code: String, message: String },
    #[error("{0}")]
    Local(String),
}

/// A thin typed wrapper over the HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a plain HTTP client builds");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        }
    }

    /// Turns an error response into its `{code, message}`.
    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(ClientError::Api {
            code: body["code"].as_str().unwrap_or(status.as_str()).to_owned(),
            message: body["message"]
                .as_str()
                .map_or_else(|| format!("HTTP {status}"), str::to_owned),
        })
    }

    /// Sends a request; an error answer becomes its `{code, message}`.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        self.check(response).await
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        self.send(request)
            .await?
            .json()
            .await
            .map_err(|e| ClientError::Local(format!("unreadable answer: {e}")))
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.json(self.http.get(self.url(path))).await
    }

    pub async fn get_raw(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str) -> Result<Value, ClientError> {
        self.json(self.http.post(self.url(path))).await
    }

    pub async fn post_multipart(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> Result<Value, ClientError> {
        self.json(self.http.post(self.url(path)).multipart(form))
            .await
    }
}
