//! The dashboard in a real headless Chromium (Debian's), driven by playwright-core: sign-in,
//! upload, progress, overlays beside originals, CSV download, the operations charts, a forged
//! cross-origin upload refused, sign-out, and what a viewer is offered.

use std::process::Command;

use xcam_shared::{
    access::{Action, Outcome, Role},
    db::audit::{self, AuditFilter},
};
use xcam_tests::{Stack, TEST_PROJECT, make_token, repo_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_a_batch_end_to_end_in_chromium() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let _worker = stack.worker("a", &[]);
    let out = repo_root().join("target/screenshots");
    let script = repo_root().join("tests/browser/dashboard.mjs");
    let samples = repo_root().join("models/demo/samples/samples.zip");
    let base = api.base.clone();
    let viewer = make_token(
        &stack.db.pool,
        "browser-viewer",
        Role::Viewer,
        &[TEST_PROJECT],
        None,
    )
    .await;
    let admin = api.token.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .env("XCAM_ADMIN_TOKEN", admin)
            .env("XCAM_VIEWER_TOKEN", viewer)
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
    // The audit trail saw the sign-ins, the refused forged upload, and the sign-outs.
    let rows = audit::query(&stack.db.pool, &AuditFilter::default(), 1000)
        .await
        .unwrap();
    let saw = |token: Option<&str>, action: Action, outcome: Outcome, detail: Option<&str>| {
        rows.iter().any(|r| {
            r.token_name.as_deref() == token
                && r.action == action
                && r.outcome == outcome
                && (detail.is_none() || r.detail.as_deref() == detail)
        })
    };
    assert!(saw(
        None,
        Action::SignIn,
        Outcome::Denied,
        Some("invalid_token")
    ));
    for name in ["test-admin", "browser-viewer"] {
        assert!(saw(Some(name), Action::SignIn, Outcome::Ok, None), "{name}");
        assert!(
            saw(Some(name), Action::SignOut, Outcome::Ok, None),
            "{name}"
        );
    }
    assert!(
        saw(
            Some("test-admin"),
            Action::Upload,
            Outcome::Denied,
            Some("cross_origin")
        ),
        "the forged upload was refused: {rows:#?}"
    );
    assert!(
        saw(Some("test-admin"), Action::Delete, Outcome::Ok, None),
        "the delete from the dashboard was audited"
    );
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM batches")
            .fetch_one(&stack.db.pool)
            .await
            .unwrap(),
        0,
        "the dashboard's delete removed the batch"
    );
    for shot in [
        "upload.png",
        "batch.png",
        "overlay.png",
        "operations.png",
        "deleted.png",
        "viewer.png",
    ] {
        assert!(
            repo_root().join("target/screenshots").join(shot).exists(),
            "{shot} was saved"
        );
    }
    stack.finish().await;
}
