//! Running a rollout from the command line, shared by `deploy` and
//! `rollback`: the journal, the reporters (live view, plain lines or NDJSON),
//! Ctrl-C handling, the fleet runner, the summary and the exit code.
//!
//! Output never holds up a deploy: the fleet runs on this task and hands
//! its events to one output thread, which alone writes the terminal, the
//! NDJSON stream and the SQLite journal. A `--json` reader that stops
//! reading, a terminal paused with Ctrl-S or a journal another process
//! holds locked block that thread only, never a lease renewal.
//!
//! Ctrl-C once: no new host starts; hosts in flight finish (confirmed or
//! rolled back) and the summary lists the rest as skipped. Ctrl-C twice:
//! tether exits at once and leaves the hosts in flight to their guards,
//! which roll back unless already confirmed; it says which hosts those are.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tether_core::deploy::{run_fleet, HostJob, Rollout};
use tether_core::model::{DeployId, Goal, Token};
use tether_core::ports::Reporter;
use tether_core::report::{Event, EventKind, HostReport, RunResult};
use tether_core::spec::RolloutPlan;

use crate::adapters::clock::TokioClock;
use crate::adapters::journal::{git_revision, Journal, NewRun};
use crate::adapters::nix::NixSource;
use crate::adapters::probe::LocalProbe;
use crate::adapters::ssh::SshTarget;
use crate::cli::Context;
use crate::exit::{CommandError, ExitStatus};
use crate::ui::live::LiveReporter;
use crate::ui::records::{Record, RunSummary};
use crate::ui::report::{summary_table, HumanReporter, JsonReporter};

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

/// A fresh random token.
pub fn new_token() -> Result<Token, CommandError> {
    Token::new(&random_hex(16)?)
        .ok_or_else(|| CommandError::Local("could not form a deploy token".into()))
}

fn random_hex(bytes: usize) -> Result<String, CommandError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| {
        CommandError::Local(format!("no randomness for the deploy's token and id: {e}"))
    })?;
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
        .ok_or_else(|| CommandError::Local("could not form a deploy id".into()))
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

/// Which hosts are in flight (for the second Ctrl-C's message).
type InFlight = Arc<Mutex<BTreeSet<String>>>;

/// The reporter the fleet runs with: keeps the in-flight set (memory only)
/// and queues every event for the output thread. Never blocks.
struct Queue {
    in_flight: InFlight,
    tx: mpsc::Sender<Event>,
}

impl Reporter for Queue {
    fn event(&self, event: Event) {
        if let Ok(mut set) = self.in_flight.lock() {
            match event.kind {
                EventKind::Outcome { .. } => {
                    set.remove(event.host.as_str());
                }
                _ => {
                    set.insert(event.host.as_str().to_string());
                }
            }
        }
        // The output thread lives until the queue is dropped; a send can
        // only fail if it died, and then there is nobody to tell.
        let _ = self.tx.send(event);
    }
}

/// How progress is shown.
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

/// Where the output thread sends each event: the view, then the journal.
struct Output {
    view: View,
    journal: Option<Journal>,
    run_id: String,
    /// Events the journal could not take yet (another process holds its
    /// lock), oldest first: written with the next event that gets through.
    pending: Vec<Event>,
    /// Every event of the run, for callers that read them afterwards
    /// (a rehearsal's report).
    all: Vec<Event>,
}

/// How long the end of a run waits for a journal another process keeps
/// locked, to write the events it could not take during the run.
const JOURNAL_PATIENCE: Duration = Duration::from_secs(60);

impl Output {
    fn event(&mut self, event: Event) {
        self.view.reporter().event(event.clone());
        self.all.push(event.clone());
        self.pending.push(event);
        // While the journal is locked, try without waiting: a run's events
        // must not lag its view; the backlog is written as one batch.
        let wait = (self.pending.len() > 1).then_some(Duration::ZERO);
        self.flush(wait);
    }

