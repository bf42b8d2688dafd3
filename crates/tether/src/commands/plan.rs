//! `tether plan`: build the selected hosts' systems (one Nix evaluation, one
//! build), then show for each host what a deploy would change, without
//! changing it: unchanged or not, the closure difference (packages and
//! size) and the units activation would start, stop, restart or reload.
//! Also what `deploy --dry-run` runs.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde::Serialize;
use tether_core::inventory::Host;
use tether_core::model::StorePath;
use tether_core::plan::{
    all_planned, parse_path_info_json, plan_host, Closure, HostPlan, PlanJob, PlanStatus,
    TrialPlan, UnitsSource,
};
use tether_core::ports::{call, Conn};
use tether_core::remote::plan::{ListUnitFiles, UnitFiles};
use tether_core::report::reboot_reasons_text;
use tether_core::spec::Timeouts;

use crate::adapters::local::LocalShell;
use crate::adapters::ssh::SshTarget;
use crate::args::TrialArgs;
use crate::cli::Context;
use crate::exit::{CommandError, ExitStatus};

/// Show what a deploy would change on each selected host, without changing it
///
/// Whether the host already runs the new system, the packages added, removed,
/// upgraded or downgraded and the closure's size change, and the units
/// activation would start, stop, restart or reload. Without --copy nothing
/// reaches the hosts and the units are an estimate from unit files.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Copy each closure to its host and run the new system's real
    /// `switch-to-configuration dry-activate` (only the hosts' stores change)
    #[arg(long)]
    pub copy: bool,
    /// Print one JSON document on stdout (docs/plan.md)
    #[arg(long)]
    pub json: bool,
    /// Most hosts planned at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: u16,
    /// Which trial a deploy would use (shown with --copy, once the closure
    /// is on the host)
    #[command(flatten)]
    pub trial: TrialArgs,
}

impl Args {
    /// The arguments `deploy --dry-run` plans with.
    pub fn for_dry_run(copy: bool, json: bool, trial: TrialArgs) -> Args {
        Args {
            copy,
            json,
            parallel: 10,
            trial,
        }
    }
}

/// The `--json` document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    exit_code: u8,
    copy: bool,
    hosts: &'a [HostPlan],
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let (_inventory, hosts) = ctx.selected_hosts().await?;
    let say = |msg: String| {
        if !args.json {
            eprintln!("{msg}");
        }
    };
    let names: Vec<_> = hosts.iter().map(|h| h.name.clone()).collect();
    let built = crate::toplevels::build_systems(ctx, &names, &say).await?;
    let mut outs: Vec<StorePath> = built.values().map(|b| b.path.clone()).collect();
    outs.sort();
    outs.dedup();

    // What each new system is, read once per system from the local store.
    let mut locals: BTreeMap<StorePath, (Closure, UnitFiles)> = BTreeMap::new();
    for out in &outs {
        if !locals.contains_key(out) {
            let closure = ctx
                .nix
                .closure_info(out, parse_path_info_json)
                .await
                .map_err(CommandError::Build)?;
            let units = local_unit_files(out).await?;
            locals.insert(out.clone(), (closure, units));
        }
    }

    let (_run_dir, targets) =
        SshTarget::for_hosts(&hosts, ctx.nix.program(), ctx.sudo_password.as_ref(), false)
            .map_err(CommandError::Output)?;
    let mut work: Vec<(PlanJob, SshTarget)> = Vec::new();
    for (host, target) in hosts.iter().zip(targets) {
        let system = built.get(&host.name).ok_or_else(|| {
            CommandError::Usage(format!(
                "host {:?}: no system was built",
                host.name.as_str()
            ))
        })?;
        let new_system = system.path.clone();
        let (new_closure, new_units) = locals.get(&new_system).cloned().unwrap_or_default();
        work.push((
            job(
                host,
                &args,
                new_system,
                system.platform.clone(),
                new_closure,
                new_units,
            ),
            target,
        ));
    }

    say(format!(
        "planning {} host(s){}",
        work.len(),
        if args.copy {
            " (copying closures, running dry-activate)"
        } else {
            " (nothing is copied)"
        }
    ));
    // `buffered` keeps the inventory's order in the report.
    let plans: Vec<HostPlan> = futures::stream::iter(work.iter())
        .map(|(job, target)| async move {
            let started = Instant::now();
            let mut plan = plan_host(target, job).await;
            plan.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            target.close().await;
            plan
        })
        .buffered(usize::from(args.parallel))
        .collect()
        .await;

    let code = if all_planned(&plans) {
        ExitStatus::Success
    } else {
        ExitStatus::HostFailed
    }
    .code();
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let doc = Document {
            exit_code: code,
            copy: args.copy,
            hosts: &plans,
        };
        serde_json::to_writer_pretty(&mut stdout, &doc).map_err(std::io::Error::from)?;
        writeln!(stdout)?;
    } else {
        for plan in &plans {
            write!(stdout, "{}", render(plan))?;
        }
    }
    stdout.flush()?;
    match code {
        0 => Ok(()),
        _ => Err(CommandError::HostsNotOk {
            count: plans
                .iter()
                .filter(|p| p.status != PlanStatus::Planned)
                .count(),
            what: "could not be planned",
        }),
    }
}

