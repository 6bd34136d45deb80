//! Who is calling, and whether they may: every request to a guarded route presents a token
//! (`Authorization: Bearer`) or a dashboard session cookie, is checked against [`rules`], and
//! leaves an audit row when it is refused, fails, or is one of the audited actions.
//!
//! Project confinement is the handlers' part: they ask the [`Caller`] whether it covers a
//! batch's project and answer 404 when it does not, exactly as for a batch that does not exist.

pub mod origin;
pub mod rules;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{
        ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State,
        rejection::RawPathParamsRejection,
    },
    http::request::Parts,
    middleware::Next,
    response::{IntoResponse, Response},
};
use sqlx::PgPool;
use uuid::Uuid;
use xcam_shared::{
    access::{Action, Outcome, Role},
    db::{
        self,
        access::Principal,
        audit::{self, NewAuditEntry},
    },
};

use crate::{error::ApiError, state::AppState};
use origin::Credential;
use rules::Rule;

/// The name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "xcam_session";

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Session,
}

/// The authenticated caller of a request, put there by [`guard`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: Uuid,
    pub name: String,
    pub role: Role,
    /// The projects it is confined to, ids and names; empty for all.
    project_ids: Vec<Uuid>,
    pub project_names: Vec<String>,
    pub via: Via,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// What the handler found out for the audit row (the batch's project).
    noted: Arc<Mutex<Noted>>,
}

#[derive(Debug, Default, Clone)]
struct Noted {
    project: Option<String>,
    batch: Option<Uuid>,
}

impl Caller {
    fn new(p: Principal, via: Via) -> Self {
        Self {
            token_id: p.token_id,
            name: p.name,
            role: p.role,
            project_ids: p.project_ids,
            project_names: p.project_names,
            via,
            expires_at: p.expires_at,
            noted: Arc::default(),
        }
    }

    /// Whether this caller may see anything of `project`.
    pub fn covers(&self, project: Uuid) -> bool {
        self.project_ids.is_empty() || self.project_ids.contains(&project)
    }

    /// The projects a query must be limited to; `None` for all.
    pub fn scope(&self) -> Option<&[Uuid]> {
        (!self.project_ids.is_empty()).then_some(self.project_ids.as_slice())
    }

    /// The project an upload that names none goes to: the caller's only one.
    pub fn sole_project(&self) -> Option<&str> {
        match self.project_names.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    /// Records, for the audit row, the project and batch the request turned out to concern.
    pub fn note(&self, project: &str, batch: Uuid) {
        if let Ok(mut noted) = self.noted.lock() {
            noted.project = Some(project.to_owned());
            noted.batch = Some(batch);
        }
    }

    fn noted(&self) -> Noted {
        self.noted.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "{} asks for a caller but its route is open",
                parts.uri.path()
            ))
        })
    }
}

/// Looks up who presented what. `Err` is the refusal to answer with, and, when the token was
/// known (revoked, expired), the principal the audit row names.
pub async fn authenticate(
    db: &PgPool,
    credential: Option<Credential>,
) -> Result<Caller, (ApiError, Option<Principal>)> {
    let Some(credential) = credential else {
        return Err((ApiError::Unauthenticated("unauthenticated", "this route needs a token: `Authorization: Bearer <token>` (XCAM_TOKEN for the CLI), or sign in on the dashboard".into()), None));
    };
    let (found, via) = match &credential {
        Credential::Bearer(secret) => (
            db::access::principal_of_token(db, secret).await,
            Via::Bearer,
        ),
        Credential::Session(secret) => (
            db::access::principal_of_session(db, secret).await,
            Via::Session,
        ),
    };
    let principal = found.map_err(|e| (ApiError::from(e), None))?;
    match principal {
        None if via == Via::Session => Err((
            ApiError::Unauthenticated(
                "session_expired",
                "the dashboard session has ended; sign in again".into(),
            ),
            None,
        )),
        None => Err((
            ApiError::Unauthenticated("invalid_token", "the token is not known".into()),
            None,
        )),
        Some(p) if p.revoked => Err((
            ApiError::Unauthenticated("token_revoked", "the token has been revoked".into()),
            Some(p),
        )),
        Some(p) if p.expired => Err((
            ApiError::Unauthenticated("token_expired", "the token has expired".into()),
            Some(p),
        )),
        Some(p) => Ok(Caller::new(p, via)),
    }
}

