//! `tether rollback`: switch hosts back to their previous profile generation
//! (or `--to N`) through the full safe switch — identity check, guard, trial
//! with `test`, checks, confirmation over a fresh connection — then make that
//! generation the profile's current one and the boot default again
//! (`nix-env --switch-generation`, as `nixos-rebuild --rollback` does).

use std::time::Duration;

use tether_core::deploy::host::SystemSource;
use tether_core::inventory::Host;
use tether_core::model::Goal;
use tether_core::model::StorePath;
use tether_core::ports::{Conn, Target};
use tether_core::remote::status::{parse_status, status_script, HostStatus};
use tether_core::remote::PersistMode;
use tether_core::report::{HostReport, Outcome};

use crate::cli::Context;
use crate::commands::deploy::{base_job, rollout_plan, RolloutArgs, TimeoutArgs};
use crate::exit::CommandError;
use crate::runner::{self, Prepared, RunOptions};
use crate::ssh::SshTarget;

/// Roll hosts back to their previous generation, with the safe switch
///
/// Returns each host to the generation before its current one (or `--to
/// N`): a rollback that breaks the host rolls itself back too.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The profile generation to return to [default: the one before the current]
    #[arg(long, value_name = "GENERATION")]
    pub to: Option<u32>,
    /// Print events as NDJSON on stdout (docs/events.md)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
}

/// Which generation a host goes back to, or why it cannot.
pub fn choose_generation(status: &HostStatus, to: Option<u32>) -> Result<(u32, String), String> {
    let existing: Vec<String> = status
        .generations
        .iter()
        .map(|g| g.number.to_string())
        .collect();
    let listed = if existing.is_empty() {
        "none".to_string()
    } else {
        existing.join(", ")
    };
    let pick = match to {
        Some(n) => status.generations.iter().find(|g| g.number == n).ok_or_else(|| {
            format!("generation {n} does not exist (or was garbage-collected); the host has generations {listed}")
        })?,
        None => {
            let current = status.profile_generation.ok_or_else(|| {
                "the host's system profile has no generation to roll back from".to_string()
            })?;
            status
                .generations
                .iter()
                .rev()
                .find(|g| g.number < current)
                .ok_or_else(|| {
                    format!("there is no generation before {current}; the host has generations {listed}")
                })?
        }
    };
    Ok((pick.number, pick.system.clone()))
}

fn refused(host: &Host, reason: String) -> HostReport {
    HostReport {
        host: host.name.clone(),
        outcome: Outcome::Refused { reason },
        old_system: None,
        old_generation: None,
        new_system: String::new(),
        duration_ms: 0,
    }
}

/// Reads a host's generations; a host that cannot be read is decided here.
async fn resolve(
    host: &Host,
    target: &SshTarget,
    to: Option<u32>,
) -> Result<(u32, StorePath), HostReport> {
    let out = target
        .run(
            &status_script(),
            Conn::Shared,
            Duration::from_secs(30),
            None,
        )
        .await
        .map_err(|e| {
            let reason = match e {
                tether_core::ports::RemoteError::HostKey(m) => {
                    format!("identity: the host did not present the pinned host key ({m})")
                }
                other => format!("could not read the host's generations: {other}"),
            };
            HostReport {
                outcome: match reason.starts_with("identity") {
                    true => Outcome::Refused { reason },
                    false => Outcome::Failed { reason },
                },
                ..refused(host, String::new())
            }
        })?;
    let status = parse_status(&out.stdout)
        .map_err(|e| refused(host, format!("could not read the host's generations: {e}")))?;
    let (n, system) = choose_generation(&status, to).map_err(|r| refused(host, r))?;
    let path = StorePath::new(&system).ok_or_else(|| {
        refused(
            host,
            format!("generation {n} points at {system:?}, not a store path"),
        )
    })?;
    Ok((n, path))
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let (inventory, hosts) = ctx.selected_hosts().await?;
    let plan = rollout_plan(&args.rollout, &inventory, &hosts)?;
    let (_run_dir, targets) =
        SshTarget::for_hosts(&hosts, ctx.nix.program(), false).map_err(CommandError::Output)?;
    let resolved = futures::future::join_all(
        hosts
            .iter()
            .zip(&targets)
            .map(|(h, t)| resolve(h, t, args.to)),
    )
    .await;
    let deploy_id = runner::new_deploy_id()?;
    let mut jobs = Vec::new();
    let mut decided = Vec::new();
    for ((host, target), resolved) in hosts.iter().zip(targets).zip(resolved) {
        match resolved {
            Ok((generation, system)) => {
                let mut job = base_job(host, system, Goal::Switch, &args.timeouts, &deploy_id)?;
                job.source = SystemSource::OnTarget;
                job.persist = PersistMode::SwitchGeneration(generation);
                if !args.json {
                    eprintln!("{}: rolling back to generation {generation}", host.name);
                }
                jobs.push((job, target));
            }
            Err(report) => {
                target.close().await;
                decided.push(report);
            }
        }
    }
    runner::execute(
        ctx,
        &deploy_id,
        Prepared { jobs, decided },
        RunOptions {
            command: "rollback",
            goal: Goal::Switch,
            json: args.json,
            plan,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_core::remote::status::Generation;

    fn status(gens: &[u32], profile: u32) -> HostStatus {
        let mut s = parse_status("status=done\n").unwrap();
        s.generations = gens
            .iter()
            .map(|n| Generation {
                number: *n,
                system: format!("/nix/store/s{n}"),
            })
            .collect();
        s.profile_generation = Some(profile);
        s
    }

    #[test]
    fn the_previous_generation_is_the_newest_below_the_current_one() {
        assert_eq!(
            choose_generation(&status(&[1, 3, 4], 4), None).unwrap().0,
            3
        );
        assert_eq!(
            choose_generation(&status(&[1, 3, 4], 3), None).unwrap().0,
            1
        );
    }

    #[test]
    fn a_missing_generation_is_refused_naming_those_that_exist() {
        let e = choose_generation(&status(&[2, 3], 3), Some(1)).unwrap_err();
        assert!(
            e.contains("generation 1 does not exist") && e.contains("2, 3"),
            "{e}"
        );
        let e = choose_generation(&status(&[3], 3), None).unwrap_err();
        assert!(e.contains("no generation before 3"), "{e}");
    }
}
