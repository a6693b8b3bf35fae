//! Delivering alert notifications to webhooks in the Alertmanager webhook payload shape,
//! with retries and backoff, on their own tasks: a slow or unreachable receiver never
//! holds up inference or the next evaluation.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Attempts per notification.
const ATTEMPTS: u32 = 4;
/// First retry delay; doubled each time.
const BACKOFF: Duration = Duration::from_millis(250);
/// Time allowed for one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks a webhook URL: `http://host[:port]/path`.
pub fn parse_url(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(uri),
        Some("https") => Err("https webhooks are not supported yet; use http (e.g. a local relay)".into()),
        _ => Err("must be an http:// URL with a host".into()),
    }
}

/// One alert in a notification.
#[derive(Debug, Clone)]
pub struct Notice {
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// Labels: alertname, severity, model, version...
    pub labels: std::collections::BTreeMap<String, String>,
    /// The value that crossed the threshold, and the rule in words.
    pub annotations: std::collections::BTreeMap<String, String>,
    /// RFC 3339 time the alert started firing.
    pub starts_at: String,
    /// RFC 3339 time it resolved (`0001-01-01T00:00:00Z` while firing).
    pub ends_at: String,
}

impl Notice {
    fn fingerprint(&self) -> String {
        let text: String = self.labels.iter().map(|(k, v)| format!("{k}={v};")).collect();
        edgeinfer_runtime::sha256_hex(text.as_bytes())[..16].to_string()
    }
}

/// The Alertmanager webhook (version 4) body for one notice.
pub fn payload(notice: &Notice, external_url: &str) -> Value {
    let alertname = notice.labels.get("alertname").cloned().unwrap_or_default();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
        "truncatedAlerts": 0,
        "status": notice.status,
        "receiver": "edgeinfer",
        "groupLabels": {"alertname": alertname},
        "commonLabels": notice.labels,
        "commonAnnotations": notice.annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": notice.status,
            "labels": notice.labels,
            "annotations": notice.annotations,
            "startsAt": notice.starts_at,
            "endsAt": notice.ends_at,
            "generatorURL": format!("{external_url}/ui"),
            "fingerprint": notice.fingerprint(),
        }],
    })
}

/// Posts `body` to `url` on a task of its own, retrying with backoff.
pub fn send(url: String, body: Value) {
    tokio::spawn(async move {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let bytes = Bytes::from(body.to_string());
        let mut delay = BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let request = Request::post(&url)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(bytes.clone()));
            let request = match request {
                Ok(request) => request,
                Err(error) => {
                    tracing::error!(%url, %error, "cannot build the webhook request");
                    return;
                }
            };
            let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await;
            match outcome {
                Ok(Ok(response)) if response.status().is_success() => return,
                Ok(Ok(response)) => tracing::warn!(%url, attempt, status = %response.status(), "webhook refused"),
                Ok(Err(error)) => tracing::warn!(%url, attempt, %error, "webhook unreachable"),
                Err(_) => tracing::warn!(%url, attempt, "webhook timed out"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        tracing::error!(%url, "webhook notification given up after {ATTEMPTS} attempts");
    });
}
