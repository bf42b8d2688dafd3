//! Deploying: one host's safe switch ([`host`]) and a fleet of them
//! ([`fleet`]), written against narrow interfaces ([`ports`]) for the remote
//! host, the clock and the reporter, so this module never touches a process.

pub mod fleet;
pub mod host;

#[cfg(test)]
mod tests;

pub use fleet::{run_fleet, Rollout};
pub use host::{run_host, HostJob};
