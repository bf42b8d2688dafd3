//! `tether check`: run the selected hosts' health checks against what they
//! run now, without deploying; exit 0 when all pass, 1 when any fails.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tether_core::checks::{self, Baseline};
use tether_core::inventory::Host;
use tether_core::model::HostName;
use tether_core::ports::{Clock, Reporter};
use tether_core::report::{CheckAttempt, CheckFailure};
use tether_core::report::{Event, EventKind};
use tether_core::spec::HostChecks;

use crate::adapters::clock::TokioClock;
use crate::adapters::probe::LocalProbe;
use crate::adapters::ssh::SshTarget;
use crate::cli::Context;
use crate::exit::{CommandError, ExitStatus};
use crate::ui::records::{CheckSummary, Record};
use crate::ui::report::{HumanReporter, JsonReporter};

/// Run the selected hosts' health checks (docs/checks.md) against the systems they run now, without deploying
///
/// Each check is retried until the host's checkTimeout. Exits 0 when every
/// check passes, 1 when any fails. With no deploy there is no "before", so
/// failedUnits = "new" counts every failed unit.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print every check attempt and a summary as NDJSON on stdout
    #[arg(long)]
    json: bool,
    /// Seconds to keep retrying failing checks, instead of each host's
    /// checkTimeout; 0 tries each check once
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=3_600))]
    timeout: Option<u64>,
    /// Most hosts checked at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FailureReport {
    check: String,
    #[serde(rename = "type")]
    kind: tether_core::spec::CheckType,
    attempts: u32,
    detail: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HostResult {
    host: HostName,
    healthy: bool,
    failures: Vec<FailureReport>,
}

enum Out {
    Human(HumanReporter),
    Json(JsonReporter),
}

impl Reporter for Out {
    fn event(&self, event: Event) {
        match self {
            Out::Human(r) => r.event(event),
            Out::Json(r) => r.event(event),
        }
    }
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let (_inventory, hosts) = ctx.selected_hosts().await?;
    let (_run_dir, targets) =
        SshTarget::for_hosts(&hosts, ctx.nix.program(), ctx.sudo_password.as_ref(), false)
            .map_err(CommandError::Output)?;
    let out = if args.json {
        Out::Json(JsonReporter::new())
    } else {
        Out::Human(HumanReporter::new())
    };
    let clock = TokioClock::new();
    let timeout = args.timeout.map(Duration::from_secs);
    let results: Vec<HostResult> = stream::iter(hosts.iter().zip(targets.iter()))
        .map(|(host, target)| check_host(host, target, timeout, &clock, &out))
        .buffered(usize::from(args.parallel))
        .collect()
        .await;
    for t in &targets {
        t.close().await;
    }
    let failed = results.iter().filter(|r| !r.healthy).count();
    let status = if failed > 0 {
        ExitStatus::HostFailed
    } else {
        ExitStatus::Success
    };
    match &out {
        Out::Json(r) => r.line(&Record::CheckSummary(CheckSummary::new(
            status.code(),
            &results,
        ))),
        Out::Human(_) => print!("{}", table(&results)),
    }
    if failed > 0 {
        Err(CommandError::ChecksFailed(failed))
    } else {
        Ok(())
    }
}

async fn check_host(
    host: &Host,
    target: &SshTarget,
    timeout: Option<Duration>,
    clock: &TokioClock,
    out: &Out,
) -> HostResult {
    let checks = HostChecks {
        timeout: timeout.unwrap_or(host.checks.timeout),
        ..host.checks.clone()
    };
    let on_attempt = |a: CheckAttempt| {
        out.event(Event {
            host: host.name.clone(),
            elapsed_ms: u64::try_from(clock.now().as_millis()).unwrap_or(u64::MAX),
            kind: EventKind::Check {
                check: a.check,
                kind: a.kind,
                attempt: a.attempt,
                passed: a.passed,
                detail: a.detail,
            },
        })
    };
    let failures = checks::run_checks(
        &host.check_target(),
        &checks,
        &Baseline::None,
        target,
        &LocalProbe,
        clock,
        &on_attempt,
        None,
    )
    .await;
    HostResult {
        host: host.name.clone(),
        healthy: failures.is_empty(),
        failures: failures
            .into_iter()
            .map(|f: CheckFailure| FailureReport {
                check: f.check,
                kind: f.kind,
                attempts: f.attempts,
                detail: f.detail,
            })
            .collect(),
    }
}

/// One line per host, plus one per failing check.
fn table(results: &[HostResult]) -> String {
    let mut s = String::new();
    for r in results {
        if r.healthy {
            s.push_str(&format!("{}  healthy\n", r.host));
        }
        for f in &r.failures {
            s.push_str(&format!(
                "{}  check {} ({}) FAILED: {}\n",
                r.host, f.check, f.kind, f.detail
            ));
        }
    }
    s
}
