//! What the generated OpenAPI document cannot say from types alone, added in one place:
//!
//! - the upload form's `model` is one of the loaded bundles and `labels` one of their label
//!   names (so a request the document calls valid is one the server accepts), and its `file`
//!   part is `application/zip`;
//! - links from an upload and from the listings to the batch and item routes, so a client (or
//!   a stateful fuzzer) can follow real ids;
//! - `500 internal` and `503 unavailable` on every operation that reaches Postgres, Redis or
//!   the blob store;
//! - the bearer scheme, required by every operation the access rules guard, with the `401` and
//!   `403` answers they give and the roles that may call them.

use std::collections::BTreeMap;

use utoipa::openapi::{
    ContentBuilder, OpenApi, RefOr, ResponseBuilder,
    encoding::EncodingBuilder,
    link::LinkBuilder,
    path::{HttpMethod, Operation},
    schema::{AdditionalProperties, ObjectBuilder, Schema, Type},
};
use xcam_shared::bundle::Bundle;

use crate::auth::rules::{self, Rule};

/// The longest text field of the upload form, in bytes.
pub const MAX_FIELD_BYTES: usize = 4096;

pub fn complete(mut doc: OpenApi, models: &BTreeMap<String, Bundle>) -> OpenApi {
    describe_upload(&mut doc, models);
    add_links(&mut doc);
    add_server_errors(&mut doc);
    add_security(&mut doc);
    doc
}

/// The name of the bearer scheme in the document.
pub const BEARER: &str = "bearer";

fn add_security(doc: &mut OpenApi) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    doc.components.get_or_insert_with(Default::default).add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A token from `xcam token create` (`XCAM_TOKEN` for the CLI). The dashboard signs in with one and then sends a session cookie instead.",
                ))
                .build(),
        ),
    );
    let error = error_content;
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            (axum::http::Method::GET, &mut item.get),
            (axum::http::Method::POST, &mut item.post),
            (axum::http::Method::DELETE, &mut item.delete),
        ] {
            let Some(op) = op else { continue };
            let Some(Rule::Roles(_, roles)) = rules::rule(&method, path) else {
                continue;
            };
            op.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            let note = format!("\n\nRoles: {}.", roles.join(", "));
            op.description = Some(op.description.take().unwrap_or_default() + &note);
            for (status, text) in [
                (
                    "401",
                    "`unauthenticated`, `invalid_token`, `token_revoked`, `token_expired`, `session_expired`",
                ),
                (
                    "403",
                    "`forbidden`: the token's role may not; `cross_origin`: a cookie-borne write from another origin",
                ),
            ] {
                op.responses
                    .responses
                    .entry(status.into())
                    .or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(text)
                            .content("application/json", error())
                            .into()
                    });
            }
        }
    }
}

/// An `ErrorBody` answer's content.
fn error_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            "ErrorBody",
        ))))
        .build()
}

fn operation<'a>(
    doc: &'a mut OpenApi,
    path: &str,
    method: HttpMethod,
) -> Option<&'a mut Operation> {
    let item = doc.paths.paths.get_mut(path)?;
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        _ => None,
    }
}

fn describe_upload(doc: &mut OpenApi, models: &BTreeMap<String, Bundle>) {
    let Some(form) = operation(doc, "/v1/batches", HttpMethod::Post)
        .and_then(|op| op.request_body.as_mut())
        .and_then(|body| body.content.get_mut("multipart/form-data"))
    else {
        return;
    };
    form.encoding.insert(
        "file".into(),
        EncodingBuilder::new()
            .content_type(Some("application/zip"))
            .build(),
    );
    // The form is a named component: its `model` and `labels` are narrowed where it lives.
    let Some(RefOr::Ref(form_ref)) = &form.schema else {
        return;
    };
    let name = form_ref
        .ref_location
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let Some(RefOr::T(Schema::Object(object))) = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut(&name))
    else {
        return;
    };
    // Optional parts are left out, never sent as `null`: a multipart form has no null.
    object.properties.insert(
        "method".into(),
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Method")),
    );
    object.properties.insert(
        "faithfulness".into(),
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Faithfulness")),
    );
    object.properties.insert(
        "project".into(),
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[a-z0-9][a-z0-9_-]{0,62}$"))
            .description(Some(
                "The project the batch goes to (`xcam project list`); may be left out when the token covers only one.",
            ))
            .into(),
    );
    object.properties.insert(
        "pseudonymize_names".into(),
        ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .description(Some(
                "`true` to replace entry names with keyed hashes (HMAC under the server's `XCAM_PSEUDONYM_KEY`) everywhere; default: the project's setting.",
            ))
            .into(),
    );
    let names: Vec<String> = models.keys().cloned().collect();
    // A server with one model takes it when the form names none; with several, `model` is
    // required.
    let sole = match names.as_slice() {
        [only] => Some(serde_json::Value::from(only.as_str())),
        _ => None,
    };
    object.required = ["file", "model"]
        .into_iter()
        .filter(|f| *f == "file" || sole.is_none())
        .map(str::to_owned)
        .collect();
    object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    object.properties.insert(
        "model".into(),
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .default(sole)
            .description(Some(
                "A model bundle this server has loaded (`GET /v1/models`); may be left out when it has only one.",
            ))
            .into(),
    );
    let mut labels: Vec<String> = models
        .values()
        .flat_map(|b| b.labels().iter().map(|l| regex_escape(l)))
        .collect();
    labels.sort();
    labels.dedup();
    let name = format!("(?:{})", labels.join("|"));
    object.properties.insert(
        "labels".into(),
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^(?:top1|positive|all|{name}(?:,{name})*)$")))
            .max_length(Some(MAX_FIELD_BYTES))
            .description(Some(
                "`top1` (default), `positive`, `all`, or label names of the model separated by commas.",
            ))
            .into(),
    );
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$-".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// A link from one operation's response to another operation.
struct Link {
    from: &'static str,
    method: HttpMethod,
    status: &'static str,
    name: &'static str,
    to: &'static str,
    /// Parameter of `to` → runtime expression over the response.
    parameters: &'static [(&'static str, &'static str)],
}

