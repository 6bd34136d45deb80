//! Access control from outside: the role matrix over every documented operation, leakage
//! across projects, the audit trail, token management from the command line, and TLS.

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;
use xcam_shared::{
    access::{Action, Outcome, Role},
    db::audit::{self, AuditFilter},
};
use xcam_tests::{Producer, Stack, TEST_PROJECT, client_with, make_token, png_zip};

use crate::cli::xcam;

/// Who may call each operation, written out here independently of the server's own table: a
/// documented operation missing from this list fails the test.
fn expected_roles(operation: &str) -> Option<&'static [&'static str]> {
    const ANYONE: &[&str] = &["viewer", "submitter", "operator", "admin"];
    Some(match operation {
        "healthz" | "readyz" | "sign_in" => &[],
        "who_am_i" | "sign_out" | "list_models" | "list_batches" | "get_batch" | "get_report"
        | "list_results" | "export_results_csv" | "query_logs" | "get_stats" => ANYONE,
        "create_batch" | "delete_batch" | "retry_batch" => &["submitter", "admin"],
        "cancel_batch" => &["submitter", "operator", "admin"],
        "get_image" | "get_overlay" | "get_cam" => &["viewer", "submitter", "admin"],
        "list_workers" | "get_metrics" => &["operator", "admin"],
        "query_audit" => &["admin"],
        _ => return None,
    })
}

/// One way of calling: a bearer (or none), and what it is.
struct Credential {
    label: &'static str,
    token: Option<String>,
    /// The role, when the token is live.
    role: Option<&'static str>,
    /// Whether it covers the project the tested batch is in.
    covers_test: bool,
}

struct Fixture {
    batch: Uuid,
    item: Uuid,
}

/// An empty, failed batch in the project `test`: something to delete.
async fn fresh_batch(pool: &sqlx::PgPool) -> Uuid {
    let id = xcam_tests::empty_batch(pool).await;
    // Ended, so it is not being ingested: deletable.
    xcam_shared::db::batches::mark_failed(pool, id, "test", "made by the role matrix")
        .await
        .unwrap();
    id
}

/// A finished two-image batch in the project `test`.
async fn finished_batch(stack: &Stack, api: &Producer) -> Fixture {
    let _worker = stack.worker("matrix", &[]);
    let (status, created) = api.upload(png_zip(2, |i| format!("{i}.png")), &[]).await;
    assert_eq!(status, 202, "{created}");
    let batch: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    api.wait_for_batch(&batch.to_string(), Duration::from_secs(120))
        .await;
    let page: xcam_producer::api::ResultPage =
        api.get(&format!("/v1/batches/{batch}/results")).await;
    Fixture {
        batch,
        item: page.items[0].item_id,
    }
}

async fn call(
    api: &Producer,
    token: Option<&str>,
    method: &Method,
    path: &str,
    operation: &str,
    secret_for_sign_in: Option<&str>,
) -> (StatusCode, Vec<u8>) {
    let client = match token {
        Some(t) => client_with(t),
        None => reqwest::Client::new(),
    };
    let mut request = client.request(method.clone(), api.url(path));
    request = match operation {
        "create_batch" => request.multipart(
            reqwest::multipart::Form::new()
                .text("project", TEST_PROJECT)
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(png_zip(1, |i| format!("m{i}.png")))
                        .file_name("m.zip")
                        .mime_str("application/zip")
                        .unwrap(),
                ),
        ),
        // A dry run: the fixture stays as it is.
        "retry_batch" => request.json(&serde_json::json!({ "dry_run": true })),
        "sign_in" => {
            request.json(&serde_json::json!({ "token": secret_for_sign_in.unwrap_or("") }))
        }
        _ => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.bytes().await.unwrap().to_vec())
}

