//! The reboot trial (docs/deploy.md, "The reboot trial"): for a change only
//! a boot can show, the host boots the new system once — systemd-boot's
//! one-shot entry, the old system staying the default — under a guard that
//! survives the reboot. tether waits (bounded) for the trial boot, checks
//! that the new system is what booted, runs the health checks while
//! renewing the guard's lease over fresh connections, confirms over a fresh
//! connection, and only then persists (the new system's own boot loader
//! installer makes it the default). When it cannot confirm, the guard
//! reboots the host into the default entry, the old system, and restores
//! the profile and entries there; tether reports what the host says.

use std::cell::Cell;
use std::time::Duration;

use futures::future::{select, Either};

use super::decide::boot::{self, Prepared, TrialBoot};
use super::decide::{self};
use super::host::Run;
use crate::model::StorePath;
use crate::ports::{call_streaming, CallError, Clock, Conn, Probe, Reporter, Target};
use crate::remote::{
    AskBootTrial, BootTrialAnswer, BootTrialReply, BootTrialRequest, BootTrialSpec, BootTrialState,
    Facts, JournalEntry, JournalEvent, LookAtBootTrial, Persist, PersistMode, PrepareBootTrial,
    Reboot, RebootReason,
};
use crate::report::{
    reboot_reasons_text, BootTrialProblem, NotPersisted, Outcome, Phase, UnknownReason,
};
use crate::spec::{LOOK_CALL, POLL_INTERVAL, QUICK_CALL, RETRY_PAUSE};

/// The guard's lease on the trial boot, counted from its start there: the
/// rest of the boot (sshd among it), the deployer's next look and a key
/// exchange come before the first renewal, so it is half the reboot
/// timeout (at least a lease). A trial boot that never answers (its
/// network is down) is then back on the old system before tether stops
/// waiting for the host, and is reported rolled back; only a boot that
/// hangs before the guard starts outlasts the wait and is unknown.
fn first_lease(timeouts: &crate::spec::Timeouts) -> Duration {
    timeouts.lease.max(timeouts.reboot / 2)
}

/// Runs the reboot trial of `job.new_system` on a host that runs and boots
/// `old`.
pub(super) async fn run<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    facts: &Facts,
    old: &StorePath,
    reasons: &[RebootReason],
) -> Outcome {
    let job = run.job;
    let spec = BootTrialSpec {
        deploy_id: job.deploy_id.clone(),
        token: job.token.clone(),
        old_system: old.clone(),
        new_system: job.new_system.clone(),
        generation: match job.persist {
            PersistMode::SwitchGeneration(n) => Some(n),
            PersistMode::SetProfile => None,
        },
        lease: job.timeouts.lease,
        first_lease: first_lease(&job.timeouts),
        deployer: job.deployer.clone(),
    };
    run.warn(if reasons.is_empty() {
        "reboot trial (--trial reboot): the host boots the new system once".to_string()
    } else {
        format!(
            "reboot trial: {}; the host boots the new system once",
            reboot_reasons_text(reasons)
        )
    });
    run.phase(Phase::Arming);
    let answer = run
        .call(
            &PrepareBootTrial { spec: spec.clone() },
            Conn::Shared,
            job.timeouts.activation,
        )
        .await;
    let prepared = match boot::after_prepare(answer, old) {
        Ok(p) => p,
        Err(outcome) => return outcome,
    };
    run.phase(Phase::Rebooting);
    let reboot = Reboot {
        deploy_id: job.deploy_id.clone(),
    };
    let boot_before = match call_streaming(
        run.target,
        &reboot,
        Conn::Shared,
        job.timeouts.command,
        None,
    )
    .await
    {
        Ok((Some(id), _)) if !id.is_empty() => id,
        Ok(_) | Err(_) => {
            // The guard and the one-shot are in place: the trial happens at
            // the host's next boot whoever reboots it. Say so and wait; a
            // host that does not reboot is reported as it is.
            run.warn("the reboot could not be scheduled; waiting for the host to reboot".into());
            prepared.boot_id.clone()
        }
    };
    if let Some(outcome) = await_trial_boot(run, &spec, &boot_before).await {
        return outcome;
    }
    run.phase(Phase::Booted);
    let why = match try_trial(run, &spec, facts).await {
        Ok(()) => return persist(run, &spec, &prepared).await,
        Err(why) => why,
    };
    run.phase(Phase::RollingBack);
    let ask = AskBootTrial {
        spec: spec.clone(),
        request: BootTrialRequest::RollBack,
        journal: None,
    };
    if run.call(&ask, Conn::Fresh, QUICK_CALL).await.is_err() {
        run.warn("could not ask the guard to roll back; it does when the lease lapses".into());
    }
    await_verdict(run, &spec, &boot_before, why).await
}

