//! `projects`, `tokens`, `token_projects` and `sessions`: who can call the API, and on what.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::{
    access::{Role, secret_hash},
    targets::Faithfulness,
};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    /// Uploads to it pseudonymise entry names unless they say otherwise.
    pub pseudonymize_names: bool,
    /// How long its finished batches are kept, in seconds; `None`: the server's setting.
    pub retention_seconds: Option<i64>,
    /// Uploads to it measure faithfulness so unless they say otherwise (`off`, `drop`, `full`).
    pub faithfulness: String,
    pub created_at: DateTime<Utc>,
}

/// Creates a project; `None` when the name is taken.
pub async fn create_project(
    db: impl PgExecutor<'_>,
    name: &str,
    pseudonymize_names: bool,
) -> sqlx::Result<Option<Project>> {
    sqlx::query_as::<_, Project>(
        r#"INSERT INTO projects (id, name, pseudonymize_names) VALUES ($1, $2, $3)
           ON CONFLICT (name) DO NOTHING RETURNING id, name, pseudonymize_names, retention_seconds, faithfulness, created_at"#,
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(pseudonymize_names)
    .fetch_optional(db)
    .await
}

pub async fn projects(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Project>> {
    sqlx::query_as::<_, Project>(
        "SELECT id, name, pseudonymize_names, retention_seconds, faithfulness, created_at FROM projects ORDER BY name",
    )
    .fetch_all(db)
    .await
}

pub async fn project_by_name(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<Project>> {
    sqlx::query_as::<_, Project>(
        "SELECT id, name, pseudonymize_names, retention_seconds, faithfulness, created_at FROM projects WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(db)
    .await
}

/// Sets the faithfulness measures a project's uploads get unless they say otherwise. Returns
/// whether the project exists.
pub async fn set_faithfulness(
    db: impl PgExecutor<'_>,
    name: &str,
    faithfulness: Faithfulness,
) -> sqlx::Result<bool> {
    let updated = sqlx::query("UPDATE projects SET faithfulness = $2 WHERE name = $1")
        .bind(name)
        .bind(faithfulness.as_str())
        .execute(db)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// Sets how long a project's finished batches are kept (`None`: the server's setting). Returns
/// whether the project exists.
pub async fn set_retention(
    db: impl PgExecutor<'_>,
    name: &str,
    retention_seconds: Option<i64>,
) -> sqlx::Result<bool> {
    let done = sqlx::query("UPDATE projects SET retention_seconds = $2 WHERE name = $1")
        .bind(name)
        .bind(retention_seconds)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A token as `xcam token list` shows it (never its secret, which is not kept).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRecord {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// Names of the projects it covers; empty for all.
    pub projects: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a new token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a live token named {0:?} exists; revoke it first or pick another name")]
    NameTaken(String),
    #[error("no project named {0:?} (xcam project list)")]
    UnknownProject(String),
    #[error(
        "a {0} token must name at least one --project; only operators and admins may cover all"
    )]
    NeedsProject(Role),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A new token's description; its secret is made by the caller and only its hash stored.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub role: Role,
    pub projects: &'a [String],
    pub expires_at: Option<DateTime<Utc>>,
    pub secret: &'a str,
}

pub async fn create_token(db: &PgPool, t: &NewToken<'_>) -> Result<TokenRecord, TokenError> {
    if t.projects.is_empty() && !t.role.may_span_projects() {
        return Err(TokenError::NeedsProject(t.role));
    }
    let mut tx = db.begin().await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        r#"INSERT INTO tokens (id, name, role, secret_sha256, expires_at) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING"#,
    )
    .bind(id)
    .bind(t.name)
    .bind(t.role)
    .bind(secret_hash(t.secret))
    .bind(t.expires_at)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(TokenError::NameTaken(t.name.to_owned()));
    }
    for name in t.projects {
        let project = project_by_name(&mut *tx, name)
            .await?
            .ok_or_else(|| TokenError::UnknownProject(name.clone()))?;
        sqlx::query(
            "INSERT INTO token_projects (token_id, project_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(project.id)
        .execute(&mut *tx)
        .await?;
    }
    let record = token_by_id(&mut *tx, id).await?;
    tx.commit().await?;
    Ok(record)
}

/// `SELECT` of a token with its project names, as a literal so sqlx sees static SQL.
macro_rules! select_tokens {
    ($rest:literal) => {
        concat!(
            "SELECT t.id, t.name, t.role, t.created_at, t.expires_at, t.revoked_at, ",
            "COALESCE(array_agg(p.name ORDER BY p.name) FILTER (WHERE p.name IS NOT NULL), '{}') AS projects ",
            "FROM tokens t LEFT JOIN token_projects tp ON tp.token_id = t.id ",
            "LEFT JOIN projects p ON p.id = tp.project_id ",
            $rest
        )
    };
}

async fn token_by_id(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<TokenRecord> {
    sqlx::query_as::<_, TokenRecord>(select_tokens!("WHERE t.id = $1 GROUP BY t.id"))
        .bind(id)
        .fetch_one(db)
        .await
}

/// Every token, live ones first, then by name.
pub async fn tokens(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<TokenRecord>> {
    sqlx::query_as::<_, TokenRecord>(select_tokens!(
        "GROUP BY t.id ORDER BY t.revoked_at IS NOT NULL, t.name, t.created_at"
    ))
    .fetch_all(db)
    .await
}

/// Revokes the live token of that name (and so every session signed in with it); `false`
/// when there is none.
pub async fn revoke_token(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<bool> {
    let done =
        sqlx::query("UPDATE tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .execute(db)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Who presented a secret: its token, whether that token may still be used, and the ids and
/// names of the projects it covers (empty for all).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Principal {
    pub token_id: Uuid,
    pub name: String,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub expired: bool,
    pub project_ids: Vec<Uuid>,
    pub project_names: Vec<String>,
}

/// `SELECT` of a token as a [`Principal`]; `$1` is the current time.
macro_rules! select_principal {
    ($expiry:literal, $join:literal, $rest:literal, $group:literal) => {
        concat!(
            "SELECT t.id AS token_id, t.name, t.role, ", $expiry, " AS expires_at, ",
            "t.revoked_at IS NOT NULL AS revoked, COALESCE(t.expires_at <= $1, false) AS expired, ",
            "COALESCE(array_agg(p.id ORDER BY p.name) FILTER (WHERE p.id IS NOT NULL), '{}') AS project_ids, ",
            "COALESCE(array_agg(p.name ORDER BY p.name) FILTER (WHERE p.id IS NOT NULL), '{}') AS project_names ",
            $join,
            " LEFT JOIN token_projects tp ON tp.token_id = t.id LEFT JOIN projects p ON p.id = tp.project_id ",
            $rest,
            " GROUP BY t.id",
            $group
        )
    };
}

/// The token a bearer secret belongs to, revoked and expired ones included (so the refusal can
/// name them); one indexed lookup per request, no cache to outlive a revocation.
pub async fn principal_of_token(
    db: impl PgExecutor<'_>,
    secret: &str,
) -> sqlx::Result<Option<Principal>> {
    sqlx::query_as::<_, Principal>(select_principal!(
        "t.expires_at",
        "FROM tokens t",
        "WHERE t.secret_sha256 = $2",
        ""
    ))
    .bind(Utc::now())
    .bind(secret_hash(secret))
    .fetch_optional(db)
    .await
}

/// The token behind a live session cookie; `None` when the session is unknown, ended or over.
pub async fn principal_of_session(
    db: impl PgExecutor<'_>,
    secret: &str,
) -> sqlx::Result<Option<Principal>> {
    sqlx::query_as::<_, Principal>(select_principal!(
        "LEAST(s.expires_at, t.expires_at)",
        "FROM sessions s JOIN tokens t ON t.id = s.token_id",
        "WHERE s.secret_sha256 = $2 AND s.ended_at IS NULL AND s.expires_at > $1",
        ", s.secret_sha256"
    ))
    .bind(Utc::now())
    .bind(secret_hash(secret))
    .fetch_optional(db)
    .await
}

/// Opens a session for a token until `expires_at`; the caller keeps `secret` in the cookie.
pub async fn open_session(
    db: impl PgExecutor<'_>,
    token_id: Uuid,
    secret: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO sessions (secret_sha256, token_id, expires_at) VALUES ($1, $2, $3)")
        .bind(secret_hash(secret))
        .bind(token_id)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends a session for good: its cookie no longer signs anyone in.
pub async fn end_session(db: impl PgExecutor<'_>, secret: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE sessions SET ended_at = now() WHERE secret_sha256 = $1 AND ended_at IS NULL",
    )
    .bind(secret_hash(secret))
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}
