//! The one start-up path (`Application::build` / `run_until_stopped`): shutdown lets the
//! background work a request started finish instead of dropping it half-way.

use std::time::Duration;

use xcam_producer::Application;
use xcam_tests::{Stack, png_zip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_an_ingestion_that_is_running() {
    let stack = Stack::new().await;
    let app = Application::build(&stack.serve_args(&["--shutdown-grace=60s"]))
        .await
        .expect("the API builds");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    // 3000 images: ingestion (decoding, hashing, storing, one transaction, the pushes) outlasts
    // the answer by far.
    let form = reqwest::multipart::Form::new().text("model", "demo").part(
        "file",
        reqwest::multipart::Part::bytes(png_zip(3000, |i| format!("{i:04}.png")))
            .file_name("a.zip"),
    );
    let response = xcam_tests::client_with(&stack.db.admin_token)
        .post(format!("{base}/v1/batches"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let created: xcam_producer::api::BatchCreated = response.json().await.unwrap();
    let status = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>("SELECT status FROM batches WHERE id = $1")
            .bind(created.id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(
        status(stack.db.pool.clone()).await,
        "ingesting",
        "the shutdown must arrive while the ingestion runs"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(90), server)
        .await
        .expect("shutdown ends within its grace period")
        .unwrap()
        .expect("the server stops cleanly");

    // Once run_until_stopped has returned, the ingestion it was running has finished.
    let (status, items): (String, i64) = sqlx::query_as(
        "SELECT status, (SELECT count(*) FROM items WHERE batch_id = $1) FROM batches WHERE id = $1",
    )
    .bind(created.id)
    .fetch_one(&stack.db.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), items), ("queued", 3000));
    stack.finish().await;
}
