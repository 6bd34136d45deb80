//! Dashboard sign-in: a token buys an HttpOnly, SameSite=Strict session cookie that the
//! server can end; `GET /v1/session` says who is calling, however they authenticated.

use axum::{
    Json,
    extract::{State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{Duration, Utc};
use utoipa_axum::{router::OpenApiRouter, routes};
use xcam_shared::{access, db};

use crate::{
    api::{ErrorBody, Session, SignIn},
    auth::{
        self, Caller, SESSION_COOKIE, Via, Who,
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
        (status = 400, body = ErrorBody, description = "`invalid_request`: not a JSON `{\"token\"}`, or a token out of its bounds"),
        (status = 401, body = ErrorBody, description = "`invalid_token`, `token_revoked`, `token_expired`"),
        (status = 403, body = ErrorBody, description = "`cross_origin`: sent by a page of another origin"),
    )
)]
async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Response {
    if origin::foreign(&headers) {
        return ApiError::CrossOrigin.into_response();
    }
    let token = match body {
        Ok(Json(SignIn { token })) if token.is_empty() || token.len() > SignIn::MAX_TOKEN => {
            return ApiError::InvalidRequest(format!("token: 1 to {} bytes", SignIn::MAX_TOKEN))
                .into_response();
        }
        Ok(Json(SignIn { token })) => token,
        Err(e) => {
            return ApiError::InvalidRequest(format!(
                "sign-in takes {{\"token\": \"…\"}}: {}",
                e.body_text()
            ))
            .into_response();
        }
    };
    // The guard audits the attempt under whichever token this turns out to be.
    let (mut response, who) =
        match auth::authenticate(&state.db, Some(Credential::Bearer(token))).await {
            Err((refusal, principal)) => (
                refusal.into_response(),
                principal.map(|p| Who(p.name, p.role)),
            ),
            Ok(caller) => {
                let who = Who(caller.name.clone(), caller.role);
                let opened = open_session(&state, &caller).await;
                (
                    opened.unwrap_or_else(IntoResponse::into_response),
                    Some(who),
                )
            }
        };
    if let Some(who) = who {
        response.extensions_mut().insert(who);
    }
    response
}

/// A new session for a signed-in caller: its cookie and who it is.
async fn open_session(state: &AppState, caller: &Caller) -> ApiResult<Response> {
    let secret = access::new_secret("");
    let mut expires_at = Utc::now() + Duration::hours(SESSION_HOURS);
    if let Some(token_end) = caller.expires_at {
        expires_at = expires_at.min(token_end);
    }
    db::access::open_session(&state.db, caller.token_id, &secret, expires_at).await?;
    let max_age = (expires_at - Utc::now()).num_seconds().max(0);
    let mut response = Json(Session {
        expires_at: Some(expires_at),
        ..session_of(caller)
    })
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&secret, max_age, state.settings.tls),
    );
    Ok(response)
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
