//! `sluice apps list|sync`.

use clap::{Args, Subcommand};
use serde_json::json;

use crate::client::ApiArgs;
use crate::envelope::{action, report_error, success};

#[derive(Args)]
pub struct AppsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: AppsCommand,
}

#[derive(Subcommand)]
enum AppsCommand {
    /// List synced apps.
    List,
    /// Ask sluice to sync the SDK at URL (and keep re-syncing it while unreachable).
    Sync { url: String },
}

pub async fn run(args: AppsArgs) -> i32 {
    let api = args.api;
    match args.command {
        AppsCommand::List => match api.request(reqwest::Method::GET, "/v1/apps", None).await {
            Ok(v) => {
                let apps = v["data"].clone();
                if api.json {
                    println!("{}", success("apps list", apps, vec![action("sluice apps sync <url>", "Sync an app")]));
                } else {
                    println!("{:<24} {:<12} {:>9} URL", "APP", "STATUS", "FUNCTIONS");
                    for a in apps.as_array().into_iter().flatten() {
                        println!(
                            "{:<24} {:<12} {:>9} {}",
                            a["id"].as_str().unwrap_or(""),
                            a["status"].as_str().unwrap_or(""),
                            a["function_count"],
                            a["url"].as_str().unwrap_or("")
                        );
                    }
                }
                0
            }
            Err(e) => report_error("apps list", api.json, &e.code, &e.message),
        },
        AppsCommand::Sync { url } => {
            match api.request(reqwest::Method::POST, "/v1/apps/sync", Some(json!({ "url": url }))).await {
                Ok(v) => {
                    if api.json {
                        println!(
                            "{}",
                            success("apps sync", v["data"].clone(), vec![action("sluice apps list", "List apps")])
                        );
                    } else {
                        println!(
                            "{} synced ({} functions)",
                            v["data"]["app_id"].as_str().unwrap_or(""),
                            v["data"]["function_count"]
                        );
                    }
                    0
                }
                Err(e) => report_error("apps sync", api.json, &e.code, &e.message),
            }
        }
    }
}
