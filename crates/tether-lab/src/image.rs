//! The lab's host image: a Debian root built once with mmdebstrap and cached
//! under a hash of its recipe, so it is rebuilt only when the recipe changes.

use crate::{cmd, paths};
use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const SUITE: &str = "bookworm";
const INCLUDE: &str =
    "systemd,systemd-sysv,dbus,openssh-server,iproute2,nftables,python3,nix-bin,util-linux,btrfs-progs,zfs-fuse,sudo";
const BOOT_SH: &str = include_str!("../image/boot.sh");
const BOOT_UNIT: &str = include_str!("../image/tether-lab-boot.service");
/// zfs-fuse for the hosts of a lab with state (`up --state`).
const ZFS_UNIT: &str = include_str!("../image/tether-lab-zfs.service");
const SSHD_CONF: &str = include_str!("../image/sshd.conf");
const NIX_CONF: &str = include_str!("../image/nix.conf");
/// The Nix daemon, so that a non-root deploy user's `nix copy` reaches the
/// store (as on NixOS, where it always runs).
const NIX_DAEMON_UNIT: &str = include_str!("../image/nix-daemon.service");
/// The non-root deploy user (docs/lab.md): no sudo until a test gives it.
const DEPLOY_USER: &str = "deploy";
const DEPLOY_UID: &str = "1000";
/// The bootctl emulation (also the emulated firmware, as `sd-boot`).
const BOOTCTL: &str = include_str!("../image/bootctl");
/// Units that do nothing useful in a test host and would only add load.
const MASKED: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "console-getty.service",
    "getty@.service",
    "systemd-pstore.service",
    // Replaced by tether-lab-zfs.service, which runs only where /dev/fuse is.
    "zfs-fuse.service",
];
/// Bump when the customisation code below changes in a way the hashed
/// inputs do not show.
const RECIPE_VERSION: &str = "4";

/// The fixture's stage-2 emulation, installed into the image.
fn stage2_script() -> Result<String> {
    let path = paths::repo_root().join("nix/fixture/stage2.sh");
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn recipe_hash(stage2: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        RECIPE_VERSION,
        SUITE,
        INCLUDE,
        BOOT_SH,
        BOOT_UNIT,
        ZFS_UNIT,
        SSHD_CONF,
        NIX_CONF,
        NIX_DAEMON_UNIT,
        DEPLOY_USER,
        DEPLOY_UID,
        BOOTCTL,
        stage2,
        &MASKED.join(","),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Returns the root directory of the current image, building it first when
/// no image for the current recipe exists. Concurrent callers wait for one
/// build instead of racing.
pub fn ensure() -> Result<PathBuf> {
    let stage2 = stage2_script()?;
    let hash = recipe_hash(&stage2);
    let images = paths::lab_dir().join("images");
    fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
    let root = images.join(&hash).join("root");
    if root.join(".tether-lab-image").exists() {
        return Ok(root);
    }
    let lock_file = fs::File::create(images.join(".lock"))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking the image directory: {e}"))?;
    if root.join(".tether-lab-image").exists() {
        return Ok(root);
    }
    let staging = images.join(format!("{hash}.building"));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir_all(&staging)?;
    let staging_root = staging.join("root");
    eprintln!("tether-lab: building host image {hash} (mmdebstrap, about 20 s)");
    cmd::run(
        Command::new("mmdebstrap")
            .args(["--quiet", "--variant=apt"])
            .arg(format!("--include={INCLUDE}"))
            .arg(SUITE)
            .arg(&staging_root),
    )
    .context("building the host image with mmdebstrap")?;
    customise(&staging_root, &stage2).context("customising the host image")?;
    fs::write(staging_root.join(".tether-lab-image"), &hash)?;
    let final_dir = images.join(&hash);
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)?;
    }
    fs::rename(&staging, &final_dir)?;
    remove_stale_images(&images, &hash);
    Ok(root)
}

fn remove_stale_images(images: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(images) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name != keep && !name.starts_with('.') && entry.path().is_dir() {
            // An old image may still back a running lab; removing it is safe
            // only when nothing is mounted from it, so leave that to `down`.
            if !crate::lab::any_lab_running() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn write(root: &Path, rel: &str, content: &str, mode: u32) -> Result<()> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn customise(root: &Path, stage2: &str) -> Result<()> {
    // Every host gets its own pinned key, generated by the lab before boot.
    for entry in fs::read_dir(root.join("etc/ssh"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path())?;
        }
    }
    write(
        root,
        "etc/ssh/sshd_config.d/tether-lab.conf",
        SSHD_CONF,
        0o644,
    )?;
    write(root, "etc/nix/nix.conf", NIX_CONF, 0o644)?;
    write(root, "usr/lib/tether-lab/boot", BOOT_SH, 0o755)?;
    write(root, "usr/lib/tether-lab/stage2", stage2, 0o755)?;
    // Debian's bootctl gives way to the emulation over the lab's EFI
    // variable files; the same script is the emulated firmware.
    write(root, "usr/bin/bootctl", BOOTCTL, 0o755)?;
    let sd_boot = root.join("usr/lib/tether-lab/sd-boot");
    let _ = fs::remove_file(&sd_boot);
    symlink("/usr/bin/bootctl", &sd_boot)?;
    fs::create_dir_all(root.join("var/lib/tether-lab/efivars"))?;
    write(
        root,
        "etc/systemd/system/tether-lab-boot.service",
        BOOT_UNIT,
        0o644,
    )?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants)?;
    write(
        root,
        "etc/systemd/system/tether-lab-zfs.service",
        ZFS_UNIT,
        0o644,
    )?;
    write(
        root,
        "etc/systemd/system/nix-daemon.service",
        NIX_DAEMON_UNIT,
        0o644,
    )?;
    for unit in [
        "tether-lab-boot.service",
        "tether-lab-zfs.service",
        "nix-daemon.service",
    ] {
        let link = wants.join(unit);
        if !link.exists() {
            symlink(format!("/etc/systemd/system/{unit}"), &link)?;
        }
    }
    for unit in MASKED {
        let link = root.join("etc/systemd/system").join(unit);
        let _ = fs::remove_file(&link);
        symlink("/dev/null", &link)?;
    }
    // The deploy user; its authorized key is root's (the boot script copies
    // it, as the lab writes root's per host).
    cmd::run(Command::new("chroot").arg(root).args([
        "useradd",
        "--create-home",
        "--uid",
        DEPLOY_UID,
        "--shell",
        "/bin/sh",
        DEPLOY_USER,
    ]))
    .context("creating the deploy user")?;
    // Each host writes its own machine-id (pinned by the lab) into its upper layer.
    write(root, "etc/machine-id", "", 0o444)?;
    fs::create_dir_all(root.join("root/.ssh"))?;
    fs::set_permissions(root.join("root/.ssh"), fs::Permissions::from_mode(0o700))?;
    fs::create_dir_all(root.join("boot"))?;
    // As on NixOS, the running and the booted system are garbage-collector
    // roots (NixOS makes these links with systemd-tmpfiles).
    let gcroots = root.join("nix/var/nix/gcroots");
    fs::create_dir_all(&gcroots)?;
    for (link, to) in [
        ("current-system", "/run/current-system"),
        ("booted-system", "/run/booted-system"),
    ] {
        let path = gcroots.join(link);
        let _ = fs::remove_file(&path);
        symlink(to, &path)?;
    }
    Ok(())
}
