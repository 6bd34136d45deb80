//! The HTTP layer's one error type. Every variant has a stable `code` and a status; bodies are
//! `{"code", "message"}`. 5xx bodies never say anything internal: the cause is logged instead.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use crate::{artefacts::ArtefactError, auth::ErrorCode, ingest::ArchiveError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The archive as a whole is refused: 400 `invalid_zip`, 413 for a cap (`too_many_entries`,
    /// `archive_too_large`, `entry_too_large`, `zip_bomb`), 422 `duplicate_names` or `no_images`.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// An item's overlay or map: 404 `not_found` until it exists, 500 when its row is corrupt.
    #[error(transparent)]
    Artefact(#[from] ArtefactError),
    /// 400 `invalid_request`: a missing or malformed field or parameter.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `host_not_allowed`: the request's Host is not in `XCAM_ALLOWED_HOSTS`.
    #[error("this server does not answer to host {0:?} (XCAM_ALLOWED_HOSTS)")]
    HostNotAllowed(String),
    /// 401: no credentials (`unauthenticated`), or ones that sign no one in (`invalid_token`,
    /// `token_revoked`, `token_expired`, `session_expired`).
    #[error("{1}")]
    Unauthenticated(&'static str, String),
    /// 403 `forbidden`: the caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `cross_origin`: a write carried by the session cookie from a page of another origin.
    #[error(
        "a request carried by the dashboard's session must come from the dashboard's own origin"
    )]
    CrossOrigin,
    /// 404 `project_not_found`: no such project, or one the caller does not cover.
    #[error("no project named {0:?}")]
    ProjectNotFound(String),
    /// 422 `invalid_filter`: a log or stats filter out of its documented form.
    #[error("{0}")]
    InvalidFilter(String),
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
    /// 408 `body_timeout`: the request body stopped arriving for longer than the server waits.
    #[error("the request body stopped arriving for more than {idle:?}")]
    BodyTimeout { idle: std::time::Duration },
    /// 422 `field_too_large`: a text field of the upload form is over its cap.
    #[error("the form field {field:?} is longer than {limit} bytes")]
    FieldTooLarge { field: String, limit: usize },
    /// 422 `unknown_model`.
    #[error("unknown model {name:?}; available: {available}")]
    UnknownModel { name: String, available: String },
    /// 422 with the field's own code (`invalid_method`, `unknown_label`).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// 503 `busy`: as many uploads are being ingested as the server allows.
    #[error("the server is ingesting as many uploads as it may; try again in {retry_after} s")]
    Busy { retry_after: u64 },
    /// 503 `unavailable`: Redis or Postgres is unreachable.
    #[error("a backing service is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500 `internal`.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Every error answer: a stable code to act on and a sentence to show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Stable, machine-readable error code.
    #[schema(example = "batch_not_found")]
    pub code: String,
    /// Human-readable explanation; says nothing internal on a 5xx.
    pub message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Archive(e) => match e {
                ArchiveError::InvalidZip(_) => StatusCode::BAD_REQUEST,
                ArchiveError::Limit { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ArchiveError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            },
            ApiError::Artefact(e) => match e {
                ArtefactError::Missing(_) => StatusCode::NOT_FOUND,
                ArtefactError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::InvalidRequest(_) | ApiError::HostNotAllowed(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(..) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::CrossOrigin => StatusCode::FORBIDDEN,
            ApiError::BatchNotFound(_) | ApiError::NotFound(_) | ApiError::ProjectNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UploadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // A field longer than its cap is a value the form refuses, not a body too large.
            ApiError::FieldTooLarge { .. }
            | ApiError::InvalidFilter(_)
            | ApiError::UnknownModel { .. }
            | ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Archive(e) => e.code(),
            ApiError::Artefact(e) => e.code(),
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::HostNotAllowed(_) => "host_not_allowed",
            ApiError::InvalidFilter(_) => "invalid_filter",
            ApiError::Unauthenticated(code, _) => code,
            ApiError::Forbidden(_) => "forbidden",
            ApiError::CrossOrigin => "cross_origin",
            ApiError::ProjectNotFound(_) => "project_not_found",
            ApiError::BatchNotFound(_) => "batch_not_found",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::UploadTooLarge { .. } => "upload_too_large",
            ApiError::FieldTooLarge { .. } => "field_too_large",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::Unprocessable { code, .. } => code,
            ApiError::UnknownModel { .. } => "unknown_model",
            ApiError::Busy { .. } => "busy",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // A busy server has nothing to hide or to log: it is working as configured.
        let failed = status.is_server_error() && !matches!(self, ApiError::Busy { .. });
        if failed {
            let cause = match &self {
                ApiError::Unavailable(e) | ApiError::Internal(e) => format!("{e:#}"),
                other => cause_chain(other),
            };
            tracing::error!(code = self.code(), error.cause_chain = %cause, "request failed");
        }
        let message = if failed {
            match status {
                StatusCode::SERVICE_UNAVAILABLE => "a backing service is unavailable".to_owned(),
                _ => "internal error".to_owned(),
            }
        } else {
            self.to_string()
        };
        let body = ErrorBody {
            code: self.code().to_owned(),
            message,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"xcam\""),
            );
        }
        if let ApiError::Busy { retry_after } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        response.extensions_mut().insert(ErrorCode(self.code()));
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // Postgres text holds no NUL character; a request that carries one into a query
        // (a filter, a retry code) is the caller's mistake, whichever route it came by.
        let refused_text = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code == "22021");
        if refused_text {
            ApiError::InvalidRequest(
                "a text value holds a character Postgres cannot store (NUL)".into(),
            )
        } else if xcam_shared::db::is_outage(&e) {
            ApiError::Unavailable(e.into())
        } else {
            ApiError::Internal(e.into())
        }
    }
}

impl From<xcam_shared::blob::BlobError> for ApiError {
    fn from(e: xcam_shared::blob::BlobError) -> Self {
        ApiError::Artefact(e.into())
    }
}

impl From<crate::erase::EraseError> for ApiError {
    fn from(e: crate::erase::EraseError) -> Self {
        match e {
            crate::erase::EraseError::Database(e) => e.into(),
            e @ crate::erase::EraseError::Ingesting => ApiError::Conflict(e.to_string()),
            other => ApiError::Unavailable(other.into()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(e.into())
    }
}

/// An error and its sources, one line.
fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub type ApiResult<T> = Result<T, ApiError>;
