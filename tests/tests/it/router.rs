//! API behaviour that needs no worker, driven through the router in-process
//! (`tower::ServiceExt::oneshot`) on real Postgres and Redis: bounds, codes and shapes.

use std::time::Duration;

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
};
use serde_json::Value;
use tower::ServiceExt;
use xcam_producer::api::{BatchPage, ErrorBody, Health};
use xcam_tests::{Stack, png_zip};

/// Sends a request as a client on this machine would: with `Host: localhost` unless it names one.
async fn send(
    app: &Router,
    mut request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    if !request.headers().contains_key(header::HOST) {
        request
            .headers_mut()
            .insert(header::HOST, "localhost".parse().unwrap());
    }
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        to_bytes(body, 1 << 24).await.unwrap().to_vec(),
    )
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Vec<u8>) {
    let (status, _, body) = send(app, Request::get(uri).body(Body::empty()).unwrap()).await;
    (status, body)
}

fn error(body: &[u8]) -> ErrorBody {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)))
}

/// A multipart upload with these text fields (and a small valid archive).
fn upload(fields: &[(&str, &str)]) -> Request<Body> {
    let boundary = "xcam-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\ncontent-type: application/zip\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(&png_zip(2, |i| format!("{i}.png")));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Request::post("/v1/batches")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_out_of_their_documented_bounds_get_the_documented_codes() {
    let stack = Stack::new().await;
    let app = stack.router().await;
    for (uri, status, code) in [
        ("/v1/batches?limit=0", 400, "invalid_request"),
        ("/v1/batches?limit=201", 400, "invalid_request"),
        ("/v1/batches?limit=ten", 400, "invalid_request"),
        ("/v1/batches?before=yesterday", 400, "invalid_request"),
        ("/v1/batches/not-a-uuid", 404, "batch_not_found"),
        (
            "/v1/batches/00000000-0000-0000-0000-000000000000",
            404,
            "batch_not_found",
        ),
        (
            "/v1/batches/00000000-0000-0000-0000-000000000000/items/x/overlay.png",
            404,
            "not_found",
        ),
        ("/v1/logs?since=yesterday", 422, "invalid_filter"),
        ("/v1/logs?since=1h30m", 422, "invalid_filter"),
        ("/v1/logs?status=done", 422, "invalid_filter"),
        ("/v1/logs?limit=10001", 422, "invalid_filter"),
        ("/v1/logs?min_ms=-1", 422, "invalid_filter"),
        ("/v1/logs?cursor=abc", 422, "invalid_filter"),
        ("/v1/logs?format=xml", 422, "invalid_filter"),
        ("/v1/stats?bucket=week", 422, "invalid_filter"),
    ] {
        let (got, body) = get(&app, uri).await;
        assert_eq!(
            got.as_u16(),
            status,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(error(&body).code, code, "{uri}");
    }
    for uri in [
        "/v1/batches?limit=200",
        "/v1/logs?since=7d&until=2099-01-01T00:00:00Z&status=failed",
        "/v1/stats?since=4w&bucket=hour",
    ] {
        let (got, body) = get(&app, uri).await;
        assert_eq!(
            got,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let (_, body) = get(&app, "/v1/batches").await;
    let page: BatchPage = serde_json::from_slice(&body).unwrap();
    assert!(page.batches.is_empty() && page.next_before.is_none());
    let (_, body) = get(&app, "/healthz").await;
    assert_eq!(
        serde_json::from_slice::<Health>(&body).unwrap().status,
        "ok"
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_fields_are_parsed_strictly_and_bounded() {
    let stack = Stack::new().await;
    let app = stack.router().await;
    let long = "x".repeat(5000);
    for (fields, status, code) in [
        (vec![("model", "nope")], 422, "unknown_model"),
        (
            vec![("model", "demo "), ("method", "gradcam")],
            422,
            "unknown_model",
        ),
        (
            vec![("model", "demo"), ("method", "GradCAM")],
            422,
            "invalid_method",
        ),
        (
            vec![("model", "demo"), ("labels", "nodule,,opacity")],
            422,
            "invalid_labels",
        ),
        (
            vec![("model", "demo"), ("labels", "nodule, opacity")],
            422,
            "invalid_labels",
        ),
        (
            vec![("model", "demo"), ("labels", "")],
            422,
            "invalid_labels",
        ),
        (
            vec![("model", "demo"), ("labels", "tumour")],
            422,
            "unknown_label",
        ),
        (
            vec![("model", "demo"), ("pseudonymize_names", "yes")],
            400,
            "invalid_request",
        ),
        (vec![("model", long.as_str())], 422, "field_too_large"),
        (
            vec![("model", "demo"), ("colour", "blue")],
            400,
            "invalid_request",
        ),
    ] {
        let (got, _, body) = send(&app, upload(&fields)).await;
        assert_eq!(
            got.as_u16(),
            status,
            "{fields:?}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(error(&body).code, code, "{fields:?}");
    }
    let (got, _, body) = send(
        &app,
        upload(&[
            ("model", "demo"),
            ("method", "gradcam++"),
            ("labels", "nodule,opacity"),
            ("pseudonymize_names", "false"),
        ]),
    )
    .await;
    assert_eq!(
        got,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let created: xcam_producer::api::BatchCreated = serde_json::from_slice(&body).unwrap();
    // The server has one model, so an upload may leave it out.
    let (got, _, body) = send(&app, upload(&[])).await;
    assert_eq!(
        got,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        (created.images, created.links.self_.clone()),
        (2, format!("/v1/batches/{}", created.id))
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_when_plain_and_replaced_otherwise() {
    let stack = Stack::new().await;
    let app = stack.router().await;
    let with = |id: &str| {
        Request::get("/healthz")
            .header("x-request-id", id)
            .body(Body::empty())
            .unwrap()
    };
    let (_, headers, _) = send(&app, with("trace-42.a_b")).await;
    assert_eq!(headers["x-request-id"], "trace-42.a_b");
    let (_, headers, _) = send(&app, with(&"y".repeat(200))).await;
    let replaced = headers["x-request-id"].to_str().unwrap();
    assert!(replaced.parse::<uuid::Uuid>().is_ok(), "{replaced}");
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_states_models_labels_links_and_server_errors() {
    let stack = Stack::new().await;
    let app = stack.router().await;
    let (_, body) = get(&app, "/openapi.json").await;
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let upload = &doc["paths"]["/v1/batches"]["post"];
    let form = &upload["requestBody"]["content"]["multipart/form-data"];
    assert_eq!(form["encoding"]["file"]["contentType"], "application/zip");
    assert_eq!(form["schema"]["$ref"], "#/components/schemas/UploadForm");
    let form_schema = &doc["components"]["schemas"]["UploadForm"];
    assert_eq!(form_schema["required"], serde_json::json!(["file"]));
    assert_eq!(form_schema["additionalProperties"], false);
    let fields = &form_schema["properties"];
    assert_eq!(fields["model"]["enum"], serde_json::json!(["demo"]));
    for optional in ["method", "pseudonymize_names"] {
        assert!(
            !fields[optional].to_string().contains("null"),
            "an absent field is left out, never sent as null: {}",
            fields[optional]
        );
    }
    let pattern = fields["labels"]["pattern"].as_str().unwrap();
    assert!(
        pattern.contains("nodule") && pattern.contains("opacity"),
        "{pattern}"
    );
    assert_eq!(
        upload["responses"]["202"]["links"]["GetBatch"]["operationId"],
        "get_batch"
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path.starts_with("/v1/") {
            for (method, op) in item.as_object().unwrap() {
                for status in ["500", "503"] {
                    assert!(
                        op["responses"][status].is_object(),
                        "{method} {path} documents {status}"
                    );
                }
            }
        }
    }
    let limit = doc["paths"]["/v1/logs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        (
            limit["schema"]["minimum"].as_i64(),
            limit["schema"]["maximum"].as_i64()
        ),
        (Some(1), Some(10_000))
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers_and_no_page_runs_inline_script() {
    let stack = Stack::new().await;
    let app = stack.router().await;
    for uri in [
        "/",
        "/docs",
        "/assets/app.js",
        "/v1/batches",
        "/v1/batches/nope",
        "/openapi.json",
        "/healthz",
    ] {
        let (_, headers, body) = send(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("script-src 'self' 'unsafe-inline'"),
            "{uri}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{uri}: {csp}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{uri}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{uri}");
        if uri == "/" || uri == "/docs" {
            let page = String::from_utf8(body).unwrap();
            let inline = page.matches("<script").count() - page.matches("<script src=").count();
            assert_eq!(inline, 0, "{uri} has an inline script: {page}");
        }
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_api_does_not_answer_to_is_refused() {
    let stack = Stack::new().await;
    let app = stack.router().await;
    let with_host = |uri: &str, host: &str| {
        Request::get(uri)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "LOCALHOST"] {
        let (status, _, body) = send(&app, with_host("/v1/batches", host)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{host}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    for host in [
        "rebind.attacker.example",
        "rebind.attacker.example:8080",
        "127.0.0.1.nip.io",
    ] {
        let (status, headers, body) = send(&app, with_host("/v1/batches", host)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{host}");
        assert_eq!(error(&body).code, "host_not_allowed", "{host}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    }
    // No Host at all is no better than a wrong one.
    let mut bare = Request::get("/v1/batches").body(Body::empty()).unwrap();
    bare.headers_mut().insert(header::HOST, "".parse().unwrap());
    let (status, _, _) = send(&app, bare).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Orchestrators probe liveness and readiness by address.
    let (status, _, _) = send(&app, with_host("/healthz", "10.1.2.3:8080")).await;
    assert_eq!(status, StatusCode::OK);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonyms_are_keyed_follow_the_project_and_are_refused_without_a_key() {
    let stack = Stack::new().await;
    let pool = &stack.db.pool;
    xcam_shared::db::access::create_project(pool, "private", true)
        .await
        .unwrap();
    let token = xcam_tests::make_token(
        pool,
        "private-admin",
        xcam_shared::access::Role::Admin,
        &["private"],
        None,
    )
    .await;
    let as_private = |mut request: Request<Body>| {
        request.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        request
    };
    let app = stack.router().await;
    // The project's setting applies when the upload says nothing, and the upload can overrule it.
    let (status, _, body) = send(&app, as_private(upload(&[("model", "demo")]))).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, body) = send(
        &app,
        as_private(upload(&[
            ("model", "demo"),
            ("pseudonymize_names", "false"),
        ])),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let names = xcam_tests::eventually(Duration::from_secs(30), "both batches ingested", || async {
        let names: Vec<(bool, String)> = sqlx::query_as(
            "SELECT b.pseudonymize_names, i.entry_name FROM items i JOIN batches b ON b.id = i.batch_id",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        (names.len() == 4).then_some(names)
    })
    .await;
    for (pseudonymised, name) in names {
        assert_eq!(
            name.starts_with("entry-") && name.ends_with(".png"),
            pseudonymised,
            "{name}"
        );
        assert_eq!(
            name.len() == "entry-.png".len() + 24,
            pseudonymised,
            "{name}"
        );
    }

    // A server without XCAM_PSEUDONYM_KEY refuses, and says why.
    let mut args = stack.serve_args(&[]);
    args.pseudonym_key = None;
    let keyless = xcam_producer::app(xcam_producer::build_state(&args).await.unwrap());
    let (status, _, body) = send(&keyless, as_private(upload(&[("model", "demo")]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let refusal = error(&body);
    assert_eq!(refusal.code, "pseudonym_key_missing");
    assert!(refusal.message.contains("XCAM_PSEUDONYM_KEY"));
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_holds_the_token_to_its_documented_bounds() {
    let stack = Stack::new().await;
    let app = stack.bare_router().await;
    for (token, status, code) in [
        (String::new(), StatusCode::BAD_REQUEST, "invalid_request"),
        ("x".repeat(201), StatusCode::BAD_REQUEST, "invalid_request"),
        ("x".repeat(200), StatusCode::UNAUTHORIZED, "invalid_token"),
    ] {
        let request = Request::post("/v1/session")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({ "token": token }).to_string(),
            ))
            .unwrap();
        let (got, _, body) = send(&app, request).await;
        assert_eq!(got, status, "{} bytes", token.len());
        assert_eq!(error(&body).code, code);
    }
    stack.finish().await;
}
