//! `sluice`: stdout carries only data (JSON or tables); logs, progress and errors go to stderr.

mod client;
mod commands;
mod envelope;
mod hints;
mod settings;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice", version, about = "A durable-execution runtime for Inngest SDK functions")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run sluice in dev mode: no keys, embedded SQLite under ./.sluice/, syncs -u apps.
    Dev(settings::ServerArgs),
    /// Run sluice in production mode: signing key and event keys required.
    Start(settings::ServerArgs),
    /// Inspect and cancel runs.
    Runs(commands::runs::RunsArgs),
    /// Send and inspect events.
    Events(commands::events::EventsArgs),
    /// List and sync apps.
    Apps(commands::apps::AppsArgs),
    /// Find and repair stuck runs, orphaned claims, broken chains (--fix previews, --apply repairs).
    Doctor(commands::doctor::DoctorArgs),
    /// Deploy a new worker through the gates (warm → callback probe → drain → cutover → bake), or verify-runtime.
    Deploy(commands::deploy::DeployArgs),
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Dev(args) => commands::serve::run(args, settings::Mode::Dev).await,
            Command::Start(args) => commands::serve::run(args, settings::Mode::Production).await,
            Command::Runs(args) => commands::runs::run(args).await,
            Command::Events(args) => commands::events::run(args).await,
            Command::Apps(args) => commands::apps::run(args).await,
            Command::Doctor(args) => commands::doctor::run(args).await,
            Command::Deploy(args) => commands::deploy::run(args).await,
        }
    });
    std::process::exit(code);
}
