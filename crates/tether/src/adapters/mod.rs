//! The systems behind `tether_core`'s ports: the remote host over the
//! system's OpenSSH and Nix CLIs ([`ssh`]), the Nix evaluator and builder
//! ([`nix`]), the deployer-side health-check probes ([`probe`]), tokio's
//! clock ([`clock`]), the deployer's SQLite journal ([`journal`]), and
//! OpenSSH's host-key tools for onboarding ([`host_keys`]), and reading
//! the sudo password ([`password`]).

pub mod clock;
pub mod host_keys;
pub mod journal;
pub mod local;
pub mod nix;
pub mod password;
pub mod probe;
pub mod ssh;
