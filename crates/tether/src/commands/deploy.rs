//! `tether deploy`: evaluate and build the selected hosts' systems (one Nix
//! evaluation, one build), then roll them out with the safe switch on each
//! host: canaries first, then batches, at most `--parallel` at once.

use std::time::Duration;

use tether_core::deploy::host::SystemSource;
use tether_core::deploy::HostJob;
use tether_core::inventory::{Host, Inventory};
use tether_core::model::StorePath;
use tether_core::model::{DeployId, Goal};
use tether_core::remote::{preflight_script_for, PersistMode};
use tether_core::rollout::{plan_stages, resolve_canaries};
use tether_core::spec::CheckTarget;
use tether_core::spec::TimeoutSettings;
use tether_core::spec::Timeouts;
use tether_core::spec::{BatchSize, CanarySpec, RolloutPlan, RolloutSettings};

use crate::cli::Context;
use crate::exit::CommandError;
use crate::runner::{self, Prepared, RunOptions};
use crate::ssh::SshTarget;

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
    /// Seconds to wait for a rebooted host [default: 300]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reboot_timeout: Option<u64>,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
}

/// Rollout policy flags; they override the inventory's `rollout`.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutArgs {
    /// Hosts deployed and confirmed first: a count or a selector (`@canary`)
    #[arg(long, value_name = "N|SELECTOR")]
    pub canary: Option<String>,
    /// Hosts per batch after the canaries: a count or a percentage (`25%`)
    #[arg(long, value_name = "N|P%")]
    pub batch: Option<String>,
    /// Most hosts in flight at once [default: 10]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,
    /// Stop starting hosts once more than N failed (0: at the first failure)
    #[arg(long, value_name = "N")]
    pub max_failures: Option<usize>,
    /// On failure, switch hosts this run confirmed back to their old system
    #[arg(long)]
    pub revert_on_failure: bool,
}

/// Time limits; they override the inventory's `timeouts`.
#[derive(Debug, Clone, clap::Args)]
pub struct TimeoutArgs {
    /// Seconds switch-to-configuration may run [default: 300]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub activation_timeout: Option<u64>,
    /// Seconds the target waits for the deployer before rolling back by itself [default: 15]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(3..=3_600))]
    pub lease: Option<u64>,
    /// Seconds to keep trying to confirm over fresh connections [default: 20]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub confirm_timeout: Option<u64>,
    /// Seconds, beyond the lease, to wait to hear a host rolled back before
    /// calling it unknown [default: 90]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub rollback_timeout: Option<u64>,
    /// Seconds a closure copy may take [default: 1800]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub copy_timeout: Option<u64>,
}

fn parse_goal(s: &str) -> Result<Goal, String> {
    s.parse()
}

/// Flags over the inventory's settings over tether's defaults.
pub fn timeouts(args: &TimeoutArgs, host: &TimeoutSettings) -> Timeouts {
    let d = Timeouts::default();
    let pick = |flag: Option<u64>, inv: Option<u64>, default: Duration| {
        flag.or(inv).map(Duration::from_secs).unwrap_or(default)
    };
    Timeouts {
        activation: pick(args.activation_timeout, host.activation, d.activation),
        lease: pick(args.lease, host.lease, d.lease),
        confirm: pick(args.confirm_timeout, host.confirm, d.confirm),
        rollback: pick(args.rollback_timeout, host.rollback, d.rollback),
        copy: pick(args.copy_timeout, host.copy, d.copy),
        command: d.command,
    }
}

/// The rollout plan for the selected hosts: flags over the inventory.
pub fn rollout_plan(
    args: &RolloutArgs,
    inventory: &Inventory,
    hosts: &[Host],
) -> Result<RolloutPlan, CommandError> {
    let usage = |flag: &str, e: String| CommandError::Usage(format!("--{flag}: {e}"));
    let flags = RolloutSettings {
        canary: args
            .canary
            .as_deref()
            .map(str::parse::<CanarySpec>)
            .transpose()
            .map_err(|e| usage("canary", e))?,
        batch: args
            .batch
            .as_deref()
            .map(str::parse::<BatchSize>)
            .transpose()
            .map_err(|e| usage("batch", e))?,
        parallel: args.parallel.map(usize::from),
        max_failures: args.max_failures,
        revert_on_failure: args.revert_on_failure.then_some(true),
    };
    let settings = flags.over(inventory.rollout());
    let names: Vec<_> = hosts.iter().map(|h| h.name.clone()).collect();
    let canaries = resolve_canaries(&names, settings.canary.as_ref(), |sel, name| {
        inventory
            .get(name.as_str())
            .is_some_and(|h| sel.matches_host(h))
    });
    if let Some(CanarySpec::Selector(_)) = &settings.canary {
        if canaries.is_empty() {
            return Err(CommandError::Usage(
                "the canary selector matches none of the selected hosts".into(),
            ));
        }
    }
    Ok(plan_stages(&names, &canaries, &settings))
}

