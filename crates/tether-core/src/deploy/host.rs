//! One host's safe switch (shared/BRIEF.md, "The safe switch"):
//! identity preflight → copy → the guarded trial (`trial.rs`) →
//! persist, and `--reboot` after. Every path ends in exactly one
//! [`Outcome`]; a host tether cannot vouch for ends `Unknown`, never success.
//!
//! This is the driver: it performs the remote operations and hands their
//! results to the pure decisions in [`super::decide`].

use std::cell::{Cell, RefCell};
use std::time::Duration;

use super::boot_trial;
use super::decide::{self, Plan};
use super::job::HostJob;
use super::trial;
use crate::checks::{self, Baseline};
use crate::model::{Goal, StorePath, TrialMode};
use crate::ports::{call, call_streaming, CallError, Clock, Conn, Probe, Reporter, Stream, Target};
use crate::remote::SystemStateLook;
use crate::remote::{
    BootState, CheckState, DryActivate, Facts, GuardSpec, JournalEntry, JournalEvent, Operation,
    Persist, Preflight, PruneSnapshots, Reboot, RestoreReport, TakeSnapshots, TrialNeeds,
};
use crate::report::{
    reboot_reasons_text, restore_command, CheckAttempt, CheckFailure, DataAfterRollback, Event,
    EventKind, Failure, HostReport, NotPersisted, Outcome, Phase, Refusal, StateAction,
    StateReport, Unhealthy, UnknownReason,
};
use crate::spec::{LOOK_CALL, POLL_INTERVAL};
use crate::text::tail;
use crate::trial_choice::{choose_trial, TrialKind};

