//! Command-line arguments in two stages: what the user typed ([`Cli`]), then
//! a checked [`Context`] every command receives; and the flat dispatch.
//!
//! Adding a command: a file in `commands/` with an `Args` struct and a
//! `run(&Context, Args)`, a variant in [`Command`], a line in [`dispatch`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tether_core::inventory::{Host, Inventory};
use tether_core::model::{Selector, SudoPassword};

use crate::adapters::nix::{Nix, NixSource};
use crate::commands;
use crate::exit::CommandError;

/// Deploy NixOS configurations to fleets, with automatic rollback.
#[derive(Debug, Parser)]
#[command(
    name = "tether",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("TETHER_GIT_REVISION"), ")"),
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, before or after the command name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Flake whose `tether` output is the inventory [default: .]
    #[arg(long, value_name = "REF", global = true, conflicts_with = "file")]
    pub flake: Option<String>,
    /// Nix file that evaluates to `{ tether = …; nixosConfigurations = …; }`, instead of a flake
    #[arg(short = 'f', long, value_name = "FILE", global = true)]
    pub file: Option<PathBuf>,
    /// Hosts to act on: comma-separated names, globs (`web*`) and `@tag`s [default: all]
    #[arg(long, value_name = "SELECTOR", global = true)]
    pub on: Option<String>,
    /// Hosts to leave out of `--on`'s selection (same syntax)
    #[arg(long, value_name = "SELECTOR", global = true)]
    pub exclude: Option<String>,
    /// Ask once for the sudo password of hosts with `sudo = "password"`
    /// (from the terminal without echo, or the first line of stdin); it is
    /// kept in memory only and sent to `sudo -S` on each session's stdin
    #[arg(long, global = true)]
    pub ask_sudo_password: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Hosts(commands::hosts::Args),
    Init(commands::init::Args),
    Deploy(commands::deploy::Args),
    Check(commands::check::Args),
    Status(commands::status::Args),
    Rollback(commands::rollback::Args),
    History(commands::history::Args),
    Plan(commands::plan::Args),
    Rehearse(commands::rehearse::Args),
    Snapshots(commands::snapshots::Args),
    Completions(commands::completions::Args),
    Man(commands::completions::ManArgs),
}

/// The checked form of [`GlobalArgs`].
#[derive(Debug, Clone)]
pub struct Context {
    pub source: NixSource,
    pub selector: Option<Selector>,
    pub exclude: Option<Selector>,
    /// `--on` and `--exclude` as typed, for the journal.
    pub on_text: Option<String>,
    pub exclude_text: Option<String>,
    pub nix: Nix,
    /// `--ask-sudo-password`'s answer (docs/sudo.md).
    pub sudo_password: Option<SudoPassword>,
}

impl Context {
    pub fn from_args(args: GlobalArgs) -> Result<Context, CommandError> {
        let source = match (args.file, args.flake) {
            (Some(file), _) => NixSource::File(file),
            (None, flake) => NixSource::Flake(flake.unwrap_or_else(|| ".".to_owned())),
        };
        let selector = args.on.as_deref().map(str::parse).transpose()?;
        let exclude = args.exclude.as_deref().map(str::parse).transpose()?;
        let sudo_password = if args.ask_sudo_password {
            let typed = crate::adapters::password::ask("sudo password for the deploy users: ")
                .map_err(|e| {
                    CommandError::Usage(format!("--ask-sudo-password: could not read it: {e}"))
                })?;
            Some(SudoPassword::new(&typed).ok_or_else(|| {
                CommandError::Usage(
                    "--ask-sudo-password: the password is empty or has a line break".into(),
                )
            })?)
        } else {
            None
        };
        Ok(Context {
            sudo_password,
            source,
            selector,
            exclude,
            on_text: args.on.clone(),
            exclude_text: args.exclude.clone(),
            nix: Nix::from_env(),
        })
    }

    /// The selection as typed (`all` without `--on`).
    pub fn selection_text(&self) -> String {
        let mut s = self.on_text.clone().unwrap_or_else(|| "all".into());
        if let Some(x) = &self.exclude_text {
            s.push_str(&format!(" --exclude {x}"));
        }
        s
    }

    /// Loads the inventory and applies `--on` and `--exclude`: what most
    /// commands start with. An empty result is an error (exit 2).
    pub async fn selected_hosts(&self) -> Result<(Inventory, Vec<Host>), CommandError> {
        let inventory = self.nix.load_inventory(&self.source).await?;
        let mut hosts: Vec<Host> =
            tether_core::inventory::select(&inventory, self.selector.as_ref())?
                .into_iter()
                .cloned()
                .collect();
        if let Some(exclude) = &self.exclude {
            // Each exclusion term must match some host, like `--on`'s.
            exclude.select(&inventory)?;
            hosts.retain(|h| !exclude.matches_host(h));
            if hosts.is_empty() {
                return Err(CommandError::Usage(
                    "--exclude leaves no host selected".to_string(),
                ));
            }
        }
        Ok((inventory, hosts))
    }
}

pub async fn dispatch(cli: Cli) -> Result<(), CommandError> {
    let ctx = Context::from_args(cli.global)?;
    match cli.command {
        Command::Hosts(args) => commands::hosts::run(&ctx, args).await,
        Command::Init(args) => commands::init::run(&ctx, args).await,
        // `deploy --dry-run` is `plan`.
        Command::Deploy(args) => match commands::deploy::dry_run_of(&args) {
            Some((copy, json, trial)) => {
                commands::plan::run(&ctx, commands::plan::Args::for_dry_run(copy, json, trial))
                    .await
            }
            None => commands::deploy::run(&ctx, args).await,
        },
        Command::Check(args) => commands::check::run(&ctx, args).await,
        Command::Status(args) => commands::status::run(&ctx, args).await,
        Command::Rollback(args) => commands::rollback::run(&ctx, args).await,
        Command::History(args) => commands::history::run(&ctx, args).await,
        Command::Plan(args) => commands::plan::run(&ctx, args).await,
        Command::Rehearse(args) => commands::rehearse::run(&ctx, args).await,
        Command::Snapshots(args) => commands::snapshots::run(&ctx, args).await,
        Command::Completions(args) => commands::completions::run(&ctx, args).await,
        Command::Man(args) => commands::completions::man(&ctx, args).await,
    }
}