fn job(
    host: &Host,
    args: &Args,
    new_system: StorePath,
    platform: Option<String>,
    new_closure: Closure,
    new_units: UnitFiles,
) -> PlanJob {
    let d = Timeouts::default();
    PlanJob {
        host: host.name.clone(),
        new_system,
        platform,
        machine_id: host.machine_id.as_ref().map(|m| m.as_str().to_string()),
        new_closure,
        new_units,
        copy: args.copy,
        trial: args.trial.trial.unwrap_or(host.trial),
        force_live: args.trial.force_live,
        command_timeout: d.command,
        copy_timeout: host
            .timeouts
            .copy
            .map(Duration::from_secs)
            .unwrap_or(d.copy),
        state: host.state.clone(),
    }
}

/// The new system's unit files, hashed by the same script the host runs
/// for its current system, so both sides are compared alike.
async fn local_unit_files(system: &StorePath) -> Result<UnitFiles, CommandError> {
    let op = ListUnitFiles {
        system: system.clone(),
    };
    call(&LocalShell, &op, Conn::Fresh, Timeouts::default().command)
        .await
        .map_err(|e| CommandError::Local(format!("reading the unit files of {system}: {e}")))
}

/// Bytes as a short human size (`1.2 MiB`), signed when `signed`.
fn human_size(bytes: i128, signed: bool) -> String {
    let sign = match (signed, bytes.signum()) {
        (true, 1) => "+",
        (_, -1) => "-",
        _ => "",
    };
    let mut value = bytes.unsigned_abs() as f64;
    let mut unit = "B";
    for next in ["KiB", "MiB", "GiB", "TiB"] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    if unit == "B" {
        format!("{sign}{value} {unit}")
    } else {
        format!("{sign}{value:.1} {unit}")
    }
}

/// One host's readable report.
fn render(plan: &HostPlan) -> String {
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    let head = match plan.status {
        PlanStatus::Planned if plan.unchanged => "unchanged (already runs this system)".to_string(),
        PlanStatus::Planned => "would change".to_string(),
        PlanStatus::Refused => format!(
            "refused: {}",
            plan.reason.as_deref().unwrap_or("no reason given")
        ),
        PlanStatus::Failed => format!(
            "could not be planned: {}",
            plan.reason.as_deref().unwrap_or("no reason given")
        ),
    };
    line(format!("{}: {head}", plan.host.as_str()));
    if plan.status != PlanStatus::Planned || plan.unchanged {
        line(String::new());
        return s;
    }
    line(format!(
        "  system: {} -> {}",
        plan.current_system.as_deref().unwrap_or("(none)"),
        plan.new_system
    ));
    line(match &plan.trial {
        None => "  trial: decided once the closure is on the host (plan --copy shows it)".into(),
        Some(TrialPlan::Live) => {
            "  trial: live (switch-to-configuration test under the guard)".into()
        }
        Some(TrialPlan::LiveForced { reasons }) => format!(
            "  trial: live, forced although {}",
            reboot_reasons_text(reasons)
        ),
        Some(TrialPlan::Reboot { reasons }) if reasons.is_empty() => {
            "  trial: reboot (asked for)".into()
        }
        Some(TrialPlan::Reboot { reasons }) => {
            format!("  trial: reboot: {}", reboot_reasons_text(reasons))
        }
        Some(TrialPlan::Refused { reason }) => {
            format!("  trial: a deploy would be refused: {reason}")
        }
    });
    if !plan.snapshots.is_empty() {
        line(format!(
            "  snapshots before activation: {}",
            plan.snapshots.join(", ")
        ));
    }
    if let Some(d) = &plan.closure {
        let versions = |v: &[String]| v.join(", ");
        for p in &d.added {
            line(format!("  added      {} {}", p.name, versions(&p.versions)));
        }
        for p in &d.removed {
            line(format!("  removed    {} {}", p.name, versions(&p.versions)));
        }
        for (label, list) in [
            ("upgraded  ", &d.upgraded),
            ("downgraded", &d.downgraded),
            ("changed   ", &d.changed),
        ] {
            for c in list {
                line(format!(
                    "  {label} {} {} -> {}",
                    c.name,
                    versions(&c.old),
                    versions(&c.new)
                ));
            }
        }
        line(format!(
            "  closure: {} -> {} ({}); {} path(s) added, {} removed",
            human_size(i128::from(d.size_before), false),
            human_size(i128::from(d.size_after), false),
            human_size(i128::from(d.size_change), true),
            d.paths_added,
            d.paths_removed
        ));
    }
    if let Some(u) = &plan.units {
        match u.source {
            UnitsSource::DryActivate => {
                line("  units (from the new system's dry-activate on the host):".into())
            }
            UnitsSource::Estimate => line(
                "  units (ESTIMATE from unit files; nothing was copied; --copy runs the real dry-activate):"
                    .into(),
            ),
        }
        let c = &u.changes;
        for (label, list) in [
            ("stop", &c.stop),
            ("restart", &c.restart),
            ("reload", &c.reload),
            ("start", &c.start),
        ] {
            if !list.is_empty() {
                line(format!("    would {label}: {}", list.join(", ")));
            }
        }
        if c.is_empty() {
            line("    no unit would be started, stopped, restarted or reloaded".into());
        }
        for n in &c.notes {
            line(format!("    note: {n}"));
        }
    }
    line(String::new());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(0, true), "0 B");
        assert_eq!(human_size(512, false), "512 B");
        assert_eq!(human_size(1536, true), "+1.5 KiB");
        assert_eq!(human_size(-3 * 1024 * 1024, true), "-3.0 MiB");
    }
}
