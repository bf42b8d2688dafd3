//! The safe switch's decisions, as pure functions from what the host said
//! to what happens next, with typed results. The driver ([`super::host`])
//! performs the operations and feeds their results here; nothing here does
//! I/O, so every decision is table-tested on its own (`decide/tests.rs`).

use crate::identity::{self, Expected, Seen};
use crate::model::{Goal, StorePath};
use crate::ports::{CallError, RemoteError};
use crate::remote::{
    status::HostStatus, ActivationState, ArmReport, ArmResult, ConfirmReport, ConfirmResult, Facts,
    GuardCause, GuardLife, GuardState, Inspection, ParseError, PersistReport, Renewal,
    SystemStateLook,
};
use crate::report::{
    ConfirmAttempt, Failure, IdentityProblem, NoGeneration, NotPersisted, Outcome, PersistProblem,
    Refusal, RollbackReason, TrialProblem, Unhealthy, UnknownReason,
};
use crate::text::tail;

use super::job::{HostJob, SystemSource};

/// What the preflight's failure to answer means: a host that is not who the
/// inventory says is refused; anything else failed before touching it.
pub fn preflight_failed(error: CallError) -> Outcome {
    match error {
        CallError::Remote(RemoteError::HostKey(detail)) => Outcome::Refused {
            reason: Refusal::Identity {
                problem: IdentityProblem::HostKey { detail },
            },
        },
        CallError::Remote(RemoteError::Sudo(failure)) => Outcome::Refused {
            reason: Refusal::Sudo { failure },
        },
        other => Outcome::Failed {
            reason: Failure::Preflight {
                error: other.to_string(),
            },
        },
    }
}

/// What the deploy does once the preflight answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The system the host runs now (arming checks it still does).
    pub current: StorePath,
    /// The system a rollback returns to: the current one, or, when the
    /// host already runs the new system (activated by hand), the one it
    /// boots by default.
    pub old: StorePath,
    /// The closure must be copied first.
    pub copy: bool,
    pub plan: Plan,
}

/// Which path the deploy takes after the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Goal dry-activate: show what activation would do.
    DryActivate,
    /// Goal boot: set profile and boot default, activate nothing.
    SetBootDefault,
    /// Goal switch or test: the guarded trial.
    Trial,
}

/// Decides, from the preflight's facts, whether and how to deploy; an
/// `Err` is the host's outcome (refused, or nothing to do).
// An outcome is made once per host; its size is of no consequence.
#[allow(clippy::result_large_err)]
pub fn start(job: &HostJob, facts: &Facts) -> Result<Start, Outcome> {
    let refuse = |reason| Outcome::Refused { reason };
    let expected = Expected {
        machine_id: job.machine_id.as_deref(),
        platform: job.platform.as_deref(),
    };
    let seen = Seen {
        machine_id: &facts.machine_id,
        arch: &facts.arch,
    };
    identity::check(&expected, &seen).map_err(|problem| refuse(Refusal::Identity { problem }))?;
    if let Some(uid) = facts.uid.filter(|u| *u != 0) {
        return Err(refuse(Refusal::NotRoot { uid }));
    }
    if !facts.missing_tools.is_empty() {
        return Err(refuse(Refusal::MissingTools {
            tools: facts.missing_tools.clone(),
        }));
    }
    if let Some(other) = &facts.busy_with {
        return Err(refuse(Refusal::AnotherDeploy {
            deploy_id: other.clone(),
        }));
    }
    if let Some(holder) = &facts.switch_lock {
        return Err(refuse(Refusal::SwitchLockHeld {
            holder: holder.clone(),
        }));
    }
    let Some(current) = facts.current_system.as_deref().and_then(StorePath::new) else {
        return Err(refuse(Refusal::NoCurrentSystem));
    };
    let new = job.new_system.as_str();
    let copy = job.source == SystemSource::Copy && !facts.has_new_system;
    if let (true, Some(user)) = (copy, &facts.nix_untrusted) {
        // The daemon still takes paths signed by a key it trusts.
        let signed = job
            .closure_signers
            .as_ref()
            .is_some_and(|signers| signers.accepted_by(&facts.trusted_keys));
        if !signed {
            return Err(refuse(Refusal::NixUntrusted {
                user: user.clone(),
                trusted_keys: facts.trusted_keys.clone(),
            }));
        }
    }
    if current.as_str() != new {
        let plan = match job.goal {
            Goal::DryActivate => Plan::DryActivate,
            Goal::Boot => Plan::SetBootDefault,
            Goal::Switch | Goal::Test => Plan::Trial,
        };
        return Ok(Start {
            old: current.clone(),
            current,
            copy,
            plan,
        });
    }
    // It already runs the new system (someone ran `switch-to-configuration
    // test` by hand, or an earlier `--goal test`). Nothing to do unless the
    // goal persists and it is not persisted yet; then it must pass the
    // whole trial before it is, and a rollback returns to what it boots.
    let boots = facts
        .boot_default
        .as_ref()
        .and_then(|d| d.system.clone())
        .or_else(|| facts.profile_system.clone());
    let persisted = facts.profile_system.as_deref() == Some(new) && boots.as_deref() == Some(new);
    match job.goal {
        Goal::Test | Goal::DryActivate => Err(Outcome::Unchanged),
        Goal::Switch | Goal::Boot if persisted => Err(Outcome::Unchanged),
        Goal::Boot => Ok(Start {
            old: current.clone(),
            current,
            copy,
            plan: Plan::SetBootDefault,
        }),
        Goal::Switch => {
            let Some(old) = boots
                .as_deref()
                .filter(|b| *b != new)
                .and_then(StorePath::new)
            else {
                return Err(refuse(Refusal::NothingToReturnTo {
                    current: current.to_string(),
                }));
            };
            Ok(Start {
                current,
                old,
                copy,
                plan: Plan::Trial,
            })
        }
    }
}

