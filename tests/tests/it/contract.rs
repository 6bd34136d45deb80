//! The API's contract, from outside: schemathesis reads `/openapi.json` and throws schema-valid
//! and schema-violating requests at every operation (examples, coverage, fuzzing, and stateful
//! sequences that follow the document's links from an upload to its batch and item routes),
//! with every check it has. The README's route table is held to the same document.

use std::time::Duration;

use xcam_tests::{Stack, demo_samples_zip, repo_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_violation() {
    let schemathesis = std::env::var("XCAM_SCHEMATHESIS").expect(
        "XCAM_SCHEMATHESIS is not set: run the tests with `make test`, which installs schemathesis",
    );
    let stack = Stack::new().await;
    // The fuzzer uploads faster than archives are ingested; the bound on concurrent ingestions
    // (503 `busy`, tested in faults.rs) would otherwise answer it as a server error.
    let api = stack.producer(&["--max-ingestions", "64"]).await;
    let _worker = stack.worker("contract", &[]);
    // One finished batch first, so listings and the links from them lead to real results.
    let (status, created) = api.upload(demo_samples_zip(), &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    api.wait_for_batch(&id, Duration::from_secs(120)).await;

    let reports = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(&schemathesis)
        .args([
            "run",
            &api.url("/openapi.json"),
            "--checks=all",
            "--max-examples=20",
            "--seed=20261123",
            "--workers=1",
            "--no-color",
            "--generation-database=none",
            "--request-timeout=30",
            "--max-failures=20",
            &format!("--header=Authorization: Bearer {}", api.token),
        ])
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", repo_root().join("tests/schemathesis"))
        .current_dir(reports.path())
        .output()
        .await
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{text}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    // Every operation was tested, nothing was skipped for an unresolvable schema, and it
    // really went past the 404s: uploads were accepted and their batches answered.
    assert!(text.contains("Tested: 23"), "{text}");
    assert!(!text.contains("Unresolvable references"), "{text}");
    // Batches it deleted count too: the document lets it, and it does.
    let batches: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM batches) + (SELECT count(*) FROM deleted_batches)",
    )
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert!(batches > 1, "schemathesis uploaded no valid archive");
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_route_table_is_the_served_document() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let served: serde_json::Value = api.get("/openapi.json").await;
    let models = xcam_shared::bundle::discover(&repo_root().join("models")).unwrap();
    let doc = xcam_producer::routes::openapi(&models);
    assert_eq!(
        served,
        xcam_producer::routes::document::to_json(&doc),
        "the served document"
    );
    let table = xcam_producer::routes::document::markdown_routes(&doc);
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let (begin, end) = ("<!-- routes:begin -->\n", "<!-- routes:end -->");
    let shown = readme
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(table, _)| table)
        .expect("README.md has the generated route table between its markers");
    assert_eq!(
        shown, table,
        "README.md's route table is out of date; replace it with:\n{table}"
    );
    stack.finish().await;
}
