//! A loaded version's monitoring state: its prediction sample rate and its quality and
//! input-drift windows, created with the version and dropped with it. The observer fills
//! them; the registry only holds them.

use std::sync::{Arc, Mutex};

use edgeinfer_monitor::drift::DriftWindow;
use edgeinfer_monitor::redaction::Redaction;

use crate::quality::{PredictionSpec, QualityWindow};

/// Per-version monitoring state, created with the version and dropped with it.
pub struct VersionMonitor {
    pub(crate) sample_rate: f64,
    pub(crate) spec: PredictionSpec,
    pub(crate) redaction: Arc<Redaction>,
    pub(crate) quality: Mutex<Option<QualityWindow>>,
    pub(crate) drift: Mutex<Option<DriftWindow>>,
}

impl VersionMonitor {
    /// The state of a version whose requests are logged at `sample_rate` (0 to 1) and whose
    /// predictions `spec` picks out for quality, redacted by `redaction` in the log.
    pub fn new(sample_rate: f64, spec: PredictionSpec, redaction: Redaction) -> VersionMonitor {
        let redaction = Arc::new(redaction);
        VersionMonitor { sample_rate, spec, redaction, quality: Mutex::new(None), drift: Mutex::new(None) }
    }
}
