//! One host's safe switch (shared/BRIEF.md, "The safe switch"):
//! identity preflight → copy → arm the guard → activate with `test` →
//! confirm over a fresh connection → persist. Every path ends in exactly one
//! [`Outcome`]; a host tether cannot vouch for ends `Unknown`, never success.
//!
//! While the trial runs, a lease keeper renews the guard's lease over the
//! shared connection. If the keeper loses the host for a whole lease, or the
//! guard leaves the trial on its own (activation failed, lease lapsed), the
//! deploy stops trying to confirm and waits to learn what the guard did.

use crate::checks::{self, Baseline};
use crate::model::{DeployId, Goal, Token};
use crate::model::{HostName, StorePath};
use crate::ports::Probe;
use crate::ports::{Clock, Conn, RemoteError, Reporter, ScriptOutput, Target};
use crate::remote::{self, ArmResult, ConfirmResult, Facts, GuardSpec, GuardState, PersistMode};
use crate::report::CheckAttempt;
use crate::report::{Event, EventKind, HostReport, Outcome, Phase};
use crate::spec::Timeouts;
use crate::spec::{CheckTarget, HostChecks};
use futures::future::{select, Either};
use std::cell::{Cell, RefCell};
use std::time::Duration;

/// Everything needed to deploy one host.
#[derive(Debug, Clone)]
pub struct HostJob {
    pub host: HostName,
    pub new_system: StorePath,
    /// The Nix system the closure was built for (`x86_64-linux`).
    pub platform: Option<String>,
    /// The pinned machine-id, when the inventory has one.
    pub machine_id: Option<String>,
    pub goal: Goal,
    pub timeouts: Timeouts,
    pub deploy_id: DeployId,
    pub token: Token,
    /// Who the health checks are about (address, SSH user).
    pub check_target: CheckTarget,
    /// Run after activation, before the confirmation.
    pub checks: HostChecks,
    /// `user@machine` of the deployer, for the target's journal.
    pub deployer: String,
    /// Where the new system comes from.
    pub source: SystemSource,
    /// How a confirmed system becomes the boot default.
    pub persist: PersistMode,
    /// Reboot after persisting and wait this long for the host to come back
    /// on the new system (`deploy --reboot`).
    pub reboot: Option<Duration>,
    /// The preflight's output when the caller already ran
    /// [`remote::preflight_script_for`] with this job's new system (as the
    /// shared connection's first session, while the system was being
    /// built); the deploy then uses it instead of asking again. Arming
    /// re-checks that the host still runs the system it saw.
    pub early_preflight: Option<ScriptOutput>,
}

/// Where a host's new system comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemSource {
    /// Built here; copied to the host.
    Copy,
    /// Already in the host's store (a generation to roll back to, or the
    /// system a revert returns to); nothing is copied.
    OnTarget,
}

struct Run<'a, T, P, C, R: ?Sized> {
    job: &'a HostJob,
    target: &'a T,
    probe: &'a P,
    clock: &'a C,
    reporter: &'a R,
    run_started: Duration,
    /// The profile generation the preflight found.
    old_generation: std::cell::Cell<Option<u32>>,
}

/// How the trial (activation and confirmation) ended.
enum TrialEnd {
    /// Confirmed; with the output of persisting when it ran in the same
    /// session as the confirmation.
    Confirmed(Option<ScriptOutput>),
    /// Give up on the trial; ask the guard to roll back when `ask`.
    Abandon {
        reason: String,
        ask: bool,
    },
    /// The guard already left the trial (it rolled back, or the host rebooted).
    GuardLeft {
        reason: String,
    },
    Unknown(String),
    /// Ended before anything was activated (arming refused or failed).
    Done(Outcome),
}

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
        old_generation: std::cell::Cell::new(None),
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
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn tail(s: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(max_lines)..].join(" | ")
}

