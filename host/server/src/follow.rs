//! `follow`: registry repositories whose new version tags are pulled into the model
//! repository, verified, and loaded through the usual rescan (so `on_new_version` applies).
//! A registry that cannot be reached changes nothing: what is loaded keeps serving, polls back
//! off, and `edgeinfer_registry_reachable` says 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use edgeinfer_oci::{FollowTarget, Follower, RegistryOptions, TagOutcome};
use serde_json::{Value, json};

use super::App;
use crate::{Error, Result, ServerConfig};

/// The followed repositories `config` names, each checked.
pub fn targets(config: &ServerConfig) -> Result<Vec<FollowTarget>> {
    if !config.follow.is_empty() && config.repo.is_none() {
        return Err(Error::Config("follow needs a model repository to pull into (`repo` or --repo)".into()));
    }
    config
        .follow
        .iter()
        .map(|text| text.parse::<FollowTarget>().map_err(|e| Error::Config(format!("follow: {e}"))))
        .collect()
}

/// What one followed repository is doing, for `/metrics` and `/v2/admin/server`.
#[derive(Debug)]
pub struct FollowState {
    target: FollowTarget,
    reachable: AtomicBool,
    polls: AtomicU64,
    polls_ended: AtomicU64,
    failed_polls: AtomicU64,
    installed: AtomicU64,
    refused: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl FollowState {
    fn new(target: FollowTarget) -> FollowState {
        FollowState {
            target,
            reachable: AtomicBool::new(false),
            polls: AtomicU64::new(0),
            polls_ended: AtomicU64::new(0),
            failed_polls: AtomicU64::new(0),
            installed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
        }
    }

    /// `host[:port]/path`.
    pub fn repository(&self) -> &str {
        &self.target.repository
    }

    /// The model its versions are installed as.
    pub fn model(&self) -> &str {
        &self.target.model
    }

    /// Whether a poll has ended (until then, reachability is unknown).
    pub fn polled(&self) -> bool {
        self.polls_ended.load(Ordering::Relaxed) > 0
    }

    /// Whether the last poll reached the registry.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Versions installed, artifacts refused, polls that failed.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.installed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.failed_polls.load(Ordering::Relaxed),
        )
    }

    /// The admin view.
    pub fn view(&self) -> Value {
        let (installed, refused, failed_polls) = self.counts();
        json!({
            "repository": self.target.repository,
            "model": self.target.model,
            "reachable": self.reachable(),
            "polls": self.polls.load(Ordering::Relaxed),
            "failed_polls": failed_polls,
            "installed": installed,
            "refused": refused,
            "last_error": *self.last_error.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }
}

/// The states of `config`'s followed repositories (polled once [`spawn`] runs).
pub fn states(config: &ServerConfig) -> Vec<Arc<FollowState>> {
    targets(config).unwrap_or_default().into_iter().map(|target| Arc::new(FollowState::new(target))).collect()
}

/// Starts one polling task per followed repository, until `shutdown` resolves.
pub fn spawn(app: &Arc<App>, stopped: &tokio::sync::watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    let options = RegistryOptions { insecure: app.config.insecure_registries.clone(), credentials: None };
    let interval = Duration::from_millis(app.config.follow_interval_ms);
    let repo = app.registry.repository().root().to_path_buf();
    let mut tasks = Vec::new();
    for state in &app.follows {
        let follower =
            match Follower::new(state.target.clone(), repo.clone(), app.registry.signature_policy(), &options) {
                Ok(follower) => follower,
                Err(error) => {
                    tracing::error!(repository = %state.target.repository, %error, "cannot follow");
                    *state.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
                    continue;
                }
            };
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tasks.push(tokio::spawn(follow(app.clone(), state.clone(), follower, interval, shutdown)));
    }
    tasks
}

async fn follow(
    app: Arc<App>,
    state: Arc<FollowState>,
    mut follower: Follower,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut failures = 0u32;
    loop {
        failures = match poll_once(&app, &state, &mut follower).await {
            true => 0,
            false => failures.saturating_add(1),
        };
        tokio::select! {
            () = tokio::time::sleep(edgeinfer_oci::follow::next_wait(interval, failures)) => {}
            () = &mut shutdown => return,
        }
    }
}

/// One poll; whether the registry answered.
async fn poll_once(app: &Arc<App>, state: &FollowState, follower: &mut Follower) -> bool {
    state.polls.fetch_add(1, Ordering::Relaxed);
    let repository = &state.target.repository;
    let outcomes = match follower.poll().await {
        Ok(outcomes) => outcomes,
        Err(error) => {
            if state.reachable.swap(false, Ordering::Relaxed) || state.failed_polls.load(Ordering::Relaxed) == 0 {
                tracing::warn!(%repository, %error, "the registry cannot be polled; serving what is loaded");
            }
            state.failed_polls.fetch_add(1, Ordering::Relaxed);
            *state.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
            state.polls_ended.fetch_add(1, Ordering::Relaxed);
            return false;
        }
    };
    if !state.reachable.swap(true, Ordering::Relaxed) {
        tracing::info!(%repository, "following the registry repository");
    }
    state.polls_ended.fetch_add(1, Ordering::Relaxed);
    *state.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    let mut installed_any = false;
    for outcome in outcomes {
        match outcome {
            TagOutcome::Installed(installed) => {
                installed_any = true;
                state.installed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%repository, model = %installed.model, version = installed.version,
                    sha256 = %installed.component_sha256, "pulled a new version");
            }
            TagOutcome::Refused { tag, message } => {
                state.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%repository, %tag, %message, "refused a registry artifact");
            }
        }
    }
    if installed_any {
        // Load it now rather than when the watcher's events settle.
        let registry = app.registry.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || registry.sync_with_disk()).await {
            tracing::warn!(%error, "repository rescan failed");
        }
    }
    true
}
