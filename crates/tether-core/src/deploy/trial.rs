//! The guarded trial, steps 4–8 of the safe switch: arm the guard and
//! activate with `test` in one session, wait for the activation to end
//! (over fresh connections if its session was lost), run the health checks
//! after that end, confirm over a fresh connection (persisting in the same
//! session for goal switch); on any trouble, ask the guard to roll back and
//! wait for its verdict.
//!
//! While the trial runs, a lease keeper renews the guard's lease over the
//! shared connection (and starts the guard again if it died). If the keeper
//! loses the host for a whole lease, or the guard leaves the trial on its
//! own (activation failed, lease lapsed), the deploy stops trying and waits
//! to learn what the guard did. The keeper never decides a confirmed
//! trial's outcome: persisting is the trial's to report.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use futures::future::{select, Either};

use super::decide::{self, Activated, ConfirmStep, Progress, Renewed, Start, Verdict};
use super::host::Run;
use crate::model::{Goal, StorePath};
use crate::ports::{call_streaming, Clock, Conn, Probe, Reporter, Stream, Target};
use crate::remote::{
    restore_bound, ArmAndActivate, Confirm, Facts, FinishTrial, GuardLife, GuardSpec, GuardState,
    Inspect, JournalEntry, JournalEvent, Renew, RequestRollback, ARM_WAIT,
};
use crate::report::{EventKind, Outcome, Phase, TrialProblem, Trouble, UnknownReason};
use crate::spec::{LOOK_CALL, POLL_INTERVAL, QUICK_CALL, RETRY_PAUSE};

/// How the trial (activation and confirmation) ended.
enum TrialEnd {
    /// Confirmed; with the outcome of persisting when it rode along.
    Confirmed(Option<Outcome>),
    /// Give up on the trial and ask the guard to roll back.
    Abandon(TrialProblem),
    /// The guard already left the trial (it rolled back, or the host
    /// rebooted), or may have: the host tells which.
    GuardLeft(TrialProblem),
    Unknown(UnknownReason),
    /// Ended before anything was activated (arming refused or failed).
    Done(Outcome),
}

/// What the trial and its lease keeper share.
struct Shared {
    /// The latest problem, for the report when the keeper ends the trial.
    trouble: RefCell<Option<Trouble>>,
    /// The `arm=armed` line arrived: the lease runs.
    armed: Cell<bool>,
    /// An `arm=` line of any kind arrived: arming answered.
    arm_answered: Cell<bool>,
    /// When the lease was last renewed (the activation's session renews it
    /// on success).
    renewed: Cell<Duration>,
}

/// Runs the trial of `job.new_system` on a host as the preflight found it.
pub(super) async fn run<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    facts: &Facts,
    start: &Start,
) -> Outcome {
    let job = run.job;
    let spec = GuardSpec {
        deploy_id: job.deploy_id.clone(),
        token: job.token.clone(),
        current_system: start.current.clone(),
        old_system: start.old.clone(),
        new_system: job.new_system.clone(),
        lease: job.timeouts.lease,
        rollback_limit: job.timeouts.rollback,
        deployer: job.deployer.clone(),
        state: job.state.restores().then(|| job.state.clone()),
    };
    let shared = Shared {
        trouble: RefCell::new(None),
        armed: Cell::new(false),
        arm_answered: Cell::new(false),
        renewed: Cell::new(run.clock.now()),
    };
    let trial = std::pin::pin!(trial(run, &spec, facts, &shared));
    let keeper = std::pin::pin!(keep_lease(run, &spec, &shared));
    let end = match select(trial, keeper).await {
        Either::Left((end, _)) => end,
        Either::Right((left, _)) => TrialEnd::GuardLeft(left),
    };
    let old = &start.old;
    match end {
        TrialEnd::Confirmed(Some(outcome)) => {
            run.phase(Phase::Persisting);
            outcome
        }
        TrialEnd::Confirmed(None) => match job.goal {
            Goal::Switch => run.persist(Some(&spec), old).await,
            _ => finish_test(run, &spec, old).await,
        },
        TrialEnd::Abandon(why) => {
            ask_rollback(run, &spec, &why).await;
            await_guard(run, &spec, facts, old, why).await
        }
        TrialEnd::GuardLeft(why) => await_guard(run, &spec, facts, old, why).await,
        TrialEnd::Unknown(reason) => Outcome::Unknown { reason },
        TrialEnd::Done(outcome) => outcome,
    }
}

