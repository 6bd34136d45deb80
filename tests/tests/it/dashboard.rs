//! The dashboard in a real headless Chromium (Debian's), driven by playwright-core: upload,
//! progress, overlays beside originals, CSV download, and the operations charts.

use std::process::Command;

use xcam_tests::{Stack, repo_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_a_batch_end_to_end_in_chromium() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let _worker = stack.worker("a", &[]);
    let out = repo_root().join("target/screenshots");
    let script = repo_root().join("tests/browser/dashboard.mjs");
    let samples = repo_root().join("models/demo/samples/samples.zip");
    let base = api.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(base)
            .arg(samples)
            .arg(&out)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for shot in ["upload.png", "batch.png", "overlay.png", "operations.png"] {
        assert!(
            repo_root().join("target/screenshots").join(shot).exists(),
            "{shot} was saved"
        );
    }
    stack.finish().await;
}
