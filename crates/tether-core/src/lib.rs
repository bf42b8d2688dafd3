//! tether's core: the deployment logic, free of processes, terminals and databases.
//!
//! Everything here is pure data and decisions; the `tether` crate supplies the
//! systems (OpenSSH, the Nix CLI, the clock) through narrow traits.

pub mod checks;
pub mod deploy;
pub mod identity;
pub mod inventory;
pub mod model;
pub mod plan;
pub mod ports;
pub mod remote;
pub mod report;
pub mod rollout;
pub mod shell;
pub mod spec;
pub mod text;
