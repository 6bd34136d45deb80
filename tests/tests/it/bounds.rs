//! Requests that must not exhaust anything: slow or stalled clients are cut off, a class of
//! routes cannot take the others' Postgres connections, a DICOM file cannot make the producer
//! allocate what it declares, and stats ranges and reports are bounded or paged.

use std::{io::Write, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use xcam_tests::{Producer, Stack, png, repo_root, zip_of};

/// Reads until the server closes the connection (or `within` passes: then `None`).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(String::from_utf8_lossy(&seen).into_owned())
}

fn host_port(api: &Producer) -> String {
    api.base.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_idle_connections_and_stalled_bodies_are_cut_off() {
    let stack = Stack::new().await;
    let api = stack
        .producer(&["--header-timeout=1s", "--body-idle-timeout=1s"])
        .await;
    let addr = host_port(&api);

    // Headers that never end.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut slow, Duration::from_secs(10))
            .await
            .is_some(),
        "a client that never finishes its headers is disconnected"
    );

    // A connection that says nothing at all, and one kept alive after its request.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    assert!(
        read_until_closed(&mut idle, Duration::from_secs(10))
            .await
            .is_some()
    );
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answered = read_until_closed(&mut kept, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // An upload whose body stops arriving half-way.
    let boundary = "xcamboundary";
    let zip = zip_of(&[("a.png", png(64, 64, 1))]);
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u.zip\"\r\nContent-Type: application/zip\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&zip[..zip.len() / 2]);
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        api.token,
        body.len() + zip.len()
    );
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&body).await.unwrap();
    let answer = read_until_closed(&mut stalled, Duration::from_secs(10))
        .await
        .expect("a stalled upload is answered and closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM batches")
        .fetch_one(&stack.db.pool)
        .await
        .unwrap();
    assert_eq!(batches, 0, "a stalled upload makes no batch");
    let (status, audit) = api.get_json("/v1/audit?action=upload").await;
    assert_eq!(status, 200);
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["detail"] == "body_timeout"),
        "the refusal is audited: {audit}"
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_scrapes_cannot_take_the_connections_of_uploads_and_reads() {
    let stack = Stack::new().await;
    // 8 connections: 1 for /metrics, 2 for uploads, 4 for the API, 1 for background work.
    let api = stack
        .producer(&["--db-max-connections=8", "--db-acquire-timeout=3s"])
        .await;
    // Every /metrics request now waits on the inference log, holding its connection.
    let mut blocker = stack.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE inference_log IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let scrapes: Vec<_> = (0..12)
        .map(|_| {
            let (client, url) = (api.client.clone(), api.url("/metrics"));
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = std::time::Instant::now();
    let (status, created) = api
        .upload(zip_of(&[("a.png", png(64, 64, 1))]), &[("model", "demo")])
        .await;
    assert_eq!(status, 202, "an upload gets its connections: {created}");
    let id = created["id"].as_str().unwrap();
    for path in ["/v1/batches".to_owned(), format!("/v1/batches/{id}")] {
        let (status, body) = api.get_json(&path).await;
        assert_eq!(status, 200, "{path} gets its connections: {body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "none of them waited for a connection ({:?})",
        started.elapsed()
    );
    blocker.rollback().await.unwrap();
    for scrape in scrapes {
        let status = scrape.await.unwrap().unwrap();
        assert!(
            [200, 503].contains(&status),
            "a scrape either waited its turn or was told the server is busy: {status}"
        );
    }
    stack.finish().await;
}

/// The test DICOM with one more element after its pixel data, declaring `length` bytes.
fn dicom_declaring(length: u32) -> Vec<u8> {
    let mut f = std::fs::read(repo_root().join("shared/tests/fixtures/cr_64.dcm")).unwrap();
    f.extend([0xE1, 0x7F, 0x10, 0x00]);
    f.extend(b"OB\0\0");
    f.extend(length.to_le_bytes());
    f.extend([0u8; 64]);
    f
}

/// A part-10 file whose deflated data set inflates to `inflated` bytes of one element.
fn deflated_dicom(inflated: usize) -> Vec<u8> {
    let syntax = b"1.2.840.10008.1.2.1.99\0";
    let mut f = vec![0u8; 128];
    f.extend(b"DICM");
    f.extend([0x02, 0x00, 0x10, 0x00]);
    f.extend(b"UI");
    f.extend((syntax.len() as u16).to_le_bytes());
    f.extend(syntax);
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&[0xE1, 0x7F, 0x10, 0x00]).unwrap();
    z.write_all(b"OB\0\0").unwrap();
    z.write_all(&(inflated as u32).to_le_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..inflated >> 20 {
        z.write_all(&zeros).unwrap();
    }
    f.extend(z.finish().unwrap());
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicom_lengths_are_checked_before_anything_is_allocated() {
    let stack = Stack::new().await;
    let api = stack
        .producer_process(&["--max-image-bytes=33554432"])
        .await;
    let before = api.peak_memory().expect("the producer's memory");
    let archive = zip_of(&[
        ("good.png", png(64, 64, 1)),
        ("declares_3gib.dcm", dicom_declaring(3 << 30)),
        ("inflates_256mib.dcm", deflated_dicom(256 << 20)),
    ]);
    let (status, created) = api.upload(archive, &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let report = xcam_tests::eventually(
        Duration::from_secs(120),
        "the batch to be ingested",
        || async {
            let (_, report) = api.get_json(&format!("/v1/batches/{id}/report")).await;
            (report["status"] != "ingesting").then_some(report)
        },
    )
    .await;
    assert_eq!(
        report["errors_by_code"],
        serde_json::json!({"corrupt_image": 1, "file_too_large": 1}),
        "{report}"
    );
    let message = report["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("(7FE1,0010) declares 3221225472 bytes"),
        "{message}"
    );
    let peak = api.peak_memory().unwrap();
    assert!(
        peak < before + (96 << 20),
        "the producer's peak memory went from {} to {} MiB",
        before >> 20,
        peak >> 20
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_ranges_are_bounded_and_reports_come_in_pages_naming_every_entry() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    // However far back a range is asked, the answer covers at most 31 days of hours or 366
    // of days, in whole buckets, and says from when.
    for (query, days, bucket_days, longest) in [
        ("since=30d&bucket=hour", 30.0, 1.0 / 24.0, 31.0),
        ("since=32d&bucket=hour", 31.0, 1.0 / 24.0, 31.0),
        ("since=52w&bucket=day", 364.0, 1.0, 366.0),
        ("since=400d", 366.0, 1.0, 366.0),
        ("since=2020-01-01T00:00:00Z", 366.0, 1.0, 366.0),
    ] {
        let (status, body) = api.get_json(&format!("/v1/stats?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        let since: chrono::DateTime<chrono::Utc> = body["since"].as_str().unwrap().parse().unwrap();
        let back = (chrono::Utc::now() - since).num_seconds() as f64 / 86_400.0;
        assert!(
            back <= longest && (back - days).abs() <= bucket_days + 0.01,
            "{query}: since {since}, {back} days back"
        );
        let whole = if bucket_days < 1.0 { 3600 } else { 86_400 };
        assert_eq!(
            since.timestamp() % whole,
            0,
            "{query}: {since} starts a bucket"
        );
    }

    // 12 entries: 4 not images, 2 system files, 2 refused, 4 images.
    let mut entries = Vec::new();
    for i in 0..12 {
        entries.push(match i % 6 {
            0 | 3 => (format!("notes{i}.txt"), b"not an image".to_vec()),
            1 => (format!("__MACOSX/._scan{i}.png"), b"resource fork".to_vec()),
            2 => (format!("tiny{i}.png"), png(8, 8, i)),
            _ => (format!("scan{i}.png"), png(64, 64, i)),
        });
    }
    let archive = zip_of(
        &entries
            .iter()
            .map(|(n, b)| (n.as_str(), b.clone()))
            .collect::<Vec<_>>(),
    );
    let (status, created) = api.upload(archive, &[("model", "demo")]).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (mut after, mut pages, mut listed) = (None::<i64>, 0, Vec::new());
    loop {
        let path = match after {
            Some(a) => format!("/v1/batches/{id}/report?limit=3&after={a}"),
            None => format!("/v1/batches/{id}/report?limit=3"),
        };
        let (status, page) = api.get_json(&path).await;
        assert_eq!(status, 200, "{page}");
        if page["status"] == "ingesting" {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        pages += 1;
        assert_eq!(
            page["skipped_by_reason"],
            serde_json::json!({"not_an_image": 4, "system_file": 2}),
            "every page carries the whole batch's tallies"
        );
        assert_eq!(
            page["errors_by_code"],
            serde_json::json!({"image_too_small": 2})
        );
        for s in page["skipped"].as_array().unwrap() {
            listed.push((
                s["entry_index"].as_i64().unwrap(),
                s["entry_name"].as_str().unwrap().to_owned(),
                s["reason"].as_str().unwrap().to_owned(),
            ));
        }
        for e in page["errors"].as_array().unwrap() {
            listed.push((
                e["entry_index"].as_i64().unwrap(),
                e["entry_name"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            ));
        }
        match page["next_after"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    listed.sort();
    let expected: Vec<(i64, String, String)> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 6 < 4)
        .map(|(i, (name, _))| {
            let why = match i % 6 {
                1 => "system_file",
                2 => "image_too_small",
                _ => "not_an_image",
            };
            (i as i64, name.clone(), why.to_owned())
        })
        .collect();
    assert_eq!(
        listed, expected,
        "every entry that is not a plain image, once"
    );
    assert_eq!(pages, 3, "8 entries, 3 a page");
    let (status, body) = api
        .get_json(&format!("/v1/batches/{id}/report?limit=0"))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request"))
    );
    stack.finish().await;
}
