//! tether: deploy NixOS configurations to fleets, with automatic rollback.
//!
//! This crate is the thin command line and the systems layer (the Nix CLI
//! today; OpenSSH and the clock later). Decisions live in `tether_core`.
//! It is a library too so integration tests and later commands can call the
//! systems layer directly.

pub mod cli;
pub mod clock;
pub mod commands;
pub mod exit;
pub mod journal;
pub mod live;
pub mod nix;
pub mod probe;
pub mod report;
pub mod runner;
pub mod ssh;
pub mod systems;