/// The middleware in front of every route: finds the route's rule, authenticates, checks the
/// role and (for cookie-borne writes) the origin, runs the handler, and audits.
pub async fn guard(
    State(state): State<AppState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let rule = route
        .as_deref()
        .map_or(Some(Rule::Open), |r| rules::rule(request.method(), r));
    let (action, roles) = match rule {
        Some(Rule::Open) => return next.run(request).await,
        Some(Rule::OpenAudited(action)) => {
            let mut audit = AuditContext::of(&request, params.ok(), action, &state);
            let response = next.run(request).await;
            audit.who = response
                .extensions()
                .get::<Who>()
                .map(|w| (w.0.clone(), w.1));
            return audit.finish(response).await;
        }
        Some(Rule::Roles(action, roles)) => (action, roles),
        None if route.as_deref().is_some_and(rules::known_route) => {
            return next.run(request).await;
        }
        None => {
            tracing::error!(route = ?route, method = %request.method(), "route without an access rule refused");
            return ApiError::Forbidden("this route has no access rule".into()).into_response();
        }
    };
    let mut audit = AuditContext::of(&request, params.ok(), action, &state);

    let credential = origin::credential(request.headers());
    let caller = match authenticate(state.db_for(action), credential).await {
        Ok(caller) => caller,
        Err((refusal, principal)) => {
            if let Some(p) = &principal {
                audit.who = Some((p.name.clone(), p.role));
            }
            return audit.finish(refusal.into_response()).await;
        }
    };
    audit.who = Some((caller.name.clone(), caller.role));
    if !roles.contains(&caller.role) {
        let refusal = ApiError::Forbidden(format!(
            "a {} token may not {}",
            caller.role,
            action.as_str().replace('_', " ")
        ));
        return audit.finish(refusal.into_response()).await;
    }
    if caller.via == Via::Session
        && !request.method().is_safe()
        && !origin::same_origin(request.headers())
    {
        return audit.finish(ApiError::CrossOrigin.into_response()).await;
    }
    let mut request = request;
    request.extensions_mut().insert(caller.clone());
    let response = next.run(request).await;
    let noted = caller.noted();
    audit.project = noted.project;
    audit.batch = audit.batch.or(noted.batch);
    audit.finish(response).await
}

/// What an audit row of this request will say, gathered as the request goes.
struct AuditContext {
    /// The connections of the route's class, which the row is written with.
    db: PgPool,
    action: Action,
    who: Option<(String, Role)>,
    project: Option<String>,
    batch: Option<Uuid>,
    item: Option<Uuid>,
    client: Option<String>,
}

impl AuditContext {
    fn of(
        request: &Request,
        params: Option<RawPathParams>,
        action: Action,
        state: &AppState,
    ) -> Self {
        let client = client_of(request.extensions());
        let (mut batch, mut item) = (None, None);
        if let Some(params) = &params {
            for (name, value) in params {
                match name {
                    "id" => batch = value.parse().ok(),
                    "item" => item = value.parse().ok(),
                    _ => {}
                }
            }
        }
        Self {
            db: state.db_for(action).clone(),
            action,
            who: None,
            project: None,
            batch,
            item,
            client,
        }
    }

    /// Writes the row when the action is audited or the request did not succeed, then hands
    /// the response back. A failed write is logged, never turned into a failed request.
    async fn finish(self, response: Response) -> Response {
        let status = response.status();
        if status.is_success() && !self.action.audited_when_ok() {
            return response;
        }
        let entry = NewAuditEntry {
            token_name: self.who.as_ref().map(|w| w.0.as_str()),
            role: self.who.as_ref().map(|w| w.1),
            action: self.action,
            project: self.project.as_deref(),
            batch_id: self.batch,
            item_id: self.item,
            client: self.client.as_deref(),
            outcome: Outcome::of_status(status.as_u16()),
            status: i16::try_from(status.as_u16()).ok(),
            detail: response.extensions().get::<ErrorCode>().map(|c| c.0),
        };
        record(&self.db, &entry).await;
        response
    }
}

/// Who an open route found it was dealing with, left on its response for the audit row.
#[derive(Debug, Clone)]
pub struct Who(pub String, pub Role);

/// The stable code of an error answer, left on the response for the audit row.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Appends an audit row; a failure to do so is logged loudly but does not fail the request.
async fn record(db: &PgPool, entry: &NewAuditEntry<'_>) {
    if let Err(e) = audit::append(db, entry).await {
        tracing::error!(error = %e, action = %entry.action, "could not write the audit row");
    }
}

/// The client address of a request, when the server knows it.
fn client_of(extensions: &axum::http::Extensions) -> Option<String> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}
