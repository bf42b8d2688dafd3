//! Rolling a fleet out: stages from the [`RolloutPlan`] (canaries first,
//! then batches), each host's safe switch as its own future, at most
//! `parallel` in flight, a host starting as soon as a slot frees (no
//! lock-step waves inside a stage). A stage ends before the next begins.
//!
//! The rollout stops starting hosts when a canary fails, when more hosts
//! failed than `maxFailures` allows, or when it is interrupted (Ctrl-C);
//! hosts in flight finish (confirmed or rolled back) and the rest are
//! reported `skipped`, untouched. With `revertOnFailure`, hosts this run
//! confirmed are then switched back to their old system, newest first, with
//! the same safe switch.

use super::host::{millis, run_host};
use super::job::{HostJob, SystemSource};
use crate::model::{StorePath, Token};
use crate::ports::{Clock, Probe, Reporter, Target};
use crate::remote::PersistMode;
use crate::report::{
    Event, EventKind, HostReport, Outcome, RollbackReason, SkipReason, Unhealthy, UnknownReason,
};
use crate::spec::RolloutPlan;
use futures::stream::{self, StreamExt};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a rollout needs besides the jobs.
pub struct Rollout<'a> {
    pub plan: &'a RolloutPlan,
    /// Set from outside (the first Ctrl-C): start no new host.
    pub interrupted: &'a AtomicBool,
    /// A fresh token for each revert trial.
    pub new_token: &'a dyn Fn() -> Option<Token>,
}

/// Runs the rollout and returns one report per job, in the jobs' order.
pub async fn run_fleet<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    jobs: Vec<(HostJob, T)>,
    rollout: Rollout<'_>,
    probe: &P,
    clock: &C,
    reporter: &R,
) -> Vec<HostReport> {
    let run_started = clock.now();
    let order: Vec<_> = jobs.iter().map(|(job, _)| job.host.clone()).collect();
    let plan = rollout.plan;
    let mut pending: Vec<Option<(HostJob, T)>> = jobs.into_iter().map(Some).collect();
    let failures = Cell::new(0usize);
    let stop: RefCell<Option<SkipReason>> = RefCell::new(None);
    let confirmed_in_order: RefCell<Vec<usize>> = RefCell::new(Vec::new());
    let mut done: Vec<(HostReport, HostJob, Option<T>)> = Vec::new();

    let stop_reason = || -> Option<SkipReason> {
        if rollout.interrupted.load(Ordering::SeqCst) {
            return Some(SkipReason::Interrupted);
        }
        stop.borrow().clone()
    };

    for stage in &plan.stages {
        let stage_jobs: Vec<(HostJob, T)> = stage
            .hosts
            .iter()
            .filter_map(|h| {
                let i = order.iter().position(|o| o == h)?;
                pending.get_mut(i)?.take()
            })
            .collect();
        let results: Vec<(HostReport, HostJob, Option<T>)> = stream::iter(stage_jobs)
            .map(|(job, target)| {
                let stop_reason = &stop_reason;
                let failures = &failures;
                let stop = &stop;
                let confirmed_in_order = &confirmed_in_order;
                let order = &order;
                async move {
                    // Checked when the host gets its slot, not when queued.
                    if let Some(reason) = stop_reason() {
                        let report = skipped(&job, reason, clock, reporter, run_started);
                        return (report, job, Some(target));
                    }
                    let report = run_host(&job, &target, probe, clock, reporter, run_started).await;
                    if report.outcome.is_success() {
                        if matches!(report.outcome, Outcome::Confirmed { .. }) {
                            if let Some(i) = order.iter().position(|h| h == &job.host) {
                                confirmed_in_order.borrow_mut().push(i);
                            }
                        }
                    } else {
                        failures.set(failures.get() + 1);
                        let mut stop = stop.borrow_mut();
                        if stop.is_none() {
                            if stage.canary {
                                *stop = Some(SkipReason::CanaryFailed {
                                    canary: job.host.to_string(),
                                    outcome: report.outcome.name().to_string(),
                                });
                            } else if let Some(max) = plan.max_failures {
                                if failures.get() > max {
                                    *stop = Some(SkipReason::TooManyFailures {
                                        failed: failures.get(),
                                        max_failures: max,
                                    });
                                }
                            }
                        }
                    }
                    (report, job, Some(target))
                }
            })
            .buffer_unordered(plan.parallel.max(1))
            .collect()
            .await;
        done.extend(results);
    }
    // Hosts in no stage (should not happen) are skipped rather than lost.
    for (job, target) in pending.into_iter().flatten() {
        let report = skipped(&job, SkipReason::NoStage, clock, reporter, run_started);
        done.push((report, job, Some(target)));
    }

    if plan.revert_on_failure && failures.get() > 0 {
        let failed_hosts = failures.get();
        let newest_first: Vec<usize> = confirmed_in_order.borrow().iter().rev().copied().collect();
        for i in newest_first {
            let Some(entry) = done
                .iter_mut()
                .find(|(r, _, _)| order.get(i) == Some(&r.host))
            else {
                continue;
            };
            let (report, job, target) = entry;
            let Some(target) = target.as_ref() else {
                continue;
            };
            report.outcome = revert(
                report,
                job,
                target,
                failed_hosts,
                &rollout,
                probe,
                clock,
                reporter,
                run_started,
            )
            .await;
        }
    }

    let mut reports: Vec<HostReport> = done.into_iter().map(|(r, _, _)| r).collect();
    reports.sort_by_key(|r| order.iter().position(|h| h == &r.host));
    reports
}

