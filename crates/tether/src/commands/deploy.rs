//! `tether deploy`: evaluate and build the selected hosts' systems (one Nix
//! evaluation, one build), then run the safe switch on each host, up to
//! `--parallel` at once, and report one outcome per host.

use std::collections::BTreeMap;
use std::time::Duration;

use tether_core::checks::CheckTarget;
use tether_core::deploy::host::SystemSource;
use tether_core::deploy::{run_fleet, FleetOptions, HostJob, Reporter, Timeouts};
use tether_core::inventory::{Host, StorePath, TimeoutSettings};
use tether_core::remote::{DeployId, Goal, PersistMode, Token};

use crate::cli::Context;
use crate::clock::TokioClock;
use crate::exit::CommandError;
use crate::probe::LocalProbe;
use crate::report::{summary_table, HumanReporter, JsonReporter, Summary};
use crate::ssh::SshTarget;

/// Deploy the selected hosts with the safe switch: identity check, copy,
/// guard armed, activation on trial, confirmation over a fresh SSH
/// connection, then persist. A host that fails its health checks
/// (docs/checks.md) or cannot be confirmed rolls itself back.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// switch: safe switch, then persist as profile and boot default;
    /// test: safe switch, not persisted; boot: only set profile and boot
    /// default; dry-activate: show what activation would do
    #[arg(long, default_value = "switch", value_parser = parse_goal)]
    goal: Goal,
    /// Most hosts deployed at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// Print events as NDJSON on stdout (docs/events.md)
    #[arg(long)]
    json: bool,
    /// Let targets fetch what they can from their own substituters
    #[arg(long)]
    substitute_on_destination: bool,
    /// Seconds switch-to-configuration may run [default: 300, or the inventory's]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    activation_timeout: Option<u64>,
    /// Seconds the target waits for the deployer before rolling back by itself [default: 15]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(3..=3_600))]
    lease: Option<u64>,
    /// Seconds to keep trying to confirm over fresh connections [default: 20]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3_600))]
    confirm_timeout: Option<u64>,
    /// Seconds, beyond the lease, to wait to hear a host rolled back before
    /// calling it unknown [default: 90]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3_600))]
    rollback_timeout: Option<u64>,
    /// Seconds a closure copy may take [default: 1800]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    copy_timeout: Option<u64>,
}

fn parse_goal(s: &str) -> Result<Goal, String> {
    s.parse()
}

