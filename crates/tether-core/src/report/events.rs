//! Typed events the deployment logic emits; reporters turn them into the
//! terminal view or NDJSON. The logic never writes user-facing text itself.

use super::outcome::Outcome;
use crate::model::HostName;
use crate::spec::CheckType;
use serde::Serialize;

/// Where a host's deploy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Preflight,
    Copying,
    Arming,
    Activating,
    /// Health checks run (docs/checks.md).
    Checking,
    Confirming,
    Persisting,
    Rebooting,
    /// The reboot trial: the host booted the new system once.
    Booted,
    RollingBack,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Copying => "copying",
            Phase::Arming => "arming",
            Phase::Activating => "activating",
            Phase::Checking => "checking",
            Phase::Confirming => "confirming",
            Phase::Persisting => "persisting",
            Phase::Rebooting => "rebooting",
            Phase::Booted => "booted",
            Phase::RollingBack => "rolling-back",
        }
    }
}

/// What a [`EventKind::State`] event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateAction {
    /// Pre-deploy snapshots taken.
    Snapshotted,
    /// The data was restored with the rollback.
    #[serde(rename = "data-restored")]
    Restored,
    /// A restore with the rollback failed.
    #[serde(rename = "data-restore-failed")]
    RestoreFailed,
    /// The system rolled back; the data stayed as the trial left it.
    #[serde(rename = "data-kept")]
    KeptAsIs,
    /// Old snapshots removed after a confirmed deploy.
    Pruned,
}

impl StateAction {
    pub fn as_str(self) -> &'static str {
        match self {
            StateAction::Snapshotted => "snapshotted",
            StateAction::Restored => "data-restored",
            StateAction::RestoreFailed => "data-restore-failed",
            StateAction::KeptAsIs => "data-kept",
            StateAction::Pruned => "pruned",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum EventKind {
    /// The host entered a phase.
    Phase { phase: Phase },
    /// A line of output from the target (activation, dry-activate).
    Output { line: String },
    /// The trial's activation ended: as its session reported, or as learnt
    /// from the host after the session was lost. The health checks start
    /// only after this.
    #[serde(rename_all = "camelCase")]
    ActivationEnded { exit_code: Option<i32> },
    /// One attempt of one health check ended.
    Check {
        check: String,
        #[serde(rename = "type")]
        kind: CheckType,
        attempt: u32,
        passed: bool,
        detail: String,
    },
    /// Something worth knowing that does not end the deploy.
    Warning { message: String },
    /// tether did something to the host's declared state (docs/state.md).
    State {
        action: StateAction,
        summary: String,
    },
    /// The host's final outcome.
    Outcome {
        #[serde(flatten)]
        outcome: Outcome,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub host: HostName,
    /// Milliseconds since the run started.
    pub elapsed_ms: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn a_state_action_reads_the_same_in_json_and_in_the_journal() {
        for action in [
            StateAction::Snapshotted,
            StateAction::Restored,
            StateAction::RestoreFailed,
            StateAction::KeptAsIs,
            StateAction::Pruned,
        ] {
            let json = serde_json::to_value(action).unwrap();
            assert_eq!(json.as_str(), Some(action.as_str()));
        }
    }
}
