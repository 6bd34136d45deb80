//! The HTTP layer's one error type. Every variant has a stable `code` and a status; bodies are
//! `{"code", "message"}`. 5xx bodies never say anything internal: the cause is logged instead.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_zip`: the upload is not a readable ZIP archive.
    #[error("the upload is not a readable ZIP archive: {0}")]
    InvalidZip(String),
    /// 400 `invalid_request`: a missing or malformed field or parameter.
    #[error("{0}")]
    InvalidRequest(String),
    /// 404 `batch_not_found`.
    #[error("no batch with id {0}")]
    BatchNotFound(String),
    /// 404 `not_found`: an item or artefact that does not exist (yet).
    #[error("{0}")]
    NotFound(String),
    /// 409 `conflict`: e.g. cancelling a batch that has ended.
    #[error("{0}")]
    Conflict(String),
    /// 413 `upload_too_large`.
    #[error("the upload exceeds the limit of {limit} bytes")]
    UploadTooLarge { limit: u64 },
    /// 413 with the archive cap's own code (`too_many_entries`, `archive_too_large`, `entry_too_large`, `zip_bomb`).
    #[error("{message}")]
    ArchiveLimit { code: &'static str, message: String },
    /// 422 `no_images`: the archive holds no image xcam can read.
    #[error(
        "the archive holds no images (PNG, JPEG, TIFF or DICOM): {skipped} other entries were skipped and {rejected} refused"
    )]
    NoImages { skipped: usize, rejected: usize },
    /// 422 `unknown_model`.
    #[error("unknown model {name:?}; available: {available}")]
    UnknownModel { name: String, available: String },
    /// 422 with the field's own code (`invalid_method`, `unknown_label`).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// 503 `unavailable`: Redis or Postgres is unreachable.
    #[error("a backing service is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500 `internal`.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable error code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidZip(_) | ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::BatchNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UploadTooLarge { .. } | ApiError::ArchiveLimit { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::NoImages { .. }
            | ApiError::UnknownModel { .. }
            | ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidZip(_) => "invalid_zip",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::BatchNotFound(_) => "batch_not_found",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::UploadTooLarge { .. } => "upload_too_large",
            ApiError::ArchiveLimit { code, .. } | ApiError::Unprocessable { code, .. } => code,
            ApiError::NoImages { .. } => "no_images",
            ApiError::UnknownModel { .. } => "unknown_model",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            let cause = match &self {
                ApiError::Unavailable(e) | ApiError::Internal(e) => format!("{e:#}"),
                other => other.to_string(),
            };
            tracing::error!(code = self.code(), error.cause_chain = %cause, "request failed");
        }
        let body = ErrorBody {
            code: self.code(),
            message: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::Unavailable(e.into())
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<xcam_shared::blob::BlobError> for ApiError {
    fn from(e: xcam_shared::blob::BlobError) -> Self {
        match e {
            xcam_shared::blob::BlobError::NotFound { key } => {
                ApiError::NotFound(format!("artefact {key} is missing"))
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