/// Deploys one host and reports its outcome.
pub async fn run_host<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    job: &HostJob,
    target: &T,
    probe: &P,
    clock: &C,
    reporter: &R,
    run_started: Duration,
) -> HostReport {
    let started = clock.now();
    let run = Run {
        job,
        target,
        probe,
        clock,
        reporter,
        run_started,
        old_generation: Cell::new(None),
        state: RefCell::new(None),
        restore: RefCell::new(None),
    };
    let (outcome, old) = run.deploy().await;
    run.emit(EventKind::Outcome {
        outcome: outcome.clone(),
    });
    HostReport {
        host: job.host.clone(),
        outcome,
        old_system: old,
        old_generation: run.old_generation.get(),
        new_system: job.new_system.to_string(),
        duration_ms: millis(clock.now().saturating_sub(started)),
        state: run.state.into_inner(),
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One host's deploy in progress: the job and the ports it talks to.
pub(super) struct Run<'a, T, P, C, R: ?Sized> {
    pub job: &'a HostJob,
    pub target: &'a T,
    pub probe: &'a P,
    pub clock: &'a C,
    pub reporter: &'a R,
    pub run_started: Duration,
    /// The profile generation the preflight found.
    pub old_generation: Cell<Option<u32>>,
    /// Snapshots and data, once pre-deploy snapshots were taken.
    pub state: RefCell<Option<StateReport>>,
    /// The guard's restore of the data, as the trial's last look read it.
    pub restore: RefCell<Option<RestoreReport>>,
}

impl<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized> Run<'_, T, P, C, R> {
    pub fn emit(&self, kind: EventKind) {
        self.reporter.event(Event {
            host: self.job.host.clone(),
            elapsed_ms: millis(self.clock.now().saturating_sub(self.run_started)),
            kind,
        });
    }

    pub fn phase(&self, phase: Phase) {
        self.emit(EventKind::Phase { phase });
    }

    pub fn warn(&self, message: String) {
        self.emit(EventKind::Warning { message });
    }

    pub async fn call<O: Operation>(
        &self,
        op: &O,
        conn: Conn,
        timeout: Duration,
    ) -> Result<O::Output, CallError> {
        call(self.target, op, conn, timeout).await
    }

    /// The whole deploy; returns the outcome and the system the host ran before.
    async fn deploy(&self) -> (Outcome, Option<String>) {
        let job = self.job;
        self.phase(Phase::Preflight);
        let facts = match self.preflight().await {
            Ok(facts) => facts,
            Err(e) => return (decide::preflight_failed(e), None),
        };
        self.old_generation.set(facts.profile_generation);
        let start = match decide::start(job, &facts) {
            Ok(start) => start,
            Err(outcome) => return (outcome, facts.current_system.clone()),
        };
        let old = Some(start.old.to_string());
        // Only a trial activates; a dry run or a boot default changes no data.
        let snapshots = start.plan == Plan::Trial && job.state.is_declared();
        if snapshots {
            if let Err(outcome) = self.check_state().await {
                return (outcome, old);
            }
        }
        if start.copy {
            self.phase(Phase::Copying);
            if let Err(e) = self.target.copy(&job.new_system, job.timeouts.copy).await {
                let reason = Failure::Copy {
                    error: e.to_string(),
                };
                return (Outcome::Failed { reason }, old);
            }
        }
        let mut booted_on_trial = false;
        let outcome = match start.plan {
            Plan::DryActivate => self.dry_activate().await,
            Plan::SetBootDefault => self.set_boot_default().await,
            Plan::Trial => match self.prepare_trial(snapshots).await {
                Ok(TrialKind::Live) => trial::run(self, &facts, &start).await,
                Ok(TrialKind::LiveForced { reasons }) => {
                    self.warn(format!(
                        "--force-live: a live trial although {}; the next boot runs a change nobody booted",
                        reboot_reasons_text(&reasons)
                    ));
                    trial::run(self, &facts, &start).await
                }
                Ok(TrialKind::Reboot { reasons }) => {
                    booted_on_trial = true;
                    boot_trial::run(self, &facts, &start.old, &reasons).await
                }
                Err(outcome) => outcome,
            },
        };
        if snapshots {
            self.after_trial(&outcome).await;
        }
        let outcome = match (outcome, job.reboot.filter(|_| !booted_on_trial)) {
            (
                Outcome::Confirmed {
                    generation,
                    persisted: true,
                },
                Some(wait),
            ) => self.reboot(&facts, generation, wait).await,
            (other, _) => other,
        };
        (outcome, old)
    }

    /// Which trial the change gets, then (with `state` declared) the
    /// pre-deploy snapshots: the last step before anything is activated.
    async fn prepare_trial(&self, snapshots: bool) -> Result<TrialKind, Outcome> {
        let kind = self.choose_trial().await?;
        if snapshots {
            self.take_snapshots().await?;
        }
        Ok(kind)
    }

    /// Refuses a host that cannot honour its `state` declaration, before
    /// anything is copied.
    async fn check_state(&self) -> Result<(), Outcome> {
        let job = self.job;
        let op = CheckState {
            spec: job.state.clone(),
        };
        match self.call(&op, Conn::Shared, job.timeouts.command).await {
            Ok(problems) if problems.is_empty() => Ok(()),
            Ok(problems) => Err(Outcome::Refused {
                reason: Refusal::State { problems },
            }),
            Err(e) => Err(Outcome::Failed {
                reason: Failure::Snapshot {
                    error: format!("checking the state declaration: {e}"),
                },
            }),
        }
    }

    /// Takes the pre-deploy snapshots (recorded in the host's journal by
    /// the same session, and here as an event).
    async fn take_snapshots(&self) -> Result<(), Outcome> {
        let job = self.job;
        let op = TakeSnapshots {
            spec: job.state.clone(),
            deploy_id: job.deploy_id.clone(),
        };
        match self.call(&op, Conn::Shared, job.timeouts.command).await {
            Ok(Ok(snapshots)) => {
                let names: Vec<&str> = snapshots.iter().map(|s| s.location.as_str()).collect();
                self.emit(EventKind::State {
                    action: StateAction::Snapshotted,
                    summary: format!("pre-deploy snapshots {}", names.join(", ")),
                });
                self.state.replace(Some(StateReport {
                    snapshots,
                    ..StateReport::default()
                }));
                Ok(())
            }
            Ok(Err(failure)) => Err(Outcome::Refused {
                reason: Refusal::SnapshotFailed { failure },
            }),
            Err(e) => Err(Outcome::Failed {
                reason: Failure::Snapshot {
                    error: e.to_string(),
                },
            }),
        }
    }

    /// After a trial that had snapshots: prune when confirmed, say what
    /// became of the data when rolled back.
    async fn after_trial(&self, outcome: &Outcome) {
        let job = self.job;
        match outcome {
            Outcome::Confirmed { .. } => {
                let op = PruneSnapshots {
                    spec: job.state.clone(),
                    keep: job.state.keep,
                    protect: None,
                };
                let report = match self.call(&op, Conn::Shared, job.timeouts.command).await {
                    Ok(report) => report,
                    Err(e) => {
                        self.warn(format!("pruning old snapshots: {e}"));
                        return;
                    }
                };
                if !report.pruned.is_empty() || !report.failed.is_empty() {
                    self.emit(EventKind::State {
                        action: StateAction::Pruned,
                        summary: format!(
                            "pruned {}{}",
                            if report.pruned.is_empty() {
                                "nothing".to_string()
                            } else {
                                report.pruned.join(", ")
                            },
                            if report.failed.is_empty() {
                                String::new()
                            } else {
                                format!("; could not prune {}", report.failed.join(", "))
                            }
                        ),
                    });
                }
                if let Some(state) = self.state.borrow_mut().as_mut() {
                    state.pruned = Some(report);
                }
            }
            Outcome::RolledBack { .. } => {
                let restore_with = restore_command(job.host.as_str(), job.deploy_id.as_str());
                let data = if !job.state.restores() {
                    DataAfterRollback::KeptAsIs {
                        restore_command: restore_with,
                    }
                } else {
                    match self.restore.take() {
                        Some(report) if report.succeeded() => {
                            DataAfterRollback::Restored { report }
                        }
                        Some(report) => DataAfterRollback::RestoreFailed { report },
                        None => DataAfterRollback::NotReported {
                            restore_command: restore_with,
                        },
                    }
                };
                let action = match &data {
                    DataAfterRollback::Restored { .. } => StateAction::Restored,
                    DataAfterRollback::KeptAsIs { .. } => StateAction::KeptAsIs,
                    _ => StateAction::RestoreFailed,
                };
                self.emit(EventKind::State {
                    action,
                    summary: data.to_string(),
                });
                if let Some(state) = self.state.borrow_mut().as_mut() {
                    state.data = Some(data);
                }
            }
            _ => {}
        }
    }

    /// Which trial the change gets (goal switch only: a `test` is live by
    /// definition, and never persists).
    async fn choose_trial(&self) -> Result<TrialKind, Outcome> {
        let job = self.job;
        if job.goal != Goal::Switch {
            return Ok(TrialKind::Live);
        }
        let op = TrialNeeds {
            new_system: job.new_system.clone(),
            reboot_asked: job.trial == TrialMode::Reboot,
        };
        let needs = self
            .call(&op, Conn::Shared, job.timeouts.command)
            .await
            .map_err(|e| Outcome::Failed {
                reason: Failure::Preflight {
                    error: format!("reading what the change needs: {e}"),
                },
            })?;
        choose_trial(job.trial, job.force_live, job.reboot.is_some(), &needs)
            .map_err(|reason| Outcome::Refused { reason })
    }

    /// The preflight's facts: from the early run on the shared connection
    /// when the caller made one, else asked now.
    async fn preflight(&self) -> Result<Facts, CallError> {
        let job = self.job;
        let op = Preflight {
            new_system: (job.source == super::job::SystemSource::Copy)
                .then(|| job.new_system.clone()),
        };
        match &job.early_preflight {
            Some(out) => op.parse(out).map_err(|error| CallError::Parse {
                error,
                stderr_tail: tail(&out.stderr, 3),
            }),
            None => self.call(&op, Conn::Shared, job.timeouts.command).await,
        }
    }

    async fn dry_activate(&self) -> Outcome {
        let op = DryActivate {
            new_system: self.job.new_system.clone(),
        };
        let emit_line = |_: Stream, line: &str| {
            self.emit(EventKind::Output {
                line: line.to_string(),
            })
        };
        let result = call_streaming(
            self.target,
            &op,
            Conn::Shared,
            self.job.timeouts.activation,
            Some(&emit_line),
        )
        .await;
        match result {
            Ok((r, _)) if r.exit_code == Some(0) => Outcome::DryRun,
            Ok((r, _)) => Outcome::Failed {
                reason: Failure::DryActivate {
                    exit_code: r.exit_code,
                    stderr_tail: tail(&r.stderr, 3),
                },
            },
            Err(e) => Outcome::Failed {
                reason: Failure::DryActivateCall {
                    error: e.to_string(),
                },
            },
        }
    }

    async fn set_boot_default(&self) -> Outcome {
        self.phase(Phase::Persisting);
        let op = Persist {
            new_system: self.job.new_system.clone(),
            mode: self.job.persist,
            trial: None,
            journal: None,
        };
        let result = call_streaming(
            self.target,
            &op,
            Conn::Shared,
            self.job.timeouts.activation,
            None,
        )
        .await;
        let system = &self.job.new_system;
        match result {
            Ok((report, out)) => decide::boot_default_set(Ok(report), system, &out.stderr),
            Err(e) => decide::boot_default_set(Err(e), system, ""),
        }
    }

    /// Persisting the confirmed system (profile, boot default, end of the
    /// trial when `spec` is given) plus the host's journal line.
    pub fn persist_op(&self, spec: Option<&GuardSpec>, old: &StorePath) -> Persist {
        let job = self.job;
        Persist {
            new_system: job.new_system.clone(),
            mode: job.persist,
            trial: spec.cloned(),
            journal: Some(JournalEntry {
                deploy_id: job.deploy_id.clone(),
                event: JournalEvent::Confirmed,
                old: Some(old.clone()),
                new: job.new_system.clone(),
                deployer: job.deployer.clone(),
                detail: "confirmed over a fresh connection".into(),
            }),
        }
    }

    /// Makes the confirmed system permanent; with `spec`, also ends the trial.
    pub async fn persist(&self, spec: Option<&GuardSpec>, old: &StorePath) -> Outcome {
        self.phase(Phase::Persisting);
        let op = self.persist_op(spec, old);
        let mut last = String::new();
        for conn in [Conn::Shared, Conn::Fresh] {
            match call_streaming(self.target, &op, conn, self.job.timeouts.activation, None).await {
                Ok((report, out)) => {
                    return decide::persisted(Ok(report), &self.job.new_system, &out.stderr)
                }
                Err(CallError::Parse { error, .. }) => {
                    return decide::persisted(Err(error), &self.job.new_system, "")
                }
                Err(CallError::Remote(e)) => last = e.to_string(),
            }
        }
        Outcome::ConfirmedNotPersisted {
            reason: NotPersisted::Unreachable { error: last },
        }
    }

    /// Runs the host's health checks (phase `checking`, one event per
    /// attempt); returns the failures, empty when all passed.
    pub async fn health_checks(
        &self,
        facts: &Facts,
        first_look: Option<&SystemStateLook>,
    ) -> Vec<CheckFailure> {
        let job = self.job;
        self.phase(Phase::Checking);
        let on_attempt = |a: CheckAttempt| {
            self.emit(EventKind::Check {
                check: a.check,
                kind: a.kind,
                attempt: a.attempt,
                passed: a.passed,
                detail: a.detail,
            })
        };
        checks::run_checks(
            &job.check_target,
            &job.checks,
            &Baseline::Before(facts.failed_units.clone()),
            self.target,
            self.probe,
            self.clock,
            &on_attempt,
            first_look,
        )
        .await
    }

    /// `deploy --reboot`: reboots the confirmed, persisted host, waits (up
    /// to `wait`) for a new boot, checks that it booted the new system and
    /// runs the health checks again. A host that does not come back in time
    /// is unknown, with what was last seen.
    async fn reboot(&self, facts: &Facts, generation: Option<u32>, wait: Duration) -> Outcome {
        let job = self.job;
        self.phase(Phase::Rebooting);
        let op = Reboot {
            deploy_id: job.deploy_id.clone(),
        };
        let before = match call_streaming(
            self.target,
            &op,
            Conn::Shared,
            job.timeouts.command,
            None,
        )
        .await
        {
            Ok((Some(boot_id), _)) if !boot_id.is_empty() => boot_id,
            Ok((Some(_), _)) => facts.boot_id.clone(),
            Ok((None, out)) => {
                return Outcome::Unhealthy {
                    reason: Unhealthy::RebootNotScheduled {
                        stderr_tail: tail(&out.stderr, 3),
                    },
                }
            }
            Err(e) => {
                return Outcome::Unknown {
                    reason: UnknownReason::RebootRequestFailed {
                        error: e.to_string(),
                    },
                }
            }
        };
        let deadline = self.clock.now() + wait;
        let state = loop {
            self.clock.sleep(POLL_INTERVAL).await;
            let last = match self.call(&BootState, Conn::Fresh, LOOK_CALL).await {
                Ok(s) if !s.boot_id.is_empty() && s.boot_id != before => break s,
                Ok(_) => "still up on the old boot".to_string(),
                Err(e) => e.to_string(),
            };
            if self.clock.now() >= deadline {
                return Outcome::Unknown {
                    reason: UnknownReason::NotBackFromReboot {
                        seconds: wait.as_secs(),
                        last_seen: last,
                    },
                };
            }
        };
        if let Some(outcome) =
            decide::after_reboot(&state.booted_system, &state.current_system, &job.new_system)
        {
            return outcome;
        }
        if !job.checks.is_empty() {
            let failures = self.health_checks(facts, None).await;
            if !failures.is_empty() {
                return Outcome::Unhealthy {
                    reason: Unhealthy::ChecksFailedAfterReboot { failures },
                };
            }
        }
        Outcome::Confirmed {
            generation,
            persisted: true,
        }
    }
}