/// Whether a refused or failed arming ends the deploy (`Some`: nothing was
/// activated). `current` is the system the preflight saw.
pub fn after_arm(arm: &ArmResult, current: &StorePath) -> Option<Outcome> {
    let refuse = |reason| Some(Outcome::Refused { reason });
    let fail = |reason| Some(Outcome::Failed { reason });
    match arm {
        ArmResult::Armed => None,
        ArmResult::Busy(other) => refuse(Refusal::AnotherDeploy {
            deploy_id: other.clone(),
        }),
        ArmResult::Changed(now) => refuse(Refusal::SystemChanged {
            saw: current.to_string(),
            now: (!now.is_empty()).then(|| now.clone()),
        }),
        ArmResult::MissingTool(tool) => refuse(Refusal::GuardTool { tool: tool.clone() }),
        ArmResult::LockTimeout => refuse(Refusal::ArmLockTimeout),
        ArmResult::Untrusted => refuse(Refusal::UntrustedRunDir),
        ArmResult::Failed(detail) => fail(Failure::GuardNotStarted {
            detail: detail.clone(),
        }),
        ArmResult::GuardDied => fail(Failure::GuardDied),
        ArmResult::Expired => fail(Failure::ArmExpired),
    }
}

/// Where the trial is once the arm-and-activate session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activated {
    /// The activation exited 0; the checks may start (with the session's
    /// first look at the system, when it printed one).
    Ended {
        first_look: Option<SystemStateLook>,
        lease_renewed: bool,
    },
    /// Give up on the trial and ask the guard to roll back.
    Abandon(TrialProblem),
    /// The session broke before the arm result: whether a guard is armed
    /// is for the host to tell.
    LostArming(TrialProblem),
    /// The session broke during the activation, which runs on in its unit:
    /// wait for its end on the host.
    LostSession(RemoteError),
    /// Nothing was activated; this is the host's outcome.
    Done(Outcome),
}

