//! The `xcam` command line against a real API and worker.

use std::process::Command;

use xcam_tests::{Stack, bin, demo_samples_zip, repo_root};

/// The `xcam` command line aimed at an API, with a token.
#[derive(Clone)]
pub struct Xcam {
    pub url: String,
    pub token: String,
}

impl Xcam {
    pub fn of(api: &xcam_tests::Producer) -> Self {
        Self {
            url: api.base.clone(),
            token: api.token.clone(),
        }
    }

    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        xcam(
            &[("XCAM_URL", &self.url), ("XCAM_TOKEN", &self.token)],
            args,
        )
    }
}

/// Runs `xcam` with these environment variables.
pub fn xcam(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("xcam"))
        .args(args)
        .env_remove("XCAM_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_export_and_query_from_the_command_line() {
    let stack = Stack::new().await;
    let api = stack.producer(&[]).await;
    let _worker = stack.worker("a", &[]);
    let cli = Xcam::of(&api);
    let out = tempfile::tempdir().unwrap();
    let csv_path = out.path().join("report.csv");
    let samples = repo_root().join("models/demo/samples/samples.zip");

    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let (cli, samples, csv_path) = (cli.clone(), samples.clone(), csv_path.clone());
        move || {
            cli.run(&[
                "submit",
                samples.to_str().unwrap(),
                "--model",
                "demo",
                "--wait",
                "--csv",
                csv_path.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "every item succeeded: {stdout}\n{stderr}");
    assert!(
        stderr.contains("36/36 processed"),
        "plain progress lines without a terminal: {stderr}"
    );
    let rows = csv::Reader::from_path(&csv_path).unwrap().records().count();
    assert_eq!(rows, 36);
    let batch = stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();

    let (code, stdout, _) = cli.run(&["status", &batch]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("succeeded") && stdout.contains("36 succeeded"),
        "{stdout}"
    );
    let (code, stdout, _) = cli.run(&["status"]);
    assert!(code == 0 && stdout.contains(&batch), "{stdout}");
    let exported = out.path().join("again.csv");
    let (code, _, _) = cli.run(&["export", &batch, "-o", exported.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read(&exported).unwrap(),
        std::fs::read(&csv_path).unwrap()
    );
    let (code, stdout, _) = cli.run(&[
        "logs", "--batch", &batch, "--limit", "100", "--format", "csv",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        csv::Reader::from_reader(stdout.as_bytes())
            .records()
            .count(),
        36
    );
    let page = [
        "logs",
        "--since",
        "1h",
        "--status",
        "succeeded",
        "--limit",
        "5",
    ];
    let (code, stdout, _) = cli.run(&page);
    assert!(code == 0 && stdout.lines().count() >= 6, "{stdout}");
    let cursor = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("(more: repeat with --cursor "))
        .map(|c| c.trim_end_matches(')').to_owned())
        .expect("a next page");
    let (code, next, _) = cli.run(&[&page[..], &["--cursor", &cursor]].concat());
    assert!(
        code == 0 && next.lines().nth(1) != stdout.lines().nth(1),
        "the second page starts elsewhere:\n{stdout}\n{next}"
    );
    let (code, stdout, _) = cli.run(&["stats", "--since", "1d", "--bucket", "hour"]);
    assert!(
        code == 0
            && stdout.contains("36 inferences")
            && stdout.contains("model demo: 36 inferences, 0 failed, p50 "),
        "{stdout}"
    );
    let (code, stdout, _) = cli.run(&["workers"]);
    assert!(
        code == 0 && stdout.contains("cpu") && stdout.contains("demo"),
        "{stdout}"
    );

    // The fleet in Prometheus' format.
    let (status, metrics) = api.get_text("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "xcam_queue_depth{model=\"demo\"} 0",
        "# TYPE xcam_open_batches gauge",
        "# TYPE xcam_open_items gauge",
        "xcam_worker_jobs_total{worker=",
        "xcam_worker_last_heartbeat_seconds{worker=",
        "xcam_http_requests_total{route=\"/v1/batches/{id}\",method=\"GET\",status=\"200\"}",
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");
    }

    // Some entries rejected: a distinct exit status.
    let mixed = out.path().join("mixed.zip");
    let mut entries: Vec<(&str, Vec<u8>)> =
        vec![("bad.png", b"\x89PNG\r\n\x1a\ntruncated".to_vec())];
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(demo_samples_zip())).unwrap();
    let mut first = Vec::new();
    std::io::Read::read_to_end(&mut archive.by_index(0).unwrap(), &mut first).unwrap();
    entries.push(("good.png", first));
    std::fs::write(&mixed, xcam_tests::zip_of(&entries)).unwrap();
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let (cli, mixed) = (cli.clone(), mixed.clone());
        move || {
            cli.run(&[
                "submit",
                mixed.to_str().unwrap(),
                "--model",
                "demo",
                "--wait",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 3, "{stdout}\n{stderr}");

    // Errors are one line with the code; an unreachable server names the URL.
    let (code, _, stderr) = cli.run(&["submit", samples.to_str().unwrap(), "--model", "nope"]);
    assert_eq!(code, 1);
    assert!(
        stderr.trim().starts_with("error: unknown_model:") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    let (code, _, stderr) = cli.run(&["cancel", &batch]);
    assert!(code == 1 && stderr.contains("conflict"), "{stderr}");
    let (code, _, stderr) = Xcam {
        url: "http://127.0.0.1:9".into(),
        ..cli.clone()
    }
    .run(&["workers"]);
    assert!(
        code == 1 && stderr.contains("cannot reach the xcam API at http://127.0.0.1:9"),
        "{stderr}"
    );
    stack.finish().await;
}
