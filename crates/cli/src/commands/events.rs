//! `sluice events send|show`.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::ApiArgs;
use crate::envelope::{action, report_error, success};

#[derive(Args)]
pub struct EventsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Send one event.
    Send {
        name: String,
        /// Event data as a JSON object.
        #[arg(long, default_value = "{}")]
        data: String,
        /// Idempotency id (deduplicated for 24 h).
        #[arg(long)]
        id: Option<String>,
        /// Event key (production mode).
        #[arg(long, env = "SLUICE_EVENT_KEY", default_value = "sluice-cli", hide_env_values = true)]
        event_key: String,
    },
    /// Show an event and the runs it triggered.
    Show { event_id: String },
}

pub async fn run(args: EventsArgs) -> i32 {
    let api = args.api;
    match args.command {
        EventsCommand::Send { name, data, id, event_key } => {
            let data: Value = match serde_json::from_str(&data) {
                Ok(v) => v,
                Err(e) => {
                    return report_error("events send", api.json, "SLUICE-1001", &format!("--data is not JSON: {e}"))
                }
            };
            let mut event = json!({ "name": name, "data": data });
            if let Some(id) = id {
                event["id"] = json!(id);
            }
            match api.request(reqwest::Method::POST, &format!("/e/{event_key}"), Some(event)).await {
                Ok(v) => {
                    let id = v["ids"][0].as_str().unwrap_or("").to_string();
                    if api.json {
                        println!(
                            "{}",
                            success(
                                "events send",
                                json!({"event_id": id, "status": "accepted"}),
                                vec![action(&format!("sluice events show {id}"), "See the runs this event triggered")]
                            )
                        );
                    } else {
                        println!("{id}");
                    }
                    0
                }
                Err(e) => report_error("events send", api.json, &e.code, &e.message),
            }
        }
        EventsCommand::Show { event_id } => {
            let event = api.request(reqwest::Method::GET, &format!("/v1/events/{event_id}"), None).await;
            let runs = api.request(reqwest::Method::GET, &format!("/v1/events/{event_id}/runs"), None).await;
            match (event, runs) {
                (Ok(event), Ok(runs)) => {
                    let mut result = event["data"].clone();
                    result["runs"] = runs["data"].clone();
                    if api.json {
                        println!(
                            "{}",
                            success("events show", result, vec![action("sluice runs show <run-id>", "Show a run")])
                        );
                    } else {
                        println!("{} {}", result["id"].as_str().unwrap_or(""), result["name"].as_str().unwrap_or(""));
                        for r in result["runs"].as_array().into_iter().flatten() {
                            println!(
                                "  {} {} {}",
                                r["run_id"].as_str().unwrap_or(""),
                                r["status"].as_str().unwrap_or(""),
                                r["function_id"].as_str().unwrap_or("")
                            );
                        }
                    }
                    0
                }
                (Err(e), _) | (_, Err(e)) => report_error("events show", api.json, &e.code, &e.message),
            }
        }
    }
}
