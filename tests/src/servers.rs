//! Private Redis, Postgres and S3 servers for the tests that stop and restart them (the shared
//! ones serve every other test in parallel and must stay up).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Where a private server runs: on loopback, or at an address inside a network namespace (one
/// of the "hosts" of `hosts::many_hosts…`).
#[derive(Debug, Clone)]
pub struct Place {
    pub netns: Option<String>,
    pub ip: String,
}

impl Place {
    pub fn loopback() -> Self {
        Self {
            netns: None,
            ip: "127.0.0.1".into(),
        }
    }

    /// `program`, to be run inside the namespace when there is one.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redis-server child with append-only persistence, restartable on the same port and data.
pub struct PrivateRedis {
    pub port: u16,
    place: Place,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        Self::start_at(Place::loopback())
    }

    pub fn start_at(place: Place) -> Self {
        let mut r = Self {
            port: free_port(),
            place,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}/", self.place.ip, self.port)
    }

    fn spawn(&mut self) {
        let child = self
            .place
            .command("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                &self.place.ip,
                // Off loopback only on the test's own private network.
                "--protected-mode",
                if self.place.netns.is_some() {
                    "no"
                } else {
                    "yes"
                },
                "--appendonly",
                "yes",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let port = self.port.to_string();
        wait_until("redis", || {
            Command::new("redis-cli")
                .args(["-h", &self.place.ip, "-p", &port, "ping"])
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        });
    }

    /// A clean shutdown (the append-only file is flushed), then a start on the same data.
    pub fn restart(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        self.spawn();
    }
}

impl PrivateRedis {
    /// Stops without saving and starts again with nothing: every key is gone, as after a
    /// failover to an empty replica or a lost volume.
    pub fn restart_empty(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for entry in std::fs::read_dir(self.dir.path()).expect("redis dir") {
            let path = entry.expect("redis file").path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("remove redis data");
            } else {
                std::fs::remove_file(&path).expect("remove redis data");
            }
        }
        self.spawn();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A throwaway Postgres cluster. As root it runs as the unprivileged `postgres` user, since
/// Postgres refuses to run as root.
pub struct PrivatePostgres {
    pub port: u16,
    place: Place,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl PrivatePostgres {
    pub fn start() -> Self {
        Self::start_at(Place::loopback())
    }

    pub fn start_at(place: Place) -> Self {
        let bin = std::env::var("XCAM_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .expect("postgres installed")
                    .map(|e| e.unwrap().path().join("bin"))
                    .collect();
                found.sort();
                found.pop().expect("a postgres version")
            });
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .expect("chown");
        }
        let pg = Self {
            port: free_port(),
            place,
            dir,
            bin,
        };
        let out = pg.run(
            "initdb",
            &[
                "-D",
                pg.data().to_str().unwrap(),
                "-U",
                "xcam",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if pg.place.netns.is_some() {
            // The other hosts of the test's private network connect over it.
            use std::io::Write;
            let hba = pg.data().join("pg_hba.conf");
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(hba)
                .expect("pg_hba");
            writeln!(file, "host all all 0.0.0.0/0 trust").expect("pg_hba");
        }
        pg.up();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = self.place.command("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            self.place.command(exe)
        };
        cmd.args(args).output().expect("postgres tool runs")
    }

    pub fn url(&self) -> String {
        format!("postgres://xcam@{}:{}/postgres", self.place.ip, self.port)
    }

    pub fn up(&self) {
        let opts = format!(
            "-h {} -p {} -k {} -c fsync=off",
            self.place.ip,
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &opts,
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn down(&self) {
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl PrivatePostgres {
    /// Every session refuses writes from now on (as a primary being failed over does), or
    /// accepts them again.
    pub async fn read_only(&self, on: bool) {
        let admin = sqlx::PgPool::connect(&self.url())
            .await
            .expect("admin connection");
        let mut conn = admin.acquire().await.expect("admin connection");
        // One statement per call: ALTER SYSTEM refuses to run in the implicit transaction a
        // multi-statement query gets.
        let statements: &[&'static str] = if on {
            &["ALTER SYSTEM SET default_transaction_read_only = on"]
        } else {
            &[
                "SET default_transaction_read_only = off",
                "ALTER SYSTEM RESET default_transaction_read_only",
            ]
        };
        for sql in statements.iter().chain(&["SELECT pg_reload_conf()"]) {
            sqlx::raw_sql(*sql).execute(&mut *conn).await.expect(sql);
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}

/// A SeaweedFS S3 server (`weed mini`, the binary `scripts/services.sh` installs) of its own,
/// stoppable and restartable on the same ports and data, for the blob-store outage tests.
pub struct PrivateS3 {
    pub server: crate::blobs::S3Server,
    place: Place,
    ports: [u16; 8],
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateS3 {
    pub fn start() -> Self {
        Self::start_at(Place::loopback())
    }

    pub fn start_at(place: Place) -> Self {
        let shared = crate::blobs::S3Server::shared();
        let ports = std::array::from_fn(|_| free_port());
        let mut s3 = Self {
            server: crate::blobs::S3Server {
                endpoint: format!("http://{}:{}", place.ip, ports[0]),
                ..shared
            },
            place,
            ports,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        s3.up();
        s3
    }

    /// Starts the server (again), and returns once it answers HTTP.
    pub fn up(&mut self) {
        let weed = std::env::var("XCAM_WEED").expect("XCAM_WEED (scripts/services.sh env)");
        let [
            s3,
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3_grpc,
        ] = self.ports;
        let child = self
            .place
            .command(weed)
            .arg("mini")
            .arg(format!("-dir={}", self.dir.path().display()))
            .arg(format!("-ip={}", self.place.ip))
            .arg(format!("-ip.bind={}", self.place.ip))
            .args([
                "-master.telemetry=false",
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-bucket=xcam",
            ])
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .env("AWS_ACCESS_KEY_ID", &self.server.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.server.secret_key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weed runs");
        self.child = Some(child);
        wait_until("SeaweedFS", || http_answers(&self.place.ip, s3));
    }

    /// Stops the server: every request is refused until [`PrivateS3::up`].
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether an HTTP server on the port answers a request (any status).
fn http_answers(ip: &str, port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect((ip, port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 12];
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
        && conn.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
}
