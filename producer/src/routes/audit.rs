//! `GET /v1/audit`: the audit trail, for admins; JSON or CSV.

use axum::{
    Json,
    extract::State,
    http::HeaderValue,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use utoipa_axum::{router::OpenApiRouter, routes};
use xcam_shared::db::audit::{self, AuditFilter};

use super::{cursor_position, extract::ApiQuery, next_cursor};
use crate::{
    api::{AuditEntry, AuditPage, AuditQuery, ErrorBody, LogFormat},
    csv_export,
    error::ApiResult,
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(query_audit))
}

/// The audit trail, newest first, filtered; JSON or CSV.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    operation_id = "query_audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of entries; `format=csv` answers CSV with the next cursor in `x-next-cursor`",
            content((AuditPage = "application/json"), (String = "text/csv"))),
        (status = 422, body = ErrorBody, description = "`invalid_filter`: a filter out of its documented form"),
    )
)]
async fn query_audit(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    let now = Utc::now();
    let filter = AuditFilter {
        since: q.since.map(|w| w.resolve(now)),
        until: q.until.map(|w| w.resolve(now)),
        token: q.token.filter(|s| !s.is_empty()),
        action: q.action,
        project: q.project.filter(|s| !s.is_empty()),
        outcome: q.outcome,
        before: cursor_position(q.cursor.as_deref())?,
    };
    let limit = q.limit.unwrap_or(100);
    let entries: Vec<AuditEntry> = audit::query(&state.db, &filter, limit)
        .await?
        .into_iter()
        .map(AuditEntry::from)
        .collect();
    let next_cursor = next_cursor(&entries, limit, |e| (e.at, e.id));
    Ok(match q.format.unwrap_or_default() {
        LogFormat::Json => Json(AuditPage {
            entries,
            next_cursor,
        })
        .into_response(),
        LogFormat::Csv => {
            let rows = entries.iter().map(csv_export::audit_row);
            let mut response = csv_export::table(&csv_export::AUDIT_COLUMNS, rows);
            if let Some(next) = next_cursor.and_then(|n| HeaderValue::from_str(&n).ok()) {
                response.headers_mut().insert("x-next-cursor", next);
            }
            response
        }
    })
}
