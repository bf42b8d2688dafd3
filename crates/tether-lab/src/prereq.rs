//! Installs the Debian packages the lab needs, idempotently.

use crate::cmd;
use anyhow::{Context, Result};
use std::process::Command;

/// Debian packages the lab and the deployer need (see shared/LAB.md).
pub const PACKAGES: &[&str] = &[
    "nix-bin",
    "openssh-server",
    "openssh-client",
    "systemd-container",
    "mmdebstrap",
    "iproute2",
    "btrfs-progs",
    "nftables",
    "util-linux",
    // The rehearsal tests keep the fleet flake in a git repository; Nix
    // fetches a `git+file://…?rev=` flake with the git CLI.
    "git",
    // For scripts/bench-deploy: timing arithmetic and peak memory.
    "bc",
    "time",
];

fn missing_packages() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for pkg in PACKAGES {
        let out = cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))?;
        let status = String::from_utf8_lossy(&out.stdout);
        if !status.contains("install ok installed") {
            missing.push(*pkg);
        }
    }
    Ok(missing)
}

/// Installs whatever of [`PACKAGES`] is missing; does nothing (and needs no
/// network) when all are present. Returns the packages it installed.
pub fn ensure() -> Result<Vec<&'static str>> {
    let missing = missing_packages()?;
    if missing.is_empty() {
        return Ok(missing);
    }
    eprintln!("tether-lab: installing {}", missing.join(" "));
    cmd::run(Command::new("apt-get").args(["update", "-qq"])).context("apt-get update")?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
    .context("installing the lab's Debian packages")?;
    let still = missing_packages()?;
    anyhow::ensure!(
        still.is_empty(),
        "packages still missing after install: {still:?}"
    );
    Ok(missing)
}

/// Kernel limits that many containers on one machine run into: every
/// container's systemd takes inotify instances, and the default of 128 per
/// user lets only a dozen or so hosts boot (the rest hang with sshd never
/// started). Raised, never lowered.
const KERNEL_LIMITS: &[(&str, u64)] = &[
    ("/proc/sys/fs/inotify/max_user_instances", 8192),
    ("/proc/sys/fs/inotify/max_user_watches", 1_048_576),
];

/// Raises the kernel limits above where they are lower.
pub fn ensure_kernel_limits() -> Result<()> {
    for (path, wanted) in KERNEL_LIMITS {
        let current: u64 = std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {path}"))?;
        if current < *wanted {
            std::fs::write(path, wanted.to_string())
                .with_context(|| format!("raising {path} to {wanted}"))?;
        }
    }
    Ok(())
}
