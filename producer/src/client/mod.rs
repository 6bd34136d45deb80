//! The `xcam` client commands: they talk to the API (never to the database), so every write
//! goes through the same validation as the web page's.

mod commands;
mod progress;

pub use commands::{ClientCommand, Target, run};

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;

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
    /// A client of the API at `base`, sending `token` as a bearer, trusting the system's roots
    /// and `ca_cert` for HTTPS.
    pub fn new(
        base: &str,
        token: Option<&str>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        xcam_shared::install_crypto_provider();
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::Local("XCAM_TOKEN holds characters a header cannot".into())
            })?;
            value.set_sensitive(true);
            builder = builder.default_headers(HeaderMap::from_iter([(AUTHORIZATION, value)]));
        }
        if let Some(path) = ca_cert {
            let cert = crate::tls::ca_certificate(path)
                .map_err(|e| ClientError::Local(format!("{e:#}")))?;
            builder = builder.tls_certs_merge([cert]);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Local(format!("cannot set up HTTPS: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
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
        Err(match response.json::<ErrorBody>().await {
            Ok(body) => ClientError::Api {
                code: body.code,
                message: body.message,
            },
            Err(_) => ClientError::Api {
                code: status.as_str().to_owned(),
                message: format!("HTTP {status}"),
            },
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

    /// Reads the answer as the API type it must be: a missing or unknown field is an error
    /// here, not a blank in what the command prints.
    async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let bytes = self
            .send(request)
            .await?
            .bytes()
            .await
            .map_err(|e| ClientError::Local(format!("the answer broke off: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Local(format!(
                "the API answered in a shape this client does not know ({e}); is it the same xcam version?"
            ))
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.http.get(self.url(path))).await
    }

    pub async fn get_raw(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.http.post(self.url(path))).await
    }

    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        self.json(self.http.post(self.url(path)).json(body)).await
    }

    /// Sends a DELETE; success is any 2xx.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send(self.http.delete(self.url(path))).await.map(drop)
    }

    pub async fn post_multipart<T: DeserializeOwned>(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> Result<T, ClientError> {
        self.json(self.http.post(self.url(path)).multipart(form))
            .await
    }
}