/// Arming and activation, the wait for its end, the health checks, then
/// confirmation over fresh connections.
async fn trial<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &GuardSpec,
    facts: &Facts,
    shared: &Shared,
) -> TrialEnd {
    let job = run.job;
    run.phase(Phase::Arming);
    let activation_started = run.clock.now();
    let on_line = |stream: Stream, line: &str| match stream {
        // stdout is the protocol's; the activation's output is on stderr.
        Stream::Stdout => {
            if let Some(result) = line.strip_prefix("arm=") {
                shared.arm_answered.set(true);
                if result == "armed" {
                    shared.armed.set(true);
                    run.phase(Phase::Activating);
                }
            }
        }
        Stream::Stderr => run.emit(EventKind::Output {
            line: line.to_string(),
        }),
    };
    // Always `test` during the trial: the boot default must not move
    // before the deploy is confirmed (a reboot now boots the old system).
    let op = ArmAndActivate {
        spec: spec.clone(),
        goal: Goal::Test,
    };
    let session = std::pin::pin!(call_streaming(
        run.target,
        &op,
        Conn::Shared,
        job.timeouts.activation,
        Some(&on_line),
    ));
    // Arming must answer in time: an arm held up past this gives up on the
    // host by itself (its deadline is shorter), so none arms late.
    let watchdog = std::pin::pin!(async {
        run.clock.sleep(ARM_WAIT).await;
        if shared.arm_answered.get() {
            std::future::pending::<()>().await;
        }
    });
    let result = match select(session, watchdog).await {
        Either::Left((result, _)) => result.map(|(report, _)| report),
        Either::Right(((), _)) => {
            return TrialEnd::GuardLeft(TrialProblem::ArmTimedOut {
                seconds: ARM_WAIT.as_secs(),
            })
        }
    };
    let armed = shared.armed.get();
    let first_look = match decide::after_activation(result, armed, &spec.current_system) {
        Activated::Ended {
            first_look,
            lease_renewed,
        } => {
            if lease_renewed {
                shared.renewed.set(run.clock.now());
            }
            run.emit(EventKind::ActivationEnded { exit_code: Some(0) });
            first_look
        }
        Activated::Abandon(why) => {
            if let TrialProblem::ActivationFailed { exit_code } = &why {
                run.emit(EventKind::ActivationEnded {
                    exit_code: *exit_code,
                });
            }
            return TrialEnd::Abandon(why);
        }
        Activated::LostArming(why) => return TrialEnd::GuardLeft(why),
        Activated::Done(outcome) => return TrialEnd::Done(outcome),
        Activated::LostSession(e) => {
            // The activation runs on in its own unit; fresh connections
            // tell when it ends and how.
            run.warn(format!("lost the activation's SSH session: {e}"));
            shared
                .trouble
                .replace(Some(Trouble::SessionLostDuringActivation));
            if let Err(end) = await_activation(run, spec, shared, activation_started).await {
                return end;
            }
            None
        }
    };

    // Health checks before the confirmation, and only after the activation
    // ended: only a host that passes them is confirmed. The lease keeper
    // renews the lease meanwhile.
    if !job.checks.is_empty() {
        let failures = run.health_checks(facts, first_look.as_ref()).await;
        if !failures.is_empty() {
            return TrialEnd::Abandon(TrialProblem::ChecksFailed {
                seconds: job.checks.timeout.as_secs(),
                failures,
            });
        }
    }

    run.phase(Phase::Confirming);
    // For goal switch, persisting rides along in the confirming session
    // (only once the confirmation succeeded there): one connection less.
    let persists = job.goal == Goal::Switch;
    let confirm = Confirm {
        spec: spec.clone(),
        persist: persists.then(|| run.persist_op(Some(spec), &spec.old_system)),
    };
    let deadline = run.clock.now() + job.timeouts.confirm;
    loop {
        let attempt = call_streaming(
            run.target,
            &confirm,
            Conn::Fresh,
            job.timeouts.confirm_attempt(persists),
            None,
        )
        .await;
        let stderr = attempt
            .as_ref()
            .map(|(_, out)| out.stderr.clone())
            .unwrap_or_default();
        let last = match decide::confirm_attempt(attempt.map(|(report, _)| report)) {
            ConfirmStep::Confirmed(persist) => {
                return TrialEnd::Confirmed(
                    persist.map(|p| decide::persisted(p, &job.new_system, &stderr)),
                )
            }
            ConfirmStep::TooLate => return TrialEnd::GuardLeft(TrialProblem::ConfirmTooLate),
            ConfirmStep::BadToken => return TrialEnd::Unknown(UnknownReason::BadToken),
            ConfirmStep::ActivationFailed(exit_code) => {
                return TrialEnd::Abandon(TrialProblem::ActivationFailed { exit_code })
            }
            ConfirmStep::Retry(last) => last,
        };
        shared
            .trouble
            .replace(Some(Trouble::CouldNotConfirm { last: last.clone() }));
        if run.clock.now() >= deadline {
            return TrialEnd::Abandon(TrialProblem::ConfirmFailed {
                seconds: job.timeouts.confirm.as_secs(),
                last,
            });
        }
        run.clock.sleep(RETRY_PAUSE).await;
    }
}

