//! Why a reboot trial did not end confirmed ([`BootTrialProblem`]), and the
//! reasons a change needs one, said as one phrase.

use std::fmt;

use serde::Serialize;

use super::checks::CheckFailure;
use crate::remote::RebootReason;

/// The reasons as one phrase: "the kernel changes, the initrd changes".
pub fn reboot_reasons_text(reasons: &[RebootReason]) -> String {
    let all: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    all.join("; ")
}

/// Why tether did not confirm a reboot trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BootTrialProblem {
    /// The host booted the trial, but its health checks failed.
    ChecksFailed {
        seconds: u64,
        failures: Vec<CheckFailure>,
    },
    /// No confirmation got through over fresh connections in time.
    ConfirmFailed { seconds: u64, last: String },
    /// The guard refused the confirmation (its state, e.g. the lease had
    /// lapsed).
    ConfirmRefused { state: String },
    /// No renewal got through for a whole lease on the trial boot.
    #[serde(rename_all = "camelCase")]
    LostContact { lease_seconds: u64 },
    /// The host came back on another system than the new one (the trial
    /// boot did not happen, or ended before tether could check it).
    #[serde(rename_all = "camelCase")]
    BootedOther { booted: Option<String> },
}

impl fmt::Display for BootTrialProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootTrialProblem::ChecksFailed { seconds, failures } => {
                let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "the trial boot's health check{} failed within {seconds}s: {}",
                    if failures.len() == 1 { "" } else { "s" },
                    all.join("; ")
                )
            }
            BootTrialProblem::ConfirmFailed { seconds, last } => write!(
                f,
                "could not confirm the trial boot over a fresh SSH connection within {seconds}s: {last}"
            ),
            BootTrialProblem::ConfirmRefused { state } => write!(
                f,
                "the host's boot-trial guard refused the confirmation (state {state})"
            ),
            BootTrialProblem::LostContact { lease_seconds } => write!(
                f,
                "lost contact with the host on its trial boot for a whole lease ({lease_seconds}s)"
            ),
            BootTrialProblem::BootedOther { booted } => write!(
                f,
                "the host came back on {} instead of the new system",
                booted.as_deref().unwrap_or("no system it could name")
            ),
        }
    }
}
