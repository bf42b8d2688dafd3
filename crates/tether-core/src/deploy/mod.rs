//! Deploying: one host's safe switch ([`host`]) and a fleet of them
//! ([`fleet`]), written against narrow interfaces ([`ports`]) for the remote
//! host, the clock and the reporter, so this module never touches a process.

pub mod events;
pub mod fleet;
pub mod host;
pub mod outcome;
pub mod ports;

#[cfg(test)]
mod tests;

pub use events::{Event, EventKind, Phase};
pub use fleet::{run_fleet, Rollout};
pub use host::{run_host, HostJob, Timeouts};
pub use outcome::{HostReport, Outcome};
pub use ports::{Clock, Conn, RemoteError, Reporter, ScriptOutput, Target};