/// Decides from the arm-and-activate session's result. `armed` is whether
/// the `arm=armed` line arrived before the session ended.
pub fn after_activation(
    result: Result<ArmReport, CallError>,
    armed: bool,
    current: &StorePath,
) -> Activated {
    match result {
        Ok(report) => {
            if let Some(done) = after_arm(&report.arm, current) {
                return Activated::Done(done);
            }
            if report.died {
                return Activated::Abandon(TrialProblem::ActivationDied);
            }
            match report.exit_code {
                Some(0) => Activated::Ended {
                    first_look: report.first_look,
                    lease_renewed: report.lease_renewed,
                },
                exit_code if report.switch_locked => Activated::Done(Outcome::Failed {
                    reason: Failure::SwitchLockTaken {
                        exit_code,
                        holder: None,
                    },
                }),
                exit_code => Activated::Abandon(TrialProblem::ActivationFailed { exit_code }),
            }
        }
        Err(CallError::Parse { error, stderr_tail }) => Activated::Done(Outcome::Failed {
            reason: Failure::Arming {
                error: format!("{error}: {stderr_tail}"),
            },
        }),
        Err(CallError::Remote(RemoteError::Timeout(after))) => {
            Activated::Abandon(TrialProblem::ActivationTimedOut {
                seconds: after.as_secs(),
            })
        }
        Err(CallError::Remote(e)) if !armed => {
            Activated::LostArming(TrialProblem::SessionLostArming {
                error: e.to_string(),
            })
        }
        Err(CallError::Remote(e)) => Activated::LostSession(e),
    }
}

/// Where a trial whose activation's session was lost stands, from one
/// renewal over a fresh connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still activating (or no answer): look again.
    Wait,
    /// The activation exited 0: the checks may start.
    Ended,
    /// Give up on the trial and ask the guard to roll back.
    Abandon(TrialProblem),
    /// The guard left the trial by itself.
    GuardLeft(GuardState),
    /// Nothing was activated; this is the host's outcome.
    Done(Outcome),
}

pub fn activation_progress(renewal: &Renewal) -> Progress {
    match &renewal.state {
        GuardState::Armed => {}
        // Our own confirmation cannot have happened: it needs the end.
        other => return Progress::GuardLeft(other.clone()),
    }
    match &renewal.activation {
        Some(ActivationState::Exited { code: 0, .. }) => Progress::Ended,
        Some(ActivationState::Exited {
            code,
            switch_locked: true,
        }) => Progress::Done(Outcome::Failed {
            reason: Failure::SwitchLockTaken {
                exit_code: Some(*code),
                holder: None,
            },
        }),
        Some(ActivationState::Exited { code, .. }) => {
            Progress::Abandon(TrialProblem::ActivationFailed {
                exit_code: Some(*code),
            })
        }
        Some(ActivationState::Died) => Progress::Abandon(TrialProblem::ActivationDied),
        Some(ActivationState::Running | ActivationState::NotStarted) | None => Progress::Wait,
    }
}

/// What one confirmation attempt means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmStep {
    /// Confirmed; with what persisting printed when it rode along.
    Confirmed(Option<Result<PersistReport, ParseError>>),
    /// Not yet: try again over a new connection (until the deadline).
    Retry(ConfirmAttempt),
    /// The guard had already left the trial.
    TooLate,
    /// The activation failed after all: the guard rolls back.
    ActivationFailed(Option<i32>),
    /// The trial on the host is not this deploy's.
    BadToken,
}

pub fn confirm_attempt(result: Result<ConfirmReport, CallError>) -> ConfirmStep {
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            return ConfirmStep::Retry(ConfirmAttempt::Unanswered {
                error: e.to_string(),
            })
        }
    };
    match report.result {
        ConfirmResult::Confirmed => ConfirmStep::Confirmed(report.persist),
        // Our own earlier attempt confirmed, but its answer was lost.
        ConfirmResult::TooLate
            if matches!(
                report.state,
                GuardState::Confirmed | GuardState::Finished | GuardState::PersistFailed
            ) =>
        {
            ConfirmStep::Confirmed(report.persist)
        }
        ConfirmResult::TooLate | ConfirmResult::NoTrial => ConfirmStep::TooLate,
        ConfirmResult::BadToken => ConfirmStep::BadToken,
        ConfirmResult::NotRunningNew => ConfirmStep::Retry(ConfirmAttempt::NotRunningNew {
            current: report.current_system,
        }),
        ConfirmResult::ActivationRunning => ConfirmStep::Retry(ConfirmAttempt::ActivationRunning),
        ConfirmResult::LockTimeout => ConfirmStep::Retry(ConfirmAttempt::Unanswered {
            error: "the trial's state lock stayed taken".into(),
        }),
        ConfirmResult::ActivationFailed(code) => ConfirmStep::ActivationFailed(code),
    }
}

