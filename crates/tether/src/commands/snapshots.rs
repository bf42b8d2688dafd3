//! `tether snapshots`: the pre-deploy and failed-state snapshots tether
//! keeps of the selected hosts' declared state (docs/state.md); `restore`
//! puts one deploy's pre-deploy snapshots back, `prune` removes the old
//! ones. Each host is asked over one fresh connection; the scripts are
//! core's (`remote::state`).

use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tether_core::inventory::Host;
use tether_core::model::{DeployId, HostName};
use tether_core::ports::{call, Conn};
use tether_core::remote::{
    restore_bound, ListSnapshots, Operation, PruneReport, PruneSnapshots, RestoreRefusal,
    RestoreReport, RestoreSnapshots, Snapshot,
};

use crate::adapters::ssh::SshTarget;
use crate::cli::Context;
use crate::exit::CommandError;

/// List, restore and prune the snapshots of the hosts' declared state
///
/// Without a subcommand: every tether snapshot of the selected hosts'
/// `state` subvolumes and datasets (host, volume, deploy id, time, kind).
/// Hosts without `state` in the inventory are left out.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print JSON on stdout
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for each host's answer to a listing
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Put a deploy's pre-deploy snapshots back on one host (`--on HOST`):
    /// stop the declared units, keep the current data as a failed-state
    /// snapshot, restore, start the units. Refused while a deploy is on trial.
    Restore {
        /// The deploy whose pre-deploy snapshots to restore (see `tether snapshots`)
        deploy_id: String,
    },
    /// Remove tether's snapshots beyond `keep` per subvolume or dataset
    /// (never one of a deploy on trial, never a failed state younger than
    /// the newest confirmed deploy)
    Prune {
        /// Snapshots kept per volume [default: the inventory's `state.keep`]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        keep: Option<u32>,
    },
}

/// One host's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HostSnapshots {
    host: HostName,
    snapshots: Vec<Snapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let (_inventory, hosts) = ctx.selected_hosts().await?;
    match args.action {
        None => list(ctx, &hosts, args.json, Duration::from_secs(args.timeout)).await,
        Some(Action::Restore { deploy_id }) => restore(ctx, &hosts, &deploy_id, args.json).await,
        Some(Action::Prune { keep }) => prune(ctx, &hosts, keep, args.json).await,
    }
}

/// The selected hosts that declare state; a host that does not is named.
fn with_state(hosts: &[Host]) -> (Vec<Host>, Vec<&HostName>) {
    let (declared, not): (Vec<&Host>, Vec<&Host>) =
        hosts.iter().partition(|h| h.state.is_declared());
    (
        declared.into_iter().cloned().collect(),
        not.into_iter().map(|h| &h.name).collect(),
    )
}

