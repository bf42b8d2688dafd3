//! A running lab: N hosts, each a systemd-nspawn container with systemd as
//! PID 1, sshd and its own Nix store on an overlay of the shared image, in its
//! own network namespace, reached from the root namespace over a veth pair.
//!
//! Network layout of lab slot `S` (one /24 per running lab, so several labs
//! can run at once): host `i` has `10.231.S.(10+i)/24` on `eth0` inside its
//! namespace; the root side of its veth carries the gateway address
//! `10.231.S.1/32` and a host route to exactly that host's address. Routing by
//! host route (not a shared bridge) means a host that takes another host's
//! address becomes unreachable without disturbing the host it imitates, and a
//! blackhole route for the /24 keeps lab traffic from ever leaving the machine.
//!
//! Every host also has an IPv6 address, `fd31:7e7:S::(10+i)/128`, routed the
//! same way (gateway `fd31:7e7:S::1`, a /128 host route, a blackhole for the
//! /64): the fixture systems only manage IPv4, so a test can reach a host
//! over IPv6 whatever system it runs.

use crate::{cgroup, cmd, image, paths};
use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a host may take from `systemd-nspawn` start to answering SSH.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// One lab host as described in `lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabHost {
    pub name: String,
    pub address: String,
    pub gateway: String,
    pub prefix_length: u8,
    /// The host's IPv6 address (the lab's, never changed by a fixture system).
    pub address6: String,
    pub gateway6: String,
    /// The host's interface inside its namespace.
    pub interface: String,
    /// The pinned SSH host public key, `ssh-ed25519 AAAA…`.
    pub host_key: String,
    pub machine_id: String,
    pub tags: Vec<String>,
    /// Network namespace name (under /run/netns).
    pub netns: String,
    /// The root-namespace end of the host's veth pair.
    pub link: String,
    /// The host's own directory (overlay upper layer, pids, logs).
    pub dir: PathBuf,
}

/// The lab as written to `lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabInfo {
    pub name: String,
    pub slot: u8,
    pub dir: PathBuf,
    pub image: PathBuf,
    /// The deployer's private key, authorised for root on every host.
    pub ssh_key: PathBuf,
    /// A known_hosts file holding exactly the pinned host keys.
    pub known_hosts: PathBuf,
    pub hosts: Vec<LabHost>,
    /// Every host has real state to snapshot ([`UpOptions::state`]).
    #[serde(default)]
    pub state: bool,
}

/// A handle on a running lab. Dropping it does not tear the lab down unless
/// it was made with [`Lab::tear_down_on_drop`]; tests use that so a failed
/// assertion still cleans up.
pub struct Lab {
    pub info: LabInfo,
    tear_down_on_drop: bool,
}

/// A host's emulated boot loader, as [`Lab::boot_state`] reads it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BootState {
    /// `systemd-boot`, `grub` or `none`.
    pub loader: String,
    /// Entries in the boot loader's order.
    pub entries: Vec<BootEntry>,
    /// The entry booted when no one-shot entry is set.
    pub default: Option<BootEntry>,
    /// LoaderEntryOneShot.
    pub oneshot: Option<String>,
    /// LoaderEntrySelected: the entry this boot came from.
    pub selected: Option<String>,
}

/// One boot entry: its id and the toplevel its `init=` names.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BootEntry {
    pub id: String,
    pub toplevel: Option<String>,
}

/// Options for [`Lab::up`].
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub name: String,
    pub hosts: usize,
    /// Give every host state to snapshot (docs/lab.md, "State"): a btrfs
    /// filesystem of its own on a loop device, bound at `/srv/state` with
    /// the subvolume `/srv/state/db`, and a zfs-fuse pool `tank` (mounted
    /// at `/tank`) with the datasets `tank/db` and `tank/db/log`.
    pub state: bool,
}

/// The size of each host's btrfs filesystem and ZFS pool file (sparse).
const STATE_SIZE: &str = "256M";
/// Where a state host's pool file lives inside it (tether-lab-zfs.service).
const POOL_FILE: &str = "/var/lib/tether-lab/zpool.img";

fn labs_dir() -> PathBuf {
    paths::lab_dir().join("labs")
}

fn lab_json(name: &str) -> PathBuf {
    labs_dir().join(name).join("lab.json")
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 8
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        bail!("lab name {name:?} must be 1-8 characters of a-z and 0-9");
    }
    Ok(())
}

/// True when any lab's lab.json exists (used to keep old images that may back it).
pub fn any_lab_running() -> bool {
    fs::read_dir(labs_dir())
        .map(|d| d.flatten().any(|e| e.path().join("lab.json").exists()))
        .unwrap_or(false)
}

