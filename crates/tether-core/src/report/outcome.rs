//! How a host ended a deploy: exactly one outcome each, and what it means for
//! the exit code.

use crate::model::HostName;
use serde::Serialize;

/// A host's end state. Success is only ever `Confirmed`, `Unchanged`,
/// `BootDefaultSet` or `DryRun`; a host tether cannot vouch for is `Unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Running the new system, confirmed over a fresh connection (and, for
    /// goal switch, persisted as profile generation and boot default).
    Confirmed {
        generation: Option<u32>,
        persisted: bool,
    },
    /// Confirmed and running the new system, but persisting it failed: the
    /// host boots the old system. Loud, and not a success.
    ConfirmedNotPersisted { reason: String },
    /// Already running exactly this system; nothing was done.
    Unchanged,
    /// Goal boot: profile and boot default set, nothing activated.
    BootDefaultSet { generation: Option<u32> },
    /// Goal dry-activate: nothing changed.
    DryRun,
    /// Refused before anything on the host changed (identity, lock, tools).
    Refused { reason: String },
    /// Failed before activation (unreachable, copy failed); the host's
    /// system was not touched.
    Failed { reason: String },
    /// The new system was tried and the host is back on the old one.
    RolledBack { reason: String },
    /// Runs the new system (persisted), but after `--reboot` it did not boot
    /// it or failed its health checks; nothing was rolled back.
    Unhealthy { reason: String },
    /// Not started (fleet policy or interruption); untouched.
    Skipped { reason: String },
    /// tether cannot tell what the host runs. Never a success.
    Unknown { reason: String },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Outcome::Confirmed { .. }
                | Outcome::Unchanged
                | Outcome::BootDefaultSet { .. }
                | Outcome::DryRun
        )
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown { .. })
    }

    /// Short name, as in the summary table and the event stream.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Confirmed { .. } => "confirmed",
            Outcome::ConfirmedNotPersisted { .. } => "confirmed-not-persisted",
            Outcome::Unchanged => "unchanged",
            Outcome::BootDefaultSet { .. } => "boot-default-set",
            Outcome::DryRun => "dry-run",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { .. } => "failed",
            Outcome::RolledBack { .. } => "rolled-back",
            Outcome::Unhealthy { .. } => "unhealthy",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Unknown { .. } => "unknown",
        }
    }

    /// The reason behind a non-success, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::ConfirmedNotPersisted { reason }
            | Outcome::Refused { reason }
            | Outcome::Failed { reason }
            | Outcome::RolledBack { reason }
            | Outcome::Skipped { reason }
            | Outcome::Unhealthy { reason }
            | Outcome::Unknown { reason } => Some(reason),
            _ => None,
        }
    }
}

/// One host's result of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    pub host: HostName,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub old_system: Option<String>,
    /// The profile generation before the deploy, when it was read.
    pub old_generation: Option<u32>,
    pub new_system: String,
    pub duration_ms: u64,
}

impl HostReport {
    /// The profile generation after the deploy, when it changed.
    pub fn new_generation(&self) -> Option<u32> {
        match &self.outcome {
            Outcome::Confirmed { generation, .. } | Outcome::BootDefaultSet { generation } => {
                *generation
            }
            _ => None,
        }
    }
}

/// The process exit code for a set of outcomes: 0 all succeeded, 3 any
/// unknown, otherwise 1.
pub fn exit_code(reports: &[HostReport]) -> i32 {
    if reports.iter().any(|r| r.outcome.is_unknown()) {
        3
    } else if reports.iter().all(|r| r.outcome.is_success()) {
        0
    } else {
        1
    }
}