/// The outcome of a confirmed host of `system` from what persisting
/// printed: persisted only when the profile and the boot default, read
/// back, both point at it.
pub fn persisted(
    report: Result<PersistReport, ParseError>,
    system: &StorePath,
    stderr: &str,
) -> Outcome {
    match report {
        Ok(r) if r.is_persisted(system) => Outcome::Confirmed {
            generation: r.generation,
            persisted: true,
        },
        Ok(r) => Outcome::ConfirmedNotPersisted {
            reason: NotPersisted::Failed {
                problem: persist_problem(&r, stderr),
            },
        },
        Err(e) => Outcome::ConfirmedNotPersisted {
            reason: NotPersisted::NoReport {
                error: e.to_string(),
            },
        },
    }
}

fn persist_problem(r: &PersistReport, stderr: &str) -> PersistProblem {
    PersistProblem {
        profile_set: r.profile_set,
        boot_exit_code: r.boot_rc,
        boot_default: r.boot_default.as_ref().and_then(|d| d.system.clone()),
        stderr_tail: tail(stderr, 3),
    }
}

/// Goal boot: the outcome of setting the profile and boot default.
pub fn boot_default_set(
    result: Result<PersistReport, CallError>,
    system: &StorePath,
    stderr: &str,
) -> Outcome {
    match result {
        Ok(r) if r.is_persisted(system) => Outcome::BootDefaultSet {
            generation: r.generation,
        },
        Ok(r) => Outcome::Failed {
            reason: Failure::BootDefault {
                problem: persist_problem(&r, stderr),
            },
        },
        Err(e) => Outcome::Unknown {
            reason: UnknownReason::BootDefault {
                error: e.to_string(),
            },
        },
    }
}

/// What the lease keeper does after one renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewed {
    /// The lease was extended.
    Renewed,
    /// The guard was gone and was started again.
    GuardRestarted,
    /// The guard left the trial by itself (it rolled back, or the trial's
    /// state is gone): stop, and learn how it ended.
    GuardLeft(GuardState),
    /// The guard is gone and could not be started again.
    GuardDead,
    /// No usable answer; try again (until a whole lease has passed).
    NoAnswer,
}

/// A renewal's meaning for the lease keeper. A confirmed or persisted
/// trial is the trial's own business: the keeper only keeps its lease, so
/// a renewal that happens to see `finished` never decides the outcome.
pub fn after_renewal(result: &Result<Renewal, CallError>) -> Renewed {
    let Ok(r) = result else {
        return Renewed::NoAnswer;
    };
    match &r.state {
        GuardState::Armed
        | GuardState::Confirmed
        | GuardState::Finished
        | GuardState::PersistFailed => match r.guard {
            GuardLife::Alive => Renewed::Renewed,
            GuardLife::Restarted => Renewed::GuardRestarted,
            GuardLife::Dead => Renewed::GuardDead,
        },
        other => Renewed::GuardLeft(other.clone()),
    }
}

/// What an inspection of a trial tether gave up on (or lost) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Done(Outcome),
    /// Our own confirmation got through after all (only this deploy has the
    /// token): the confirmed system stands and must be persisted.
    Persist,
    /// Not decided yet (the guard is still rolling back): look again.
    Wait(String),
}

