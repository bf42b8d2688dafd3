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
    restore_bound, AskBootTrial, BootTrialAnswer, BootTrialReply, BootTrialRequest, BootTrialSeen,
    BootTrialSpec, BootTrialState, Facts, JournalEntry, JournalEvent, LookAtBootTrial, Persist,
    PersistMode, PrepareBootTrial, PrepareStep, Reboot, RebootReason,
};
use crate::report::{
    reboot_reasons_text, BootTrialProblem, Failure, NotPersisted, Outcome, Phase, UnknownReason,
};
use crate::spec::{LOOK_CALL, POLL_INTERVAL, QUICK_CALL, RETRY_PAUSE};
use crate::text::tail;

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
        state: job.state.restores().then(|| job.state.clone()),
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
        Ok((None, out)) => {
            // Definitely not scheduled: undo the prepared trial, so no later
            // reboot boots an unconfirmed system.
            return abandon(
                run,
                &spec,
                format!(
                    "the reboot could not be scheduled: {}",
                    tail(&out.stderr, 3)
                ),
            )
            .await;
        }
        Ok((Some(_), _)) | Err(_) => {
            // Maybe scheduled (the session broke): the trial happens at the
            // host's next boot. Wait; a host that never reboots is undone.
            run.warn("no answer from scheduling the reboot; waiting for the host to reboot".into());
            prepared.boot_id.clone()
        }
    };
    match await_trial_boot(run, &spec, &boot_before).await {
        TrialBootWait::Booted => {}
        TrialBootWait::Ended(outcome) => return outcome,
        TrialBootWait::NeverRebooted => {
            return abandon(
                run,
                &spec,
                format!(
                    "the host did not reboot within {}s",
                    job.timeouts.reboot.as_secs()
                ),
            )
            .await
        }
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
    };
    if run.call(&ask, Conn::Fresh, QUICK_CALL).await.is_err() {
        run.warn("could not ask the guard to roll back; it does when the lease lapses".into());
    }
    await_verdict(run, &spec, &boot_before, why).await
}

/// How the wait for the trial boot ended.
enum TrialBootWait {
    Booted,
    /// The trial is over (back on the old system) or the host is lost.
    Ended(Outcome),
    /// The host still runs the boot it was prepared on.
    NeverRebooted,
}

/// Waits, up to `timeouts.reboot`, for the host to come up on its trial
/// boot.
async fn await_trial_boot<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &BootTrialSpec,
    boot_before: &str,
) -> TrialBootWait {
    let wait = run.job.timeouts.reboot;
    let deadline = run.clock.now() + wait;
    let look = LookAtBootTrial {
        deploy_id: spec.deploy_id.clone(),
    };
    loop {
        run.clock.sleep(POLL_INTERVAL).await;
        let mut on_old_boot = false;
        let last = match run.call(&look, Conn::Fresh, LOOK_CALL).await {
            Ok(seen) => {
                if let Some(outcome) = identity_changed(run, &seen.machine_id) {
                    return TrialBootWait::Ended(outcome);
                }
                keep_restore(run, &seen);
                on_old_boot =
                    seen.boot_id == boot_before && seen.state == Some(BootTrialState::Prepared);
                match boot::trial_boot_seen(&seen, boot_before, &spec.new_system, None) {
                    TrialBoot::Booted => return TrialBootWait::Booted,
                    TrialBoot::Over(outcome) => return TrialBootWait::Ended(outcome),
                    TrialBoot::Waiting(last) => last,
                }
            }
            Err(e) => e.to_string(),
        };
        if run.clock.now() >= deadline {
            if on_old_boot {
                return TrialBootWait::NeverRebooted;
            }
            return TrialBootWait::Ended(Outcome::Unknown {
                reason: UnknownReason::NotBackFromTrialBoot {
                    seconds: wait.as_secs(),
                    last_seen: last,
                },
            });
        }
    }
}

/// The guard's restore of the data, once a look shows it, for the report.
fn keep_restore<T, P, C, R: ?Sized>(run: &Run<'_, T, P, C, R>, seen: &BootTrialSeen) {
    if seen.restore.is_some() {
        run.restore.replace(seen.restore.clone());
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

/// Confirmed: in one session under the trial's lock, the new system's own
/// installer makes its generation the default (read back), and only when
/// it did the trial ends and the guard goes. Not persisted: the guard
/// stays, and at the host's next boot (of the old default) restores the
/// profile and entries.
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
    let finish = AskBootTrial {
        spec: spec.clone(),
        request: BootTrialRequest::Finish(Box::new(Persist {
            new_system: job.new_system.clone(),
            mode,
            trial: None,
            journal: Some(journal),
        })),
    };
    let deadline = run.clock.now() + job.timeouts.confirm;
    loop {
        let answer = call_streaming(
            run.target,
            &finish,
            Conn::Fresh,
            job.timeouts.activation,
            None,
        )
        .await;
        match answer {
            Ok((
                BootTrialAnswer {
                    persist: Some(report),
                    ..
                },
                out,
            )) => return decide::persisted(report, &job.new_system, &out.stderr),
            // Finished by an earlier attempt whose answer was lost.
            Ok((
                BootTrialAnswer {
                    state: BootTrialState::Finished,
                    ..
                },
                _,
            )) => {
                return Outcome::Confirmed {
                    generation: prepared.new_generation,
                    persisted: true,
                }
            }
            Ok((answer, _)) => {
                return Outcome::ConfirmedNotPersisted {
                    reason: NotPersisted::NoReport {
                        error: format!(
                            "the reboot trial's guard would not persist (state {})",
                            answer.state
                        ),
                    },
                }
            }
            Err(CallError::Parse { error, .. }) => {
                return decide::persisted(Err(error), &job.new_system, "")
            }
            Err(CallError::Remote(e)) if run.clock.now() >= deadline => {
                return Outcome::ConfirmedNotPersisted {
                    reason: NotPersisted::Unreachable {
                        error: e.to_string(),
                    },
                }
            }
            Err(CallError::Remote(_)) => run.clock.sleep(RETRY_PAUSE).await,
        }
    }
}

/// Undoes a prepared trial whose reboot never came (profile, entries,
/// one-shot, guard); the host was never touched beyond that.
async fn abandon<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &BootTrialSpec,
    why: String,
) -> Outcome {
    let ask = AskBootTrial {
        spec: spec.clone(),
        request: BootTrialRequest::Abandon,
    };
    match run.call(&ask, Conn::Fresh, run.job.timeouts.command).await {
        Ok(answer) if answer.state == BootTrialState::RolledBack => Outcome::Failed {
            reason: Failure::PrepareBootTrial {
                step: PrepareStep::Reboot,
                detail: why,
            },
        },
        Ok(answer) => Outcome::Unknown {
            reason: UnknownReason::BootTrialPrepare {
                step: Some(PrepareStep::Reboot),
                detail: format!("{why}; undoing the prepared trial left it {}", answer.state),
            },
        },
        Err(e) => Outcome::Unknown {
            reason: UnknownReason::BootTrialPrepare {
                step: Some(PrepareStep::Reboot),
                detail: format!("{why}; undoing the prepared trial failed: {e}"),
            },
        },
    }
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
    // A guard restoring data does so before it reboots.
    let wait = first_lease(timeouts) + timeouts.reboot + restore_bound(&run.job.state);
    let deadline = run.clock.now() + wait;
    let look = LookAtBootTrial {
        deploy_id: spec.deploy_id.clone(),
    };
    loop {
        let last = match run.call(&look, Conn::Fresh, LOOK_CALL).await {
            Ok(seen) => {
                keep_restore(run, &seen);
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
