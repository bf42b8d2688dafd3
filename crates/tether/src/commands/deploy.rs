//! `tether deploy`: evaluate and build the selected hosts' systems (one Nix
//! evaluation, one build), then roll them out with the safe switch on each
//! host: canaries first, then batches, at most `--parallel` at once.

use std::collections::BTreeMap;
use std::time::Duration;

use tether_core::model::{ClosureSigners, Goal, StorePath, SudoMode};
use tether_core::plan::closure_signers;
use tether_core::remote::{Operation, Preflight};
use tether_core::report::{HostReport, Outcome, Refusal};

use crate::adapters::journal::Journal;
use crate::adapters::ssh::SshTarget;
use crate::args::{host_job, RolloutArgs, TimeoutArgs, TrialArgs};
use crate::cli::Context;
use crate::exit::CommandError;
use crate::runner::{self, Prepared, RunOptions};

/// Deploy the selected hosts with the safe switch
///
/// Identity check, copy,
/// guard armed, activation on trial, health checks, confirmation over a
/// fresh SSH connection, then persist. A host that cannot be confirmed rolls
/// itself back. Exit: 0 all confirmed or unchanged, 1 some refused, failed,
/// rolled back or skipped, 2 usage or inventory error, 3 some unknown.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// switch: safe switch, then persist as profile and boot default;
    /// test: safe switch, not persisted; boot: only set profile and boot
    /// default; dry-activate: show what activation would do
    #[arg(long, default_value = "switch", value_parser = parse_goal)]
    pub goal: Goal,
    /// Print events as NDJSON on stdout (docs/events.md)
    #[arg(long)]
    pub json: bool,
    /// Let targets fetch what they can from their own substituters
    #[arg(long)]
    pub substitute_on_destination: bool,
    /// Change nothing: show what would change (same as `tether plan`)
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: copy closures so the real dry-activate can run
    #[arg(long, requires = "dry_run")]
    pub copy: bool,
    /// Reboot each host after persisting; wait up to --reboot-timeout for it
    /// to come back on the new system and pass its checks
    #[arg(long)]
    pub reboot: bool,
    #[command(flatten)]
    pub trial: TrialArgs,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
}

fn parse_goal(s: &str) -> Result<Goal, String> {
    s.parse()
}

/// `deploy --dry-run` is `tether plan` (the dispatch runs it).
pub fn dry_run_of(args: &Args) -> Option<(bool, bool, TrialArgs)> {
    args.dry_run
        .then(|| (args.copy, args.json, args.trial.clone()))
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let (inventory, hosts) = ctx.selected_hosts().await?;
    let plan = args.rollout.plan(&inventory, &hosts)?;
    let say = |msg: String| {
        if !args.json {
            eprintln!("{msg}");
        }
    };
    let (_run_dir, targets) = SshTarget::for_hosts(
        &hosts,
        ctx.nix.program(),
        ctx.sudo_password.as_ref(),
        args.substitute_on_destination,
    )
    .map_err(CommandError::Output)?;

    let names: Vec<_> = hosts.iter().map(|h| h.name.clone()).collect();
    let toplevels = crate::toplevels::evaluate(ctx, &names, &say).await?;
    // While Nix builds, each host's shared connection opens (key exchange,
    // pinned-key check) with the host's preflight as its first session; the
    // deploy then runs over these connections. The preflight only reads.
    // (Every selected host has a toplevel, or `evaluate` failed.)
    let early = futures::future::join_all(hosts.iter().zip(&targets).map(|(host, target)| {
        let first = toplevels.get(&host.name).map(|t| {
            Preflight {
                new_system: Some(t.out_path.clone()),
            }
            .request()
        });
        let timeout = args.timeouts.for_host(host).command;
        async move {
            match first {
                Some(script) => target.open_with(&script, timeout).await,
                None => None,
            }
        }
    }));
    let (built, early) = tokio::join!(
        crate::toplevels::build_evaluated(ctx, &names, &toplevels, &say),
        early
    );
    let built = built?;

    let deploy_id = runner::new_deploy_id()?;
    let reboot = args
        .reboot
        .then(|| Duration::from_secs(args.timeouts.reboot_timeout.unwrap_or(300)));
    let mut jobs = Vec::new();
    let mut decided = Vec::new();
    // Asked once per system, and only for hosts whose SSH user is not root.
    let mut signers: BTreeMap<StorePath, ClosureSigners> = BTreeMap::new();
    let journal = hosts
        .iter()
        .any(|h| h.rehearsal.required)
        .then(Journal::open_default);
    for ((host, target), early) in hosts.iter().zip(targets).zip(early) {
        let system = built.get(&host.name).ok_or_else(|| {
            CommandError::Usage(format!(
                "host {:?}: no system was built",
                host.name.as_str()
            ))
        })?;
        if host.rehearsal.required && args.goal != Goal::DryActivate {
            let passed = match &journal {
                Some(Ok(j)) => j
                    .passed_rehearsal(host.name.as_str(), system.path.as_str())
                    .map_err(|e| CommandError::Local(format!("reading the journal: {e}")))?
                    .is_some(),
                _ => false,
            };
            if !passed {
                decided.push(HostReport {
                    host: host.name.clone(),
                    outcome: Outcome::Refused {
                        reason: Refusal::NotRehearsed {
                            host: host.name.to_string(),
                            system: system.path.to_string(),
                        },
                    },
                    old_system: None,
                    old_generation: None,
                    new_system: system.path.to_string(),
                    duration_ms: 0,
                    state: None,
                });
                continue;
            }
        }
        let mut job = host_job(
            host,
            system.path.clone(),
            args.goal,
            &args.timeouts,
            &args.trial,
            &deploy_id,
        )?;
        job.platform = system.platform.clone();
        job.reboot = reboot;
        if host.sudo != SudoMode::None {
            job.closure_signers = Some(match signers.get(&system.path) {
                Some(known) => known.clone(),
                None => {
                    let found = ctx
                        .nix
                        .closure_info(&system.path, closure_signers)
                        .await
                        .map_err(CommandError::Build)?;
                    signers.insert(system.path.clone(), found.clone());
                    found
                }
            });
        }
        // Only if it asked about the system that was built.
        job.early_preflight =
            early.filter(|_| toplevels.get(&host.name).map(|t| &t.out_path) == Some(&system.path));
        jobs.push((job, target));
    }
    say(format!(
        "deploy {deploy_id}: {} host(s) in {} stage(s), goal {}, at most {} at once",
        jobs.len(),
        plan.stages.len(),
        args.goal.as_str(),
        plan.parallel
    ));
    runner::execute(
        ctx,
        &deploy_id,
        Prepared { jobs, decided },
        RunOptions {
            command: "deploy",
            goal: args.goal,
            json: args.json,
            plan,
        },
    )
    .await
}