/// Flags over the inventory's settings over tether's defaults.
fn timeouts(args: &Args, host: &TimeoutSettings) -> Timeouts {
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

fn random_hex(bytes: usize) -> Result<String, CommandError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| CommandError::Usage(format!("no randomness for the deploy token: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn new_deploy_id() -> Result<DeployId, CommandError> {
    let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    DeployId::new(stamp.trim_end_matches('Z'), &random_hex(3)?)
        .ok_or_else(|| CommandError::Usage("could not form a deploy id".into()))
}

enum AnyReporter {
    Human(HumanReporter),
    Json(JsonReporter),
}

impl Reporter for AnyReporter {
    fn event(&self, event: tether_core::deploy::Event) {
        match self {
            AnyReporter::Human(r) => r.event(event),
            AnyReporter::Json(r) => r.event(event),
        }
    }
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let (_inventory, hosts) = ctx.selected_hosts().await?;
    let say = |msg: String| {
        if !args.json {
            eprintln!("{msg}");
        }
    };
    say(format!("evaluating {} host(s)", hosts.len()));
    let names: Vec<_> = hosts.iter().map(|h| h.name.clone()).collect();
    let toplevels = ctx.nix.eval_toplevels(&ctx.source, &names).await?;
    let mut drvs: Vec<StorePath> = toplevels.values().map(|t| t.drv_path.clone()).collect();
    drvs.sort();
    drvs.dedup();
    say(format!("building {} system(s)", drvs.len()));
    let outs = ctx.nix.build(&drvs).await.map_err(CommandError::Build)?;
    let built: BTreeMap<&StorePath, &StorePath> = drvs.iter().zip(outs.iter()).collect();

    let deploy_id = new_deploy_id()?;
    let run_dir = tempfile::Builder::new()
        .prefix("tether-")
        .tempdir()
        .map_err(CommandError::Output)?;
    let mut jobs: Vec<(HostJob, SshTarget)> = Vec::new();
    for (index, host) in hosts.iter().enumerate() {
        let toplevel = toplevels.get(&host.name).ok_or_else(|| {
            CommandError::Usage(format!(
                "host {:?}: no system was evaluated",
                host.name.as_str()
            ))
        })?;
        let out = built
            .get(&toplevel.drv_path)
            .map(|p| (*p).clone())
            .unwrap_or_else(|| toplevel.out_path.clone());
        jobs.push((
            job(&args, host, out, toplevel.system.clone(), &deploy_id)?,
            target(ctx, &args, host, index, run_dir.path())?,
        ));
    }
    let targets: Vec<SshTarget> = jobs.iter().map(|(_, t)| t.clone()).collect();

    let reporter = if args.json {
        AnyReporter::Json(JsonReporter::new())
    } else {
        AnyReporter::Human(HumanReporter::new())
    };
    say(format!(
        "deploy {deploy_id}: {} host(s), goal {}",
        jobs.len(),
        args.goal.as_str()
    ));
    let clock = TokioClock::new();
    let reports = run_fleet(
        jobs,
        &LocalProbe,
        FleetOptions {
            parallel: usize::from(args.parallel),
        },
        &clock,
        &reporter,
    )
    .await;
    for t in &targets {
        t.close().await;
    }
    let code = tether_core::deploy::outcome::exit_code(&reports);
    match &reporter {
        AnyReporter::Json(r) => r.line(&Summary {
            event: "summary",
            deploy_id: deploy_id.as_str(),
            exit_code: code,
            hosts: &reports,
        }),
        AnyReporter::Human(_) => print!("{}", summary_table(&reports)),
    }
    let unknown = reports.iter().filter(|r| r.outcome.is_unknown()).count();
    let failed = reports.iter().filter(|r| !r.outcome.is_success()).count();
    match code {
        0 => Ok(()),
        3 => Err(CommandError::HostsUnknown(unknown)),
        _ => Err(CommandError::HostsFailed(failed)),
    }
}

fn job(
    args: &Args,
    host: &Host,
    new_system: StorePath,
    platform: Option<String>,
    deploy_id: &DeployId,
) -> Result<HostJob, CommandError> {
    let token = Token::new(&random_hex(16)?)
        .ok_or_else(|| CommandError::Usage("could not form a deploy token".into()))?;
    Ok(HostJob {
        host: host.name.clone(),
        new_system,
        platform,
        machine_id: host.machine_id.as_ref().map(|m| m.as_str().to_string()),
        goal: args.goal,
        timeouts: timeouts(args, &host.timeouts),
        deploy_id: deploy_id.clone(),
        token,
        check_target: check_target(host),
        checks: host.checks.clone(),
        deployer: crate::journal::deployer_identity(),
        source: SystemSource::Copy,
        persist: PersistMode::SetProfile,
        reboot: None,
    })
}

/// Who a host's health checks are about.
pub fn check_target(host: &Host) -> CheckTarget {
    CheckTarget {
        name: host.name.clone(),
        address: host.address.clone(),
        ssh_user: host.ssh_user.clone(),
    }
}

fn target(
    ctx: &Context,
    args: &Args,
    host: &Host,
    index: usize,
    run_dir: &std::path::Path,
) -> Result<SshTarget, CommandError> {
    SshTarget::new(
        host.clone(),
        index,
        run_dir,
        ctx.nix.program().clone(),
        args.substitute_on_destination,
    )
    .map_err(CommandError::Output)
}
