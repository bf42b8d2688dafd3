//! tether-lab: real test hosts for tether on one machine.
//!
//! Each host is a Debian container booted by systemd-nspawn with systemd as
//! PID 1, sshd and its own Nix store, in its own network namespace, reached
//! over real SSH with a pinned host key. The lab also writes fixture fleets
//! (NixOS-like systems from `nix/fixture`) for those hosts. See docs/lab.md.

pub mod cgroup;
pub mod cmd;
pub mod fixture;
pub mod image;
pub mod lab;
pub mod nix_settings;
pub mod paths;
pub mod prereq;

pub use lab::{BootEntry, BootState, Lab, LabHost, LabInfo, UpOptions};

/// POSIX shell quoting for the lab's own remote commands (test support; tether
/// itself has its own vocabulary in tether-core).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}
