//! `edgeinfer rollout status|start|pause|resume|promote|abort --server URL --model M`: a
//! model's automated rollout through the admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{Value, json};

use super::traffic::{Target, admin_url, call, call_with};

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Print the rollout: state, candidate, stable, step, each check against its threshold,
    /// the decisions so far.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the JSON the server answers (`state`, `candidate`, `stable`, `step`,
        /// `reason`, `checks`, `decisions`...).
        #[arg(long)]
        json: bool,
    },
    /// Start a rollout of a loaded version against the version serving most traffic.
    Start {
        #[command(flatten)]
        target: Target,
        /// The version to roll out.
        #[arg(long)]
        candidate: u64,
        /// A TOML file with the policy (`steps = [...]`, thresholds; a `[rollout]` table or
        /// bare keys); default: the model's `[rollout]`, else the documented defaults.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Hold the rollout at its step; traffic stays as it is.
    Pause {
        #[command(flatten)]
        target: Target,
    },
    /// Go on from the step it was paused at (the step's window starts again).
    Resume {
        #[command(flatten)]
        target: Target,
    },
    /// Give the candidate all traffic now, skipping the remaining steps.
    Promote {
        #[command(flatten)]
        target: Target,
    },
    /// Stop the rollout and put all traffic back on the stable version.
    Abort {
        #[command(flatten)]
        target: Target,
    },
}

pub fn rollout(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let (target, command) = match args.command {
        RolloutCommand::Status { target, json } => {
            let url = admin_url(&target, "rollout");
            if json {
                return call(Method::GET, &url, target.token.as_deref(), None);
            }
            return call_with(Method::GET, &url, target.token.as_deref(), None, |v| Ok(describe(v)));
        }
        RolloutCommand::Start { target, candidate, policy } => {
            let mut body =
                json!({"candidate": candidate.to_string(), "reason": target.reason.clone().unwrap_or_default()});
            if let Some(path) = policy {
                body["policy"] = read_policy(&path)?;
            }
            return call(Method::POST, &admin_url(&target, "rollout"), target.token.as_deref(), Some(body));
        }
        RolloutCommand::Pause { target } => (target, "pause"),
        RolloutCommand::Resume { target } => (target, "resume"),
        RolloutCommand::Promote { target } => (target, "promote"),
        RolloutCommand::Abort { target } => (target, "abort"),
    };
    let body = json!({"reason": target.reason.clone().unwrap_or_default()});
    let url = admin_url(&target, &format!("rollout/{command}"));
    call_with(Method::POST, &url, target.token.as_deref(), Some(body), |v| Ok(describe(v)))
}

/// A policy file as JSON: its `[rollout]` table, or the whole file.
fn read_policy(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    let policy = match table.get("rollout") {
        Some(toml::Value::Table(rollout)) => rollout.clone(),
        _ => table,
    };
    Ok(serde_json::to_value(policy)?)
}

/// The status in a few lines.
fn describe(status: &Value) -> String {
    let text = |key: &str| status[key].as_str().unwrap_or("-").to_string();
    if status["state"] == "none" {
        return format!("model {}: no rollout", text("model"));
    }
    let mut lines = vec![format!(
        "model {}: rollout of version {} against {} is {} at step {} (\"{}\")",
        text("model"),
        text("candidate"),
        text("stable"),
        text("state"),
        status["step"],
        text("step_name")
    )];
    if !text("reason").is_empty() {
        lines.push(format!("  reason: {}", text("reason")));
    }
    for check in status["checks"].as_array().into_iter().flatten() {
        let value = check["value"].as_f64().map_or("n/a".to_string(), |v| format!("{v:.4}"));
        lines.push(format!(
            "  {:<15} {:>10}  {} {}  ({} samples) {}",
            check["name"].as_str().unwrap_or("?"),
            value,
            check["bound"].as_str().unwrap_or(""),
            check["threshold"],
            check["samples"],
            check["status"].as_str().unwrap_or("")
        ));
    }
    for decision in status["decisions"].as_array().into_iter().flatten() {
        lines.push(format!(
            "  {} {} step {}: {}",
            decision["time"].as_str().unwrap_or(""),
            decision["action"].as_str().unwrap_or(""),
            decision["step"],
            decision["reason"].as_str().unwrap_or("")
        ));
    }
    lines.join("\n")
}
