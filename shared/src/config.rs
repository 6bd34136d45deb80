//! Configuration groups shared by the binaries. Each binary `#[command(flatten)]`s the groups
//! it needs, so every setting has one name, one env variable and one `--help` line.

use std::time::Duration;

use clap::Args;

/// Where Postgres is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres connection URL, e.g. postgres://xcam@127.0.0.1:5432/xcam.
    #[arg(long = "database-url", env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Largest number of Postgres connections this process opens.
    #[arg(
        long = "db-max-connections",
        env = "XCAM_DB_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub max_connections: u32,

    /// How long to wait for a Postgres connection before giving up.
    #[arg(long = "db-acquire-timeout", env = "XCAM_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub acquire_timeout: Duration,
}

/// Where Redis is.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis connection URL, e.g. redis://127.0.0.1:6379/.
    #[arg(long = "redis-url", env = "REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// Prefix of every queue name, so that several deployments (or tests) can share one Redis.
    #[arg(
        long = "queue-prefix",
        env = "XCAM_QUEUE_PREFIX",
        default_value = "xcam"
    )]
    pub queue_prefix: String,

    /// A worker silent for this long is presumed dead and its jobs go to the other workers.
    #[arg(long = "orphan-after", env = "XCAM_ORPHAN_AFTER", default_value = "15s", value_parser = humantime::parse_duration)]
    pub orphan_after: Duration,
}

/// Where blobs (images, overlays, CAMs) live.
#[derive(Debug, Clone, Args)]
pub struct BlobArgs {
    /// Blob store URL: file:///absolute/dir for a local directory (the default is .xcam/blobs
    /// under the working directory), or s3://BUCKET/PREFIX, configured by the standard
    /// variables (AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ALLOW_HTTP, AWS_VIRTUAL_HOSTED_STYLE_REQUEST, …).
    #[arg(long = "blob-url", env = "XCAM_BLOB_URL", value_name = "URL")]
    pub blob_url: Option<String>,
    /// An S3 setting that overrides its AWS_* variable, as KEY=VALUE with object_store's names
    /// (aws_endpoint=http://10.0.0.5:8333, aws_allow_http=true); repeatable. Keep secrets in
    /// the environment, where other users' `ps` cannot see them.
    #[arg(long = "blob-option", value_name = "KEY=VALUE", value_parser = key_value)]
    pub blob_options: Vec<(String, String)>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// How logs are written.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format: `text` for people, `json` for log shippers. Filter with RUST_LOG.
    #[arg(long = "log-format", env = "XCAM_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// A required setting that was not given, named by its env variable so the fix is obvious.
pub fn required<'a>(value: &'a Option<String>, env: &str, hint: &str) -> anyhow::Result<&'a str> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => anyhow::bail!("{env} is not set: {hint}"),
    }
}

/// The hint printed when a service URL is missing or the service does not answer.
pub const SERVICES_HINT: &str = "start the project's private servers with `make services` and `eval \"$(scripts/services.sh env)\"`, or point it at yours";

/// A connection URL with its password blanked, fit for an error message.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_blanks_the_password_and_keeps_the_rest() {
        assert_eq!(
            redact("postgres://xcam:s3cret@db:5432/xcam"),
            "postgres://xcam:***@db:5432/xcam"
        );
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(redact("not a url"), "<unparseable URL>");
    }
}
