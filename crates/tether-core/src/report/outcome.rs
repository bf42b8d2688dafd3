//! How a host ended a deploy: exactly one outcome each, and what it means for
//! the exit code.

use super::reason::{
    Failure, NotPersisted, Refusal, RollbackReason, SkipReason, Unhealthy, UnknownReason,
};
use crate::model::HostName;
use serde::Serialize;

/// A host's end state. Success is only ever `Confirmed`, `Unchanged`,
/// `BootDefaultSet` or `DryRun`; a host tether cannot vouch for is `Unknown`.
///
/// Serialized (events, summaries) as `outcome` (its [`Outcome::name`]), its
/// own fields, and for a non-success `reason` (the sentence) and `cause`
/// (the typed reason, for tools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Running the new system, confirmed over a fresh connection (and, for
    /// goal switch, persisted as profile generation and boot default).
    Confirmed {
        generation: Option<u32>,
        persisted: bool,
    },
    /// Confirmed and running the new system, but persisting it failed: the
    /// host boots the old system. Loud, and not a success.
    ConfirmedNotPersisted { reason: NotPersisted },
    /// Already running exactly this system; nothing was done.
    Unchanged,
    /// Goal boot: profile and boot default set, nothing activated.
    BootDefaultSet { generation: Option<u32> },
    /// Goal dry-activate: nothing changed.
    DryRun,
    /// Refused before anything on the host changed (identity, lock, tools).
    Refused { reason: Refusal },
    /// Failed before activation (unreachable, copy failed); the host's
    /// system was not touched.
    Failed { reason: Failure },
    /// The new system was tried and the host is back on the old one.
    RolledBack { reason: RollbackReason },
    /// Runs the new system (persisted), but after `--reboot` it did not boot
    /// it or failed its health checks; nothing was rolled back.
    Unhealthy { reason: Unhealthy },
    /// Not started (fleet policy or interruption); untouched.
    Skipped { reason: SkipReason },
    /// tether cannot tell what the host runs. Never a success.
    Unknown { reason: UnknownReason },
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

    /// The reason behind a non-success, as the sentence people read.
    pub fn reason(&self) -> Option<String> {
        self.cause().map(|c| c.to_string())
    }

    /// The reason behind a non-success, typed.
    pub fn cause(&self) -> Option<Cause<'_>> {
        Some(match self {
            Outcome::ConfirmedNotPersisted { reason } => Cause::NotPersisted(reason),
            Outcome::Refused { reason } => Cause::Refused(reason),
            Outcome::Failed { reason } => Cause::Failed(reason),
            Outcome::RolledBack { reason } => Cause::RolledBack(reason),
            Outcome::Unhealthy { reason } => Cause::Unhealthy(reason),
            Outcome::Skipped { reason } => Cause::Skipped(reason),
            Outcome::Unknown { reason } => Cause::Unknown(reason),
            Outcome::Confirmed { .. }
            | Outcome::Unchanged
            | Outcome::BootDefaultSet { .. }
            | Outcome::DryRun => return None,
        })
    }
}

/// A borrowed view of an outcome's reason, whichever kind it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Cause<'a> {
    NotPersisted(&'a NotPersisted),
    Refused(&'a Refusal),
    Failed(&'a Failure),
    RolledBack(&'a RollbackReason),
    Unhealthy(&'a Unhealthy),
    Skipped(&'a SkipReason),
    Unknown(&'a UnknownReason),
}

impl std::fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::NotPersisted(r) => r.fmt(f),
            Cause::Refused(r) => r.fmt(f),
            Cause::Failed(r) => r.fmt(f),
            Cause::RolledBack(r) => r.fmt(f),
            Cause::Unhealthy(r) => r.fmt(f),
            Cause::Skipped(r) => r.fmt(f),
            Cause::Unknown(r) => r.fmt(f),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("outcome", self.name())?;
        match self {
            Outcome::Confirmed {
                generation,
                persisted,
            } => {
                m.serialize_entry("generation", generation)?;
                m.serialize_entry("persisted", persisted)?;
            }
            Outcome::BootDefaultSet { generation } => {
                m.serialize_entry("generation", generation)?;
            }
            _ => {}
        }
        if let Some(cause) = self.cause() {
            m.serialize_entry("reason", &cause.to_string())?;
            m.serialize_entry("cause", &cause)?;
        }
        m.end()
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
    /// Snapshots and data, for a host with `state` declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<super::state::StateReport>,
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

/// What a run's outcomes add up to (the command line maps it to its exit
/// code): a host tether cannot vouch for outweighs a failed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunResult {
    /// Every host confirmed, unchanged or otherwise succeeded.
    AllSucceeded,
    /// Some host refused, failed, rolled back or was skipped.
    SomeFailed,
    /// Some host ended unknown.
    SomeUnknown,
}

impl RunResult {
    pub fn of(reports: &[HostReport]) -> RunResult {
        if reports.iter().any(|r| r.outcome.is_unknown()) {
            RunResult::SomeUnknown
        } else if reports.iter().all(|r| r.outcome.is_success()) {
            RunResult::AllSucceeded
        } else {
            RunResult::SomeFailed
        }
    }
}