/// Names of all labs with state on this machine.
pub fn list_labs() -> Result<Vec<String>> {
    let mut names = Vec::new();
    if let Ok(entries) = fs::read_dir(labs_dir()) {
        for e in entries.flatten() {
            if e.path().join("lab.json").exists() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

fn ensure_client_key() -> Result<PathBuf> {
    let dir = paths::lab_dir().join("ssh");
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    let key = dir.join("id_ed25519");
    if !key.exists() {
        cmd::run(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "tether-lab-deployer",
                    "-f",
                ])
                .arg(&key),
        )
        .context("generating the lab's deployer key")?;
    }
    Ok(key)
}

fn allocate_slot() -> Result<u8> {
    let mut used = Vec::new();
    for name in list_labs()? {
        if let Ok(info) = read_info(&name) {
            used.push(info.slot);
        }
    }
    (1..=250u8)
        .find(|s| !used.contains(s))
        .ok_or_else(|| anyhow!("no free lab slot (250 labs running?)"))
}

fn read_info(name: &str) -> Result<LabInfo> {
    let path = lab_json(name);
    let text = fs::read_to_string(&path)
        .with_context(|| format!("lab {name:?} is not up ({} missing)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    let mut f = fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    cmd::run(Command::new("ip").args(args)).map(|_| ())
}

fn pid_alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The supervisor keeps one host running: when its systemd-nspawn exits
/// because the host rebooted or crashed, it boots the host again (state kept
/// in the overlay). It stops for good on a clean poweroff (exit 0) or when
/// the lab writes the `stop` marker; `hold` delays the next boot, which
/// emulates a machine that does not come back.
const SUPERVISOR: &str = r#"#!/bin/sh
dir=$1
shift
# The host's own cgroups (src/cgroup.rs), before systemd-nspawn starts.
for cg in ${TETHER_LAB_CGROUPS:-}; do
    echo $$ >"$cg/cgroup.procs" || exit 1
done
while [ ! -e "$dir/stop" ]; do
    while [ -e "$dir/hold" ] && [ ! -e "$dir/stop" ]; do sleep 0.2; done
    [ -e "$dir/stop" ] && break
    SYSTEMD_NSPAWN_LOCK=0 "$@" >>"$dir/console.log" 2>&1 </dev/null &
    child=$!
    echo "$child" >"$dir/nspawn.pid.new" && mv "$dir/nspawn.pid.new" "$dir/nspawn.pid"
    wait "$child"
    status=$?
    echo "$(date +%s.%N) systemd-nspawn exited with $status" >>"$dir/supervisor.log"
    rm -f "$dir/nspawn.pid"
    [ "$status" -eq 0 ] && break
    sleep 0.1
done
rm -f "$dir/supervisor.pid"
"#;

impl Lab {
    /// Boots a new lab (tearing down a leftover lab of the same name first).
    pub fn up(opts: &UpOptions) -> Result<Lab> {
        validate_name(&opts.name)?;
        if opts.hosts == 0 || opts.hosts > 60 {
            bail!("a lab has 1 to 60 hosts, not {}", opts.hosts);
        }
        crate::prereq::ensure()?;
        crate::prereq::ensure_kernel_limits()?;
        let image = image::ensure()?;
        let ssh_key = ensure_client_key()?;
        let client_pub = fs::read_to_string(ssh_key.with_extension("pub"))?;

        fs::create_dir_all(labs_dir())?;
        let lock_file = fs::File::create(labs_dir().join(".lock"))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow!("locking the labs directory: {e}"))?;
        if lab_json(&opts.name).exists() || labs_dir().join(&opts.name).exists() {
            if let Ok(old) = Lab::open(&opts.name) {
                old.down()
                    .context("tearing down a leftover lab of the same name")?;
            } else {
                fs::remove_dir_all(labs_dir().join(&opts.name))?;
            }
        }
        let slot = allocate_slot()?;
        let dir = labs_dir().join(&opts.name);
        fs::create_dir_all(&dir)?;
        let mut hosts = Vec::new();
        for i in 1..=opts.hosts {
            let name = format!("host{i}");
            let host_dir = dir.join("hosts").join(&name);
            hosts.push(LabHost {
                address: format!("10.231.{slot}.{}", 10 + i),
                gateway: format!("10.231.{slot}.1"),
                prefix_length: 24,
                address6: format!("fd31:7e7:{slot}::{}", 10 + i),
                gateway6: format!("fd31:7e7:{slot}::1"),
                interface: "eth0".into(),
                host_key: String::new(),
                machine_id: random_hex(16)?,
                tags: vec!["lab".into(), if i % 2 == 1 { "odd" } else { "even" }.into()],
                netns: format!("tetherlab-{}-{name}", opts.name),
                link: format!("tl{slot}h{i}"),
                dir: host_dir,
                name,
            });
        }
        let mut info = LabInfo {
            name: opts.name.clone(),
            slot,
            dir: dir.clone(),
            image,
            ssh_key,
            known_hosts: dir.join("known_hosts"),
            hosts,
            state: opts.state,
        };
        // lab.json first, so a failure below can still be torn down by name.
        let lab = Lab {
            info: info.clone(),
            tear_down_on_drop: false,
        };
        lab.write_info()?;
        drop(lock);
        let result = (|| -> Result<()> {
            ip(&[
                "route",
                "replace",
                "blackhole",
                &format!("10.231.{slot}.0/24"),
            ])?;
            ip(&[
                "-6",
                "route",
                "replace",
                "blackhole",
                &format!("fd31:7e7:{slot}::/64"),
            ])?;
            for host in info.hosts.iter_mut() {
                host.host_key = prepare_host(&lab.info, host, &client_pub)?;
                if opts.state {
                    prepare_state(host)?;
                }
            }
            let known: String = info
                .hosts
                .iter()
                .map(|h| format!("{},{} {}\n", h.address, h.address6, h.host_key))
                .collect();
            write_file(&info.known_hosts, &known, 0o644)?;
            Ok(())
        })();
        let lab = Lab {
            info,
            tear_down_on_drop: false,
        };
        lab.write_info()?;
        if let Err(e) = result {
            let _ = lab.down();
            return Err(e);
        }
        let started = (|| -> Result<()> {
            for host in &lab.info.hosts {
                lab.start_supervisor(host)?;
            }
            lab.wait_all_ready(BOOT_TIMEOUT)?;
            if opts.state {
                for host in &lab.info.hosts {
                    lab.exec_sh(&host.name, STATE_LAYOUT).with_context(|| {
                        format!("{}: creating its subvolume and datasets", host.name)
                    })?;
                }
            }
            Ok(())
        })();
        if let Err(e) = started {
            let _ = Lab {
                info: lab.info.clone(),
                tear_down_on_drop: false,
            }
            .down();
            return Err(e);
        }
        Ok(lab)
    }

    /// Opens a lab that is up.
    pub fn open(name: &str) -> Result<Lab> {
        validate_name(name)?;
        Ok(Lab {
            info: read_info(name)?,
            tear_down_on_drop: false,
        })
    }

    /// Makes dropping this handle tear the lab down.
    pub fn tear_down_on_drop(mut self) -> Lab {
        self.tear_down_on_drop = true;
        self
    }

    fn write_info(&self) -> Result<()> {
        let path = self.info.dir.join("lab.json");
        let tmp = self.info.dir.join("lab.json.new");
        fs::write(&tmp, serde_json::to_string_pretty(&self.info)?)?;
        fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Path of lab.json.
    pub fn json_path(&self) -> PathBuf {
        self.info.dir.join("lab.json")
    }

    pub fn host(&self, name: &str) -> Result<&LabHost> {
        self.info
            .hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| anyhow!("lab {:?} has no host {name:?}", self.info.name))
    }

    fn start_supervisor(&self, host: &LabHost) -> Result<()> {
        let _ = fs::remove_file(host.dir.join("stop"));
        let script = host.dir.join("supervise.sh");
        write_file(&script, SUPERVISOR, 0o755)?;
        let upper = host.dir.join("upper");
        let image = self.info.image.display().to_string();
        let cgroups: Vec<String> = cgroup::create(&self.info.name, &host.name)
            .with_context(|| format!("{}: creating its cgroups", host.name))?
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let mut state_args = Vec::new();
        if self.info.state {
            state_args.push("--bind=/dev/fuse".to_string());
            state_args.push(format!(
                "--bind={}:/srv/state",
                host.dir.join("state").display()
            ));
        }
        let child = Command::new("setsid")
            .env("TETHER_LAB_CGROUPS", cgroups.join(" "))
            // zfs-fuse's rollback writes /proc/sys/vm/drop_caches (shared/LAB.md):
            // a lab-only setting, for the hosts with state.
            .env(
                "SYSTEMD_NSPAWN_API_VFS_WRITABLE",
                if self.info.state { "1" } else { "0" },
            )
            .arg("sh")
            .arg(&script)
            .arg(&host.dir)
            .args([
                "systemd-nspawn",
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--console=read-only",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
                "--capability=CAP_NET_ADMIN",
            ])
            .arg(format!("--machine={}-{}", self.info.name, host.name))
            .arg(format!("--hostname={}", host.name))
            .arg(format!("--directory={image}"))
            .arg(format!("--overlay={image}:{}:/", upper.display()))
            .arg(format!(
                "--network-namespace-path=/run/netns/{}",
                host.netns
            ))
            .args(&state_args)
            .args(["-b", "systemd.firstboot=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("{}: starting its supervisor", host.name))?;
        fs::write(host.dir.join("supervisor.pid"), child.id().to_string())?;
        Ok(())
    }

    /// Waits until every host answers SSH with its pinned key. A host that
    /// does not come up in half the time is booted once more (seen under
    /// heavy load: a container that never reached sshd); if it still does
    /// not, the error carries its console and supervisor logs.
    pub fn wait_all_ready(&self, timeout: Duration) -> Result<()> {
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .info
                .hosts
                .iter()
                .map(|h| {
                    s.spawn(move || {
                        let first = self.wait_ready(&h.name, timeout / 2);
                        if first.is_ok() {
                            return first;
                        }
                        eprintln!(
                            "tether-lab: {} did not come up in {}s; booting it again. Console:\n{}",
                            h.name,
                            (timeout / 2).as_secs(),
                            self.logs(&h.name)
                        );
                        if let Ok(pid) = self.init_pid(&h.name) {
                            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                        self.wait_ready(&h.name, timeout / 2)
                            .with_context(|| format!("{} logs:\n{}", h.name, self.logs(&h.name)))
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow!("readiness thread panicked"))??;
            }
            Ok(())
        })
    }

    /// Waits until `host` answers SSH (pinned key, strict checking) and its
    /// boot unit has finished.
    pub fn wait_ready(&self, host: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.ssh(host, "systemctl is-active tether-lab-boot.service") {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) => last = cmd::tail(&out.stderr, 300) + &cmd::tail(&out.stdout, 100),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        bail!(
            "{host}: not reachable over SSH within {}s: {last}",
            timeout.as_secs()
        )
    }

    /// The tail of a host's console and supervisor logs, for error messages.
    pub fn logs(&self, host: &str) -> String {
        let Ok(h) = self.host(host) else {
            return String::new();
        };
        let tail = |name: &str, lines: usize| {
            let text = fs::read_to_string(h.dir.join(name)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        format!(
            "--- console.log ---\n{}\n--- supervisor.log ---\n{}",
            tail("console.log", 25),
            tail("supervisor.log", 5)
        )
    }

    /// Copies every host's journal, console and supervisor logs to
    /// `$TETHER_LAB_EVIDENCE` (default `/var/tmp/tether-lab-evidence`), in a
    /// directory named after the lab and the time, and prints where, with
    /// the tail of each journal, so a failed lab test can be read later.
    pub fn keep_evidence(&self) {
        let root = std::env::var_os("TETHER_LAB_EVIDENCE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/tether-lab-evidence"));
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let dir = root.join(format!("{}-{stamp}", self.info.name));
        if let Err(e) = fs::create_dir_all(&dir) {
            eprintln!("tether-lab: keeping evidence in {}: {e}", dir.display());
            return;
        }
        for h in &self.info.hosts {
            for log in ["console.log", "supervisor.log"] {
                let _ = fs::copy(h.dir.join(log), dir.join(format!("{}.{log}", h.name)));
            }
            // The host's persistent journal, read from its overlay (the host
            // may be down or unreachable).
            let journal = cmd::output(
                Command::new("journalctl")
                    .arg("-D")
                    .arg(h.dir.join("upper/var/log/journal"))
                    .args(["--no-pager", "-o", "short-precise"]),
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
            let _ = fs::write(dir.join(format!("{}.journal", h.name)), &journal);
            let lines: Vec<&str> = journal.lines().collect();
            eprintln!(
                "--- {} journal (last 15 lines) ---\n{}",
                h.name,
                lines[lines.len().saturating_sub(15)..].join("\n")
            );
        }
        eprintln!("tether-lab: the hosts' logs are kept in {}", dir.display());
    }

    /// SSH options that reach lab hosts with the pinned keys only.
    pub fn ssh_options(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.info.ssh_key.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.info.known_hosts.display()),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "ConnectTimeout=2".into(),
            "-o".into(),
            "ServerAliveInterval=2".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
            "-o".into(),
            "ControlMaster=no".into(),
            "-o".into(),
            "ControlPath=none".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    /// A `ssh root@host` command with the lab's options; append the remote command.
    pub fn ssh_command(&self, host: &str) -> Result<Command> {
        let h = self.host(host)?;
        let mut c = Command::new("ssh");
        c.args(self.ssh_options())
            .arg(format!("root@{}", h.address));
        Ok(c)
    }

    /// Runs a shell command on `host` over real SSH; returns its output
    /// whatever the exit status.
    pub fn ssh(&self, host: &str, command: &str) -> Result<Output> {
        cmd::output(self.ssh_command(host)?.arg(command))
    }

    /// Like [`Lab::ssh`] but fails unless the command exits 0; returns stdout.
    pub fn ssh_ok(&self, host: &str, command: &str) -> Result<String> {
        let out = self.ssh(host, command)?;
        if !out.status.success() {
            bail!(
                "{host}: `{command}` failed ({}): {}",
                out.status,
                cmd::tail(&out.stderr, 1000)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `NIX_SSHOPTS` for `nix copy --to ssh-ng://root@host` with the lab's key.
    pub fn nix_sshopts(&self) -> String {
        self.ssh_options().join(" ")
    }

    /// The PID of the container's init (systemd), if the host is running.
    pub fn init_pid(&self, host: &str) -> Result<i32> {
        let h = self.host(host)?;
        let nspawn = read_pid(&h.dir.join("nspawn.pid"))
            .ok_or_else(|| anyhow!("{host}: not running (no systemd-nspawn)"))?;
        let children = fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children"))
            .unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("{host}: systemd-nspawn {nspawn} has no container process"))
    }

    /// Runs a command inside the host's namespaces (not over the network), as
    /// an out-of-band console would.
    pub fn exec(&self, host: &str, argv: &[&str]) -> Result<Output> {
        let pid = self.init_pid(host)?.to_string();
        cmd::output(
            Command::new("nsenter")
                .args([
                    "--target", &pid, "--mount", "--uts", "--ipc", "--net", "--pid",
                ])
                .args(["--root", "--wd", "--"])
                .args([
                    "env",
                    "-i",
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME=/root",
                ])
                .args(argv),
        )
    }

    /// Shell command through [`Lab::exec`]; fails unless it exits 0; returns stdout.
    pub fn exec_sh(&self, host: &str, script: &str) -> Result<String> {
        let out = self.exec(host, &["sh", "-c", script])?;
        if !out.status.success() {
            bail!(
                "{host}: console command `{script}` failed ({}): {}",
                out.status,
                cmd::tail(&out.stderr, 1000)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The host's current boot id (changes on every boot of the container).
    pub fn boot_id(&self, host: &str) -> Result<String> {
        self.exec_sh(host, "cat /proc/sys/kernel/random/boot_id")
    }

    /// Reboots the host from inside (`systemctl reboot`) and waits until it is
    /// back and answering SSH.
    pub fn reboot(&self, host: &str) -> Result<()> {
        let before = self.init_pid(host)?;
        let _ = self.exec(host, &["systemctl", "reboot"])?;
        self.wait_new_boot(host, before, BOOT_TIMEOUT)
    }

    /// Kills the host without shutdown (SIGKILL to its init, which ends its
    /// whole PID namespace); the supervisor boots it again. Waits until it is back.
    pub fn crash(&self, host: &str) -> Result<()> {
        let pid = self.init_pid(host)?;
        kill(Pid::from_raw(pid), Signal::SIGKILL)
            .with_context(|| format!("{host}: killing container init {pid}"))?;
        self.wait_new_boot(host, pid, BOOT_TIMEOUT)
    }

    /// Reboots the host from inside and returns once a new boot has begun
    /// (a new container init), without waiting for SSH: for boots that are
    /// meant not to come up (a hanging stage 2, a system without network).
    pub fn reboot_no_wait(&self, host: &str) -> Result<()> {
        let before = self.init_pid(host)?;
        let _ = self.exec(host, &["systemctl", "reboot"])?;
        self.wait_new_init(host, before, BOOT_TIMEOUT)
    }

    /// Like [`Lab::crash`] (a power cycle) but returns once the new boot has
    /// begun, without waiting for SSH.
    pub fn crash_no_wait(&self, host: &str) -> Result<()> {
        let pid = self.init_pid(host)?;
        kill(Pid::from_raw(pid), Signal::SIGKILL)
            .with_context(|| format!("{host}: killing container init {pid}"))?;
        self.wait_new_init(host, pid, BOOT_TIMEOUT)
    }

    /// Waits until the host runs under an init other than `before` and that
    /// init answers the console (systemd is up; the boot may still run).
    fn wait_new_init(&self, host: &str, before: i32, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(pid) = self.init_pid(host) {
                if pid != before
                    && self
                        .exec(host, &["systemctl", "is-system-running"])
                        .map(|o| !o.stdout.is_empty())
                        .unwrap_or(false)
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{host}: did not boot again within {}s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the host runs under an init other than `before` (a new
    /// boot) and answers SSH. Watches PIDs from outside: entering a host
    /// that is shutting down would get the entering process stopped by
    /// systemd-shutdown along with the host's own processes.
    pub fn wait_new_boot(&self, host: &str, before: i32, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(pid) = self.init_pid(host) {
                if pid != before {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("{host}: did not boot again within {}s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_ready(host, deadline.saturating_duration_since(Instant::now()))
    }

    /// Holds the host's next boot: after it stops, it stays down until
    /// [`Lab::release`] (a machine that does not come back from a reboot).
    pub fn hold(&self, host: &str) -> Result<()> {
        write_file(&self.host(host)?.dir.join("hold"), "", 0o644)
    }

    /// Lets a held host boot again.
    pub fn release(&self, host: &str) -> Result<()> {
        let path = self.host(host)?.dir.join("hold");
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Takes the host's link down: nothing reaches it and it reaches nothing.
    pub fn cut(&self, host: &str) -> Result<()> {
        ip(&["link", "set", &self.host(host)?.link, "down"])
    }

    /// Brings the host's link back up (and its host route, which the kernel
    /// drops with the link).
    pub fn heal(&self, host: &str) -> Result<()> {
        let h = self.host(host)?;
        ip(&["link", "set", &h.link, "up"])?;
        ip(&[
            "route",
            "replace",
            &format!("{}/32", h.address),
            "dev",
            &h.link,
        ])?;
        ip(&[
            "-6",
            "route",
            "replace",
            &format!("{}/128", h.address6),
            "dev",
            &h.link,
        ])
    }

    /// Copies a store path into the host's own store and makes it the host's
    /// system, as installing NixOS would: profile generation, boot default,
    /// activation (`switch`). A host that never booted a fixture system
    /// gets `/run/booted-system` too, standing in for the first boot after
    /// the installation (on NixOS it always exists; tether compares the
    /// new system's kernel with the booted one's).
    pub fn install_system(&self, host: &str, toplevel: &str) -> Result<()> {
        self.copy_to(host, toplevel)?;
        let p = crate::shell_quote(toplevel);
        self.ssh_ok(
            host,
            &format!(
                "nix-env -p /nix/var/nix/profiles/system --set {p} && {p}/bin/switch-to-configuration switch && {{ [ -e /run/booted-system ] || ln -sfn {p} /run/booted-system; }}"
            ),
        )
        .map(|_| ())
    }

    /// The host's emulated boot loader state, read through its console
    /// (`/usr/lib/tether-lab/sd-boot query`, docs/fixture.md).
    pub fn boot_state(&self, host: &str) -> Result<BootState> {
        let text = self.exec_sh(host, "/usr/lib/tether-lab/sd-boot query")?;
        serde_json::from_str(&text).with_context(|| format!("{host}: boot state {text:?}"))
    }

    /// The toplevel the machine boots when nothing else is asked for: the
    /// systemd-boot entry chosen without the one-shot entry
    /// (LoaderEntryDefault, else loader.conf `default`, else the first
    /// entry), or GRUB's first menu entry. Fails when no boot loader is
    /// installed or its default names no system.
    pub fn boot_default(&self, host: &str) -> Result<String> {
        let state = self.boot_state(host)?;
        state
            .default
            .and_then(|e| e.toplevel)
            .ok_or_else(|| anyhow!("{host}: no boot default (boot loader: {})", state.loader))
    }

    /// The systemd-boot one-shot entry id (LoaderEntryOneShot), if set.
    pub fn oneshot(&self, host: &str) -> Result<Option<String>> {
        Ok(self.boot_state(host)?.oneshot)
    }

    /// The boot entries (`nixos-generation-N.conf`, toplevel of its `init=`),
    /// in systemd-boot's order (newest first). GRUB: its first entry only.
    pub fn boot_entries(&self, host: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .boot_state(host)?
            .entries
            .into_iter()
            .filter_map(|e| Some((e.id, e.toplevel?)))
            .collect())
    }

    /// What the host booted (`/run/booted-system`), if anything.
    pub fn booted_system(&self, host: &str) -> Result<Option<String>> {
        // `readlink -f` names a missing last component too: test first.
        let out = self.exec_sh(
            host,
            "if [ -e /run/booted-system ]; then readlink -f /run/booted-system; fi",
        )?;
        Ok(Some(out).filter(|s| !s.is_empty()))
    }

    /// `nix copy --to ssh-ng://root@host PATH` with the lab's SSH options.
    pub fn copy_to(&self, host: &str, path: &str) -> Result<()> {
        let h = self.host(host)?;
        cmd::run(
            crate::nix_settings::nix_command()
                .args(["copy", "--no-check-sigs"])
                .arg("--to")
                .arg(format!("ssh-ng://root@{}", h.address))
                .arg(path)
                .env("NIX_SSHOPTS", self.nix_sshopts()),
        )
        .with_context(|| format!("{host}: copying {path}"))
        .map(|_| ())
    }

    /// Tears the lab down and verifies nothing is left: no process, network
    /// namespace, veth, route or mount of this lab.
    pub fn down(mut self) -> Result<()> {
        self.tear_down_on_drop = false;
        self.tear_down()
    }

    fn tear_down(&self) -> Result<()> {
        let info = &self.info;
        // Ask every host to shut down at once, then wait; kill what lingers.
        for h in &info.hosts {
            let _ = write_file(&h.dir.join("stop"), "", 0o644);
            let _ = fs::remove_file(h.dir.join("hold"));
            if let Some(pid) = read_pid(&h.dir.join("nspawn.pid")) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for h in &info.hosts {
            while Instant::now() < deadline && self.host_processes(h).iter().any(|p| pid_alive(*p))
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.host_processes(h).iter().any(|p| pid_alive(*p)) {
                // Orderly shutdown did not finish: SIGKILL the container's
                // init (that ends its PID namespace), never nspawn first.
                if let Ok(init) = self.init_pid(&h.name) {
                    let _ = kill(Pid::from_raw(init), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(500));
                for p in self.host_processes(h) {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
        }
        if info.state {
            for h in &info.hosts {
                let mnt = h.dir.join("state");
                if is_mount_point(&mnt) {
                    // The loop device was set up with autoclear: it goes with the mount.
                    if cmd::output(Command::new("umount").arg(&mnt)).is_err() {
                        let _ = cmd::output(Command::new("umount").arg("-l").arg(&mnt));
                    }
                }
            }
        }
        for h in &info.hosts {
            let _ = cmd::output(Command::new("ip").args(["netns", "delete", &h.netns]));
            let _ = cmd::output(Command::new("ip").args(["link", "delete", &h.link]));
        }
        let _ = cmd::output(Command::new("ip").args([
            "route",
            "delete",
            "blackhole",
            &format!("10.231.{}.0/24", info.slot),
        ]));
        let _ = cmd::output(Command::new("ip").args([
            "-6",
            "route",
            "delete",
            "blackhole",
            &format!("fd31:7e7:{}::/64", info.slot),
        ]));
        std::thread::sleep(Duration::from_millis(100));
        cgroup::remove(&info.name);
        let leftovers = self.leftovers();
        if leftovers.is_empty() {
            // Another process tearing the same lab down may have removed it.
            match fs::remove_dir_all(&info.dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", info.dir.display()))
                }
                _ => Ok(()),
            }
        } else {
            bail!(
                "lab {:?} left things behind: {}",
                info.name,
                leftovers.join("; ")
            )
        }
    }

    fn host_processes(&self, h: &LabHost) -> Vec<i32> {
        ["supervisor.pid", "nspawn.pid"]
            .iter()
            .filter_map(|f| read_pid(&h.dir.join(f)))
            .collect()
    }

    /// What of this lab still exists on the machine (empty after a clean `down`).
    pub fn leftovers(&self) -> Vec<String> {
        let info = &self.info;
        let mut found = Vec::new();
        for h in &info.hosts {
            for p in self.host_processes(h) {
                if pid_alive(p) {
                    found.push(format!("{}: process {p}", h.name));
                }
            }
            if Path::new("/run/netns").join(&h.netns).exists() {
                found.push(format!("{}: network namespace {}", h.name, h.netns));
            }
            if Path::new("/sys/class/net").join(&h.link).exists() {
                found.push(format!("{}: link {}", h.name, h.link));
            }
        }
        // Any process whose root or cwd lies in this lab's directory.
        if let Ok(procs) = fs::read_dir("/proc") {
            for p in procs.flatten() {
                let name = p.file_name();
                let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) {
                    let cmdline = String::from_utf8_lossy(&cmdline);
                    if cmdline.contains(&*info.dir.to_string_lossy()) {
                        found.push(format!("process {pid} ({})", cmdline.replace('\0', " ")));
                    }
                }
            }
        }
        for dir in cgroup::leftovers(&info.name) {
            found.push(format!("cgroup {}", dir.display()));
        }
        if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
            let dir = info.dir.to_string_lossy();
            for line in mounts.lines().filter(|l| l.contains(&*dir)) {
                found.push(format!("mount {line}"));
            }
        }
        if let Ok(routes) = cmd::stdout(Command::new("ip").args(["route", "show"])) {
            let prefix = format!("10.231.{}.", info.slot);
            for r in routes.lines().filter(|r| r.contains(&prefix)) {
                found.push(format!("route {r}"));
            }
        }
        if let Ok(routes) = cmd::stdout(Command::new("ip").args(["-6", "route", "show"])) {
            let prefix = format!("fd31:7e7:{}::", info.slot);
            for r in routes.lines().filter(|r| r.contains(&prefix)) {
                found.push(format!("route {r}"));
            }
        }
        found
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.tear_down_on_drop {
            if std::thread::panicking() {
                // A failed test: keep what its hosts logged before the
                // teardown removes it (a flaky failure cannot be rerun).
                self.keep_evidence();
            }
            if let Err(e) = self.tear_down() {
                eprintln!("tether-lab: tearing down {:?}: {e:#}", self.info.name);
            }
        }
    }
}

/// Creates the host's namespace, veth, upper layer, keys and identity; returns
/// its pinned public host key.
/// The layout every state host starts with (run inside it once it is up).
const STATE_LAYOUT: &str = r#"set -e
[ -e /srv/state/db ] || btrfs subvolume create /srv/state/db >/dev/null
if ! zpool list tank >/dev/null 2>&1; then
    systemctl start tether-lab-zfs.service
    zpool create -m /tank tank /var/lib/tether-lab/zpool.img
    zfs create tank/db
    zfs create tank/db/log
fi
"#;

/// A state host's btrfs filesystem (a loop device, mounted outside the
/// container and bound in: there is no losetup inside) and its pool file.
fn prepare_state(h: &LabHost) -> Result<()> {
    // zfs-fuse inside the host needs the machine's FUSE device.
    if !Path::new("/dev/fuse").exists() {
        let _ = cmd::output(Command::new("modprobe").arg("fuse"));
    }
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "{}: /dev/fuse is missing (modprobe fuse failed): the lab's ZFS (zfs-fuse) needs it",
            h.name
        );
    }
    let image = h.dir.join("state.btrfs");
    let mnt = h.dir.join("state");
    fs::create_dir_all(&mnt)?;
    cmd::run(
        Command::new("truncate")
            .args(["-s", STATE_SIZE])
            .arg(&image),
    )?;
    cmd::run(Command::new("mkfs.btrfs").arg("-q").arg(&image))
        .with_context(|| format!("{}: mkfs.btrfs", h.name))?;
    cmd::run(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt),
    )
    .with_context(|| format!("{}: mounting its btrfs filesystem", h.name))?;
    let pool = h.dir.join("upper").join(POOL_FILE.trim_start_matches('/'));
    if let Some(parent) = pool.parent() {
        fs::create_dir_all(parent)?;
    }
    cmd::run(Command::new("truncate").args(["-s", STATE_SIZE]).arg(&pool))?;
    Ok(())
}

fn is_mount_point(path: &Path) -> bool {
    Command::new("mountpoint")
        .arg("-q")
        .arg(path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn prepare_host(info: &LabInfo, h: &LabHost, client_pub: &str) -> Result<String> {
    let upper = h.dir.join("upper");
    fs::create_dir_all(&upper)?;
    let key = upper.join("etc/ssh/ssh_host_ed25519_key");
    fs::create_dir_all(upper.join("etc/ssh"))?;
    cmd::run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-C")
            .arg(format!("root@{}", h.name))
            .arg("-f")
            .arg(&key),
    )
    .with_context(|| format!("{}: generating its host key", h.name))?;
    let pubkey = fs::read_to_string(key.with_extension("pub"))?;
    let host_key = pubkey
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    write_file(
        &upper.join("etc/machine-id"),
        &format!("{}\n", h.machine_id),
        0o444,
    )?;
    write_file(&upper.join("etc/hostname"), &format!("{}\n", h.name), 0o644)?;
    write_file(
        &upper.join("etc/hosts"),
        &format!("127.0.0.1 localhost\n127.0.1.1 {}\n", h.name),
        0o644,
    )?;
    write_file(&upper.join("root/.ssh/authorized_keys"), client_pub, 0o600)?;
    fs::set_permissions(upper.join("root/.ssh"), fs::Permissions::from_mode(0o700))?;
    write_file(
        &upper.join("etc/tether-lab/network"),
        &format!(
            "IFACE={}\nADDRESS={}\nPREFIX={}\nGATEWAY={}\nADDRESS6={}\nGATEWAY6={}\n",
            h.interface, h.address, h.prefix_length, h.gateway, h.address6, h.gateway6
        ),
        0o644,
    )?;

    let _ = cmd::output(Command::new("ip").args(["netns", "delete", &h.netns]));
    let _ = cmd::output(Command::new("ip").args(["link", "delete", &h.link]));
    ip(&["netns", "add", &h.netns])?;
    ip(&[
        "link",
        "add",
        &h.link,
        "type",
        "veth",
        "peer",
        "name",
        &h.interface,
        "netns",
        &h.netns,
    ])?;
    ip(&["addr", "add", &format!("{}/32", h.gateway), "dev", &h.link])?;
    ip(&[
        "-6",
        "addr",
        "add",
        &format!("{}/128", h.gateway6),
        "dev",
        &h.link,
        "nodad",
    ])?;
    ip(&["link", "set", &h.link, "up"])?;
    ip(&[
        "route",
        "replace",
        &format!("{}/32", h.address),
        "dev",
        &h.link,
    ])?;
    ip(&[
        "-6",
        "route",
        "replace",
        &format!("{}/128", h.address6),
        "dev",
        &h.link,
    ])?;
    let _ = info;
    Ok(host_key)
}
