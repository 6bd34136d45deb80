//! Streaming a multipart upload to a spool file, with the size limit enforced while streaming,
//! and its text fields read strictly: bounded, and parsed once into their types.

use std::path::Path;

use axum::extract::{Multipart, multipart::Field};
use futures::TryStreamExt;
use tokio::io::AsyncWriteExt;
use xcam_shared::targets::{Faithfulness, LabelSelection, Method};

use crate::{error::ApiError, routes::document::MAX_FIELD_BYTES};

/// The form of `POST /v1/batches`, as the API document describes it.
#[expect(
    dead_code,
    reason = "describes the multipart form; read_form reads it field by field"
)]
#[derive(utoipa::ToSchema)]
pub struct UploadForm {
    /// The ZIP archive of radiographs.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// The project the batch goes to (may be left out when the token covers only one).
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    project: Option<String>,
    /// Model bundle name (may be left out when the server has only one).
    model: Option<String>,
    /// The CAM method (default `gradcam`).
    method: Option<Method>,
    /// `top1` (default), `positive`, `all`, or label names separated by commas.
    labels: Option<String>,
    /// `true` to replace entry names with keyed hashes everywhere (default: the project's setting).
    pseudonymize_names: Option<bool>,
    /// Faithfulness measures per map: `off`, `drop` (one more forward per map) or `full` (also
    /// deletion and insertion AUC); default: the project's setting.
    faithfulness: Option<Faithfulness>,
}

/// A read upload: the archive on disk and the parsed fields.
#[derive(Debug)]
pub struct Upload {
    pub spool: tempfile::TempPath,
    pub bytes: u64,
    /// The project named, if any (a token with one project uploads to it).
    pub project: Option<String>,
    /// The model named, if any (a server with one model takes that one).
    pub model: Option<String>,
    pub method: Method,
    pub labels: LabelSelection,
    /// Whether names are to be pseudonymised; `None`: as the project says.
    pub pseudonymize_names: Option<bool>,
    /// `None`: as the project says.
    pub faithfulness: Option<Faithfulness>,
}

/// Whether the body stopped arriving (the server's body idle timeout, `startup::body_idle`).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Reads the form; the `file` field goes to disk in `dir`, chunk by chunk.
pub async fn read_form(
    mut multipart: Multipart,
    dir: &Path,
    limit: u64,
    body_idle: std::time::Duration,
) -> Result<Upload, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::UploadTooLarge { limit }
        } else if timed_out(&e) {
            ApiError::BodyTimeout { idle: body_idle }
        } else {
            ApiError::InvalidRequest(format!("malformed multipart body: {}", e.body_text()))
        }
    };
    let (mut spool, mut project, mut model, mut method, mut labels, mut pseudonymize) =
        (None, None, None, None, None, None);
    let mut faithfulness = None;
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => spool = Some(spool_file(&mut field, dir, limit, bad).await?),
            "project" => project = Some(text(field, &name, bad).await?),
            "model" => model = Some(text(field, &name, bad).await?),
            "method" => {
                let raw = text(field, &name, bad).await?;
                method =
                    Some(
                        raw.parse::<Method>()
                            .map_err(|message| ApiError::Unprocessable {
                                code: "invalid_method",
                                message,
                            })?,
                    );
            }
            "labels" => {
                let raw = text(field, &name, bad).await?;
                labels = Some(raw.parse::<LabelSelection>().map_err(|message| {
                    ApiError::Unprocessable {
                        code: "invalid_labels",
                        message,
                    }
                })?);
            }
            "faithfulness" => {
                let raw = text(field, &name, bad).await?;
                faithfulness = Some(raw.parse::<Faithfulness>().map_err(|message| {
                    ApiError::Unprocessable {
                        code: "invalid_faithfulness",
                        message,
                    }
                })?);
            }
            "pseudonymize_names" => {
                pseudonymize = Some(match text(field, &name, bad).await?.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(ApiError::InvalidRequest(format!(
                            "pseudonymize_names: {other:?} is neither true nor false"
                        )));
                    }
                });
            }
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown form field {other:?}: the form takes file, project, model, method, labels, faithfulness and pseudonymize_names"
                )));
            }
        }
    }
    let (spool, bytes) =
        spool.ok_or_else(|| ApiError::InvalidRequest("the form has no `file` field".into()))?;
    Ok(Upload {
        spool,
        bytes,
        project,
        model,
        method: method.unwrap_or_default(),
        labels: labels.unwrap_or_default(),
        pseudonymize_names: pseudonymize,
        faithfulness,
    })
}

/// A text field, refused once it grows past `MAX_FIELD_BYTES` instead of buffered whole.
async fn text(
    mut field: Field<'_>,
    name: &str,
    bad: impl Fn(axum::extract::multipart::MultipartError) -> ApiError,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.try_next().await.map_err(&bad)? {
        if bytes.len() + chunk.len() > MAX_FIELD_BYTES {
            return Err(ApiError::FieldTooLarge {
                field: name.to_owned(),
                limit: MAX_FIELD_BYTES,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| ApiError::InvalidRequest(format!("the form field {name:?} is not UTF-8")))
}

async fn spool_file(
    field: &mut Field<'_>,
    dir: &Path,
    limit: u64,
    bad: impl Fn(axum::extract::multipart::MultipartError) -> ApiError,
) -> Result<(tempfile::TempPath, u64), ApiError> {
    let internal = |e: std::io::Error| {
        ApiError::Internal(anyhow::Error::from(e).context("writing the upload spool file"))
    };
    let spool = tempfile::Builder::new()
        .prefix("xcam-upload-")
        .suffix(".zip")
        .tempfile_in(dir)
        .map_err(internal)?
        .into_temp_path();
    // A body's chunks (a few KiB each) are gathered into writes of `FILE_IO`.
    let file = tokio::fs::File::create(&spool).await.map_err(internal)?;
    let mut out = tokio::io::BufWriter::with_capacity(crate::FILE_IO, file);
    let mut written = 0u64;
    while let Some(chunk) = field.try_next().await.map_err(&bad)? {
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::UploadTooLarge { limit });
        }
        out.write_all(&chunk).await.map_err(internal)?;
    }
    out.flush().await.map_err(internal)?;
    Ok((spool, written))
}
