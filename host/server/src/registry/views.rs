//! Read-only views of the registry (traffic, history, repository index), as types the HTTP
//! layer renders.

use serde::Serialize;

use super::{ModelRegistry, ModelState};
use crate::Result;
use crate::deployment::DeploymentView;
use crate::history::HistoryEvent;

/// A refused version and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedView {
    /// The version.
    pub version: String,
    /// Why it was refused.
    pub reason: String,
}

/// Shadow agreement between a live and a shadow version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgreementView {
    /// The live version.
    pub live: String,
    /// The shadow version.
    pub shadow: String,
    /// Requests answered by both.
    pub compared: u64,
    /// Of those, the ones whose outputs agreed.
    pub agreed: u64,
    /// Requests the live version answered and the shadow failed.
    pub shadow_failed: u64,
    /// `agreed / compared`, none before any comparison.
    pub agreement_rate: Option<f64>,
}

/// A model's deployment, loaded and refused versions, rollback target and shadow agreement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrafficView {
    /// The model.
    pub model: String,
    /// The current deployment (empty split without one).
    #[serde(flatten)]
    pub deployment: DeploymentView,
    /// Loaded versions, ascending.
    pub loaded: Vec<String>,
    /// Refused versions.
    pub refused: Vec<RefusedView>,
    /// The deployment a rollback goes back to.
    pub rollback_to: Option<DeploymentView>,
    /// Shadow agreement per (live, shadow) pair.
    pub agreement: Vec<AgreementView>,
}

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexEntry {
    /// The model.
    pub name: String,
    /// The version.
    pub version: String,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ModelRegistry {
    /// The model's deployment, loaded versions and shadow agreement.
    pub fn traffic(&self, name: &str) -> Result<TrafficView> {
        let state = self.state(name)?;
        Ok(self.traffic_view(name, &state))
    }

    /// The model's change history, oldest first (empty without a history log).
    pub fn history(&self, name: &str) -> Result<Vec<HistoryEvent>> {
        self.state(name)?;
        let events = match &self.history {
            Some(log) => log.events()?,
            None => Vec::new(),
        };
        Ok(events.into_iter().filter(|e| e.model == name).collect())
    }

    /// The repository index: every version on disk with its state and, if refused, why.
    pub fn index(&self, ready_only: bool) -> Result<Vec<IndexEntry>> {
        let table = self.table.load();
        let mut rows = Vec::new();
        for version in self.repo.versions()? {
            let state = table.get(&version.model);
            let loaded = state.is_some_and(|s| s.versions.contains_key(&version.version));
            if ready_only && !loaded {
                continue;
            }
            let refused = state.and_then(|s| s.refused.get(&version.version)).map(|r| r.reason.clone());
            rows.push(IndexEntry {
                name: version.model,
                version: version.version.to_string(),
                state: if loaded { "READY" } else { "UNAVAILABLE" },
                reason: refused.or_else(|| (!loaded).then(|| "not loaded".to_string())),
            });
        }
        Ok(rows)
    }

    pub(super) fn traffic_view(&self, name: &str, state: &ModelState) -> TrafficView {
        let book = self.agreement.lock().unwrap_or_else(|p| p.into_inner());
        let agreement = book
            .iter()
            .filter(|((model, _, _), _)| model == name)
            .map(|((_, live, shadow), a)| AgreementView {
                live: live.to_string(),
                shadow: shadow.to_string(),
                compared: a.compared,
                agreed: a.agreed,
                shadow_failed: a.shadow_failed,
                agreement_rate: (a.compared > 0).then(|| a.agreed as f64 / a.compared as f64),
            })
            .collect();
        TrafficView {
            model: name.to_string(),
            deployment: state.deployment.as_ref().map(DeploymentView::from).unwrap_or_default(),
            loaded: state.versions.keys().map(u64::to_string).collect(),
            refused: state
                .refused
                .iter()
                .map(|(v, r)| RefusedView { version: v.to_string(), reason: r.reason.clone() })
                .collect(),
            rollback_to: state.previous.last().map(DeploymentView::from),
            agreement,
        }
    }
}