    /// Writes the backlog; keeps it when the journal is still busy.
    fn flush(&mut self, wait: Option<Duration>) -> bool {
        let Some(journal) = &self.journal else {
            self.pending.clear();
            return true;
        };
        match journal.record_events(&self.run_id, &self.pending, wait) {
            Ok(()) => {
                self.pending.clear();
                true
            }
            Err(e) => {
                tracing::debug!("journal busy, {} event(s) kept: {e}", self.pending.len());
                false
            }
        }
    }

    /// At the end of the run: the backlog gets [`JOURNAL_PATIENCE`].
    fn finish(&mut self) {
        if self.pending.is_empty() || self.flush(Some(JOURNAL_PATIENCE)) {
            return;
        }
        eprintln!(
            "warning: the deploy journal stayed locked by another process; {} event(s) of this run are not recorded",
            self.pending.len()
        );
        self.pending.clear();
    }
}

/// A finished run: every host's report (sorted by host) and every event.
pub struct Finished {
    pub reports: Vec<HostReport>,
    pub events: Vec<Event>,
}

/// Runs the rollout, records and shows it, and maps its result to the
/// command's exit.
pub async fn execute(
    ctx: &Context,
    deploy_id: &DeployId,
    prepared: Prepared,
    options: RunOptions,
) -> Result<(), CommandError> {
    let finished = run(ctx, deploy_id, prepared, options).await?;
    let reports = &finished.reports;
    let count = |pred: &dyn Fn(&HostReport) -> bool| reports.iter().filter(|r| pred(r)).count();
    match RunResult::of(reports) {
        RunResult::AllSucceeded => Ok(()),
        RunResult::SomeUnknown => Err(CommandError::HostsUnknown(count(&|r| {
            r.outcome.is_unknown()
        }))),
        RunResult::SomeFailed => Err(CommandError::HostsFailed(count(&|r| {
            !r.outcome.is_success()
        }))),
    }
}

/// Runs the rollout, records it in the journal and shows it (progress and
/// summary); the caller decides what its result means.
pub async fn run(
    ctx: &Context,
    deploy_id: &DeployId,
    prepared: Prepared,
    options: RunOptions,
) -> Result<Finished, CommandError> {
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
    let mut output = Output {
        view,
        journal,
        run_id: deploy_id.to_string(),
        pending: Vec::new(),
        all: Vec::new(),
    };
    let (tx, rx) = mpsc::channel::<Event>();
    let writer = std::thread::Builder::new()
        .name("tether-output".into())
        .spawn(move || {
            for event in rx {
                output.event(event);
            }
            output.finish();
            output
        })
        .map_err(|e| CommandError::Local(format!("could not start the output thread: {e}")))?;
    let in_flight: InFlight = Arc::new(Mutex::new(BTreeSet::new()));
    let reporter = Queue {
        in_flight: in_flight.clone(),
        tx,
    };
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
            std::process::exit(i32::from(ExitStatus::Interrupted.code()));
        })
    };

    let targets: Vec<SshTarget> = jobs.iter().map(|(_, t)| t.clone()).collect();
    let clock = TokioClock::new();
    let token = || new_token().ok();
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
    // Every event is written before the summary.
    drop(reporter);
    let output = writer
        .join()
        .map_err(|_| CommandError::Local("the output thread panicked".into()))?;
    reports.extend(decided);
    reports.sort_by(|a, b| a.host.cmp(&b.host));
    let result = RunResult::of(&reports);
    let status = ExitStatus::from(result);
    if let Some(j) = &output.journal {
        if let Err(e) = j.finish_run(deploy_id.as_str(), i32::from(status.code()), &reports) {
            eprintln!("warning: could not record the end of this run in the journal: {e}");
        }
    }
    match &output.view {
        View::Json(r) => r.line(&Record::<()>::RunSummary(RunSummary::new(
            deploy_id.as_str(),
            status.code(),
            &reports,
        ))),
        View::Live(live) => {
            live.finish();
            print!("{}", summary_table(&reports));
        }
        View::Plain(_) => print!("{}", summary_table(&reports)),
    }
    Ok(Finished {
        reports,
        events: output.all,
    })
}