/// After the activation's session was lost: waits (within the activation
/// timeout, counted from its start) for the activation to end, asking over
/// fresh connections, each of which also renews the lease. `Ok` when it
/// ended with exit code 0; otherwise how the trial ends.
async fn await_activation<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &GuardSpec,
    shared: &Shared,
    started: Duration,
) -> Result<(), TrialEnd> {
    let limit = run.job.timeouts.activation;
    let renew = Renew { spec: spec.clone() };
    loop {
        if let Ok(renewal) = run.call(&renew, Conn::Fresh, LOOK_CALL).await {
            // It renewed the lease too.
            shared.renewed.set(run.clock.now());
            if renewal.guard == GuardLife::Restarted {
                run.warn("the host's guard was gone; tether started it again".into());
            }
            let ended = |code| {
                run.emit(EventKind::ActivationEnded {
                    exit_code: Some(code),
                })
            };
            match decide::activation_progress(&renewal) {
                Progress::Wait => {}
                Progress::Ended => {
                    ended(0);
                    return Ok(());
                }
                Progress::Abandon(why) => {
                    if let TrialProblem::ActivationFailed {
                        exit_code: Some(code),
                    } = &why
                    {
                        ended(*code);
                    }
                    return Err(TrialEnd::Abandon(why));
                }
                Progress::GuardLeft(state) => {
                    return Err(TrialEnd::GuardLeft(left(
                        state,
                        Some(Trouble::SessionLostDuringActivation),
                    )))
                }
                Progress::Done(outcome) => return Err(TrialEnd::Done(outcome)),
            }
        }
        if run.clock.now().saturating_sub(started) >= limit {
            return Err(TrialEnd::Abandon(TrialProblem::ActivationTimedOut {
                seconds: limit.as_secs(),
            }));
        }
        run.clock.sleep(POLL_INTERVAL).await;
    }
}

/// Why the trial ends when the guard left it in `state`.
fn left(state: GuardState, after: Option<Trouble>) -> TrialProblem {
    match state {
        GuardState::RolledBack | GuardState::RollingBack => TrialProblem::GuardRolledBack { after },
        state => TrialProblem::GuardLeft { state, after },
    }
}

