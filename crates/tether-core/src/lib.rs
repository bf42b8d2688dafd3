//! tether's core: the deployment logic, free of processes, terminals and
//! databases.
//!
//! Everything here is data and decisions; the `tether` crate supplies the
//! systems (OpenSSH, the Nix CLI, the clock, the journal) through the
//! narrow traits of [`ports`]. The modules form layers, each using only the
//! ones below it (checked by a test; docs/architecture.md):
//!
//! 1. [`shell`], [`nix_text`], [`text`]: quoting for the shell and for Nix,
//!    and cutting text for messages;
//! 2. [`model`]: validated values (names, addresses, keys, store paths, ids);
//! 3. [`spec`]: what a deploy is asked to do (checks, rollout, time limits);
//! 4. [`inventory`]: the user's hosts, validated;
//! 5. [`remote`]: every operation on a target, its script and its parser;
//! 6. [`report`]: outcomes, typed reasons and events;
//! 7. [`ports`]: the narrow traits the logic talks to;
//! 8. [`checks`], [`identity`], [`onboard`], [`rollout`], [`trial_choice`]:
//!    leaf logic;
//! 9. [`deploy`], [`plan`]: the safe switch, fleets, and plans;
//! 10. [`rehearsal`]: rehearsing a host's transition on a staging host.

pub mod checks;
pub mod deploy;
pub mod identity;
pub mod inventory;
pub mod model;
pub mod nix_text;
pub mod onboard;
pub mod plan;
pub mod ports;
pub mod rehearsal;
pub mod remote;
pub mod report;
pub mod rollout;
pub mod shell;
pub mod spec;
pub mod text;
pub mod trial_choice;

#[cfg(test)]
mod layering;
