//! Running a rollout from the command line, shared by `deploy` and
//! `rollback`: the journal, the reporters (live view, plain lines or NDJSON),
//! Ctrl-C handling, the fleet runner, the summary and the exit code.
//!
//! Ctrl-C once: no new host starts; hosts in flight finish (confirmed or
//! rolled back) and the summary lists the rest as skipped. Ctrl-C twice:
//! tether exits at once and leaves the hosts in flight to their guards,
//! which roll back unless already confirmed; it says which hosts those are.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tether_core::deploy::{run_fleet, HostJob, Rollout};
use tether_core::model::{DeployId, Goal, Token};
use tether_core::ports::Reporter;
use tether_core::report::{Event, EventKind, HostReport};
use tether_core::spec::RolloutPlan;

use crate::cli::Context;
use crate::clock::TokioClock;
use crate::exit::CommandError;
use crate::journal::{git_revision, Journal, JournalReporter, NewRun};
use crate::live::LiveReporter;
use crate::nix::NixSource;
use crate::probe::LocalProbe;
use crate::report::{summary_table, HumanReporter, JsonReporter, Summary};
use crate::ssh::SshTarget;

/// What a run is, for the journal and the reporters.
pub struct RunOptions {
    pub command: &'static str,
    pub goal: Goal,
    pub json: bool,
    pub plan: RolloutPlan,
}

/// The hosts of a run: jobs to roll out, and hosts already decided while
/// preparing (refused before anything was touched), reported as they are.
pub struct Prepared {
    pub jobs: Vec<(HostJob, SshTarget)>,
    pub decided: Vec<HostReport>,
}

/// A fresh random token (or `None` if the system has no randomness).
pub fn new_token() -> Option<Token> {
    random_hex(16).ok().and_then(|h| Token::new(&h))
}

pub fn random_hex(bytes: usize) -> Result<String, CommandError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| CommandError::Usage(format!("no randomness for the deploy token: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// `20261121T084900-1a2b3c`: sortable, unique enough, safe in unit names.
pub fn new_deploy_id() -> Result<DeployId, CommandError> {
    let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    DeployId::new(stamp.trim_end_matches('Z'), &random_hex(3)?)
        .ok_or_else(|| CommandError::Usage("could not form a deploy id".into()))
}

/// The local directory behind a source, for its git revision.
fn source_dir(source: &NixSource) -> Option<PathBuf> {
    match source {
        NixSource::File(p) => std::path::absolute(p).ok()?.parent().map(PathBuf::from),
        NixSource::Flake(r) => {
            let r = r
                .strip_prefix("path:")
                .or_else(|| r.strip_prefix("git+file://"))
                .unwrap_or(r);
            let r = r.split(['?', '#']).next().unwrap_or(r);
            let p = std::path::absolute(r).ok()?;
            p.is_dir().then_some(p)
        }
    }
}

/// Tracks which hosts are in flight (for the second Ctrl-C's message).
struct InFlight(Arc<Mutex<BTreeSet<String>>>);

impl Reporter for InFlight {
    fn event(&self, event: Event) {
        if let Ok(mut set) = self.0.lock() {
            match event.kind {
                EventKind::Outcome { .. } => {
                    set.remove(event.host.as_str());
                }
                _ => {
                    set.insert(event.host.as_str().to_string());
                }
            }
        }
    }
}

/// Passes every event to each reporter in turn.
struct Tee<'a>(Vec<&'a dyn Reporter>);

impl Reporter for Tee<'_> {
    fn event(&self, event: Event) {
        for r in &self.0 {
            r.event(event.clone());
        }
    }
}

enum View {
    Json(JsonReporter),
    Live(LiveReporter),
    Plain(HumanReporter),
}

impl View {
    fn reporter(&self) -> &dyn Reporter {
        match self {
            View::Json(r) => r,
            View::Live(r) => r,
            View::Plain(r) => r,
        }
    }
}

