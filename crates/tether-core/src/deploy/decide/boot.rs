//! The reboot trial's decisions: what preparing it answered, and what each
//! look at a rebooting host means (which trial a change gets is
//! [`crate::trial_choice`], shared with `tether plan`). Pure functions,
//! table-tested in `decide/tests.rs`.

use crate::model::StorePath;
use crate::ports::CallError;
use crate::remote::{BootTrialSeen, BootTrialState, PrepareReport, PrepareResult};
use crate::report::{BootTrialProblem, Failure, Outcome, Refusal, RollbackReason, UnknownReason};

/// A prepared reboot trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub entry: String,
    pub new_generation: Option<u32>,
    /// The boot the host was on (the trial boot has another id).
    pub boot_id: String,
}

/// What preparing's answer means: ready to reboot, or the host's outcome.
#[allow(clippy::result_large_err)]
pub fn after_prepare(
    answer: Result<PrepareReport, CallError>,
    saw: &StorePath,
) -> Result<Prepared, Outcome> {
    let refused = |reason| Err(Outcome::Refused { reason });
    let report = match answer {
        Ok(report) => report,
        Err(e) => {
            return Err(Outcome::Unknown {
                reason: UnknownReason::BootTrialPrepare {
                    step: None,
                    detail: e.to_string(),
                },
            })
        }
    };
    match report.result {
        PrepareResult::Ready {
            entry,
            new_generation,
            ..
        } => Ok(Prepared {
            entry,
            new_generation,
            boot_id: report.boot_id,
        }),
        PrepareResult::Busy { deploy } => refused(Refusal::AnotherDeploy { deploy_id: deploy }),
        PrepareResult::SystemChanged { now } => refused(Refusal::SystemChanged {
            saw: saw.to_string(),
            now,
        }),
        PrepareResult::OldNotDefault { boots } => refused(Refusal::BootsOtherSystem {
            runs: saw.to_string(),
            boots,
        }),
        PrepareResult::NoOneShot => refused(Refusal::NoOneShotBoot {
            boot_loader: None,
            reasons: Vec::new(),
        }),
        PrepareResult::MissingTool { tool } => refused(Refusal::GuardTool { tool }),
        PrepareResult::Failed {
            step,
            detail,
            undone: true,
        } => Err(Outcome::Failed {
            reason: Failure::PrepareBootTrial { step, detail },
        }),
        PrepareResult::Failed {
            step,
            detail,
            undone: false,
        } => Err(Outcome::Unknown {
            reason: UnknownReason::BootTrialPrepare {
                step: Some(step),
                detail: format!("{detail}; undoing it failed too"),
            },
        }),
    }
}

/// What one look at a host in its reboot trial means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialBoot {
    /// Not (yet) on a new boot, or the trial there is still going on: what
    /// was seen, for the report if the wait runs out.
    Waiting(String),
    /// On the trial boot, running the new system, guard holding the lease.
    Booted,
    /// The trial is over: the host's outcome.
    Over(Outcome),
}

/// Reads one look at the host while it reboots into (or out of) its trial.
/// `why`: why tether stopped trying, when it did (then a trial boot that is
/// still up is only waited on).
pub fn trial_boot_seen(
    seen: &BootTrialSeen,
    boot_before: &str,
    new: &StorePath,
    why: Option<&BootTrialProblem>,
) -> TrialBoot {
    let booted = seen.booted_system.as_deref();
    let Some(state) = &seen.state else {
        return TrialBoot::Over(Outcome::Unknown {
            reason: UnknownReason::BootTrialGone {
                why: why.cloned().unwrap_or(BootTrialProblem::BootedOther {
                    booted: seen.booted_system.clone(),
                }),
                last_seen: "the host holds no reboot trial of this deploy".into(),
            },
        });
    };
    let on_new_boot = !seen.boot_id.is_empty() && seen.boot_id != boot_before;
    match state {
        BootTrialState::RolledBack | BootTrialState::RestoreFailed => {
            let why = why.cloned().unwrap_or(BootTrialProblem::BootedOther {
                booted: seen.booted_system.clone(),
            });
            TrialBoot::Over(Outcome::RolledBack {
                reason: RollbackReason::BootTrial {
                    why,
                    guard: seen.cause,
                    restore_problem: (*state == BootTrialState::RestoreFailed)
                        .then(|| seen.problem.clone().unwrap_or_else(|| "unknown".into())),
                },
            })
        }
        BootTrialState::Booted if why.is_none() && on_new_boot && booted == Some(new.as_str()) => {
            TrialBoot::Booted
        }
        BootTrialState::Prepared if on_new_boot => TrialBoot::Waiting(format!(
            "a new boot ({}) whose guard has not started yet",
            seen.boot_id
        )),
        BootTrialState::Prepared => TrialBoot::Waiting("still up on the old boot".into()),
        BootTrialState::Booted | BootTrialState::RollingBack => TrialBoot::Waiting(format!(
            "the trial boot, guard state {state}, running {}",
            booted.unwrap_or("?")
        )),
        BootTrialState::Confirmed | BootTrialState::Finished => {
            TrialBoot::Waiting(format!("guard state {state}"))
        }
        BootTrialState::Missing | BootTrialState::Other(_) => TrialBoot::Over(Outcome::Unknown {
            reason: UnknownReason::BootTrialGone {
                why: why.cloned().unwrap_or(BootTrialProblem::BootedOther {
                    booted: seen.booted_system.clone(),
                }),
                last_seen: format!("the trial's state on the host is {state}"),
            },
        }),
    }
}
