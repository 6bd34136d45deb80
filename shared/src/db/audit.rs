//! `audit_log`: who did (or tried) what, appended and never changed (a trigger refuses updates
//! and deletes, whoever asks).

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::access::{Action, Outcome, Role};

/// One audit row before it is written.
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    pub token_name: Option<&'a str>,
    pub role: Option<Role>,
    pub action: Action,
    pub project: Option<&'a str>,
    pub batch_id: Option<Uuid>,
    pub item_id: Option<Uuid>,
    pub client: Option<&'a str>,
    pub outcome: Outcome,
    pub status: Option<i16>,
    pub detail: Option<&'a str>,
}

pub async fn append(db: impl PgExecutor<'_>, e: &NewAuditEntry<'_>) -> sqlx::Result<()> {
    sqlx::query(
        r#"INSERT INTO audit_log (token_name, role, action, project, batch_id, item_id, client, outcome, status, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
    )
    .bind(e.token_name)
    .bind(e.role)
    .bind(e.action)
    .bind(e.project)
    .bind(e.batch_id)
    .bind(e.item_id)
    .bind(e.client)
    .bind(e.outcome)
    .bind(e.status)
    .bind(e.detail)
    .execute(db)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub token_name: Option<String>,
    pub role: Option<Role>,
    pub action: Action,
    pub project: Option<String>,
    pub batch_id: Option<Uuid>,
    pub item_id: Option<Uuid>,
    pub client: Option<String>,
    pub outcome: Outcome,
    pub status: Option<i16>,
    pub detail: Option<String>,
}

/// Filters of an audit query; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub token: Option<String>,
    pub action: Option<Action>,
    pub project: Option<String>,
    pub outcome: Option<Outcome>,
    /// Keyset cursor: rows strictly older than this (at, id).
    pub before: Option<(DateTime<Utc>, i64)>,
}

/// Newest first, at most `limit` rows; every value bound.
pub async fn query(
    db: impl PgExecutor<'_>,
    f: &AuditFilter,
    limit: i64,
) -> sqlx::Result<Vec<AuditRecord>> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT id, at, token_name, role, action, project, batch_id, item_id, client, outcome, status, detail \
         FROM audit_log WHERE true",
    );
    if let Some(v) = f.since {
        q.push(" AND at >= ").push_bind(v);
    }
    if let Some(v) = f.until {
        q.push(" AND at < ").push_bind(v);
    }
    if let Some(v) = &f.token {
        q.push(" AND token_name = ").push_bind(v.clone());
    }
    if let Some(v) = f.action {
        q.push(" AND action = ").push_bind(v);
    }
    if let Some(v) = &f.project {
        q.push(" AND project = ").push_bind(v.clone());
    }
    if let Some(v) = f.outcome {
        q.push(" AND outcome = ").push_bind(v);
    }
    if let Some((at, id)) = f.before {
        q.push(" AND (at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(limit);
    q.build_query_as::<AuditRecord>().fetch_all(db).await
}
