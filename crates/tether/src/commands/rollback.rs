//! `tether rollback`: switch hosts back to their previous profile generation
//! (or `--to N`) through the full safe switch — identity check, guard, trial
//! with `test`, checks, confirmation over a fresh connection — then make that
//! generation the profile's current one and the boot default again
//! (`nix-env --switch-generation`, as `nixos-rebuild --rollback` does).

use tether_core::deploy::decide::{choose_generation, preflight_failed};
use tether_core::deploy::SystemSource;
use tether_core::inventory::Host;
use tether_core::model::{Goal, StorePath};
use tether_core::ports::{call, CallError, Conn};
use tether_core::remote::status::Status;
use tether_core::remote::PersistMode;
use tether_core::report::{Failure, HostReport, Outcome, Refusal};
use tether_core::spec::LOOK_CALL;

use crate::adapters::ssh::SshTarget;
use crate::args::{host_job, RolloutArgs, TimeoutArgs, TrialArgs};
use crate::cli::Context;
use crate::exit::CommandError;
use crate::runner::{self, Prepared, RunOptions};

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
    #[command(flatten)]
    pub trial: TrialArgs,
}

/// A host decided before the rollout: refused or failed, untouched.
fn decided(host: &Host, outcome: Outcome) -> HostReport {
    HostReport {
        host: host.name.clone(),
        outcome,
        old_system: None,
        old_generation: None,
        new_system: String::new(),
        duration_ms: 0,
        state: None,
    }
}

/// Reads a host's generations and picks the one to return to; a host that
/// cannot be read, or has none to return to, is decided here.
async fn resolve(
    host: &Host,
    target: &SshTarget,
    to: Option<u32>,
) -> Result<(u32, StorePath), HostReport> {
    let status = call(target, &Status, Conn::Shared, LOOK_CALL)
        .await
        .map_err(|e| {
            let outcome = match e {
                e @ CallError::Remote(tether_core::ports::RemoteError::HostKey(_)) => {
                    preflight_failed(e)
                }
                other => Outcome::Failed {
                    reason: Failure::ReadGenerations {
                        error: other.to_string(),
                    },
                },
            };
            decided(host, outcome)
        })?;
    choose_generation(&status, to).map_err(|problem| {
        decided(
            host,
            Outcome::Refused {
                reason: Refusal::NoGeneration { problem },
            },
        )
    })
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let (inventory, hosts) = ctx.selected_hosts().await?;
    let plan = args.rollout.plan(&inventory, &hosts)?;
    let (_run_dir, targets) =
        SshTarget::for_hosts(&hosts, ctx.nix.program(), ctx.sudo_password.as_ref(), false)
            .map_err(CommandError::Output)?;
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
                let mut job = host_job(
                    host,
                    system,
                    Goal::Switch,
                    &args.timeouts,
                    &args.trial,
                    &deploy_id,
                )?;
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