fn skipped<C: Clock, R: Reporter + ?Sized>(
    job: &HostJob,
    reason: SkipReason,
    clock: &C,
    reporter: &R,
    run_started: std::time::Duration,
) -> HostReport {
    let outcome = Outcome::Skipped { reason };
    reporter.event(Event {
        host: job.host.clone(),
        elapsed_ms: millis(clock.now().saturating_sub(run_started)),
        kind: EventKind::Outcome {
            outcome: outcome.clone(),
        },
    });
    HostReport {
        host: job.host.clone(),
        outcome,
        old_system: None,
        old_generation: None,
        new_system: job.new_system.to_string(),
        duration_ms: 0,
        state: None,
    }
}

/// Switches a host this run confirmed back to the system it ran before,
/// with the same safe switch; returns the host's final outcome.
#[allow(clippy::too_many_arguments)]
async fn revert<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    report: &HostReport,
    job: &HostJob,
    target: &T,
    failed_hosts: usize,
    rollout: &Rollout<'_>,
    probe: &P,
    clock: &C,
    reporter: &R,
    run_started: std::time::Duration,
) -> Outcome {
    let (Some(old), Some(token), Some(id)) = (
        report.old_system.as_deref().and_then(StorePath::new),
        (rollout.new_token)(),
        job.deploy_id.derived("revert"),
    ) else {
        return Outcome::Unhealthy {
            reason: Unhealthy::NotReverted {
                failed_hosts,
                detail: "no previous system known".into(),
            },
        };
    };
    let revert_job = HostJob {
        new_system: old,
        // Built for this host already: no architecture to compare.
        platform: None,
        goal: crate::model::Goal::Switch,
        deploy_id: id,
        token,
        source: SystemSource::OnTarget,
        persist: PersistMode::SetProfile,
        reboot: None,
        // The host has changed since that preflight: ask afresh.
        early_preflight: None,
        ..job.clone()
    };
    let r = run_host(&revert_job, target, probe, clock, reporter, run_started).await;
    match r.outcome {
        Outcome::Confirmed { .. } | Outcome::Unchanged => Outcome::RolledBack {
            reason: RollbackReason::Reverted { failed_hosts },
        },
        Outcome::Unknown { reason } => Outcome::Unknown {
            reason: UnknownReason::Reverting {
                failed_hosts,
                reason: Box::new(reason),
            },
        },
        other => Outcome::Unhealthy {
            reason: Unhealthy::NotReverted {
                failed_hosts,
                detail: format!(
                    "reverting it ended {}: {}; it is still on the new system",
                    other.name(),
                    other.reason().unwrap_or_default()
                ),
            },
        },
    }
}