/// Reads an inspection. `boot_id` is the boot the trial started in, `old`
/// the system it would return to, `why` what made tether stop trying.
pub fn after_inspection(
    i: &Inspection,
    boot_id: &str,
    old: &StorePath,
    job: &HostJob,
    why: &TrialProblem,
) -> Verdict {
    let current = i.current_system.clone().unwrap_or_default();
    let why = why.clone();
    let done = Verdict::Done;
    let new = job.new_system.as_str();
    match &i.state {
        GuardState::RolledBack => done(Outcome::RolledBack {
            reason: RollbackReason::ByGuard {
                why,
                // Asked for by us: `why` already says why.
                guard: i.cause.clone().filter(|c| *c != GuardCause::Requested),
            },
        }),
        GuardState::RollbackFailed => done(Outcome::Unknown {
            reason: UnknownReason::RollbackFailed {
                why,
                exit_code: i.rollback_rc,
                current,
                switch_lock: i.switch_lock.clone(),
            },
        }),
        GuardState::NotActivated => done(Outcome::Failed {
            reason: match i.activation {
                Some(ActivationState::Exited { code, .. }) => Failure::SwitchLockTaken {
                    exit_code: Some(code),
                    holder: i.switch_lock.clone(),
                },
                // Stopped by the guard while it waited for the lock.
                _ => Failure::SwitchLockWaited {
                    holder: i.switch_lock.clone(),
                },
            },
        }),
        GuardState::Missing if i.boot_id != boot_id => {
            if current == old.as_str() {
                done(Outcome::RolledBack {
                    reason: RollbackReason::Rebooted { why },
                })
            } else {
                done(Outcome::Unknown {
                    reason: UnknownReason::RebootedOnOther { why, current },
                })
            }
        }
        // No trial on the host, same boot, old system: the guard was never
        // armed, so nothing was activated.
        GuardState::Missing if current == old.as_str() => done(Outcome::Failed {
            reason: Failure::NotArmed { why },
        }),
        GuardState::Missing => done(Outcome::Unknown {
            reason: UnknownReason::StateVanished { why, current },
        }),
        GuardState::Confirmed if job.goal == Goal::Switch => Verdict::Persist,
        GuardState::Confirmed | GuardState::Finished if job.goal != Goal::Switch => {
            done(Outcome::Confirmed {
                generation: None,
                persisted: false,
            })
        }
        GuardState::Finished => {
            let boots = i.boot_default.as_ref().and_then(|d| d.system.as_deref());
            if i.profile_system.as_deref() == Some(new) && boots == Some(new) {
                done(Outcome::Confirmed {
                    generation: i.profile_generation,
                    persisted: true,
                })
            } else {
                done(Outcome::ConfirmedNotPersisted {
                    reason: NotPersisted::ProfileElsewhere {
                        why,
                        current,
                        profile: i.profile_system.clone(),
                        boot_default: boots.map(str::to_string),
                    },
                })
            }
        }
        GuardState::PersistFailed => done(Outcome::ConfirmedNotPersisted {
            reason: NotPersisted::ProfileElsewhere {
                why,
                current,
                profile: i.profile_system.clone(),
                boot_default: i.boot_default.as_ref().and_then(|d| d.system.clone()),
            },
        }),
        other => Verdict::Wait(format!("guard state {other}")),
    }
}

/// `tether rollback`: the generation a host goes back to (`to`, or the one
/// before the profile's current one) and its system.
pub fn choose_generation(
    status: &HostStatus,
    to: Option<u32>,
) -> Result<(u32, StorePath), NoGeneration> {
    let existing: Vec<u32> = status.generations.iter().map(|g| g.number).collect();
    let pick = match to {
        Some(wanted) => status
            .generations
            .iter()
            .find(|g| g.number == wanted)
            .ok_or(NoGeneration::Missing {
                wanted,
                existing: existing.clone(),
            })?,
        None => {
            let current = status.profile_generation.ok_or(NoGeneration::NoProfile)?;
            status
                .generations
                .iter()
                .rev()
                .find(|g| g.number < current)
                .ok_or(NoGeneration::NoneBefore {
                    current,
                    existing: existing.clone(),
                })?
        }
    };
    let path = StorePath::new(&pick.system).ok_or_else(|| NoGeneration::NotAStorePath {
        generation: pick.number,
        target: pick.system.clone(),
    })?;
    Ok((pick.number, path))
}

/// After `deploy --reboot`: `Some` when the host did not come back on the
/// new system (`booted`, `current`: what it booted and runs).
pub fn after_reboot(booted: &str, current: &str, new: &StorePath) -> Option<Outcome> {
    (booted != new.as_str() || current != new.as_str()).then(|| Outcome::Unhealthy {
        reason: Unhealthy::BootedOther {
            booted: booted.to_string(),
            current: current.to_string(),
        },
    })
}

pub mod boot;

#[cfg(test)]
mod tests;
