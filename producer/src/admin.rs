//! `xcam project …` and `xcam token …`: managing who may call the API. Like `xcam migrate`
//! these talk to Postgres directly, so they need its credentials rather than a token, and each
//! change leaves an audit row naming the operating-system user who made it.

use anyhow::Context;
use chrono::Utc;
use clap::{Args, Subcommand};
use sqlx::PgPool;
use xcam_shared::{
    access::{self, Action, Outcome, Role},
    config::DatabaseArgs,
    db::{
        self,
        access::{NewToken, TokenError},
        audit::NewAuditEntry,
    },
    targets::Faithfulness,
};

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project (lower-case letters, digits, `_`, `-`).
    Create {
        name: String,
        /// Pseudonymise entry names of every upload to it unless the upload says otherwise.
        #[arg(long)]
        pseudonymize_names: bool,
        /// Delete its finished batches this long after they finish (`30d`), whatever the
        /// server's XCAM_RETENTION says.
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<std::time::Duration>,
        /// Faithfulness measures its uploads get unless they say otherwise: off, drop or full.
        #[arg(long, default_value = "off")]
        faithfulness: Faithfulness,
    },
    /// Set how long a project's finished batches are kept: a period (`30d`, `12h`), or
    /// `server` for the server's XCAM_RETENTION.
    Retention { name: String, period: String },
    /// Set the faithfulness measures a project's uploads get unless they say otherwise: off,
    /// drop (confidence drop and increase: one more forward per map) or full (also deletion
    /// and insertion AUC).
    Faithfulness {
        name: String,
        faithfulness: Faithfulness,
    },
    /// List the projects.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it once, as the last line (only its hash is kept).
    Create(TokenCreateArgs),
    /// List the tokens (never their secrets).
    List,
    /// Revoke the live token of that name; it is refused from its next request on.
    Revoke { name: String },
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// A name to know it by in lists and the audit trail.
    #[arg(long)]
    pub name: String,
    /// viewer, submitter, operator or admin.
    #[arg(long)]
    pub role: Role,
    /// A project it covers (repeat for several); none: all projects (operator and admin only).
    #[arg(long = "project")]
    pub projects: Vec<String>,
    /// How long it lives (`90d`, `12h`); without it, until revoked.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Option<std::time::Duration>,
}

pub async fn project(db: &DatabaseArgs, command: ProjectCommand) -> anyhow::Result<u8> {
    let pool = connect(db).await?;
    match command {
        ProjectCommand::Create {
            name,
            pseudonymize_names,
            retention,
            faithfulness,
        } => {
            access::check_project_name(&name).map_err(anyhow::Error::msg)?;
            let retention = retention.map(seconds).transpose()?;
            let created = db::access::create_project(&pool, &name, pseudonymize_names).await?;
            let Some(project) = created else {
                anyhow::bail!("a project named {name:?} exists already");
            };
            audit(&pool, Action::CreateProject, Some(&project.name), None).await?;
            if retention.is_some() {
                db::access::set_retention(&pool, &name, retention).await?;
                let detail = format!("retention {}", retention_text(retention));
                audit(&pool, Action::SetRetention, Some(&name), Some(&detail)).await?;
            }
            if faithfulness != Faithfulness::Off {
                set_faithfulness(&pool, &name, faithfulness).await?;
            }
            println!("project {} created", project.name);
        }
        ProjectCommand::Faithfulness { name, faithfulness } => {
            if !set_faithfulness(&pool, &name, faithfulness).await? {
                anyhow::bail!("no project named {name:?}");
            }
            println!("project {name}: uploads measure faithfulness {faithfulness} by default");
        }
        ProjectCommand::Retention { name, period } => {
            let retention = match period.as_str() {
                "server" => None,
                period => Some(seconds(humantime::parse_duration(period).with_context(
                    || format!("{period:?} is not a period like 30d or 12h"),
                )?)?),
            };
            if !db::access::set_retention(&pool, &name, retention).await? {
                anyhow::bail!("no project named {name:?}");
            }
            let detail = format!("retention {}", retention_text(retention));
            audit(&pool, Action::SetRetention, Some(&name), Some(&detail)).await?;
            println!(
                "project {name}: finished batches kept {}",
                retention_text(retention)
            );
        }
        ProjectCommand::List => {
            for p in db::access::projects(&pool).await? {
                let names = if p.pseudonymize_names {
                    "pseudonymised names"
                } else {
                    "names as uploaded"
                };
                println!(
                    "{:<32} {names:<20} kept {:<18} faithfulness {:<5} created {}",
                    p.name,
                    retention_text(p.retention_seconds),
                    p.faithfulness,
                    p.created_at.to_rfc3339()
                );
            }
        }
    }
    Ok(0)
}

