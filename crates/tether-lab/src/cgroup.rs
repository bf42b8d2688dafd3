//! A cgroup of its own for each lab host.
//!
//! `systemd-nspawn --keep-unit` makes the cgroup it is started in the
//! container's cgroup root (it adds `payload/` and `supervisor/` below it).
//! Started from one process, every lab host got the same root, so their
//! systemds created and removed the same `payload/system.slice/X.service`
//! directories: a unit of one host failed with "Failed to attach to cgroup
//! …: No such file or directory" (status 219/CGROUP) whenever a unit of the
//! same name ended on another host — the hosts of a rollout share the
//! deploy id in their guard and reboot unit names. So each host's
//! supervisor moves itself into `tether-lab/LAB/HOST` of every hierarchy
//! systemd uses (the v2 hierarchy and, on a hybrid machine, the v1
//! `name=systemd` one) before it starts systemd-nspawn.

use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// The mount points of the hierarchies systemd (and so systemd-nspawn)
/// tracks processes in: cgroup2, and a v1 hierarchy named `systemd`.
fn systemd_hierarchies() -> Vec<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4);
        let mut right = right.split(' ');
        let fs_type = right.next();
        let super_options = right.nth(1).unwrap_or("");
        let wanted = match fs_type {
            Some("cgroup2") => true,
            Some("cgroup") => super_options.split(',').any(|o| o == "name=systemd"),
            _ => false,
        };
        if let (true, Some(point)) = (wanted, mount_point) {
            found.push(PathBuf::from(point));
        }
    }
    found
}

/// The host's cgroup directory in `hierarchy`.
fn host_dir(hierarchy: &Path, lab: &str, host: &str) -> PathBuf {
    hierarchy.join("tether-lab").join(lab).join(host)
}

/// Creates the host's cgroups and returns them (the supervisor writes its
/// pid to each one's `cgroup.procs`).
pub fn create(lab: &str, host: &str) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for hierarchy in systemd_hierarchies() {
        let dir = host_dir(&hierarchy, lab, host);
        fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        dirs.push(dir);
    }
    Ok(dirs)
}

/// The lab's cgroups that still exist.
pub fn leftovers(lab: &str) -> Vec<PathBuf> {
    systemd_hierarchies()
        .into_iter()
        .map(|h| h.join("tether-lab").join(lab))
        .filter(|d| d.exists())
        .collect()
}

/// Removes the lab's cgroups, deepest first (a cgroup directory is removed
/// with rmdir, and only once it has no children and no processes).
pub fn remove(lab: &str) {
    for dir in leftovers(lab) {
        remove_tree(&dir);
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
