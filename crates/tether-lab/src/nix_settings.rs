//! The Nix settings the lab's own Nix invocations need, in one place, passed
//! explicitly (`NIX_CONFIG`) and never written to the machine's
//! `/etc/nix/nix.conf`.
//!
//! Why each is needed on a fresh Debian 12 machine (checked there, see
//! shared/LAB.md): Debian's `nix-bin` ships no nix.conf, so Nix runs builds
//! as root with `build-users-group = nixbld`, a group nothing creates ("the
//! group 'nixbld' specified in 'build-users-group' does not exist"); its
//! sandbox is on, and the fixture builders use the machine's `/bin/sh`
//! ("executing '/bin/sh': No such file or directory"); and no binary cache is
//! reachable, which costs a time-out per build. `extra-platforms` lets a
//! fixture system that declares `aarch64-linux` (`hostPlatform`, for the
//! rehearsal tests of a foreign architecture) build: its builder is still
//! this machine's `/bin/sh`. A user's own deploys keep
//! their own Nix settings: only the lab, the demo and the tests use these.

use std::process::Command;

/// `NIX_CONFIG` for every Nix command that builds, evaluates or copies the
/// lab's fixture systems (lines of nix.conf; later settings of the same
/// name win over nix.conf, so the machine's own configuration does not
/// matter).
pub const NIX_CONFIG: &str =
    "build-users-group =\nsandbox = false\nsubstituters =\nextra-platforms = aarch64-linux\n";

/// Nix's experimental features every lab Nix call needs (Nix 2.8 defaults).
pub const NIX_FEATURES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// A `nix` command with the lab's settings and features.
pub fn nix_command() -> Command {
    let mut c = Command::new("nix");
    c.env("NIX_CONFIG", NIX_CONFIG).args(NIX_FEATURES);
    c
}
