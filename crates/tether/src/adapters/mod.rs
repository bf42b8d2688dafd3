//! The systems behind `tether_core`'s ports: the remote host over the
//! system's OpenSSH and Nix CLIs ([`ssh`]), the Nix evaluator and builder
//! ([`nix`]), the deployer-side health-check probes ([`probe`]), tokio's
//! clock ([`clock`]) and the deployer's SQLite journal ([`journal`]).

pub mod clock;
pub mod journal;
pub mod local;
pub mod nix;
pub mod probe;
pub mod ssh;