/// Waits, up to `timeouts.reboot`, for the host to come up on its trial
/// boot; `Some` when it ended otherwise (already back on the old system,
/// or not back in time).
async fn await_trial_boot<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &BootTrialSpec,
    boot_before: &str,
) -> Option<Outcome> {
    let wait = run.job.timeouts.reboot;
    let deadline = run.clock.now() + wait;
    let look = LookAtBootTrial {
        deploy_id: spec.deploy_id.clone(),
    };
    loop {
        run.clock.sleep(POLL_INTERVAL).await;
        let last = match run.call(&look, Conn::Fresh, LOOK_CALL).await {
            Ok(seen) => {
                if let Some(outcome) = identity_changed(run, &seen.machine_id) {
                    return Some(outcome);
                }
                match boot::trial_boot_seen(&seen, boot_before, &spec.new_system, None) {
                    TrialBoot::Booted => return None,
                    TrialBoot::Over(outcome) => return Some(outcome),
                    TrialBoot::Waiting(last) => last,
                }
            }
            Err(e) => e.to_string(),
        };
        if run.clock.now() >= deadline {
            return Some(Outcome::Unknown {
                reason: UnknownReason::NotBackFromTrialBoot {
                    seconds: wait.as_secs(),
                    last_seen: last,
                },
            });
        }
    }
}

/// A host that answers with another machine-id than the pinned one is not
/// the host tether prepared.
fn identity_changed<T, P, C, R: ?Sized>(
    run: &Run<'_, T, P, C, R>,
    machine_id: &str,
) -> Option<Outcome> {
    let pinned = run.job.machine_id.as_deref()?;
    (!machine_id.eq_ignore_ascii_case(pinned)).then(|| Outcome::Unknown {
        reason: UnknownReason::BootTrialGone {
            why: BootTrialProblem::BootedOther { booted: None },
            last_seen: format!("the host answered with machine-id {machine_id}, not {pinned}"),
        },
    })
}

/// On the trial boot: health checks while a keeper renews the lease over
/// fresh connections, then the confirmation over a fresh connection.
async fn try_trial<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &BootTrialSpec,
    facts: &Facts,
) -> Result<(), BootTrialProblem> {
    let job = run.job;
    let renewed = Cell::new(run.clock.now());
    let checks = std::pin::pin!(async {
        if job.checks.is_empty() {
            return Ok(());
        }
        let failures = run.health_checks(facts, None).await;
        if failures.is_empty() {
            Ok(())
        } else {
            Err(BootTrialProblem::ChecksFailed {
                seconds: job.checks.timeout.as_secs(),
                failures,
            })
        }
    });
    let keeper = std::pin::pin!(keep_lease(run, spec, &renewed));
    match select(checks, keeper).await {
        Either::Left((Ok(()), _)) => {}
        Either::Left((Err(why), _)) | Either::Right((why, _)) => return Err(why),
    }
    run.phase(Phase::Confirming);
    let confirm = AskBootTrial {
        spec: spec.clone(),
        request: BootTrialRequest::Confirm,
        journal: None,
    };
    let deadline = run.clock.now() + job.timeouts.confirm;
    loop {
        let last = match run
            .call(&confirm, Conn::Fresh, job.timeouts.confirm_attempt(false))
            .await
        {
            Ok(BootTrialAnswer {
                result: BootTrialReply::Done,
                machine_id,
                ..
            }) => {
                return match identity_changed(run, &machine_id) {
                    None => Ok(()),
                    Some(_) => Err(BootTrialProblem::ConfirmRefused {
                        state: format!("answered by machine-id {machine_id}"),
                    }),
                }
            }
            Ok(BootTrialAnswer {
                result: BootTrialReply::LockTimeout,
                ..
            }) => "the trial's state lock stayed taken".to_string(),
            Ok(answer) => {
                return Err(BootTrialProblem::ConfirmRefused {
                    state: answer.state.to_string(),
                })
            }
            Err(e) => e.to_string(),
        };
        if run.clock.now() >= deadline {
            return Err(BootTrialProblem::ConfirmFailed {
                seconds: job.timeouts.confirm.as_secs(),
                last,
            });
        }
        run.clock.sleep(RETRY_PAUSE).await;
    }
}

