//! Deploying many hosts at once: each host's safe switch runs as its own
//! future, at most `parallel` in flight, and a host starts as soon as a slot
//! frees (no lock-step waves).

use super::host::{run_host, HostJob};
use super::outcome::HostReport;
use super::ports::{Clock, Reporter, Target};
use crate::checks::Probe;
use futures::stream::{self, StreamExt};

#[derive(Debug, Clone, Copy)]
pub struct FleetOptions {
    /// Upper bound on hosts in flight (at least 1).
    pub parallel: usize,
}

/// Deploys every job and returns the reports in the jobs' order.
pub async fn run_fleet<T: Target, P: Probe, C: Clock, R: Reporter + ?Sized>(
    jobs: Vec<(HostJob, T)>,
    probe: &P,
    options: FleetOptions,
    clock: &C,
    reporter: &R,
) -> Vec<HostReport> {
    let run_started = clock.now();
    let order: Vec<_> = jobs.iter().map(|(job, _)| job.host.clone()).collect();
    let mut reports: Vec<HostReport> = stream::iter(jobs)
        .map(|(job, target)| async move {
            run_host(&job, &target, probe, clock, reporter, run_started).await
        })
        .buffer_unordered(options.parallel.max(1))
        .collect()
        .await;
    reports.sort_by_key(|r| order.iter().position(|h| h == &r.host));
    reports
}
