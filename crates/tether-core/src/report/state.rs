//! What a deploy did to the host's declared state (docs/state.md): the
//! pre-deploy snapshots it took, what became of the data when the system
//! rolled back, and what pruning removed.

use std::fmt;

use serde::Serialize;

use crate::remote::{PruneReport, RestoreReport, Snapshot};

/// What happened to the data when the deploy rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "data", rename_all = "kebab-case")]
pub enum DataAfterRollback {
    /// The guard restored the pre-deploy snapshots before the old system
    /// came back (`restoreOnRollback`); what the trial wrote was kept.
    Restored { report: RestoreReport },
    /// The guard tried and failed (part of the data may be restored).
    RestoreFailed { report: RestoreReport },
    /// `restoreOnRollback` is off: the data is as the trial left it; the
    /// pre-deploy snapshot is there to restore by hand.
    #[serde(rename_all = "camelCase")]
    KeptAsIs { restore_command: String },
    /// A restore was due but the host never said how it went.
    #[serde(rename_all = "camelCase")]
    NotReported { restore_command: String },
}

/// The state part of one host's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    /// The pre-deploy snapshots taken before activation.
    pub snapshots: Vec<Snapshot>,
    /// Set when the system rolled back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<DataAfterRollback>,
    /// Pruning after a confirmed deploy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<PruneReport>,
}

/// The command that restores a deploy's pre-deploy snapshots by hand.
pub fn restore_command(host: &str, deploy_id: &str) -> String {
    format!("tether snapshots restore --on {host} {deploy_id}")
}

impl fmt::Display for DataAfterRollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataAfterRollback::Restored { report } => {
                write!(f, "{} before the old system started", report.summary())
            }
            DataAfterRollback::RestoreFailed { report } => write!(f, "{}", report.summary()),
            DataAfterRollback::KeptAsIs { restore_command } => write!(
                f,
                "data kept as the trial left it (restoreOnRollback is off); the pre-deploy snapshot restores it: {restore_command}"
            ),
            DataAfterRollback::NotReported { restore_command } => write!(
                f,
                "the host did not report the data's restore; check with `tether snapshots`, restore with: {restore_command}"
            ),
        }
    }
}

impl StateReport {
    /// One line for people, or nothing when there is nothing to say.
    pub fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.snapshots.is_empty() {
            let names: Vec<&str> = self.snapshots.iter().map(|s| s.location.as_str()).collect();
            parts.push(format!("snapshots {}", names.join(", ")));
        }
        if let Some(data) = &self.data {
            parts.push(data.to_string());
        }
        if let Some(p) = &self.pruned {
            if !p.pruned.is_empty() {
                parts.push(format!("pruned {}", p.pruned.len()));
            }
            if !p.failed.is_empty() {
                parts.push(format!("could not prune {}", p.failed.join(", ")));
            }
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}
