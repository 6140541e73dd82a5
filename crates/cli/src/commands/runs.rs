//! `sluice runs list|show|cancel`.

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::ApiArgs;
use crate::envelope::{action, report_error, success};

#[derive(Args)]
pub struct RunsArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: RunsCommand,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// List recent runs, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        function: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one run with its steps.
    Show { run_id: String },
    /// Cancel a run.
    Cancel { run_id: String },
}

pub async fn run(args: RunsArgs) -> i32 {
    let api = args.api;
    match args.command {
        RunsCommand::List { status, function, limit } => {
            let mut path = format!("/v1/runs?limit={limit}");
            if let Some(s) = &status {
                path.push_str(&format!("&status={s}"));
            }
            if let Some(f) = &function {
                path.push_str(&format!("&function_id={f}"));
            }
            match api.request(reqwest::Method::GET, &path, None).await {
                Ok(v) => {
                    let runs = v["data"].clone();
                    if api.json {
                        println!(
                            "{}",
                            success(
                                "runs list",
                                runs,
                                vec![action("sluice runs show <run-id>", "Show one run and its steps")]
                            )
                        );
                    } else {
                        println!("{:<28} {:<18} {:<40} STARTED", "RUN", "STATUS", "FUNCTION");
                        for r in runs.as_array().into_iter().flatten() {
                            println!(
                                "{:<28} {:<18} {:<40} {}",
                                r["run_id"].as_str().unwrap_or(""),
                                r["status"].as_str().unwrap_or(""),
                                r["function_id"].as_str().unwrap_or(""),
                                r["run_started_at"].as_str().unwrap_or("")
                            );
                        }
                    }
                    0
                }
                Err(e) => report_error("runs list", api.json, &e.code, &e.message),
            }
        }
        RunsCommand::Show { run_id } => {
            let run = api.request(reqwest::Method::GET, &format!("/v1/runs/{run_id}"), None).await;
            let steps = api.request(reqwest::Method::GET, &format!("/v1/runs/{run_id}/steps"), None).await;
            match (run, steps) {
                (Ok(run), Ok(steps)) => {
                    let mut result = run["data"].clone();
                    result["steps"] = steps["data"].clone();
                    if api.json {
                        println!(
                            "{}",
                            success(
                                "runs show",
                                result,
                                vec![action(&format!("sluice runs cancel {run_id}"), "Cancel this run")]
                            )
                        );
                    } else {
                        print_run(&result);
                    }
                    0
                }
                (Err(e), _) | (_, Err(e)) => report_error("runs show", api.json, &e.code, &e.message),
            }
        }
        RunsCommand::Cancel { run_id } => {
            match api.request(reqwest::Method::DELETE, &format!("/v1/runs/{run_id}"), None).await {
                Ok(v) => {
                    if api.json {
                        println!("{}", success("runs cancel", v["data"].clone(), vec![]));
                    } else {
                        println!("{run_id} {}", v["data"]["status"].as_str().unwrap_or(""));
                    }
                    0
                }
                Err(e) => report_error("runs cancel", api.json, &e.code, &e.message),
            }
        }
    }
}

fn print_run(r: &Value) {
    for key in ["run_id", "function_id", "status", "event_id", "run_started_at", "ended_at", "parked_reason"] {
        if !r[key].is_null() {
            println!("{key:<16} {}", r[key].as_str().map(str::to_string).unwrap_or_else(|| r[key].to_string()));
        }
    }
    for key in ["output", "error"] {
        if !r[key].is_null() {
            println!("{key:<16} {}", r[key]);
        }
    }
    println!("steps:");
    for s in r["steps"].as_array().into_iter().flatten() {
        println!("  {:>3} {:<24} {}", s["seq"], s["name"].as_str().unwrap_or(""), s["value"]);
    }
}