/// Renews the lease a fifth of a lease after its last renewal (by this
/// keeper or by another session of the trial), until the guard leaves the
/// trial on its own or the host has not answered for a whole lease.
/// Returns why it stopped.
async fn keep_lease<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &GuardSpec,
    shared: &Shared,
) -> TrialProblem {
    let timeouts = &run.job.timeouts;
    let every = timeouts.renew_every();
    let renew = Renew { spec: spec.clone() };
    let mut next_try = run.clock.now() + every;
    loop {
        let now = run.clock.now();
        if now < next_try {
            run.clock.sleep(next_try - now).await;
            continue;
        }
        if !shared.armed.get() {
            // Arming is under way in the trial's session; the lease starts
            // with it.
            shared.renewed.set(now);
            next_try = now + every;
            continue;
        }
        let due = shared.renewed.get() + every;
        if now < due {
            next_try = due;
            continue;
        }
        let result = run
            .call(&renew, Conn::Shared, timeouts.renew_timeout())
            .await;
        let after = || shared.trouble.borrow().clone();
        match decide::after_renewal(&result) {
            Renewed::Renewed => shared.renewed.set(run.clock.now()),
            Renewed::GuardRestarted => {
                shared.renewed.set(run.clock.now());
                run.warn("the host's guard was gone; tether started it again".into());
            }
            Renewed::GuardLeft(state) => return left(state, after()),
            Renewed::GuardDead => return TrialProblem::GuardDead,
            Renewed::NoAnswer => {
                if let Err(e) = &result {
                    run.warn(format!("could not renew the lease: {e}"));
                }
            }
        }
        if run.clock.now().saturating_sub(shared.renewed.get()) >= timeouts.lease {
            return TrialProblem::LostContact {
                lease_seconds: timeouts.lease.as_secs(),
                after: after(),
            };
        }
        next_try = run.clock.now() + every;
    }
}

/// Asks the guard to roll back now, over the shared connection and then a
/// fresh one; when neither works, the lease lapses instead.
async fn ask_rollback<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &GuardSpec,
    why: &TrialProblem,
) {
    let op = RequestRollback {
        spec: spec.clone(),
        reason: why.to_string(),
    };
    for conn in [Conn::Shared, Conn::Fresh] {
        if run.call(&op, conn, QUICK_CALL).await.is_ok() {
            return;
        }
    }
    run.warn("could not ask for the rollback; waiting for the lease to lapse".into());
}

/// Waits until the host tells (over fresh connections) how the trial
/// ended. Not renewing the lease any more, so the guard acts by itself.
async fn await_guard<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &GuardSpec,
    facts: &Facts,
    old: &StorePath,
    why: TrialProblem,
) -> Outcome {
    run.phase(Phase::RollingBack);
    let timeouts = &run.job.timeouts;
    // A guard that restores data before the old system takes longer.
    let verdict_wait = timeouts.verdict_wait() + restore_bound(&run.job.state);
    let deadline = run.clock.now() + verdict_wait;
    let inspect = Inspect { spec: spec.clone() };
    loop {
        let last = match run.call(&inspect, Conn::Fresh, LOOK_CALL).await {
            Ok(i) => {
                // The guard's restore of the data, for the report.
                if i.restore.is_some() {
                    run.restore.replace(i.restore.clone());
                }
                match decide::after_inspection(&i, &facts.boot_id, old, run.job, &why) {
                    Verdict::Done(outcome) => return outcome,
                    Verdict::Persist => {
                        run.warn(format!(
                            "{why}; but the host had confirmed the trial: persisting"
                        ));
                        return run.persist(Some(spec), old).await;
                    }
                    Verdict::Wait(last) => last,
                }
            }
            Err(e) => e.to_string(),
        };
        if run.clock.now() >= deadline {
            return Outcome::Unknown {
                reason: UnknownReason::NoVerdict {
                    why,
                    seconds: verdict_wait.as_secs(),
                    last,
                },
            };
        }
        run.clock.sleep(POLL_INTERVAL).await;
    }
}

/// Goal test: confirmed; end the trial without persisting.
async fn finish_test<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    run: &Run<'_, T, P, C, R>,
    spec: &GuardSpec,
    old: &StorePath,
) -> Outcome {
    let job = run.job;
    let op = FinishTrial {
        spec: spec.clone(),
        journal: JournalEntry {
            deploy_id: job.deploy_id.clone(),
            event: JournalEvent::Confirmed,
            old: Some(old.clone()),
            new: job.new_system.clone(),
            deployer: job.deployer.clone(),
            detail: "goal test: not persisted".into(),
        },
    };
    if let Err(e) = run.call(&op, Conn::Shared, job.timeouts.command).await {
        run.warn(format!(
            "could not end the trial cleanly ({e}); its lock clears when the lease lapses"
        ));
    }
    Outcome::Confirmed {
        generation: None,
        persisted: false,
    }
}
