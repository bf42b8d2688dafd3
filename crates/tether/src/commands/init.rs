//! `tether init`: a `tether` inventory from what the flake already holds
//! (deploy-rs nodes, a colmena hive, or plain `nixosConfigurations`), with
//! every host's key found where the user already trusts it, or scanned and
//! left commented out (docs/migrating.md). Writes a new file or prints; it
//! never overwrites one.

use std::io::Write as _;
use std::path::PathBuf;

use futures::stream::{self, StreamExt as _};
use tether_core::onboard::{
    choose_key, map_ssh_opts, render_inventory, FoundKey, HostDraft, ImportSource, KeySource,
};

use crate::adapters::host_keys;
use crate::cli::Context;
use crate::exit::CommandError;

/// Write a tether inventory from the flake's deploy-rs, colmena or NixOS hosts.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the hosts are described [default: deploy-rs if the flake has
    /// `deploy.nodes`, else colmena if it has a hive, else nixos]
    #[arg(long, value_enum)]
    pub from: Option<From>,
    /// Write the inventory to FILE (which must not exist) instead of printing it
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// A host's address, `NAME=ADDRESS` (repeatable): for `--from nixos`, or
    /// to replace the one the flake gives
    #[arg(long = "address", value_name = "NAME=ADDRESS")]
    pub addresses: Vec<String>,
    /// known_hosts files to look keys up in [default: ~/.ssh/known_hosts and
    /// /etc/ssh/ssh_known_hosts]
    #[arg(long = "known-hosts", value_name = "FILE")]
    pub known_hosts: Vec<PathBuf>,
    /// Never scan a host for its key (hosts not found stay without one)
    #[arg(long)]
    pub no_scan: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    #[value(name = "deploy-rs")]
    DeployRs,
    Colmena,
    Nixos,
}

impl From {
    fn source(self) -> ImportSource {
        match self {
            From::DeployRs => ImportSource::DeployRs,
            From::Colmena => ImportSource::Colmena,
            From::Nixos => ImportSource::Nixos,
        }
    }
}

fn parse_addresses(given: &[String]) -> Result<Vec<(String, String)>, CommandError> {
    given
        .iter()
        .map(|a| match a.split_once('=') {
            Some((n, addr)) if !n.is_empty() && !addr.is_empty() => {
                Ok((n.to_string(), addr.to_string()))
            }
            _ => Err(CommandError::Usage(format!(
                "--address {a:?}: expected NAME=ADDRESS"
            ))),
        })
        .collect()
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    if ctx.on_text.is_some() || ctx.exclude_text.is_some() {
        return Err(CommandError::Usage(
            "tether init writes every host the flake describes; --on and --exclude do not apply"
                .to_string(),
        ));
    }
    let addresses = parse_addresses(&args.addresses)?;
    if let Some(out) = &args.out {
        if out.exists() {
            return Err(CommandError::Usage(format!(
                "--out {}: the file exists; tether init never overwrites a file",
                out.display()
            )));
        }
    }
    let (source, mut doc) = match args.from {
        Some(f) => (
            f.source(),
            ctx.nix.eval_import(&ctx.source, f.source()).await?,
        ),
        None => {
            let mut found = None;
            for s in [
                ImportSource::DeployRs,
                ImportSource::Colmena,
                ImportSource::Nixos,
            ] {
                let doc = ctx.nix.eval_import(&ctx.source, s).await?;
                if !doc.hosts.is_empty() {
                    found = Some((s, doc));
                    break;
                }
            }
            found.ok_or_else(|| {
                CommandError::Usage(format!(
                    "{} has no deploy.nodes, colmena hive or nixosConfigurations to start from",
                    ctx.source
                ))
            })?
        }
    };
    if doc.hosts.is_empty() {
        return Err(CommandError::Usage(format!(
            "{} has no hosts for --from {}: {}",
            ctx.source,
            source.as_str(),
            doc.notes.join("; ")
        )));
    }
    for (name, address) in &addresses {
        match doc.hosts.get_mut(name) {
            Some(h) => h.address = Some(address.clone()),
            None => {
                return Err(CommandError::Usage(format!(
                    "--address {name}=…: {name} is not a host of --from {}",
                    source.as_str()
                )))
            }
        }
    }
    let files = host_keys::known_hosts_files(&args.known_hosts);
    let drafts: Vec<HostDraft> = stream::iter(doc.hosts.iter().map(|(name, host)| {
        let files = &files;
        async move {
            let ssh = map_ssh_opts(&host.ssh_opts);
            let port = host.ssh_port.or(ssh.port).unwrap_or(22);
            let key = match &host.address {
                None => choose_key(name, "", &host.declared_keys, &[], None),
                Some(address) => {
                    let known = host_keys::known_hosts_entries(files, address, port).await;
                    let first = choose_key(name, address, &host.declared_keys, &known, None);
                    if matches!(first, FoundKey::Missing { .. }) && !args.no_scan {
                        let from = format!("{address}:{port}");
                        match host_keys::scan(address, port).await {
                            Ok(lines) => choose_key(
                                name,
                                address,
                                &host.declared_keys,
                                &known,
                                Some((&from, &lines)),
                            ),
                            Err(e) => {
                                eprintln!("{name}: {e}");
                                first
                            }
                        }
                    } else {
                        first
                    }
                }
            };
            HostDraft {
                name: name.clone(),
                imported: host.clone(),
                ssh,
                key,
            }
        }
    }))
    .buffered(host_keys::PARALLEL_LOOKUPS)
    .collect()
    .await;
    let text = render_inventory(source, &ctx.source.to_string(), &drafts, &doc.notes);
    match &args.out {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| CommandError::Local(format!("creating {}: {e}", path.display())))?;
            f.write_all(text.as_bytes())?;
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    for d in &drafts {
        eprintln!("{}: {}", d.name, key_summary(&d.key));
    }
    if let Some(path) = &args.out {
        eprintln!(
            "wrote {} ({} hosts); use it as the flake's `tether` output: tether = import ./{};",
            path.display(),
            drafts.len(),
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        );
    }
    Ok(())
}

fn key_summary(key: &FoundKey) -> String {
    match key {
        FoundKey::Pinned {
            key,
            source: KeySource::Configuration { option },
        } => format!("host key {} pinned, declared in {option}", key.fingerprint()),
        FoundKey::Pinned {
            key,
            source: KeySource::KnownHosts { file, .. },
        } => format!("host key {} pinned, from {file}", key.fingerprint()),
        FoundKey::Scanned { key, from } => format!(
            "host key {} scanned at {from}, NOT pinned: check it on the host's console, then uncomment it",
            key.fingerprint()
        ),
        FoundKey::Missing { .. } => "no host key found; add it by hand".to_string(),
    }
}
