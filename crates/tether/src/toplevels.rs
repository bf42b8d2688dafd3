//! Evaluating and building the selected hosts' systems: one `nix eval` for
//! all their toplevels and one `nix build` for the distinct derivations, so
//! hosts that share a system share the work. Used by `deploy` and `plan`.

use std::collections::BTreeMap;

use tether_core::inventory::Toplevel;
use tether_core::model::{HostName, StorePath};

use crate::cli::Context;
use crate::exit::CommandError;

/// A host's built system.
#[derive(Debug, Clone)]
pub struct BuiltSystem {
    pub path: StorePath,
    /// The Nix system it was built for (`x86_64-linux`), when known.
    pub platform: Option<String>,
}

/// Evaluates and builds the systems of `hosts`; `say` reports progress.
pub async fn build_systems(
    ctx: &Context,
    hosts: &[HostName],
    say: &dyn Fn(String),
) -> Result<BTreeMap<HostName, BuiltSystem>, CommandError> {
    let toplevels = evaluate(ctx, hosts, say).await?;
    build_evaluated(ctx, hosts, &toplevels, say).await
}

/// Evaluates the system toplevels of `hosts` (one `nix eval`); nothing is
/// built yet, but each one's out path is known.
pub async fn evaluate(
    ctx: &Context,
    hosts: &[HostName],
    say: &dyn Fn(String),
) -> Result<BTreeMap<HostName, Toplevel>, CommandError> {
    say(format!("evaluating {} host(s)", hosts.len()));
    Ok(ctx.nix.eval_toplevels(&ctx.source, hosts).await?)
}

/// Builds what [`evaluate`] found (one `nix build` of the distinct
/// derivations).
pub async fn build_evaluated(
    ctx: &Context,
    hosts: &[HostName],
    toplevels: &BTreeMap<HostName, Toplevel>,
    say: &dyn Fn(String),
) -> Result<BTreeMap<HostName, BuiltSystem>, CommandError> {
    let mut drvs: Vec<StorePath> = toplevels.values().map(|t| t.drv_path.clone()).collect();
    drvs.sort();
    drvs.dedup();
    say(format!("building {} system(s)", drvs.len()));
    let outs = ctx.nix.build(&drvs).await.map_err(CommandError::Build)?;
    let built: BTreeMap<&StorePath, &StorePath> = drvs.iter().zip(outs.iter()).collect();
    hosts
        .iter()
        .map(|host| {
            let toplevel = toplevels.get(host).ok_or_else(|| {
                CommandError::Usage(format!("host {:?}: no system was evaluated", host.as_str()))
            })?;
            let path = built
                .get(&toplevel.drv_path)
                .map(|p| (*p).clone())
                .unwrap_or_else(|| toplevel.out_path.clone());
            Ok((
                host.clone(),
                BuiltSystem {
                    path,
                    platform: toplevel.system.clone(),
                },
            ))
        })
        .collect()
}