fn code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_each_credential_by_the_rules_and_leaks_nothing_across_projects() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let pool = &stack.db.pool;
    let fixture = finished_batch(&stack, &api).await;
    xcam_shared::db::access::create_project(pool, "other", false)
        .await
        .unwrap();

    let token = |name: &'static str, role, projects: &'static [&'static str]| async move {
        make_token(pool, name, role, projects, None).await
    };
    let revoked = token("gone", Role::Admin, &[TEST_PROJECT]).await;
    assert!(
        xcam_shared::db::access::revoke_token(pool, "gone")
            .await
            .unwrap()
    );
    let expired = make_token(
        pool,
        "stale",
        Role::Admin,
        &[TEST_PROJECT],
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
    )
    .await;
    let credentials = [
        Credential {
            label: "no token",
            token: None,
            role: None,
            covers_test: false,
        },
        Credential {
            label: "bogus",
            token: Some("xcam_".to_owned() + &"0".repeat(64)),
            role: None,
            covers_test: false,
        },
        Credential {
            label: "revoked",
            token: Some(revoked),
            role: None,
            covers_test: false,
        },
        Credential {
            label: "expired",
            token: Some(expired),
            role: None,
            covers_test: false,
        },
        Credential {
            label: "viewer",
            token: Some(token("v", Role::Viewer, &[TEST_PROJECT]).await),
            role: Some("viewer"),
            covers_test: true,
        },
        Credential {
            label: "submitter",
            token: Some(token("s", Role::Submitter, &[TEST_PROJECT]).await),
            role: Some("submitter"),
            covers_test: true,
        },
        Credential {
            label: "operator",
            token: Some(token("o", Role::Operator, &[]).await),
            role: Some("operator"),
            covers_test: true,
        },
        Credential {
            label: "admin",
            token: Some(api.token.clone()),
            role: Some("admin"),
            covers_test: true,
        },
        Credential {
            label: "other project",
            token: Some(token("s-other", Role::Submitter, &["other"]).await),
            role: Some("submitter"),
            covers_test: false,
        },
    ];

    let doc: Value = api.get("/openapi.json").await;
    let (mut denied, mut checked) = (0, 0);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let operation = op["operationId"].as_str().unwrap();
            let allowed = expected_roles(operation).unwrap_or_else(|| {
                panic!("{operation} ({method} {path}) has no row in the role matrix")
            });
            let open = allowed.is_empty();
            assert_eq!(
                op.get("security").is_some(),
                !open,
                "{operation}: the document declares the bearer scheme exactly where a token is needed"
            );
            let batch_scoped = path.contains("{id}");
            for c in &credentials {
                // Each delete gets a batch of its own, so the fixture outlives the matrix.
                let batch = if operation == "delete_batch" {
                    fresh_batch(pool).await
                } else {
                    fixture.batch
                };
                let concrete = path
                    .replace("{id}", &batch.to_string())
                    .replace("{item}", &fixture.item.to_string());
                let (status, body) = call(
                    &api,
                    c.token.as_deref(),
                    &method,
                    &concrete,
                    operation,
                    c.token.as_deref(),
                )
                .await;
                let what = format!(
                    "{} {method} {path} → {status} {}",
                    c.label,
                    String::from_utf8_lossy(&body)
                );
                checked += 1;
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    denied += 1;
                }
                if operation == "sign_in" {
                    let ok = c.role.is_some();
                    assert_eq!(status.is_success(), ok, "{what}");
                    // No token at all is an empty one: out of the field's bounds.
                    let refused = if c.token.is_none() {
                        StatusCode::BAD_REQUEST
                    } else {
                        StatusCode::UNAUTHORIZED
                    };
                    if !ok {
                        assert_eq!(status, refused, "{what}");
                    }
                    continue;
                }
                if open {
                    assert!(status.is_success(), "{what}");
                    continue;
                }
                let Some(role) = c.role else {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
                    let expected = match c.label {
                        "no token" => "unauthenticated",
                        "revoked" => "token_revoked",
                        "expired" => "token_expired",
                        _ => "invalid_token",
                    };
                    assert_eq!(code(&body), expected, "{what}");
                    continue;
                };
                if !allowed.contains(&role) {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
                    assert_eq!(code(&body), "forbidden", "{what}");
                    continue;
                }
                if !c.covers_test && (batch_scoped || operation == "create_batch") {
                    assert_eq!(status, StatusCode::NOT_FOUND, "{what}");
                    continue;
                }
                let ok = status.is_success()
                    || (operation == "cancel_batch" && status == StatusCode::CONFLICT);
                assert!(ok, "{what}");
            }
        }
    }
    assert!(checked > 150, "{checked} requests");

    // Every 401 and 403 left an audit row.
    let rows = audit::query(pool, &AuditFilter::default(), 10_000)
        .await
        .unwrap();
    let denied_rows = rows.iter().filter(|r| r.outcome == Outcome::Denied).count();
    assert_eq!(denied_rows, denied, "one audit row per refused request");
    // And each audited action, done, names its token and the batch's project.
    for (action, token) in [
        (Action::ReadResults, "v"),
        (Action::ReadCsv, "s"),
        (Action::ReadReport, "o"),
        (Action::ReadImage, "v"),
        (Action::ReadOverlay, "s"),
        (Action::ReadMap, "test-admin"),
        (Action::Cancel, "o"),
    ] {
        assert!(
            rows.iter().any(|r| r.action == action
                && r.token_name.as_deref() == Some(token)
                && r.batch_id == Some(fixture.batch)
                && r.project.as_deref() == Some(TEST_PROJECT)),
            "{action} by {token}"
        );
    }
    for (action, token, outcome) in [
        (Action::Upload, "s", Outcome::Ok),
        (Action::Upload, "o", Outcome::Denied),
        (Action::Upload, "s-other", Outcome::NotFound),
        (Action::Delete, "s", Outcome::Ok),
        (Action::Retry, "s", Outcome::Ok),
        (Action::Retry, "o", Outcome::Denied),
        (Action::Delete, "v", Outcome::Denied),
        (Action::Delete, "o", Outcome::Denied),
        (Action::Delete, "s-other", Outcome::NotFound),
        (Action::ReadImage, "o", Outcome::Denied),
        (Action::ReadImage, "s-other", Outcome::NotFound),
        (Action::QueryLog, "v", Outcome::Ok),
        (Action::QueryStats, "o", Outcome::Ok),
        (Action::ReadAudit, "test-admin", Outcome::Ok),
        (Action::ReadAudit, "v", Outcome::Denied),
        (Action::SignIn, "s", Outcome::Ok),
        (Action::ReadBatch, "gone", Outcome::Denied),
        (Action::ReadBatch, "stale", Outcome::Denied),
    ] {
        assert!(
            rows.iter().any(|r| r.action == action
                && r.token_name.as_deref() == Some(token)
                && r.outcome == outcome),
            "{action} by {token}: {outcome}"
        );
    }
    assert!(
        rows.iter()
            .all(|r| r.client.as_deref() == Some("127.0.0.1"))
    );

    // Nothing of project `test` reaches a viewer of `other`: not in lists, the log, stats, or
    // the words of a 404.
    let other = client_with(&token("v-other", Role::Viewer, &["other"]).await);
    let submitter_other = client_with(&credentials[8].token.clone().unwrap());
    let mine = submitter_other
        .post(api.url("/v1/batches"))
        .multipart(reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(png_zip(1, |i| format!("b{i}.png"))).file_name("b.zip"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        mine.status(),
        202,
        "a token of one project uploads there without naming it"
    );
    let get = |path: String| {
        let other = other.clone();
        let url = api.url(&path);
        async move {
            let r = other.get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let a = fixture.batch.to_string();
    let (_, list) = get("/v1/batches".into()).await;
    let list: xcam_producer::api::BatchPage = serde_json::from_str(&list).unwrap();
    assert_eq!(list.batches.len(), 1, "only project other's batch");
    assert!(list.batches.iter().all(|b| b.project == "other"));
    for path in [
        "/v1/logs".to_owned(),
        format!("/v1/logs?batch={a}"),
        "/v1/logs?format=csv".into(),
    ] {
        let (status, text) = get(path.clone()).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !text.contains(&a) && !text.contains(".png"),
            "{path}: {text}"
        );
    }
    let (_, stats) = get("/v1/stats".into()).await;
    let stats: xcam_producer::api::Stats = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        (stats.inferences, stats.predictions.len()),
        (0, 0),
        "stats of project other only"
    );
    let nothing = Uuid::now_v7().to_string();
    for suffix in ["", "/results", "/results.csv", "/report"] {
        let (status, real) = get(format!("/v1/batches/{a}{suffix}")).await;
        let (_, absent) = get(format!("/v1/batches/{nothing}{suffix}")).await;
        assert_eq!(status, 404, "{suffix}");
        assert_eq!(
            real.replace(&a, "ID"),
            absent.replace(&nothing, "ID"),
            "{suffix}: a 404 says nothing more"
        );
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_made_listed_and_revoked_from_the_command_line_and_revocation_is_immediate() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let db = [("DATABASE_URL", stack.db.url.as_str())];
    let (code, out, err) = xcam(&db, &["project", "create", "ward-7"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = xcam(&db, &["project", "create", "Ward 7"]);
    assert!(code != 0 && err.contains("project name"), "{err}");
    let (code, out, _) = xcam(&db, &["project", "list"]);
    assert!(
        code == 0 && out.contains("ward-7") && out.contains(TEST_PROJECT),
        "{out}"
    );

    let (code, _, err) = xcam(
        &db,
        &["token", "create", "--name", "v7", "--role", "viewer"],
    );
    assert!(
        code != 0 && err.contains("--project"),
        "a viewer must name a project: {err}"
    );
    let (code, out, err) = xcam(
        &db,
        &[
            "token",
            "create",
            "--name",
            "ci-bot",
            "--role",
            "submitter",
            "--project",
            "ward-7",
            "--expires",
            "90d",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let secret = out.lines().last().unwrap().to_owned();
    assert!(secret.starts_with("xcam_") && secret.len() == 69, "{out}");
    let stored: Vec<(String,)> = sqlx::query_as("SELECT encode(secret_sha256, 'hex') FROM tokens")
        .fetch_all(&stack.db.pool)
        .await
        .unwrap();
    assert!(
        stored.iter().all(|(h,)| !h.contains(&secret[5..])),
        "only a hash is kept"
    );
    let (code, out, _) = xcam(&db, &["token", "list"]);
    assert!(
        code == 0 && out.contains("ci-bot") && out.contains("ward-7") && !out.contains(&secret),
        "{out}"
    );

    let cli = [
        ("XCAM_URL", api.base.as_str()),
        ("XCAM_TOKEN", secret.as_str()),
    ];
    let (code, out, err) = xcam(&cli, &["status"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = xcam(&cli, &["workers"]);
    assert!(code == 1 && err.contains("forbidden"), "{err}");
    let (code, _, err) = xcam(&[("XCAM_URL", api.base.as_str())], &["status"]);
    assert!(code == 1 && err.contains("unauthenticated"), "{err}");

    let (code, _, _) = xcam(&db, &["token", "revoke", "ci-bot"]);
    assert_eq!(code, 0);
    let (code, _, err) = xcam(&cli, &["status"]);
    assert!(
        code == 1 && err.contains("token_revoked"),
        "refused on the very next request: {err}"
    );
    let (code, _, err) = xcam(&db, &["token", "revoke", "ci-bot"]);
    assert!(code != 0 && err.contains("no live token"), "{err}");

    // The changes and the refusals are in the audit trail, which `xcam audit` reads (admins).
    let admin = [
        ("XCAM_URL", api.base.as_str()),
        ("XCAM_TOKEN", api.token.as_str()),
    ];
    let (code, out, err) = xcam(&admin, &["audit", "--format", "json", "--limit", "200"]);
    assert_eq!(code, 0, "{err}");
    let page: xcam_producer::api::AuditPage = serde_json::from_str(&out).unwrap();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &page.entries {
        *seen
            .entry((e.action.to_string(), e.outcome.to_string()))
            .or_default() += 1;
        if e.action == Action::RevokeToken {
            assert_eq!(e.detail.as_deref(), Some("ci-bot"));
            assert!(e.token_name.as_deref().unwrap().starts_with("local:"));
        }
    }
    for key in [
        ("create_project", "ok"),
        ("create_token", "ok"),
        ("revoke_token", "ok"),
        ("list_workers", "denied"),
        ("list_batches", "denied"),
    ] {
        assert!(
            seen.contains_key(&(key.0.to_owned(), key.1.to_owned())),
            "{key:?} in {seen:?}"
        );
    }
    let (code, out, _) = xcam(
        &admin,
        &["audit", "--action", "revoke_token", "--format", "csv"],
    );
    assert!(
        code == 0 && out.starts_with("id,at,token_name") && out.lines().count() == 2,
        "{out}"
    );
    let (code, _, err) = xcam(&cli, &["audit"]);
    assert!(code == 1 && err.contains("token_revoked"), "{err}");
    // Nothing in the database may change or remove an audit row either.
    let update = sqlx::query("UPDATE audit_log SET outcome = 'ok'")
        .execute(&stack.db.pool)
        .await;
    assert!(update.is_err_and(|e| e.to_string().contains("append-only")));
    let delete = sqlx::query("DELETE FROM audit_log")
        .execute(&stack.db.pool)
        .await;
    assert!(delete.is_err());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_speaks_tls_and_the_cli_trusts_a_private_ca() {
    let stack = Stack::new().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let api = stack
        .producer(&[
            &format!("--tls-cert={}", cert_pem.display()),
            &format!("--tls-key={}", key_pem.display()),
        ])
        .await;
    let https = api.base.replace("http://127.0.0.1", "https://localhost");
    let env = [
        ("XCAM_URL", https.as_str()),
        ("XCAM_TOKEN", api.token.as_str()),
        ("XCAM_CA_CERT", cert_pem.to_str().unwrap()),
    ];
    let (code, out, err) = xcam(&env, &["workers"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = xcam(&env[..2], &["workers"]);
    assert!(
        code == 1 && err.contains("cannot reach"),
        "an unknown CA is refused: {err}"
    );
    // Plain HTTP to the TLS port gets nowhere.
    assert!(api.client.get(api.url("/healthz")).send().await.is_err());

    // Under TLS the session cookie is Secure.
    let client = reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap()])
        .build()
        .unwrap();
    let signed_in = client
        .post(format!("{https}/v1/session"))
        .json(&serde_json::json!({ "token": api.token }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age="] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    stack.finish().await;
}
