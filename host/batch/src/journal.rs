//! The checkpoint of a batch job: how many input rows are scored and how long the staged
//! output and errors files were at that moment. Written atomically (temporary file, fsync,
//! rename, fsync of the directory) after the staged files are fsync'd, so after a crash the
//! files are cut back to the checkpoint and the job resumes from its row.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BatchError;

/// A job's progress as last made durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// What the job is (input file, model, options); a checkpoint of another job is refused.
    pub fingerprint: String,
    /// Input rows scored (or failed) and written.
    pub rows_read: u64,
    /// Of those, rows written to the output.
    pub rows_ok: u64,
    /// Of those, rows written to the errors file.
    pub rows_failed: u64,
    /// Bytes of the staged output file.
    pub output_bytes: u64,
    /// Bytes of the staged errors file.
    pub errors_bytes: u64,
    /// Seconds spent scoring, over all runs.
    pub seconds: f64,
    /// The output is complete and under its final name.
    pub done: bool,
}

impl Checkpoint {
    /// The checkpoint at `path`, if there is one.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>, BatchError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                BatchError::Checkpoint(format!("{} is not a checkpoint ({e}); rerun with --restart", path.display()))
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(BatchError::Checkpoint(format!("reading {}: {error}", path.display()))),
        }
    }

    /// Makes this checkpoint durable at `path`.
    pub fn save(&self, path: &Path) -> Result<(), BatchError> {
        let fail = |e: std::io::Error| BatchError::Checkpoint(format!("writing {}: {e}", path.display()));
        let temporary = path.with_extension("journal.tmp");
        let mut file = File::create(&temporary).map_err(fail)?;
        file.write_all(&serde_json::to_vec(self).unwrap_or_default()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&temporary, path).map_err(fail)?;
        sync_dir(path)
    }
}

/// Fsyncs the directory holding `path`, so a rename in it is durable.
pub fn sync_dir(path: &Path) -> Result<(), BatchError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BatchError::Checkpoint(format!("syncing {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_garbage_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.csv.journal");
        assert_eq!(Checkpoint::load(&path).expect("absent"), None);
        let checkpoint = Checkpoint {
            fingerprint: "f".into(),
            rows_read: 10,
            rows_ok: 9,
            rows_failed: 1,
            output_bytes: 100,
            errors_bytes: 20,
            seconds: 1.5,
            done: false,
        };
        checkpoint.save(&path).expect("save");
        assert_eq!(Checkpoint::load(&path).expect("load"), Some(checkpoint));
        std::fs::write(&path, "{").expect("garbage");
        assert!(Checkpoint::load(&path).expect_err("garbage").to_string().contains("--restart"));
    }
}
