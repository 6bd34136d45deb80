//! Dashboard sign-in: a token buys an HttpOnly, SameSite=Strict session cookie that the
//! server can end; `GET /v1/session` says who is calling, however they authenticated.

use std::net::SocketAddr;

use axum::{
    Extension, Json,
    extract::{ConnectInfo, State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{Duration, Utc};
use utoipa_axum::{router::OpenApiRouter, routes};
use xcam_shared::{
    access::{self, Action, Outcome},
    db::{self, audit::NewAuditEntry},
};

use crate::{
    api::{ErrorBody, Session, SignIn},
    auth::{
        self, Caller, SESSION_COOKIE, Via,
        origin::{self, Credential},
    },
    error::{ApiError, ApiResult},
    state::AppState,
};

/// How long a dashboard session lasts (never longer than its token).
const SESSION_HOURS: i64 = 12;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sign_in, who_am_i, sign_out))
}

/// Sign in to the dashboard with a token; answers who that is and sets the session cookie.
#[utoipa::path(
    post,
    path = "/v1/session",
    tag = "session",
    operation_id = "sign_in",
    request_body = SignIn,
    responses(
        (status = 200, body = Session, description = "Signed in; `Set-Cookie` carries the session",
            headers(("set-cookie" = String, description = "`xcam_session`: HttpOnly, SameSite=Strict, Secure under TLS"))),
        (status = 400, body = ErrorBody, description = "`invalid_request`: not a JSON `{\"token\"}`"),
        (status = 401, body = ErrorBody, description = "`invalid_token`, `token_revoked`, `token_expired`"),
        (status = 403, body = ErrorBody, description = "`cross_origin`: sent by a page of another origin"),
    )
)]
async fn sign_in(
    State(state): State<AppState>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Response {
    let client = client.map(|c| c.0.0.ip().to_string());
    let mut who = None;
    let answer = async {
        if origin::foreign(&headers) {
            return Err(ApiError::CrossOrigin);
        }
        let Json(SignIn { token }) = body.map_err(|e| {
            ApiError::InvalidRequest(format!(
                "sign-in takes {{\"token\": \"…\"}}: {}",
                e.body_text()
            ))
        })?;
        let caller = auth::authenticate(&state, Some(Credential::Bearer(token)))
            .await
            .map_err(|(refusal, principal)| {
                who = principal.map(|p| (p.name, p.role));
                refusal
            })?;
        who = Some((caller.name.clone(), caller.role));
        let secret = access::new_secret("");
        let mut expires_at = Utc::now() + Duration::hours(SESSION_HOURS);
        if let Some(token_end) = caller.expires_at {
            expires_at = expires_at.min(token_end);
        }
        db::access::open_session(&state.db, caller.token_id, &secret, expires_at).await?;
        let max_age = (expires_at - Utc::now()).num_seconds().max(0);
        let cookie = session_cookie(&secret, max_age, state.settings.tls);
        let mut response = Json(Session {
            expires_at: Some(expires_at),
            ..session_of(&caller)
        })
        .into_response();
        response.headers_mut().insert(header::SET_COOKIE, cookie);
        Ok(response)
    }
    .await;
    let response = answer.unwrap_or_else(IntoResponse::into_response);
    let status = response.status().as_u16();
    auth::record(
        &state,
        &NewAuditEntry {
            token_name: who.as_ref().map(|w| w.0.as_str()),
            role: who.as_ref().map(|w| w.1),
            action: Action::SignIn,
            project: None,
            batch_id: None,
            item_id: None,
            client: client.as_deref(),
            outcome: Outcome::of_status(status),
            status: i16::try_from(status).ok(),
            detail: response.extensions().get::<auth::ErrorCode>().map(|c| c.0),
        },
    )
    .await;
    response
}

/// Who is calling: the token's name, role and projects.
#[utoipa::path(
    get,
    path = "/v1/session",
    tag = "session",
    operation_id = "who_am_i",
    responses((status = 200, body = Session)),
)]
async fn who_am_i(caller: Caller) -> Json<Session> {
    Json(session_of(&caller))
}

/// Sign out: the session ends on the server, and its cookie is cleared.
///
/// With a bearer token there is no session, and nothing to end (revoke a token with
/// `xcam token revoke`).
#[utoipa::path(
    delete,
    path = "/v1/session",
    tag = "session",
    operation_id = "sign_out",
    responses((status = 204, description = "Signed out")),
)]
async fn sign_out(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if caller.via == Via::Session
        && let Some(secret) = origin::cookie(&headers, SESSION_COOKIE)
    {
        db::access::end_session(&state.db, &secret).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, state.settings.tls),
    );
    Ok(response)
}

fn session_of(caller: &Caller) -> Session {
    Session {
        name: caller.name.clone(),
        role: caller.role,
        projects: caller.project_names.clone(),
        expires_at: caller.expires_at,
    }
}

/// The cookie: unreadable by scripts, never sent by another site, only over TLS when the
/// server speaks it.
fn session_cookie(secret: &str, max_age: i64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .expect("a cookie of hex and fixed attributes is a valid header")
}