/// Renews the trial boot's lease every fifth of a lease over fresh
/// connections (the shared one died with the reboot and must not be what
/// keeps a trial alive); returns when no renewal got through for a whole
/// lease, or the guard left the trial.
async fn keep_lease<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &BootTrialSpec,
    renewed: &Cell<Duration>,
) -> BootTrialProblem {
    let timeouts = &run.job.timeouts;
    let renew = AskBootTrial {
        spec: spec.clone(),
        request: BootTrialRequest::Renew,
        journal: None,
    };
    loop {
        run.clock.sleep(timeouts.renew_every()).await;
        match run
            .call(&renew, Conn::Fresh, timeouts.renew_timeout())
            .await
        {
            Ok(BootTrialAnswer {
                result: BootTrialReply::Done,
                ..
            }) => renewed.set(run.clock.now()),
            Ok(BootTrialAnswer {
                result: BootTrialReply::LockTimeout,
                ..
            }) => {}
            Ok(answer) => {
                return BootTrialProblem::ConfirmRefused {
                    state: answer.state.to_string(),
                }
            }
            Err(e) => run.warn(format!("could not renew the trial boot's lease: {e}")),
        }
        if run.clock.now().saturating_sub(renewed.get()) >= timeouts.lease {
            return BootTrialProblem::LostContact {
                lease_seconds: timeouts.lease.as_secs(),
            };
        }
    }
}

/// Confirmed: the new system's own installer makes its generation the
/// default (read back), then the trial ends and the guard goes.
async fn persist<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &BootTrialSpec,
    prepared: &Prepared,
) -> Outcome {
    let job = run.job;
    run.phase(Phase::Persisting);
    let journal = JournalEntry {
        deploy_id: job.deploy_id.clone(),
        event: JournalEvent::Confirmed,
        old: Some(spec.old_system.clone()),
        new: job.new_system.clone(),
        deployer: job.deployer.clone(),
        detail: "reboot trial confirmed over a fresh connection".into(),
    };
    let mode = match prepared.new_generation {
        Some(n) => PersistMode::SwitchGeneration(n),
        None => PersistMode::SetProfile,
    };
    let op = Persist {
        new_system: job.new_system.clone(),
        mode,
        trial: None,
        journal: Some(journal.clone()),
    };
    let deadline = run.clock.now() + job.timeouts.confirm;
    let outcome = loop {
        match call_streaming(run.target, &op, Conn::Fresh, job.timeouts.activation, None).await {
            Ok((report, out)) => break decide::persisted(Ok(report), &job.new_system, &out.stderr),
            Err(CallError::Parse { error, .. }) => {
                break decide::persisted(Err(error), &job.new_system, "")
            }
            Err(CallError::Remote(e)) if run.clock.now() >= deadline => {
                break Outcome::ConfirmedNotPersisted {
                    reason: NotPersisted::Unreachable {
                        error: e.to_string(),
                    },
                }
            }
            Err(CallError::Remote(_)) => run.clock.sleep(RETRY_PAUSE).await,
        }
    };
    if !matches!(outcome, Outcome::Confirmed { .. }) {
        // Confirmed but not the default: the guard stays until the host
        // boots again, when it finds the old system and restores the rest.
        return outcome;
    }
    let finish = AskBootTrial {
        spec: spec.clone(),
        request: BootTrialRequest::Finish,
        journal: None,
    };
    let mut ended = false;
    for conn in [Conn::Fresh, Conn::Fresh] {
        if let Ok(answer) = run.call(&finish, conn, job.timeouts.command).await {
            ended =
                answer.result == BootTrialReply::Done || answer.state == BootTrialState::Finished;
            break;
        }
    }
    if !ended {
        run.warn(
            "persisted, but the boot-trial guard could not be removed; it removes itself at the next boot".into(),
        );
    }
    outcome
}

/// After giving up on the trial: waits for the host to say how it ended
/// (the guard's reboot into the old system, its restore), bounded by the
/// guard's first lease and a reboot.
async fn await_verdict<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &BootTrialSpec,
    boot_before: &str,
    why: BootTrialProblem,
) -> Outcome {
    let timeouts = &run.job.timeouts;
    let wait = first_lease(timeouts) + timeouts.reboot;
    let deadline = run.clock.now() + wait;
    let look = LookAtBootTrial {
        deploy_id: spec.deploy_id.clone(),
    };
    loop {
        let last = match run.call(&look, Conn::Fresh, LOOK_CALL).await {
            Ok(seen) => {
                match boot::trial_boot_seen(&seen, boot_before, &spec.new_system, Some(&why)) {
                    TrialBoot::Over(outcome) => return outcome,
                    TrialBoot::Waiting(last) => last,
                    TrialBoot::Booted => "still on the trial boot".to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        if run.clock.now() >= deadline {
            return Outcome::Unknown {
                reason: UnknownReason::BootTrialNoVerdict {
                    why,
                    seconds: wait.as_secs(),
                    last_seen: last,
                },
            };
        }
        run.clock.sleep(POLL_INTERVAL).await;
    }
}
