//! tether: deploy NixOS configurations to fleets, with automatic rollback.
//!
//! This crate is the thin command line over `tether_core`, where every
//! decision lives. It has three parts (docs/architecture.md):
//! - the command line: [`cli`] (arguments and dispatch), [`args`] (flags
//!   several commands share), [`commands`] (one file per command, none
//!   importing another), [`runner`] (running a rollout) and [`exit`] (the
//!   exit codes, in one place);
//! - [`adapters`]: the systems behind the core's ports (OpenSSH, the Nix
//!   CLI, HTTP/TCP probes, the clock, the SQLite journal);
//! - [`ui`]: turning typed events into the live view, plain lines, NDJSON
//!   and tables.
//!
//! It is a library too, so integration tests can use the adapters directly.

pub mod adapters;
pub mod args;
pub mod cli;
pub mod commands;
pub mod exit;
pub mod runner;
pub mod toplevels;
pub mod ui;
