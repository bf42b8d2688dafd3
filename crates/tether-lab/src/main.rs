//! `tether-lab`: boot, inspect, disturb and tear down a lab of test hosts.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use tether_lab::{Lab, UpOptions};

/// A lab of real test hosts for tether (systemd-nspawn, systemd, sshd, Nix).
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Which lab (several can run at once).
    #[arg(long, global = true, default_value = "lab", env = "TETHER_LAB")]
    name: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the Debian packages the lab needs and build the host image.
    Install,
    /// Boot a lab of N hosts and print its description (also in lab.json).
    Up {
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// Also write a fixture fleet into DIR and install its base systems.
        #[arg(long, value_name = "DIR")]
        provision: Option<PathBuf>,
        /// Copy lab.json to this file too.
        #[arg(long, value_name = "FILE")]
        json_out: Option<PathBuf>,
        /// Give every host state to snapshot: a btrfs subvolume
        /// /srv/state/db and a zfs-fuse pool with tank/db and tank/db/log.
        #[arg(long)]
        state: bool,
    },
    /// Tear the lab down and verify nothing is left.
    Down {
        /// Every lab on this machine.
        #[arg(long)]
        all: bool,
    },
    /// Print the running lab's description (lab.json).
    Info,
    /// List running labs.
    List,
    /// Reboot a host from inside and wait until it is back.
    Reboot { host: String },
    /// Kill a host without shutdown, boot it again, wait until it is back.
    Crash { host: String },
    /// Take a host's link down.
    Cut { host: String },
    /// Bring a host's link back up.
    Heal { host: String },
    /// Keep a host down after its next shutdown or reboot.
    Hold { host: String },
    /// Let a held host boot again.
    Release { host: String },
    /// Run a command inside a host (console, not network).
    Exec {
        host: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run a command on a host over SSH with its pinned key.
    Ssh {
        host: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print the Nix settings the lab's fixture builds need (for `NIX_CONFIG`).
    NixConfig,
    /// Write a fixture fleet for the lab into DIR (flake.nix and default.nix).
    Fleet {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A Nix file with per-host mkSystem overrides (default: none).
        #[arg(long, value_name = "FILE")]
        hosts_nix: Option<PathBuf>,
    },
}

fn run(cli: Cli) -> Result<i32> {
    let name = cli.name.as_str();
    match cli.command {
        Cmd::Install => {
            let installed = tether_lab::prereq::ensure()?;
            if !installed.is_empty() {
                eprintln!("installed: {}", installed.join(" "));
            }
            let image = tether_lab::image::ensure()?;
            println!("{}", image.display());
        }
        Cmd::Up {
            hosts,
            provision,
            json_out,
            state,
        } => {
            let started = Instant::now();
            let lab = Lab::up(&UpOptions {
                name: name.to_string(),
                hosts,
                state,
            })?;
            eprintln!(
                "tether-lab: {hosts} hosts up in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            if let Some(dir) = provision {
                let started = Instant::now();
                lab.provision(&dir)?;
                eprintln!(
                    "tether-lab: base systems installed in {:.1}s (fleet in {})",
                    started.elapsed().as_secs_f64(),
                    dir.display()
                );
            }
            let json = serde_json::to_string_pretty(&lab.info)?;
            if let Some(path) = json_out {
                std::fs::write(&path, &json)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{json}");
        }
        Cmd::Down { all } => {
            let names = if all {
                tether_lab::lab::list_labs()?
            } else {
                vec![name.to_string()]
            };
            for n in names {
                Lab::open(&n)?.down()?;
                eprintln!("tether-lab: {n} is down, nothing left behind");
            }
        }
        Cmd::Info => println!("{}", serde_json::to_string_pretty(&Lab::open(name)?.info)?),
        Cmd::List => {
            for n in tether_lab::lab::list_labs()? {
                println!("{n}");
            }
        }
        Cmd::Reboot { host } => Lab::open(name)?.reboot(&host)?,
        Cmd::Crash { host } => Lab::open(name)?.crash(&host)?,
        Cmd::Cut { host } => Lab::open(name)?.cut(&host)?,
        Cmd::Heal { host } => Lab::open(name)?.heal(&host)?,
        Cmd::Hold { host } => Lab::open(name)?.hold(&host)?,
        Cmd::Release { host } => Lab::open(name)?.release(&host)?,
        Cmd::Exec { host, command } => {
            let argv: Vec<&str> = command.iter().map(String::as_str).collect();
            let out = Lab::open(name)?.exec(&host, &argv)?;
            return forward(out);
        }
        Cmd::Ssh { host, command } => {
            let out = Lab::open(name)?.ssh(&host, &command.join(" "))?;
            return forward(out);
        }
        Cmd::NixConfig => print!("{}", tether_lab::nix_settings::NIX_CONFIG),
        Cmd::Fleet { out, hosts_nix } => {
            let hosts = match hosts_nix {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?,
                None => "{ }\n".to_string(),
            };
            Lab::open(name)?.write_fixture_fleet(&out, &hosts)?;
            println!("{}", out.display());
        }
    }
    Ok(0)
}

fn forward(out: std::process::Output) -> Result<i32> {
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    Ok(out.status.code().unwrap_or(1))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("tether-lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