async fn list(
    ctx: &Context,
    hosts: &[Host],
    json: bool,
    timeout: Duration,
) -> Result<(), CommandError> {
    let (hosts, skipped) = with_state(hosts);
    if !skipped.is_empty() && !json {
        eprintln!(
            "no state declared (inventory field state) for: {}",
            skipped
                .iter()
                .map(|h| h.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let answers: Vec<HostSnapshots> = ask_each(ctx, &hosts, timeout, |host| ListSnapshots {
        spec: host.state.clone(),
    })
    .await?
    .into_iter()
    .map(|(host, answer)| match answer {
        Ok(snapshots) => HostSnapshots {
            host,
            snapshots,
            error: None,
        },
        Err(error) => HostSnapshots {
            host,
            snapshots: Vec::new(),
            error: Some(error),
        },
    })
    .collect();
    if json {
        let text = serde_json::to_string_pretty(&answers).map_err(std::io::Error::other)?;
        println!("{text}");
    } else {
        println!(
            "{:<14} {:<6} {:<24} {:<30} {:<16} {:<12} location",
            "host", "fs", "volume", "deploy", "taken", "kind"
        );
        for a in &answers {
            if let Some(e) = &a.error {
                println!("{:<14} error: {e}", a.host.as_str());
            }
            for s in &a.snapshots {
                println!(
                    "{:<14} {:<6} {:<24} {:<30} {:<16} {:<12} {}",
                    a.host.as_str(),
                    s.fs.to_string(),
                    s.volume,
                    s.deploy_id,
                    s.taken,
                    s.kind.to_string(),
                    s.location
                );
            }
        }
    }
    let failed = answers.iter().filter(|a| a.error.is_some()).count();
    if failed > 0 {
        return Err(CommandError::HostsNotOk {
            count: failed,
            what: "could not list their snapshots",
        });
    }
    Ok(())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RestoreOutcome {
    host: HostName,
    deploy_id: String,
    #[serde(flatten)]
    report: RestoreReport,
}

async fn restore(
    ctx: &Context,
    hosts: &[Host],
    deploy_id: &str,
    json: bool,
) -> Result<(), CommandError> {
    let [host] = hosts else {
        return Err(CommandError::Usage(format!(
            "snapshots restore acts on exactly one host: --on selected {}",
            hosts.len()
        )));
    };
    if !host.state.is_declared() {
        return Err(CommandError::Usage(format!(
            "{}: no state declared (inventory field state): nothing to restore",
            host.name
        )));
    }
    let id = DeployId::parse(deploy_id).ok_or_else(|| {
        CommandError::Usage(format!(
            "{deploy_id:?} is not a deploy id (like 20261121T084900-1a2b3c)"
        ))
    })?;
    let (_run_dir, targets) = SshTarget::for_hosts(
        std::slice::from_ref(host),
        ctx.nix.program(),
        ctx.sudo_password.as_ref(),
        false,
    )
    .map_err(CommandError::Output)?;
    let target = targets
        .first()
        .ok_or_else(|| CommandError::Usage("no target".into()))?;
    // Stopping units, snapshots and (ZFS) the failed state's copy.
    let mut spec = host.state.clone();
    spec.restore_on_rollback = true;
    let limit = restore_bound(&spec) + Duration::from_secs(30);
    let op = RestoreSnapshots {
        spec: host.state.clone(),
        deploy_id: id,
    };
    let result = call(target, &op, Conn::Fresh, limit)
        .await
        .map_err(|e| failed(format!("{}: restoring {deploy_id}: {e}", host.name)))?;
    let report = match result {
        Ok(report) => report,
        Err(RestoreRefusal::TrialInProgress { deploy }) => {
            return Err(failed(format!(
                "{}: refused: deploy {deploy} is on trial; restore after it ended (nothing was changed)",
                host.name
            )))
        }
        Err(RestoreRefusal::DeployArming) => {
            return Err(failed(format!(
                "{}: refused: a deploy is arming on the host; restore after it ended (nothing was changed)",
                host.name
            )))
        }
    };
    let ok = report.succeeded();
    if json {
        let out = RestoreOutcome {
            host: host.name.clone(),
            deploy_id: deploy_id.to_string(),
            report,
        };
        let text = serde_json::to_string_pretty(&out).map_err(std::io::Error::other)?;
        println!("{text}");
    } else {
        println!("{}: {}", host.name, report.summary());
        for w in &report.warnings {
            println!("{}: warning: {w}", host.name);
        }
    }
    if ok {
        Ok(())
    } else {
        Err(failed(format!(
            "{}: the restore of {deploy_id} did not complete",
            host.name
        )))
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PruneOutcome {
    host: HostName,
    #[serde(flatten)]
    report: PruneReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn prune(
    ctx: &Context,
    hosts: &[Host],
    keep: Option<u32>,
    json: bool,
) -> Result<(), CommandError> {
    let (hosts, _) = with_state(hosts);
    let prune_for = |host: &Host| PruneSnapshots {
        spec: host.state.clone(),
        keep: keep.unwrap_or(host.state.keep),
        protect: None,
    };
    let answers: Vec<PruneOutcome> = ask_each(ctx, &hosts, Duration::from_secs(300), prune_for)
        .await?
        .into_iter()
        .map(|(host, answer)| match answer {
            Ok(report) => PruneOutcome {
                host,
                report,
                error: None,
            },
            Err(error) => PruneOutcome {
                host,
                report: PruneReport::default(),
                error: Some(error),
            },
        })
        .collect();
    if json {
        let text = serde_json::to_string_pretty(&answers).map_err(std::io::Error::other)?;
        println!("{text}");
    } else {
        for a in &answers {
            match &a.error {
                Some(e) => println!("{}: error: {e}", a.host.as_str()),
                None => println!(
                    "{}: pruned {}{}",
                    a.host.as_str(),
                    a.report.pruned.len(),
                    if a.report.failed.is_empty() {
                        String::new()
                    } else {
                        format!("; could not prune {}", a.report.failed.join(", "))
                    }
                ),
            }
        }
    }
    let failed = answers
        .iter()
        .filter(|a| a.error.is_some() || !a.report.failed.is_empty())
        .count();
    if failed > 0 {
        return Err(CommandError::HostsNotOk {
            count: failed,
            what: "could not prune all their snapshots",
        });
    }
    Ok(())
}

/// A restore that did not happen or did not complete: said on stderr, the
/// exit code says "not ok".
fn failed(message: String) -> CommandError {
    eprintln!("error: {message}");
    CommandError::HostsNotOk {
        count: 1,
        what: "not restored",
    }
}

/// Runs `op_for(host)` on every host over a fresh connection, at most 20 at
/// once; the answers in the hosts' order, an error as its message.
async fn ask_each<O: Operation>(
    ctx: &Context,
    hosts: &[Host],
    timeout: Duration,
    op_for: impl Fn(&Host) -> O,
) -> Result<Vec<(HostName, Result<O::Output, String>)>, CommandError> {
    let (_run_dir, targets) =
        SshTarget::for_hosts(hosts, ctx.nix.program(), ctx.sudo_password.as_ref(), false)
            .map_err(CommandError::Output)?;
    let op_for = &op_for;
    Ok(stream::iter(hosts.iter().zip(targets.iter()))
        .map(|(host, target)| async move {
            let answer = call(target, &op_for(host), Conn::Fresh, timeout)
                .await
                .map_err(|e| e.to_string());
            (host.name.clone(), answer)
        })
        .buffered(20)
        .collect()
        .await)
}