/// Who a host's health checks are about.
pub fn check_target(host: &Host) -> CheckTarget {
    CheckTarget {
        name: host.name.clone(),
        address: host.address.clone(),
        ssh_user: host.ssh_user.clone(),
    }
}

/// A host's job with everything but its system decided by the inventory
/// and flags.
pub fn base_job(
    host: &Host,
    new_system: StorePath,
    goal: Goal,
    timeouts: &TimeoutArgs,
    deploy_id: &DeployId,
) -> Result<HostJob, CommandError> {
    Ok(HostJob {
        host: host.name.clone(),
        new_system,
        platform: None,
        machine_id: host.machine_id.as_ref().map(|m| m.as_str().to_string()),
        goal,
        timeouts: self::timeouts(timeouts, &host.timeouts),
        deploy_id: deploy_id.clone(),
        token: runner::new_token()
            .ok_or_else(|| CommandError::Usage("could not form a deploy token".into()))?,
        check_target: check_target(host),
        checks: host.checks.clone(),
        deployer: crate::journal::deployer_identity(),
        source: SystemSource::Copy,
        persist: PersistMode::SetProfile,
        reboot: None,
        early_preflight: None,
    })
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    if args.dry_run {
        let plan = crate::commands::plan::Args::for_dry_run(args.copy, args.json);
        return crate::commands::plan::run(ctx, plan).await;
    }
    let (inventory, hosts) = ctx.selected_hosts().await?;
    let plan = rollout_plan(&args.rollout, &inventory, &hosts)?;
    let say = |msg: String| {
        if !args.json {
            eprintln!("{msg}");
        }
    };
    let (_run_dir, targets) =
        SshTarget::for_hosts(&hosts, ctx.nix.program(), args.substitute_on_destination)
            .map_err(CommandError::Output)?;

    let names: Vec<_> = hosts.iter().map(|h| h.name.clone()).collect();
    let toplevels = crate::systems::evaluate(ctx, &names, &say).await?;
    // While Nix builds, each host's shared connection opens (key exchange,
    // pinned-key check) with the host's preflight as its first session; the
    // deploy then runs over these connections. The preflight only reads.
    // (Every selected host has a toplevel, or `evaluate` failed.)
    let early = futures::future::join_all(hosts.iter().zip(&targets).map(|(host, target)| {
        let first = toplevels
            .get(&host.name)
            .map(|t| preflight_script_for(Some(&t.out_path)));
        let timeout = self::timeouts(&args.timeouts, &host.timeouts).command;
        async move {
            match first {
                Some(script) => target.open_with(&script, timeout).await,
                None => None,
            }
        }
    }));
    let (built, early) = tokio::join!(
        crate::systems::build_evaluated(ctx, &names, &toplevels, &say),
        early
    );
    let built = built?;

    let deploy_id = runner::new_deploy_id()?;
    let reboot = args
        .reboot
        .then(|| Duration::from_secs(args.reboot_timeout.unwrap_or(300)));
    let mut jobs = Vec::new();
    for ((host, target), early) in hosts.iter().zip(targets).zip(early) {
        let system = built.get(&host.name).ok_or_else(|| {
            CommandError::Usage(format!(
                "host {:?}: no system was built",
                host.name.as_str()
            ))
        })?;
        let mut job = base_job(
            host,
            system.path.clone(),
            args.goal,
            &args.timeouts,
            &deploy_id,
        )?;
        job.platform = system.platform.clone();
        job.reboot = reboot;
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
        Prepared {
            jobs,
            decided: Vec::new(),
        },
        RunOptions {
            command: "deploy",
            goal: args.goal,
            json: args.json,
            plan,
        },
    )
    .await
}
