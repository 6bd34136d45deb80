//! The OpenAPI document is generated from the router's own registrations; this keeps it honest
//! the other way round: every documented operation is answered by the server, and the docs page
//! and its assets are served by the binary.

use xcam_tests::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served_and_the_docs_page_is_self_contained() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let (status, doc) = api.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    operations.sort();
    let expected = [
        ("DELETE", "/v1/batches/{id}"),
        ("DELETE", "/v1/session"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/batches"),
        ("GET", "/v1/batches/{id}"),
        ("GET", "/v1/batches/{id}/items/{item}/cam.npy"),
        ("GET", "/v1/batches/{id}/items/{item}/image.png"),
        ("GET", "/v1/batches/{id}/items/{item}/overlay.png"),
        ("GET", "/v1/batches/{id}/report"),
        ("GET", "/v1/batches/{id}/results"),
        ("GET", "/v1/batches/{id}/results.csv"),
        ("GET", "/v1/logs"),
        ("GET", "/v1/models"),
        ("GET", "/v1/session"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/workers"),
        ("POST", "/v1/batches"),
        ("POST", "/v1/batches/{id}/cancel"),
        ("POST", "/v1/batches/{id}/retry"),
        ("POST", "/v1/session"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(operations, expected, "the documented operations");

    let id = uuid::Uuid::now_v7();
    for (method, path) in &operations {
        let url = api.url(
            &path
                .replace("{id}", &id.to_string())
                .replace("{item}", &id.to_string()),
        );
        let response = api
            .client
            .request(method.parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        // A route the server does not know answers a bare 404/405 with no xcam error body.
        let known = (200..300).contains(&status) || body.contains("\"code\":");
        assert!(known, "{method} {path}: {status} {body}");
    }

    let (status, page) = api.get_text("/docs").await;
    assert!(
        status == 200 && page.contains("/assets/docs.js") && !page.contains("http"),
        "self-contained: {page}"
    );
    let (status, script) = api.get_text("/assets/docs.js").await;
    assert!(
        status == 200 && script.contains("\"/openapi.json\""),
        "{script}"
    );
    for asset in [
        "/assets/swagger-ui-bundle.js",
        "/assets/swagger-ui.css",
        "/assets/chart.umd.min.js",
        "/assets/app.js",
    ] {
        let (status, body) = api.get_text(asset).await;
        assert!(status == 200 && body.len() > 1000, "{asset}");
    }
    stack.finish().await;
}
