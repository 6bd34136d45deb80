//! The `xcam` command line.

use clap::{Parser, Subcommand};
use xcam_shared::config::{DatabaseArgs, TelemetryArgs};

use crate::{
    admin::{self, ProjectCommand, TokenCommand},
    client::{self, ClientCommand},
    config::ServeArgs,
};

#[derive(Debug, Parser)]
#[command(
    name = "xcam",
    version,
    about = "Batch Grad-CAM for chest X-ray classifiers: the API server and its command line."
)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub target: client::Target,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (applies migrations first).
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Projects, which every batch belongs to (talks to Postgres directly).
    Project {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// API tokens and their roles (talks to Postgres directly).
    Token {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(subcommand)]
        command: TokenCommand,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

/// Runs the command; returns the process's exit status.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => crate::serve(*args).await.map(|()| 0),
        Command::Migrate { db } => {
            let pool = xcam_shared::db::connect(&db).await?;
            xcam_shared::db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(0)
        }
        Command::Project { db, command } => admin::project(&db, command).await,
        Command::Token { db, command } => admin::token(&db, command).await,
        Command::Client(command) => Ok(client::run(&cli.target, command).await),
    }
}
