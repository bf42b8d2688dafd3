//! `tether hosts`: list the selected hosts as the inventory resolves them
//! (defaults merged, keys parsed), as a table or as JSON; with
//! `--check-keys`, compare each pinned key with what the host presents and
//! with the user's known_hosts, changing nothing.

use std::io::Write as _;

use serde::Serialize;
use tether_core::inventory::{Configuration, Host};

use crate::adapters::host_keys;
use crate::cli::Context;
use crate::exit::CommandError;

/// List hosts from the inventory, after defaults and `--on`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array of hosts instead of a table (fields: docs/inventory.md)
    #[arg(long, conflicts_with = "check_keys")]
    pub json: bool,
    /// Scan each host's key and compare it with the pinned one and with
    /// known_hosts; exit 1 on any mismatch or unreachable host
    #[arg(long)]
    pub check_keys: bool,
    /// known_hosts files for --check-keys [default: ~/.ssh/known_hosts and
    /// /etc/ssh/ssh_known_hosts]
    #[arg(long = "known-hosts", value_name = "FILE", requires = "check_keys")]
    pub known_hosts: Vec<std::path::PathBuf>,
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let (_, hosts) = ctx.selected_hosts().await?;
    if args.check_keys {
        return check_keys(&hosts, &args.known_hosts).await;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let rows: Vec<HostJson<'_>> = hosts.iter().map(HostJson::from).collect();
        serde_json::to_writer_pretty(&mut out, &rows).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &hosts)?;
    }
    out.flush()?;
    Ok(())
}

/// One host in `tether hosts --json`. Field names are a stable interface.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HostJson<'a> {
    name: &'a str,
    address: String,
    ssh_port: u16,
    ssh_user: &'a str,
    sudo: tether_core::model::SudoMode,
    tags: Vec<&'a str>,
    host_key: HostKeyJson,
    machine_id: Option<&'a str>,
    configuration: ConfigurationJson<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HostKeyJson {
    #[serde(rename = "type")]
    key_type: &'static str,
    fingerprint: String,
    public_key: String,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum ConfigurationJson<'a> {
    Name { name: &'a str },
    Configuration,
    Derivation,
}

impl<'a> From<&'a Host> for HostJson<'a> {
    fn from(h: &'a Host) -> Self {
        HostJson {
            name: h.name.as_str(),
            address: h.address.to_string(),
            ssh_port: h.ssh_port,
            ssh_user: h.ssh_user.as_str(),
            sudo: h.sudo,
            tags: h.tags.iter().map(|t| t.as_str()).collect(),
            host_key: HostKeyJson {
                key_type: h.host_key.key_type().as_str(),
                fingerprint: h.host_key.fingerprint(),
                public_key: h.host_key.openssh(),
            },
            machine_id: h.machine_id.as_ref().map(|m| m.as_str()),
            configuration: match &h.configuration {
                Configuration::Named(name) => ConfigurationJson::Name { name },
                Configuration::Inline => ConfigurationJson::Configuration,
                Configuration::Derivation => ConfigurationJson::Derivation,
            },
        }
    }
}

fn configuration_text(c: &Configuration) -> String {
    match c {
        Configuration::Named(name) => format!("nixosConfigurations.{name}"),
        Configuration::Inline => "(inline configuration)".to_owned(),
        Configuration::Derivation => "(derivation)".to_owned(),
    }
}

fn write_table(out: &mut impl std::io::Write, hosts: &[Host]) -> std::io::Result<()> {
    let header = [
        "HOST",
        "ADDRESS",
        "PORT",
        "USER",
        "TAGS",
        "MACHINE-ID",
        "CONFIGURATION",
        "HOST-KEY",
    ];
    let rows: Vec<[String; 8]> = hosts
        .iter()
        .map(|h| {
            let tags: Vec<&str> = h.tags.iter().map(|t| t.as_str()).collect();
            [
                h.name.to_string(),
                h.address.to_string(),
                h.ssh_port.to_string(),
                h.ssh_user.to_string(),
                if tags.is_empty() {
                    "-".into()
                } else {
                    tags.join(",")
                },
                h.machine_id.as_ref().map_or("-".into(), |m| m.to_string()),
                configuration_text(&h.configuration),
                format!(
                    "{} {}",
                    h.host_key.key_type().short_name(),
                    h.host_key.fingerprint()
                ),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: [String; 8] = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `--check-keys`: one line per host; exit 1 unless every pin agrees with
/// the host and with known_hosts.
async fn check_keys(hosts: &[Host], given: &[std::path::PathBuf]) -> Result<(), CommandError> {
    use tether_core::onboard::{check_keys, PresentedKey};

    let files = host_keys::known_hosts_files(given);
    use futures::stream::{self, StreamExt as _};
    let checks: Vec<_> = stream::iter(hosts.iter().map(|h| {
        let files = &files;
        async move {
            let address = h.address.to_string();
            let presented = host_keys::scan(&address, h.ssh_port).await;
            let known = host_keys::known_hosts_entries(files, &address, h.ssh_port).await;
            let presented = presented.as_deref().map_err(String::as_str);
            check_keys(&h.host_key, presented, &known)
        }
    }))
    .buffered(host_keys::PARALLEL_LOOKUPS)
    .collect()
    .await;
    let mut out = std::io::stdout().lock();
    let mut bad = 0;
    for (h, check) in hosts.iter().zip(&checks) {
        let pinned = h.host_key.fingerprint();
        let mut line = match &check.host {
            PresentedKey::Same => format!("{}: ok, the host presents the pinned key {pinned}", h.name),
            PresentedKey::Different { presented } => format!(
                "{}: MISMATCH: pinned {pinned}, the host presents {presented} (a rotated key, or not the host)",
                h.name
            ),
            PresentedKey::NoneOfThatType => format!(
                "{}: MISMATCH: pinned {pinned} ({}), the host presents no {} key",
                h.name,
                h.host_key.key_type().short_name(),
                h.host_key.key_type().short_name()
            ),
            PresentedKey::Unreachable { why } => {
                format!("{}: UNCHECKED: {why}", h.name)
            }
        };
        for (file, n, fingerprint) in &check.known_hosts_disagree {
            let at = n.map_or_else(String::new, |n| format!(", line {n}"));
            line.push_str(&format!(
                "; KNOWN_HOSTS DIFFERS: {file}{at} holds {fingerprint}, not the pinned {pinned}"
            ));
        }
        if !check.agrees() {
            bad += 1;
        }
        writeln!(out, "{line}")?;
    }
    if bad > 0 {
        return Err(CommandError::HostsNotOk {
            count: bad,
            what: "have a host key that does not agree with the pin, or could not be checked",
        });
    }
    Ok(())
}