/// The outcome of a confirmed host from what persisting printed.
fn persist_outcome(out: &ScriptOutput) -> Outcome {
    match remote::parse_persist(&out.stdout) {
        Ok(r) if r.profile_set && r.boot_rc == Some(0) => Outcome::Confirmed {
            generation: r.generation,
            persisted: true,
        },
        Ok(r) => Outcome::ConfirmedNotPersisted {
            reason: format!(
                "the host runs the new system but will boot the old one: {}",
                persist_failure(&r, &out.stderr)
            ),
        },
        Err(e) => Outcome::ConfirmedNotPersisted {
            reason: format!("the host runs the new system, but persisting it did not report back ({e}); it may boot the old one"),
        },
    }
}

/// What went wrong while persisting, for a reason.
fn persist_failure(r: &remote::PersistReport, stderr: &str) -> String {
    format!(
        "profile {}, switch-to-configuration boot {}: {}",
        if r.profile_set { "set" } else { "not set" },
        exit_text(r.boot_rc),
        tail(stderr, 3)
    )
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exited {c} ({})", remote::activation_exit_meaning(c)),
        None => "was killed by a signal".to_string(),
    }
}

impl<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized> Run<'_, T, P, C, R> {
    fn emit(&self, kind: EventKind) {
        self.reporter.event(Event {
            host: self.job.host.clone(),
            elapsed_ms: millis(self.clock.now().saturating_sub(self.run_started)),
            kind,
        });
    }

    fn phase(&self, phase: Phase) {
        self.emit(EventKind::Phase { phase });
    }

    fn warn(&self, message: String) {
        self.emit(EventKind::Warning { message });
    }

    async fn sh(
        &self,
        script: &str,
        conn: Conn,
        timeout: Duration,
    ) -> Result<ScriptOutput, RemoteError> {
        self.target.run(script, conn, timeout, None).await
    }

    /// The whole deploy; returns the outcome and the system the host ran before.
    async fn deploy(&self) -> (Outcome, Option<String>) {
        let job = self.job;
        let to = &job.timeouts;
        self.phase(Phase::Preflight);
        let facts = match self.preflight().await {
            Ok(f) => f,
            Err(outcome) => return (outcome, None),
        };
        let old = facts.current_system.clone();
        self.old_generation.set(facts.profile_generation);
        let Some(old_path) = old.as_deref().and_then(StorePath::new) else {
            return (
                Outcome::Refused {
                    reason: "identity: /run/current-system is missing; tether only deploys to a running NixOS system it can roll back to".into(),
                },
                old,
            );
        };
        let new = job.new_system.as_str();
        let runs_new = facts.current_system.as_deref() == Some(new);
        let boots_new = facts.profile_system.as_deref() == Some(new);
        if runs_new && (boots_new || !job.goal.persists()) {
            return (Outcome::Unchanged, old);
        }

        if job.source == SystemSource::Copy && !facts.has_new_system {
            self.phase(Phase::Copying);
            if let Err(e) = self.target.copy(&job.new_system, to.copy).await {
                return (
                    Outcome::Failed {
                        reason: format!("copy: {e}; nothing was activated"),
                    },
                    old,
                );
            }
        }

        let outcome = match job.goal {
            Goal::DryActivate => self.dry_activate().await,
            Goal::Boot => self.set_boot_default().await,
            // Already running it (an earlier `test`): only persist.
            Goal::Switch if runs_new => self.persist(None, &old_path).await,
            Goal::Switch | Goal::Test => self.safe_switch(&facts, old_path).await,
        };
        let outcome = match (outcome, job.reboot) {
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

    async fn preflight(&self) -> Result<Facts, Outcome> {
        let job = self.job;
        let asked = match &job.early_preflight {
            Some(out) => Ok(out.clone()),
            None => {
                self.sh(
                    &remote::preflight_script_for(
                        (job.source == SystemSource::Copy).then_some(&job.new_system),
                    ),
                    Conn::Shared,
                    job.timeouts.command,
                )
                .await
            }
        };
        let out = match asked {
            Ok(out) => out,
            Err(RemoteError::HostKey(m)) => {
                return Err(Outcome::Refused {
                    reason: format!(
                        "identity: the host did not present the pinned host key ({m}); nothing was copied or activated"
                    ),
                })
            }
            Err(e) => {
                return Err(Outcome::Failed {
                    reason: format!("preflight: {e}"),
                })
            }
        };
        let facts = remote::parse_preflight(&out.stdout).map_err(|e| Outcome::Failed {
            reason: format!("preflight: {e}: {}", tail(&out.stderr, 3)),
        })?;
        if let Some(pinned) = &job.machine_id {
            if &facts.machine_id != pinned {
                return Err(Outcome::Refused {
                    reason: format!(
                        "identity: machine-id is {:?}, the inventory pins {pinned:?}",
                        facts.machine_id
                    ),
                });
            }
        }
        if let Some(platform) = &job.platform {
            if &facts.nix_system() != platform {
                return Err(Outcome::Refused {
                    reason: format!(
                        "architecture: the host is {} ({}), the system was built for {platform}",
                        facts.nix_system(),
                        facts.arch
                    ),
                });
            }
        }
        if !facts.missing_tools.is_empty() {
            return Err(Outcome::Refused {
                reason: format!(
                    "the host lacks tools the safe switch needs: {}",
                    facts.missing_tools.join(", ")
                ),
            });
        }
        if let Some(other) = &facts.busy_with {
            return Err(Outcome::Refused {
                reason: format!("another deploy ({other}) is in progress on this host"),
            });
        }
        Ok(facts)
    }

    async fn dry_activate(&self) -> Outcome {
        let script = remote::dry_activate_script(&self.job.new_system);
        let emit_line = |line: &str| {
            self.emit(EventKind::Output {
                line: line.to_string(),
            })
        };
        match self
            .target
            .run(
                &script,
                Conn::Shared,
                self.job.timeouts.activation,
                Some(&emit_line),
            )
            .await
        {
            Ok(out) if out.exit_code == Some(0) => Outcome::DryRun,
            Ok(out) => Outcome::Failed {
                reason: format!(
                    "switch-to-configuration dry-activate {}: {}",
                    exit_text(out.exit_code),
                    tail(&out.stderr, 3)
                ),
            },
            Err(e) => Outcome::Failed {
                reason: format!("dry-activate: {e}"),
            },
        }
    }

    async fn set_boot_default(&self) -> Outcome {
        self.phase(Phase::Persisting);
        let script = remote::persist_script(&self.job.new_system, self.job.persist, None);
        match self
            .sh(&script, Conn::Shared, self.job.timeouts.activation)
            .await
        {
            Ok(out) => match remote::parse_persist(&out.stdout) {
                Ok(r) if r.profile_set && r.boot_rc == Some(0) => Outcome::BootDefaultSet {
                    generation: r.generation,
                },
                Ok(r) => Outcome::Failed {
                    reason: format!(
                        "setting the boot default: {}",
                        persist_failure(&r, &out.stderr)
                    ),
                },
                Err(e) => Outcome::Unknown {
                    reason: format!("setting the boot default: {e}"),
                },
            },
            Err(e) => Outcome::Unknown {
                reason: format!("setting the boot default: {e}"),
            },
        }
    }

    /// Steps 4-8 of the safe switch.
    async fn safe_switch(&self, facts: &Facts, old: StorePath) -> Outcome {
        let job = self.job;
        let to = &job.timeouts;
        let spec = GuardSpec {
            deploy_id: job.deploy_id.clone(),
            token: job.token.clone(),
            old_system: old.clone(),
            new_system: job.new_system.clone(),
            lease: to.lease,
            deployer: job.deployer.clone(),
        };

        let trouble = RefCell::new(None);
        let armed = Cell::new(false);
        let renewed = Cell::new(self.clock.now());
        let trial = std::pin::pin!(self.trial(&spec, facts, &trouble, &armed, &renewed));
        let keeper = std::pin::pin!(self.keep_lease(&spec, &armed, &renewed));
        let end = match select(trial, keeper).await {
            Either::Left((end, _)) => end,
            // Say first what went wrong in the trial, then what the guard did.
            Either::Right((left, _)) => TrialEnd::GuardLeft {
                reason: match trouble.take() {
                    Some(t) => format!("{t}; {left}"),
                    None => left,
                },
            },
        };
        match end {
            TrialEnd::Confirmed(Some(out)) => {
                self.phase(Phase::Persisting);
                persist_outcome(&out)
            }
            TrialEnd::Confirmed(None) => match job.goal {
                Goal::Switch => self.persist(Some(&spec), &old).await,
                _ => self.finish_test(&spec, &old).await,
            },
            TrialEnd::Abandon { reason, ask } => {
                if ask {
                    self.ask_rollback(&spec, &reason).await;
                }
                self.await_guard(&spec, facts, &old, reason).await
            }
            TrialEnd::GuardLeft { reason } => self.await_guard(&spec, facts, &old, reason).await,
            TrialEnd::Unknown(reason) => Outcome::Unknown { reason },
            TrialEnd::Done(outcome) => outcome,
        }
    }

    /// Activation, then confirmation over fresh connections.
    /// `trouble` records the latest problem, for the report when the lease
    /// keeper ends the trial first; `renewed` is when the lease was last
    /// renewed (the activation's session renews it on success).
    async fn trial(
        &self,
        spec: &GuardSpec,
        facts: &Facts,
        trouble: &RefCell<Option<String>>,
        armed: &Cell<bool>,
        renewed: &Cell<Duration>,
    ) -> TrialEnd {
        let job = self.job;
        let to = &job.timeouts;
        self.phase(Phase::Arming);
        // The arm result comes first on the session, then the activation's
        // output: `arm=` lines are ours, everything else is the target's.
        let on_line = |line: &str| {
            if line == "arm=armed" {
                armed.set(true);
                self.phase(Phase::Activating);
            } else if ![
                "arm=",
                "busy=",
                "missing=",
                "system_state=",
                "failed_unit=",
                "lease_renewed=",
                "current=",
            ]
            .iter()
            .any(|p| line.starts_with(p))
                && line != "system=done"
            {
                self.emit(EventKind::Output {
                    line: line.to_string(),
                })
            }
        };
        // Always `test` during the trial: the boot default must not move
        // before the deploy is confirmed (a reboot now boots the old system).
        let activation = self
            .target
            .run(
                &remote::arm_and_activate_script(spec, Goal::Test),
                Conn::Shared,
                to.activation,
                Some(&on_line),
            )
            .await;
        if let Ok(out) = &activation {
            match remote::parse_arm(&out.stdout) {
                Ok(ArmResult::Armed) => {}
                Ok(ArmResult::Busy(other)) => {
                    return TrialEnd::Done(Outcome::Refused {
                        reason: format!("another deploy ({other}) is in progress on this host"),
                    })
                }
                Ok(ArmResult::Changed(now)) => {
                    return TrialEnd::Done(Outcome::Refused {
                        reason: format!(
                            "the host's system changed since the preflight (it saw {}, the host now runs {}); nothing was activated",
                            spec.old_system,
                            if now.is_empty() { "nothing" } else { &now }
                        ),
                    })
                }
                Ok(ArmResult::MissingTool(t)) => {
                    return TrialEnd::Done(Outcome::Refused {
                        reason: format!("the host lacks {t}, which the guard needs"),
                    })
                }
                Ok(ArmResult::Failed) => {
                    return TrialEnd::Done(Outcome::Failed {
                        reason:
                            "could not start the guard (systemd-run failed); nothing was activated"
                                .into(),
                    })
                }
                Err(e) => {
                    return TrialEnd::Done(Outcome::Failed {
                        reason: format!("arming the guard: {e}: {}", tail(&out.stderr, 3)),
                    })
                }
            }
        }
        let mut seen_system = None;
        match activation {
            Ok(out) if out.exit_code == Some(0) => {
                if remote::lease_renewed(&out.stdout) {
                    renewed.set(self.clock.now());
                }
                seen_system = Some(out.stdout)
            }
            Ok(out) => {
                return TrialEnd::Abandon {
                    reason: format!(
                        "activation failed: switch-to-configuration test {}",
                        exit_text(out.exit_code)
                    ),
                    ask: true,
                }
            }
            Err(RemoteError::Timeout(d)) => {
                return TrialEnd::Abandon {
                    reason: format!("activation did not finish within {}s", d.as_secs()),
                    ask: true,
                }
            }
            Err(e) if !armed.get() => {
                // Whether the guard was armed is unknown: if it was, it rolls
                // back when its lease lapses; the host tells which.
                return TrialEnd::GuardLeft {
                    reason: format!("the SSH session was lost while arming the guard: {e}"),
                };
            }
            Err(e) => {
                // The activation runs on in its own unit; a fresh connection
                // tells whether it reached the new system.
                self.warn(format!("lost the activation's SSH session: {e}"));
                trouble.replace(Some("the SSH session was lost during activation".into()));
            }
        }

        // Health checks before the confirmation: only a host that passes
        // them is confirmed. The lease keeper renews the lease meanwhile.
        if !job.checks.is_empty() {
            let all = self.health_checks(facts, seen_system.as_deref()).await;
            if !all.is_empty() {
                return TrialEnd::Abandon {
                    reason: format!(
                        "health check{} failed within {}s: {}",
                        if all.len() == 1 { "" } else { "s" },
                        job.checks.timeout.as_secs(),
                        all.join("; ")
                    ),
                    ask: true,
                };
            }
        }

        self.phase(Phase::Confirming);
        // For goal switch, persisting rides along in the confirming session
        // (only once the confirmation succeeded there): one connection less.
        let confirm = match job.goal {
            Goal::Switch => {
                remote::confirm_then(spec, &self.persist_script(Some(spec), &spec.old_system))
            }
            _ => remote::confirm_script(spec),
        };
        let persisted = |out: &ScriptOutput| (job.goal == Goal::Switch).then(|| out.clone());
        let deadline = self.clock.now() + to.confirm;
        loop {
            let last;
            let attempt_timeout = to.command.min(Duration::from_secs(10));
            match self.sh(&confirm, Conn::Fresh, attempt_timeout.max(to.activation.min(Duration::from_secs(120)))).await {
                Ok(out) => match remote::parse_confirm(&out.stdout) {
                    Ok(r) => match r.result {
                        ConfirmResult::Confirmed => return TrialEnd::Confirmed(persisted(&out)),
                        // Our own earlier attempt confirmed, but its answer was lost.
                        ConfirmResult::TooLate
                            if matches!(r.state, GuardState::Confirmed | GuardState::Finished) =>
                        {
                            return TrialEnd::Confirmed(persisted(&out))
                        }
                        ConfirmResult::TooLate | ConfirmResult::NoTrial => {
                            return TrialEnd::GuardLeft {
                                reason: "the confirmation came too late: the guard had already left the trial".into(),
                            }
                        }
                        ConfirmResult::BadToken => {
                            return TrialEnd::Unknown(
                                "the trial on the host does not carry this deploy's token".into(),
                            )
                        }
                        ConfirmResult::NotRunningNew => {
                            last = format!(
                                "the host runs {}, not the new system",
                                r.current_system.as_deref().unwrap_or("nothing")
                            );
                        }
                    },
                    Err(e) => last = format!("{e}: {}", tail(&out.stderr, 3)),
                },
                Err(e) => last = e.to_string(),
            }
            trouble.replace(Some(format!(
                "could not confirm over a fresh SSH connection ({last})"
            )));
            if self.clock.now() >= deadline {
                return TrialEnd::Abandon {
                    reason: format!(
                        "could not confirm over a fresh SSH connection within {}s: {last}",
                        to.confirm.as_secs()
                    ),
                    ask: true,
                };
            }
            self.clock.sleep(Duration::from_millis(500)).await;
        }
    }

    /// Renews the lease a fifth of a lease after its last renewal (by this
    /// keeper or by another session of the trial), until the guard leaves
    /// the trial on its own or the host has not answered for a whole lease.
    /// Returns why it stopped.
    async fn keep_lease(
        &self,
        spec: &GuardSpec,
        armed: &Cell<bool>,
        renewed: &Cell<Duration>,
    ) -> String {
        let lease = spec.lease;
        let every = (lease / 5).max(Duration::from_millis(500));
        let mut next_try = self.clock.now() + every;
        loop {
            let now = self.clock.now();
            if now < next_try {
                self.clock.sleep(next_try - now).await;
                continue;
            }
            if !armed.get() {
                // Arming is under way in the trial's session; the lease
                // starts with it.
                renewed.set(now);
                next_try = now + every;
                continue;
            }
            let due = renewed.get() + every;
            if now < due {
                next_try = due;
                continue;
            }
            match self
                .sh(
                    &remote::renew_script(spec),
                    Conn::Shared,
                    // A slow answer still renews: only a host that cannot be
                    // reached for the whole lease is given up.
                    (lease / 3).max(Duration::from_secs(2)),
                )
                .await
            {
                Ok(out) => match remote::parse_state(&out.stdout) {
                    Ok(GuardState::Armed | GuardState::Confirmed) => renewed.set(self.clock.now()),
                    Ok(GuardState::RolledBack | GuardState::RollingBack) => {
                        return "the host's guard rolled it back".to_string()
                    }
                    Ok(state) => {
                        return format!("the host's guard left the trial (state {state:?})")
                    }
                    Err(_) => {}
                },
                Err(e) => self.warn(format!("could not renew the lease: {e}")),
            }
            if self.clock.now().saturating_sub(renewed.get()) >= lease {
                return format!(
                    "lost contact with the host for the whole lease ({}s); its guard rolls it back",
                    lease.as_secs()
                );
            }
            next_try = self.clock.now() + every;
        }
    }

    /// Asks the guard to roll back now, over the shared connection and then
    /// a fresh one; when neither works, the lease lapses instead.
    async fn ask_rollback(&self, spec: &GuardSpec, reason: &str) {
        let script = remote::request_rollback_script(spec, reason);
        for conn in [Conn::Shared, Conn::Fresh] {
            if self.sh(&script, conn, Duration::from_secs(5)).await.is_ok() {
                return;
            }
        }
        self.warn("could not ask for the rollback; waiting for the lease to lapse".into());
    }

    /// Waits until the host tells (over fresh connections) how the trial
    /// ended. Not renewing the lease any more, so the guard acts by itself.
    async fn await_guard(
        &self,
        spec: &GuardSpec,
        facts: &Facts,
        old: &StorePath,
        why: String,
    ) -> Outcome {
        self.phase(Phase::RollingBack);
        let to = &self.job.timeouts;
        let deadline = self.clock.now() + to.lease + to.rollback;
        loop {
            let last;
            match self
                .sh(
                    &remote::inspect_script(spec),
                    Conn::Fresh,
                    Duration::from_secs(10),
                )
                .await
            {
                Ok(out) => match remote::parse_inspect(&out.stdout) {
                    Ok(i) => {
                        let current = i.current_system.clone().unwrap_or_default();
                        match i.state {
                            GuardState::RolledBack => {
                                let guard = i.reason.unwrap_or_default();
                                let reason = if guard.is_empty() || guard.contains(&why) {
                                    why
                                } else {
                                    format!("{why} (guard: {guard})")
                                };
                                return Outcome::RolledBack { reason };
                            }
                            GuardState::RollbackFailed => {
                                return Outcome::Unknown {
                                    reason: format!(
                                        "{why}; the guard's rollback failed (switch-to-configuration test of the previous system exited {}); the host runs {current}",
                                        i.rollback_rc.map(|c| c.to_string()).unwrap_or_else(|| "?".into())
                                    ),
                                }
                            }
                            GuardState::Missing if i.boot_id != facts.boot_id => {
                                return if current == old.as_str() {
                                    Outcome::RolledBack {
                                        reason: format!(
                                            "{why}; the host rebooted during the trial and came back on the previous system"
                                        ),
                                    }
                                } else {
                                    Outcome::Unknown {
                                        reason: format!(
                                            "{why}; the host rebooted during the trial and now runs {current}"
                                        ),
                                    }
                                };
                            }
                            // No trial on the host, same boot, old system: the
                            // guard was never armed, so nothing was activated.
                            GuardState::Missing if current == old.as_str() => {
                                return Outcome::Failed {
                                    reason: format!("{why}; no trial is armed on the host and it runs its previous system"),
                                }
                            }
                            GuardState::Missing => {
                                return Outcome::Unknown {
                                    reason: format!("{why}; the trial's state vanished from the host, which runs {current}"),
                                }
                            }
                            // Our own confirmation got through after all (only
                            // this deploy has the token): it stands.
                            GuardState::Confirmed if self.job.goal == Goal::Switch => {
                                self.warn(format!("{why}; but the host had confirmed the trial: persisting"));
                                return self.persist(Some(spec), old).await;
                            }
                            GuardState::Confirmed => {
                                return Outcome::Confirmed {
                                    generation: None,
                                    persisted: false,
                                }
                            }
                            GuardState::Finished
                                if self.job.goal != Goal::Switch
                                    || i.profile_system.as_deref() == Some(self.job.new_system.as_str()) =>
                            {
                                return Outcome::Confirmed {
                                    generation: i.profile_generation.filter(|_| self.job.goal == Goal::Switch),
                                    persisted: self.job.goal == Goal::Switch,
                                }
                            }
                            GuardState::Finished => {
                                return Outcome::ConfirmedNotPersisted {
                                    reason: format!("{why}; the host confirmed the trial and runs {current}, but its profile points at {}", i.profile_system.as_deref().unwrap_or("nothing")),
                                }
                            }
                            _ => last = format!("guard state {:?}", i.state),
                        }
                    }
                    Err(e) => last = format!("{e}: {}", tail(&out.stderr, 3)),
                },
                Err(e) => last = e.to_string(),
            }
            if self.clock.now() >= deadline {
                return Outcome::Unknown {
                    reason: format!(
                        "{why}; the host did not report a rollback within {}s (last: {last})",
                        (to.lease + to.rollback).as_secs()
                    ),
                };
            }
            self.clock.sleep(Duration::from_secs(1)).await;
        }
    }

    /// Makes the confirmed system permanent; with `spec`, also ends the trial.
    /// Persisting (profile, boot default, end of trial) plus the journal line.
    fn persist_script(&self, spec: Option<&GuardSpec>, old: &StorePath) -> String {
        let job = self.job;
        let mut script = remote::persist_script(&job.new_system, job.persist, spec);
        script.push_str(&remote::journal_script(
            &job.deploy_id,
            "confirmed",
            Some(old),
            &job.new_system,
            &job.deployer,
            "confirmed over a fresh connection",
        ));
        script
    }

    async fn persist(&self, spec: Option<&GuardSpec>, old: &StorePath) -> Outcome {
        self.phase(Phase::Persisting);
        let script = self.persist_script(spec, old);
        let mut last = String::new();
        for conn in [Conn::Shared, Conn::Fresh] {
            match self.sh(&script, conn, self.job.timeouts.activation).await {
                Ok(out) => return persist_outcome(&out),
                Err(e) => last = e.to_string(),
            }
        }
        Outcome::ConfirmedNotPersisted {
            reason: format!("the host runs the new system but persisting failed ({last}); it will boot the old one"),
        }
    }

    /// Runs the host's health checks (phase `checking`, one event per
    /// attempt); returns the failures, empty when all passed.
    async fn health_checks(&self, facts: &Facts, seen_system: Option<&str>) -> Vec<String> {
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
            seen_system,
        )
        .await
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    /// `deploy --reboot`: reboots the confirmed, persisted host, waits (up
    /// to `wait`) for a new boot, checks that it booted the new system and
    /// runs the health checks again. A host that does not come back in time
    /// is unknown, with what was last seen.
    async fn reboot(&self, facts: &Facts, generation: Option<u32>, wait: Duration) -> Outcome {
        let job = self.job;
        self.phase(Phase::Rebooting);
        let before = match self
            .sh(
                &remote::reboot_script(&job.deploy_id),
                Conn::Shared,
                job.timeouts.command,
            )
            .await
        {
            Ok(out) if out.stdout.contains("reboot=scheduled") => remote::parse_fields(&out.stdout)
                .get("boot_id")
                .and_then(|v| v.first().cloned())
                .unwrap_or_else(|| facts.boot_id.clone()),
            Ok(out) => {
                return Outcome::Unhealthy {
                    reason: format!(
                        "confirmed and persisted, but the reboot could not be scheduled: {}",
                        tail(&out.stderr, 3)
                    ),
                }
            }
            Err(e) => {
                return Outcome::Unknown {
                    reason: format!("confirmed and persisted; asking for the reboot failed: {e}"),
                }
            }
        };
        let deadline = self.clock.now() + wait;
        let state = loop {
            self.clock.sleep(Duration::from_secs(1)).await;
            let last = match self
                .sh(
                    &remote::boot_state_script(),
                    Conn::Fresh,
                    Duration::from_secs(10),
                )
                .await
            {
                Ok(out) => {
                    let f = remote::parse_fields(&out.stdout);
                    let get = |k: &str| {
                        f.get(k)
                            .and_then(|v| v.first())
                            .cloned()
                            .unwrap_or_default()
                    };
                    if !get("boot_id").is_empty() && get("boot_id") != before {
                        break (get("booted"), get("current"));
                    }
                    "still up on the old boot".to_string()
                }
                Err(e) => e.to_string(),
            };
            if self.clock.now() >= deadline {
                return Outcome::Unknown {
                    reason: format!(
                        "confirmed and persisted, then rebooted: the host did not come back within {}s (last seen: {last})",
                        wait.as_secs()
                    ),
                };
            }
        };
        let new = job.new_system.as_str();
        if state.0 != new || state.1 != new {
            return Outcome::Unhealthy {
                reason: format!(
                    "after the reboot the host booted {} and runs {}, not the new system",
                    state.0, state.1
                ),
            };
        }
        if !job.checks.is_empty() {
            let all = self.health_checks(facts, None).await;
            if !all.is_empty() {
                return Outcome::Unhealthy {
                    reason: format!(
                        "booted the new system, but health checks failed after the reboot: {}",
                        all.join("; ")
                    ),
                };
            }
        }
        Outcome::Confirmed {
            generation,
            persisted: true,
        }
    }

    /// Goal test: confirmed; end the trial without persisting.
    async fn finish_test(&self, spec: &GuardSpec, old: &StorePath) -> Outcome {
        let job = self.job;
        let mut script = remote::finish_script(spec);
        script.push_str(&remote::journal_script(
            &job.deploy_id,
            "confirmed",
            Some(old),
            &job.new_system,
            &job.deployer,
            "goal test: not persisted",
        ));
        if let Err(e) = self.sh(&script, Conn::Shared, job.timeouts.command).await {
            self.warn(format!(
                "could not end the trial cleanly ({e}); its lock clears when the lease lapses"
            ));
        }
        Outcome::Confirmed {
            generation: None,
            persisted: false,
        }
    }
}