/// Sets a project's default faithfulness and audits it; whether the project exists.
async fn set_faithfulness(
    pool: &PgPool,
    name: &str,
    faithfulness: Faithfulness,
) -> anyhow::Result<bool> {
    if !db::access::set_faithfulness(pool, name, faithfulness).await? {
        return Ok(false);
    }
    let detail = format!("faithfulness {faithfulness}");
    audit(pool, Action::SetFaithfulness, Some(name), Some(&detail)).await?;
    Ok(true)
}

/// A retention period in whole seconds, as the projects table keeps it.
fn seconds(period: std::time::Duration) -> anyhow::Result<i64> {
    match i64::try_from(period.as_secs()) {
        Ok(s) if s > 0 => Ok(s),
        _ => anyhow::bail!("a retention period must be at least one second"),
    }
}

fn retention_text(seconds: Option<i64>) -> String {
    match seconds {
        Some(s) => humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string(),
        None => "per server".into(),
    }
}

pub async fn token(db: &DatabaseArgs, command: TokenCommand) -> anyhow::Result<u8> {
    let pool = connect(db).await?;
    match command {
        TokenCommand::Create(args) => {
            access::check_token_name(&args.name).map_err(anyhow::Error::msg)?;
            let expires_at = args
                .expires
                .map(|d| chrono::Duration::from_std(d).map(|d| Utc::now() + d))
                .transpose()
                .context("--expires is too far away")?;
            let secret = access::new_secret(access::TOKEN_PREFIX);
            let made = db::access::create_token(
                &pool,
                &NewToken {
                    name: &args.name,
                    role: args.role,
                    projects: &args.projects,
                    expires_at,
                    secret: &secret,
                },
            )
            .await;
            let record = match made {
                Ok(r) => r,
                Err(TokenError::Db(e)) => return Err(e.into()),
                Err(refused) => anyhow::bail!("{refused}"),
            };
            let detail = format!("{} token {}", record.role, record.name);
            audit(&pool, Action::CreateToken, None, Some(&detail)).await?;
            println!(
                "token {} ({}, {}, {}); it is shown this once:",
                record.name,
                record.role,
                projects_of(&record.projects),
                record.expires_at.map_or("no expiry".into(), |t| format!(
                    "expires {}",
                    t.to_rfc3339()
                ))
            );
            println!("{secret}");
        }
        TokenCommand::List => {
            println!(
                "{:<24} {:<10} {:<24} {:<10} expires",
                "name", "role", "projects", "state"
            );
            let now = Utc::now();
            for t in db::access::tokens(&pool).await? {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else if t.expires_at.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "live"
                };
                println!(
                    "{:<24} {:<10} {:<24} {:<10} {}",
                    t.name,
                    t.role,
                    projects_of(&t.projects),
                    state,
                    t.expires_at.map_or("never".into(), |e| e.to_rfc3339())
                );
            }
        }
        TokenCommand::Revoke { name } => {
            if !db::access::revoke_token(&pool, &name).await? {
                anyhow::bail!("no live token named {name:?} (xcam token list)");
            }
            audit(&pool, Action::RevokeToken, None, Some(&name)).await?;
            println!("token {name} revoked");
        }
    }
    Ok(0)
}

async fn connect(db: &DatabaseArgs) -> anyhow::Result<PgPool> {
    let pool = db::connect(db).await?;
    db::migrate(&pool).await?;
    Ok(pool)
}

fn projects_of(names: &[String]) -> String {
    if names.is_empty() {
        "all projects".into()
    } else {
        names.join(",")
    }
}

/// The audit row of a change made from the command line: the actor is the local user.
async fn audit(
    pool: &PgPool,
    action: Action,
    project: Option<&str>,
    detail: Option<&str>,
) -> anyhow::Result<()> {
    let user = ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let actor = format!("local:{user}");
    db::audit::append(
        pool,
        &NewAuditEntry {
            token_name: Some(&actor),
            role: None,
            action,
            project,
            batch_id: None,
            item_id: None,
            client: Some("xcam cli"),
            outcome: Outcome::Ok,
            status: None,
            detail,
        },
    )
    .await
    .context("writing the audit row")
}