pub async fn execute(
    ctx: &Context,
    deploy_id: &DeployId,
    prepared: Prepared,
    options: RunOptions,
) -> Result<(), CommandError> {
    let Prepared { jobs, decided } = prepared;
    let total = jobs.len() + decided.len();
    let journal = match Journal::open_default() {
        Ok(j) => Some(j),
        Err(e) => {
            eprintln!("warning: the deploy journal is unavailable, this run is not recorded: {e}");
            None
        }
    };
    if let Some(j) = &journal {
        let mut hosts: Vec<(String, Option<String>)> = jobs
            .iter()
            .map(|(job, _)| (job.host.to_string(), Some(job.new_system.to_string())))
            .collect();
        hosts.extend(
            decided
                .iter()
                .map(|r| (r.host.to_string(), Some(r.new_system.clone()))),
        );
        let run = NewRun {
            id: deploy_id.to_string(),
            command: options.command.to_string(),
            selection: Some(ctx.selection_text()),
            source: ctx.source.to_string(),
            git_revision: source_dir(&ctx.source).and_then(|d| git_revision(&d)),
            goal: Some(options.goal.as_str().to_string()),
            hosts,
        };
        if let Err(e) = j.start_run(&run) {
            eprintln!("warning: could not record this run in the journal: {e}");
        }
    }

    let view = if options.json {
        View::Json(JsonReporter::new())
    } else if std::io::stderr().is_terminal() {
        View::Live(LiveReporter::new(total))
    } else {
        View::Plain(HumanReporter::new())
    };
    let in_flight = Arc::new(Mutex::new(BTreeSet::new()));
    let tracker = InFlight(in_flight.clone());
    let journaled = journal.as_ref().map(|j| JournalReporter {
        journal: j,
        run_id: deploy_id.to_string(),
        inner: view.reporter(),
    });
    let mut chain: Vec<&dyn Reporter> = vec![&tracker];
    match &journaled {
        Some(j) => chain.push(j),
        None => chain.push(view.reporter()),
    }
    let reporter = Tee(chain);
    for r in &decided {
        reporter.event(Event {
            host: r.host.clone(),
            elapsed_ms: 0,
            kind: EventKind::Outcome {
                outcome: r.outcome.clone(),
            },
        });
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    let signals = {
        let interrupted = interrupted.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            interrupted.store(true, Ordering::SeqCst);
            eprintln!(
                "\ninterrupted: no new host will start; hosts in flight finish or roll back. Press Ctrl-C again to leave them to their guards."
            );
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            let hosts: Vec<String> = in_flight
                .lock()
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            eprintln!(
                "\ninterrupted again: leaving {} to their guards; each rolls itself back when its lease lapses unless it was already confirmed. Check with `tether status`.",
                if hosts.is_empty() { "no host".to_string() } else { hosts.join(", ") }
            );
            std::process::exit(130);
        })
    };

    let targets: Vec<SshTarget> = jobs.iter().map(|(_, t)| t.clone()).collect();
    let clock = TokioClock::new();
    let token = new_token;
    let mut reports = run_fleet(
        jobs,
        Rollout {
            plan: &options.plan,
            interrupted: &interrupted,
            new_token: &token,
        },
        &LocalProbe,
        &clock,
        &reporter,
    )
    .await;
    signals.abort();
    // All at once: the run is over only when the last one is closed.
    futures::future::join_all(targets.iter().map(SshTarget::close)).await;
    reports.extend(decided);
    reports.sort_by(|a, b| a.host.cmp(&b.host));
    let code = tether_core::report::exit_code(&reports);
    if let Some(j) = &journal {
        if let Err(e) = j.finish_run(deploy_id.as_str(), code, &reports) {
            eprintln!("warning: could not record the end of this run in the journal: {e}");
        }
    }
    match &view {
        View::Json(r) => r.line(&Summary {
            event: "summary",
            deploy_id: deploy_id.as_str(),
            exit_code: code,
            hosts: &reports,
        }),
        View::Live(live) => {
            live.finish();
            print!("{}", summary_table(&reports));
        }
        View::Plain(_) => print!("{}", summary_table(&reports)),
    }
    let unknown = reports.iter().filter(|r| r.outcome.is_unknown()).count();
    let failed = reports.iter().filter(|r| !r.outcome.is_success()).count();
    match code {
        0 => Ok(()),
        3 => Err(CommandError::HostsUnknown(unknown)),
        _ => Err(CommandError::HostsFailed(failed)),
    }
}
