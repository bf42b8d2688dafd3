//! `tether history`: the runs the deployer's journal recorded, newest
//! first, with each host's outcome; `tether history RUN_ID` shows one run
//! with its events. Outcomes learnt later from a host's own journal (by
//! `tether status`) are marked as such.

use crate::adapters::journal::{Journal, RehearsalRecord, RunRecord};
use crate::cli::Context;
use crate::exit::CommandError;

/// Show recorded deploys and rollbacks (from the deployer's journal).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show this run in detail, with its events
    pub run_id: Option<String>,
    /// How many runs to list
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// List rehearsals only (`tether rehearse`), newest first
    #[arg(long, conflicts_with = "run_id")]
    pub rehearsals: bool,
}

fn rehearsal_line(r: &RehearsalRecord) -> String {
    format!(
        "{:<24} rehearsal {:<7} {:<20} {} on {}  {} -> {}{}",
        r.id,
        r.result,
        r.started_at,
        r.production_host,
        r.staging_host,
        r.production_old,
        r.production_new,
        r.reason
            .as_deref()
            .map(|x| format!("\n{:<24} {x}", ""))
            .unwrap_or_default()
    )
}

fn line(run: &RunRecord) -> String {
    let hosts: Vec<String> = run
        .hosts
        .iter()
        .map(|h| {
            format!(
                "{}={}{}",
                h.host,
                h.outcome.as_deref().unwrap_or(if run.status == "running" {
                    "running"
                } else {
                    "interrupted"
                }),
                if h.reconciled { "*" } else { "" }
            )
        })
        .collect();
    format!(
        "{:<24} {:<8} {:<11} {:<20} exit {:<4} {} by {}  {}",
        run.id,
        run.command,
        run.status,
        run.started_at,
        run.exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        run.selection.as_deref().unwrap_or("all"),
        run.user,
        hosts.join(" ")
    )
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let journal = Journal::open_default().map_err(|e| CommandError::Usage(e.to_string()))?;
    let journal_err =
        |e: crate::adapters::journal::JournalError| CommandError::Usage(e.to_string());
    if let Some(id) = &args.run_id {
        let Some((run, events)) = journal.run(id).map_err(journal_err)? else {
            return Err(CommandError::Usage(format!("no run {id:?} in the journal")));
        };
        if args.json {
            let doc = serde_json::json!({ "run": run, "events": events });
            println!("{doc:#}");
            return Ok(());
        }
        println!("{}", line(&run));
        println!(
            "source {}{}; goal {}; started {}, ended {}",
            run.source,
            run.git_revision
                .as_deref()
                .map(|r| format!(" at {r}"))
                .unwrap_or_default(),
            run.goal.as_deref().unwrap_or("-"),
            run.started_at,
            run.ended_at
                .as_deref()
                .unwrap_or("never (interrupted or running)")
        );
        for h in &run.hosts {
            println!(
                "  {:<14} {:<24} {} -> {}{}{}",
                h.host,
                h.outcome.as_deref().unwrap_or("no outcome recorded"),
                h.old_system.as_deref().unwrap_or("?"),
                h.new_system.as_deref().unwrap_or("?"),
                h.new_generation
                    .map(|g| format!(" (generation {g})"))
                    .unwrap_or_default(),
                h.reason
                    .as_deref()
                    .map(|r| format!("\n  {:<14} {r}", ""))
                    .unwrap_or_default()
            );
        }
        for e in &events {
            println!(
                "  [{:>8.2}s] {:<14} {} {}",
                e.elapsed_ms as f64 / 1000.0,
                e.host,
                e.kind,
                e.data
                    .get("phase")
                    .or_else(|| e.data.get("outcome"))
                    .or_else(|| e.data.get("line"))
                    .or_else(|| e.data.get("message"))
                    .or_else(|| e.data.get("summary"))
                    .or_else(|| e.data.get("check"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
            );
        }
        return Ok(());
    }
    // `--on` filters by host; it needs the inventory to resolve tags.
    let filter = if ctx.on_text.is_some() || ctx.exclude_text.is_some() {
        let (_, hosts) = ctx.selected_hosts().await?;
        Some(hosts.iter().map(|h| h.name.to_string()).collect::<Vec<_>>())
    } else {
        None
    };
    let rehearsals = journal
        .rehearsals(args.limit, filter.as_deref())
        .map_err(journal_err)?;
    if args.rehearsals {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&rehearsals).unwrap_or_default()
            );
        } else {
            if rehearsals.is_empty() {
                eprintln!("no rehearsals recorded yet");
            }
            for r in &rehearsals {
                println!("{}", rehearsal_line(r));
            }
        }
        return Ok(());
    }
    let runs = journal
        .runs(args.limit, filter.as_deref())
        .map_err(journal_err)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return Ok(());
    }
    if runs.is_empty() {
        eprintln!("no runs recorded yet");
    }
    for run in &runs {
        println!("{}", line(run));
    }
    if runs.iter().any(|r| r.hosts.iter().any(|h| h.reconciled)) {
        println!("(* outcome learnt later from the host's own journal)");
    }
    if !rehearsals.is_empty() {
        println!("\nrehearsals (tether history --rehearsals):");
        for r in &rehearsals {
            println!("{}", rehearsal_line(r));
        }
    }
    Ok(())
}
