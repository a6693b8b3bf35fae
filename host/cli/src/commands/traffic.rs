//! `edgeinfer traffic --server URL --model M [1=90 2=10] [--shadow 3]` and
//! `edgeinfer rollback --server URL --model M`: the admin API from the command line.

use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value, json};

/// Which server and model.
#[derive(Debug, Args)]
pub struct Target {
    /// The edgeinfer server, e.g. http://127.0.0.1:8000.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    server: String,
    /// The model.
    #[arg(long)]
    model: String,
    /// Why, recorded in the history log.
    #[arg(long)]
    pub(super) reason: Option<String>,
    /// Bearer token with the admin scope (when the server has auth = "tokens").
    #[arg(long, env = "EDGEINFER_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,
}

#[derive(Debug, Args)]
pub struct TrafficArgs {
    #[command(flatten)]
    target: Target,
    /// New split as VERSION=PERCENT pairs summing to 100, e.g. `1=90 2=10`; none prints the
    /// current split.
    split: Vec<String>,
    /// A version that gets a copy of each request and never answers.
    #[arg(long)]
    shadow: Option<u64>,
    /// Share of requests copied to the shadow, in percent.
    #[arg(long)]
    shadow_percent: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    target: Target,
}

pub fn traffic(args: TrafficArgs) -> anyhow::Result<ExitCode> {
    let url = admin_url(&args.target, "traffic");
    if args.split.is_empty() {
        if args.shadow.is_some() || args.shadow_percent.is_some() {
            bail!("--shadow needs a split too, e.g. `1=100 --shadow 2`");
        }
        return call(Method::GET, &url, args.target.token.as_deref(), None);
    }
    let mut split = Map::new();
    for pair in &args.split {
        let (version, weight) =
            pair.split_once('=').with_context(|| format!("`{pair}` is not VERSION=PERCENT, e.g. 2=10"))?;
        let weight: u64 = weight.parse().with_context(|| format!("`{pair}`: percent must be a whole number"))?;
        split.insert(version.to_string(), Value::from(weight));
    }
    let mut body = json!({"split": split, "reason": args.target.reason.clone().unwrap_or_default()});
    if let Some(shadow) = args.shadow {
        body["shadow"] = Value::from(shadow.to_string());
    }
    if let Some(percent) = args.shadow_percent {
        body["shadow_percent"] = Value::from(percent);
    }
    call(Method::PUT, &url, args.target.token.as_deref(), Some(body))
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let body = json!({"reason": args.target.reason.clone().unwrap_or_default()});
    call(Method::POST, &admin_url(&args.target, "rollback"), args.target.token.as_deref(), Some(body))
}

pub(super) fn admin_url(target: &Target, action: &str) -> String {
    format!("{}/v2/admin/models/{}/{action}", target.server.trim_end_matches('/'), target.model)
}

/// Sends one request; prints the JSON answer, or the server's error and exits 1.
pub(super) fn call(method: Method, url: &str, token: Option<&str>, body: Option<Value>) -> anyhow::Result<ExitCode> {
    call_with(method, url, token, body, |value| Ok(serde_json::to_string_pretty(value)?))
}

/// Sends one request; prints `show` of the JSON answer, or the server's error and exits 1.
pub(super) fn call_with(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
    show: impl FnOnce(&Value) -> anyhow::Result<String>,
) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (status, text) = tokio.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = Request::builder().method(method).uri(url).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(payload))).with_context(|| format!("bad server URL {url}"))?;
        let response = client.request(request).await.with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let bytes = response.into_body().collect().await.context("reading the answer")?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    })?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        println!("{}", show(&value)?);
        Ok(ExitCode::SUCCESS)
    } else {
        let message = value.get("error").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_string);
        eprintln!("error: {status}: {message}");
        Ok(ExitCode::FAILURE)
    }
}
