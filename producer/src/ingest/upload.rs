//! Streaming a multipart upload to a spool file, with the size limit enforced while streaming.

use std::path::Path;

use axum::extract::Multipart;
use futures::TryStreamExt;
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;

/// The form fields of `POST /v1/batches`.
#[derive(Debug, Default)]
pub struct UploadForm {
    pub spool: Option<tempfile::TempPath>,
    pub bytes: u64,
    pub model: Option<String>,
    pub method: Option<String>,
    pub labels: Option<String>,
    pub pseudonymize_names: bool,
}

/// Reads the form; the `file` field goes to disk in `dir`, chunk by chunk.
pub async fn read_form(
    mut multipart: Multipart,
    dir: &Path,
    limit: u64,
) -> Result<UploadForm, ApiError> {
    let mut form = UploadForm::default();
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::UploadTooLarge { limit }
        } else {
            ApiError::InvalidRequest(format!("malformed multipart body: {}", e.body_text()))
        }
    };
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "file" => {
                let spool = tempfile::Builder::new()
                    .prefix("xcam-upload-")
                    .suffix(".zip")
                    .tempfile_in(dir)
                    .map_err(|e| {
                        ApiError::Internal(
                            anyhow::Error::from(e).context("creating the upload spool file"),
                        )
                    })?
                    .into_temp_path();
                let mut out = tokio::fs::File::create(&spool)
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?;
                let mut written = 0u64;
                while let Some(chunk) = field.try_next().await.map_err(bad)? {
                    written += chunk.len() as u64;
                    if written > limit {
                        return Err(ApiError::UploadTooLarge { limit });
                    }
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| ApiError::Internal(e.into()))?;
                }
                out.flush()
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?;
                form.spool = Some(spool);
                form.bytes = written;
            }
            name @ ("model" | "method" | "labels" | "pseudonymize_names") => {
                let name = name.to_owned();
                let text = field.text().await.map_err(bad)?;
                let text = text.trim().to_owned();
                match name.as_str() {
                    "model" => form.model = Some(text),
                    "method" => form.method = Some(text).filter(|t| !t.is_empty()),
                    "labels" => form.labels = Some(text).filter(|t| !t.is_empty()),
                    _ => {
                        form.pseudonymize_names =
                            matches!(text.as_str(), "true" | "1" | "yes" | "on")
                    }
                }
            }
            // Unknown fields are drained and ignored, as browsers add their own.
            _ => while field.try_next().await.map_err(bad)?.is_some() {},
        }
    }
    Ok(form)
}
