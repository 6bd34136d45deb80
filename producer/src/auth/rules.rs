//! Which role may call which route: the one table the guard reads. A route with no entry here
//! is refused (403) for everyone, so a new route cannot go out open by accident.

use axum::http::Method;
use xcam_shared::access::{Action, Role};

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone: liveness, readiness, the documents and the dashboard's files.
    Open,
    /// Anyone, audited as this action under the token the handler names ([`super::Who`]).
    OpenAudited(Action),
    /// A live token (bearer or session) whose role is listed, for this audited action.
    Roles(Action, &'static [Role]),
}

use Role::{Admin, Operator, Submitter, Viewer};

/// Every role.
const ANYONE: &[Role] = &[Viewer, Submitter, Operator, Admin];
/// Those who may see pixels: operators run the fleet but never look at images.
const PIXELS: &[Role] = &[Viewer, Submitter, Admin];
/// Those who add work.
const SUBMITTERS: &[Role] = &[Submitter, Admin];
/// Those who may stop work.
const CANCELLERS: &[Role] = &[Submitter, Operator, Admin];
/// Those who watch the fleet.
const FLEET: &[Role] = &[Operator, Admin];
const ADMINS: &[Role] = &[Admin];

/// Whether some method of this route has a rule. A request with another method goes on to
/// axum's 405: no handler serves it (the contract tests hold the routes to the document, and
/// a unit test holds every documented operation to a rule here).
pub fn known_route(route: &str) -> bool {
    [Method::GET, Method::POST, Method::DELETE]
        .iter()
        .any(|m| rule(m, route).is_some())
}

/// The rule of a route (its path template, as axum matched it); `None` when it has none.
pub fn rule(method: &Method, route: &str) -> Option<Rule> {
    use Action::*;
    // HEAD is answered by the GET route, so it is allowed exactly as GET is.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    Some(match (method, route) {
        (
            "GET",
            "/healthz"
            | "/readyz"
            | "/openapi.json"
            | "/docs"
            | "/"
            | "/assets/app.js"
            | "/assets/app.css"
            | "/assets/chart.umd.min.js"
            | "/assets/docs.js"
            | "/assets/swagger-ui-bundle.js"
            | "/assets/swagger-ui.css",
        ) => Rule::Open,
        // Sign-in checks the token it is given itself.
        ("POST", "/v1/session") => Rule::OpenAudited(SignIn),
        ("GET", "/v1/session") => Rule::Roles(ReadSession, ANYONE),
        ("DELETE", "/v1/session") => Rule::Roles(SignOut, ANYONE),
        ("GET", "/v1/models") => Rule::Roles(ListModels, ANYONE),
        ("GET", "/v1/batches") => Rule::Roles(ListBatches, ANYONE),
        ("POST", "/v1/batches") => Rule::Roles(Upload, SUBMITTERS),
        ("GET", "/v1/batches/{id}") => Rule::Roles(ReadBatch, ANYONE),
        ("DELETE", "/v1/batches/{id}") => Rule::Roles(Delete, SUBMITTERS),
        ("POST", "/v1/batches/{id}/cancel") => Rule::Roles(Cancel, CANCELLERS),
        ("POST", "/v1/batches/{id}/retry") => Rule::Roles(Retry, SUBMITTERS),
        ("GET", "/v1/batches/{id}/report") => Rule::Roles(ReadReport, ANYONE),
        ("GET", "/v1/batches/{id}/results") => Rule::Roles(ReadResults, ANYONE),
        ("GET", "/v1/batches/{id}/results.csv") => Rule::Roles(ReadCsv, ANYONE),
        ("GET", "/v1/batches/{id}/items/{item}/image.png") => Rule::Roles(ReadImage, PIXELS),
        ("GET", "/v1/batches/{id}/items/{item}/overlay.png") => Rule::Roles(ReadOverlay, PIXELS),
        ("GET", "/v1/batches/{id}/items/{item}/cam.npy") => Rule::Roles(ReadMap, PIXELS),
        ("GET", "/v1/logs") => Rule::Roles(QueryLog, ANYONE),
        ("GET", "/v1/stats") => Rule::Roles(QueryStats, ANYONE),
        ("GET", "/v1/workers") => Rule::Roles(ListWorkers, FLEET),
        ("GET", "/metrics") => Rule::Roles(ReadMetrics, FLEET),
        ("GET", "/v1/audit") => Rule::Roles(ReadAudit, ADMINS),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_operation_has_a_rule() {
        let doc = crate::routes::openapi(&Default::default());
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
            ] {
                if op.is_some() {
                    assert!(rule(&method, path).is_some(), "{method} {path} has no rule");
                }
            }
        }
    }

    #[test]
    fn pixels_are_never_an_operators_and_the_audit_trail_only_an_admins() {
        for route in [
            "/v1/batches/{id}/items/{item}/image.png",
            "/v1/batches/{id}/items/{item}/overlay.png",
            "/v1/batches/{id}/items/{item}/cam.npy",
        ] {
            let Some(Rule::Roles(_, roles)) = rule(&Method::GET, route) else {
                panic!("{route} is guarded");
            };
            assert!(!roles.contains(&Role::Operator), "{route}");
        }
        assert_eq!(
            rule(&Method::GET, "/v1/audit"),
            Some(Rule::Roles(Action::ReadAudit, &[Role::Admin]))
        );
        assert_eq!(rule(&Method::HEAD, "/healthz"), Some(Rule::Open));
        assert_eq!(rule(&Method::PUT, "/v1/batches"), None);
        assert!(known_route("/v1/batches") && !known_route("/v1/nothing"));
    }
}