const fn link(
    from: &'static str,
    method: HttpMethod,
    status: &'static str,
    name: &'static str,
    to: &'static str,
    parameters: &'static [(&'static str, &'static str)],
) -> Link {
    Link {
        from,
        method,
        status,
        name,
        to,
        parameters,
    }
}

const BATCH_ID: &[(&str, &str)] = &[("id", "$response.body#/id")];
const FIRST_ITEM: &[(&str, &str)] = &[
    ("id", "$response.body#/batch_id"),
    ("item", "$response.body#/items/0/item_id"),
];

const LINKS: &[Link] = &[
    link(
        "/v1/batches",
        HttpMethod::Post,
        "202",
        "GetBatch",
        "get_batch",
        BATCH_ID,
    ),
    link(
        "/v1/batches",
        HttpMethod::Post,
        "202",
        "GetResults",
        "list_results",
        BATCH_ID,
    ),
    link(
        "/v1/batches",
        HttpMethod::Post,
        "202",
        "GetResultsCsv",
        "export_results_csv",
        BATCH_ID,
    ),
    link(
        "/v1/batches",
        HttpMethod::Post,
        "202",
        "GetReport",
        "get_report",
        BATCH_ID,
    ),
    link(
        "/v1/batches",
        HttpMethod::Post,
        "202",
        "CancelBatch",
        "cancel_batch",
        BATCH_ID,
    ),
    link(
        "/v1/batches",
        HttpMethod::Get,
        "200",
        "GetFirstBatch",
        "get_batch",
        &[("id", "$response.body#/batches/0/id")],
    ),
    link(
        "/v1/batches/{id}/results",
        HttpMethod::Get,
        "200",
        "GetOverlay",
        "get_overlay",
        FIRST_ITEM,
    ),
    link(
        "/v1/batches/{id}/results",
        HttpMethod::Get,
        "200",
        "GetMap",
        "get_cam",
        FIRST_ITEM,
    ),
    link(
        "/v1/batches/{id}/results",
        HttpMethod::Get,
        "200",
        "GetImage",
        "get_image",
        FIRST_ITEM,
    ),
];

fn add_links(doc: &mut OpenApi) {
    for l in LINKS {
        let Some(op) = operation(doc, l.from, l.method.clone()) else {
            continue;
        };
        let Some(RefOr::T(response)) = op.responses.responses.get_mut(l.status) else {
            continue;
        };
        let mut link = LinkBuilder::new().operation_id(l.to);
        for (param, expression) in l.parameters {
            link = link.parameter(*param, serde_json::Value::from(*expression));
        }
        response
            .links
            .insert(l.name.to_owned(), RefOr::T(link.build()));
    }
}

fn add_server_errors(doc: &mut OpenApi) {
    let error = error_content;
    for (path, item) in doc.paths.paths.iter_mut() {
        if !(path.starts_with("/v1/") || path == "/readyz" || path == "/metrics") {
            continue;
        }
        for op in [&mut item.get, &mut item.post, &mut item.delete]
            .into_iter()
            .flatten()
        {
            for (status, text) in [
                (
                    "500",
                    "`internal`: a fault on the server's side (logged; the body says nothing internal)",
                ),
                (
                    "503",
                    "`unavailable`: Postgres, Redis or the blob store does not answer",
                ),
            ] {
                op.responses
                    .responses
                    .entry(status.into())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(text)
                                .content("application/json", error())
                                .build(),
                        )
                    });
            }
        }
    }
}

/// The README's route table, drawn from the document: one row per operation, its summary
/// beside it. A test holds the README to it, so the table cannot drift from the router.
pub fn markdown_routes(doc: &OpenApi) -> String {
    let mut out = String::from("| route | what | who |\n|---|---|---|\n");
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            (axum::http::Method::GET, &item.get),
            (axum::http::Method::POST, &item.post),
            (axum::http::Method::DELETE, &item.delete),
        ] {
            if let Some(op) = op {
                let summary = op
                    .summary
                    .as_deref()
                    .unwrap_or_default()
                    .trim_end_matches('.');
                let who = match rules::rule(&method, path) {
                    Some(Rule::Roles(_, roles)) => roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    Some(Rule::Open | Rule::OpenAudited(_)) => "anyone".into(),
                    None => "nobody".into(),
                };
                out.push_str(&format!("| `{method} {path}` | {summary} | {who} |\n"));
            }
        }
    }
    out
}

/// The document as JSON, as `/openapi.json` serves it.
///
/// utoipa 5.5 serialises a link's fields in snake_case (`operation_id`); the specification
/// (and every client that follows links) spells them `operationId`, `operationRef` and
/// `requestBody`, so they are renamed here.
pub fn to_json(doc: &OpenApi) -> serde_json::Value {
    let mut json = serde_json::to_value(doc).unwrap_or_default();
    let links = json["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(|l| l.as_object_mut()))
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (from, to) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(from) {
                link.insert(to.to_owned(), value);
            }
        }
    }
    json
}
