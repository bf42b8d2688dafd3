//! Deploying: one host's safe switch ([`host`], its trial in `trial`,
//! its decisions in [`decide`]) and a fleet of them ([`fleet`]), written
//! against the narrow interfaces of [`crate::ports`], so this module never
//! touches a process.

mod boot_trial;
pub mod decide;
pub mod fleet;
pub mod host;
pub mod job;
mod trial;

#[cfg(test)]
mod tests;

pub use fleet::{run_fleet, Rollout};
pub use host::run_host;
pub use job::{HostJob, SystemSource};
