//! Self-test of the lab and the fixture systems (docs/fixture.md): real
//! hosts booted with systemd-nspawn, real SSH with pinned host keys, real Nix
//! closures copied into the hosts' own stores, and the fixture's
//! `switch-to-configuration` semantics that tether's tests rely on.
//!
//! Needs root (network namespaces, nspawn) and fails without it. Uses the lab
//! name `fx`, so it must not run in parallel with anything else using `fx`.

use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tether_lab::{shell_quote, Lab, UpOptions};

const LAB: &str = "fx";

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// Runs the system's `switch-to-configuration GOAL` over SSH; returns the
/// exit code and the combined output.
fn switch(lab: &Lab, host: &str, toplevel: &str, goal: &str) -> Result<(i32, String)> {
    let out = lab.ssh(
        host,
        &format!(
            "{}/bin/switch-to-configuration {goal}",
            shell_quote(toplevel)
        ),
    )?;
    let code = out
        .status
        .code()
        .ok_or_else(|| anyhow!("{host}: switch-to-configuration {goal} was killed"))?;
    Ok((code, format!("{}\n{}", stdout_of(&out), stderr_of(&out))))
}

fn switch_ok(lab: &Lab, host: &str, toplevel: &str, goal: &str) -> Result<()> {
    let (code, text) = switch(lab, host, toplevel, goal)?;
    ensure!(code == 0, "{host}: {goal} exited {code}: {text}");
    Ok(())
}

fn current_system(lab: &Lab, host: &str) -> Result<String> {
    lab.ssh_ok(host, "readlink /run/current-system")
}

/// Makes `toplevel` the system profile's newest generation, as
/// nixos-rebuild does before `switch`/`boot`.
fn set_profile(lab: &Lab, host: &str, toplevel: &str) -> Result<()> {
    lab.ssh_ok(
        host,
        &format!(
            "nix-env -p /nix/var/nix/profiles/system --set {}",
            shell_quote(toplevel)
        ),
    )
    .map(|_| ())
}

/// `bootctl list --json=short`, parsed.
fn bootctl_list(lab: &Lab, host: &str) -> Result<Vec<serde_json::Value>> {
    let text = lab.ssh_ok(host, "bootctl list --json=short --no-pager")?;
    serde_json::from_str(&text).with_context(|| format!("bootctl list: {text}"))
}

/// The id of the entry `bootctl list` marks with `flag` (isDefault, isSelected).
fn marked(entries: &[serde_json::Value], flag: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e[flag].as_bool() == Some(true))
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect()
}

fn entry_id(generation: u32) -> String {
    format!("nixos-generation-{generation}.conf")
}

/// GET http://127.0.0.1:PORT/ on the host; returns "STATUS BODY".
fn http_get(lab: &Lab, host: &str, port: u16) -> Result<String> {
    let script = format!(
        "import urllib.request as u, urllib.error as e\n\
         try:\n    r = u.urlopen('http://127.0.0.1:{port}/', timeout=5); print(r.status, r.read().decode())\n\
         except e.HTTPError as x:\n    print(x.code, x.read().decode())\n"
    );
    lab.ssh_ok(host, &format!("python3 -c {}", shell_quote(&script)))
}

/// Writes a fleet (lab.json + hosts.nix + the fixture library) into
/// `root/name` and builds every host's system.
fn fleet(lab: &Lab, root: &Path, name: &str, hosts_nix: &str) -> Result<BTreeMap<String, String>> {
    let dir = root.join(name);
    lab.write_fixture_fleet(&dir, hosts_nix)?;
    lab.build_fleet(&dir)
        .with_context(|| format!("building fleet {name}"))
}

fn get<'a>(systems: &'a BTreeMap<String, String>, host: &str) -> Result<&'a str> {
    systems
        .get(host)
        .map(String::as_str)
        .ok_or_else(|| anyhow!("no system for {host}"))
}

/// Runs `command` over a new SSH connection, killed after `secs` seconds: a
/// session whose host moves to another address would otherwise hang, since
/// ConnectTimeout only bounds the TCP connect.
fn ssh_bounded(lab: &Lab, host: &str, command: &str, secs: u64) -> Result<Output> {
    let address = lab.host(host)?.address.clone();
    Ok(Command::new("timeout")
        .args(["-k", "1", &secs.to_string(), "ssh"])
        .args(lab.ssh_options())
        .args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"])
        .arg(format!("root@{address}"))
        .arg(command)
        .stdin(Stdio::null())
        .output()?)
}

/// True when a new SSH connection to `host` works (within 5 s).
fn ssh_works(lab: &Lab, host: &str) -> bool {
    ssh_bounded(lab, host, "true", 5)
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Waits until `f` returns true or the timeout passes.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The emulated systemd-boot and GRUB, the reboot-trial knobs
/// (bootHangs, bootNetworkDown), switch inhibitors and the init interface
/// check. h1 runs `v2` (generation 2, the boot default) when this starts;
/// h2 and h3 their base systems. Leaves h1 on v2 and h2 on its base.
fn boot_loader_checks(
    lab: &Lab,
    root: &Path,
    [h1, h2, h3]: [&str; 3],
    base: &BTreeMap<String, String>,
    v2_1: &str,
) -> Result<()> {
    let b1 = get(base, h1)?;
    let b2 = get(base, h2)?;
    // Entries for every generation, newest first; loader.conf names the default.
    ensure!(
        lab.boot_entries(h1)?
            == vec![
                (entry_id(2), v2_1.to_string()),
                (entry_id(1), b1.to_string())
            ],
        "{h1}: entries {:?}",
        lab.boot_entries(h1)?
    );
    let conf = lab.ssh_ok(h1, "cat /boot/loader/loader.conf")?;
    ensure!(
        conf == "timeout 5\ndefault nixos-generation-2.conf\nconsole-mode keep",
        "loader.conf: {conf:?}"
    );
    let entry = lab.ssh_ok(h1, "cat /boot/loader/entries/nixos-generation-2.conf")?;
    for want in [
        "title NixOS\nsort-key nixos\nversion Generation 2 NixOS Uakari 24.05.19700101.fixture (Linux 6.1.0-fixture), built on ",
        &format!("options init={v2_1}/init loglevel=4\n"),
        &format!("machine-id {}", lab.host(h1)?.machine_id),
    ] {
        ensure!(entry.contains(want), "entry lacks {want:?}: {entry}");
    }
    let linux = entry
        .lines()
        .find_map(|l| l.strip_prefix("linux "))
        .ok_or_else(|| anyhow!("no linux line: {entry}"))?;
    ensure!(
        linux.starts_with("/EFI/nixos/") && linux.ends_with("-linux-6.1.0-fixture-bzImage.efi"),
        "linux {linux}"
    );
    lab.ssh_ok(
        h1,
        &format!("test -f /boot{linux} && bootctl is-installed --quiet"),
    )?;
    // bootctl list: isDefault on the default, isSelected on what booted (v2, section 5).
    let list = bootctl_list(lab, h1)?;
    ensure!(list.len() == 2, "bootctl list: {list:?}");
    ensure!(
        list[0]["type"] == "type1" && list[0]["source"] == "esp",
        "{list:?}"
    );
    ensure!(marked(&list, "isDefault") == vec![entry_id(2)], "{list:?}");
    ensure!(marked(&list, "isSelected") == vec![entry_id(2)], "{list:?}");
    let out = lab.ssh(h1, "bootctl install")?;
    ensure!(out.status.code() == Some(1), "bootctl install: {out:?}");

    // One-shot: the next boot only, then the default again. Real bootctl
    // marks the one-shot entry isDefault while it is set.
    lab.ssh_ok(h1, "bootctl set-oneshot nixos-generation-1.conf")?;
    ensure!(lab.oneshot(h1)? == Some(entry_id(1)), "oneshot not set");
    ensure!(marked(&bootctl_list(lab, h1)?, "isDefault") == vec![entry_id(1)]);
    ensure!(
        lab.boot_default(h1)? == v2_1,
        "boot_default follows the one-shot"
    );
    lab.reboot(h1)?;
    ensure!(current_system(lab, h1)? == b1, "one-shot boot: not on base");
    ensure!(
        lab.booted_system(h1)?.as_deref() == Some(b1),
        "booted-system"
    );
    ensure!(lab.oneshot(h1)?.is_none(), "one-shot not consumed");
    ensure!(marked(&bootctl_list(lab, h1)?, "isSelected") == vec![entry_id(1)]);
    lab.reboot(h1)?;
    ensure!(
        current_system(lab, h1)? == v2_1,
        "second boot: not the default"
    );

    // Knob systems: h1 inhibited / hanging / network down, h2 GRUB, h3 a new init interface.
    let knobs = fleet(
        lab,
        root,
        "knobs",
        &format!(
            "{{ {h1} = {{ switchInhibited = true; }}; {h2} = {{ bootLoader = \"grub\"; }}; \
             {h3} = {{ initInterfaceVersion = \"systemd 3\"; }}; }}\n"
        ),
    )?;
    let trial = fleet(
        lab,
        root,
        "trial",
        &format!("{{ {h1} = {{ bootHangs = true; }}; {h2} = {{ bootNetworkDown = true; }}; }}\n"),
    )?;
    let (inhib, grub, iface) = (get(&knobs, h1)?, get(&knobs, h2)?, get(&knobs, h3)?);
    let (hang, netdown) = (get(&trial, h1)?, get(&trial, h2)?);
    for (h, p) in [
        (h1, inhib),
        (h1, hang),
        (h2, grub),
        (h2, netdown),
        (h3, iface),
    ] {
        lab.copy_to(h, p)?;
    }

    // switchInhibited: test/switch/check refused before anything changes;
    // `boot` and `dry-activate` allowed; the running system's own check passes.
    let (code, text) = switch(lab, h1, inhib, "dry-activate")?;
    ensure!(
        code == 0 && text.contains("Not checking switch inhibitors (action = dry-activate)"),
        "inhibited dry-activate: {code} {text}"
    );
    for goal in ["test", "switch", "check"] {
        let (code, text) = switch(lab, h1, inhib, goal)?;
        ensure!(code == 1, "inhibited {goal} exited {code}: {text}");
        for want in [
            "There are changes to critical components of the system:",
            "dbus-implementation : dbus -> broker",
            "Pre-switch check 'switchInhibitors' failed",
            "Pre-switch checks failed",
        ] {
            ensure!(text.contains(want), "inhibited {goal}: no {want:?}: {text}");
        }
    }
    ensure!(
        current_system(lab, h1)? == v2_1,
        "inhibited test changed the system"
    );
    ensure!(
        lab.boot_default(h1)? == v2_1,
        "inhibited switch changed the boot default"
    );
    let (code, text) = switch(lab, h1, v2_1, "check")?;
    ensure!(
        code == 0 && text.contains("Checking switch inhibitors... done"),
        "{code} {text}"
    );
    set_profile(lab, h1, inhib)?;
    let (code, text) = switch(lab, h1, inhib, "boot")?;
    ensure!(
        code == 0 && text.contains("Not checking switch inhibitors (action = boot)"),
        "{code} {text}"
    );
    ensure!(
        lab.boot_default(h1)? == inhib,
        "inhibited boot: boot default"
    );
    // Back to v2 as the default: its `boot` points loader.conf at generation 2.
    switch_ok(lab, h1, v2_1, "boot")?;
    ensure!(lab.boot_default(h1)? == v2_1, "boot of v2: boot default");

    // bootHangs: the one-shot is consumed, stage 2 hangs (no sshd); a power
    // cycle boots the default.
    set_profile(lab, h1, hang)?;
    switch_ok(lab, h1, hang, "boot")?;
    switch_ok(lab, h1, v2_1, "boot")?;
    let hang_entry = lab
        .boot_entries(h1)?
        .into_iter()
        .find(|(_, t)| t == hang)
        .map(|(id, _)| id)
        .ok_or_else(|| anyhow!("no entry for the hanging system"))?;
    ensure!(lab.boot_default(h1)? == v2_1, "hang: default");
    lab.ssh_ok(h1, &format!("bootctl set-oneshot {hang_entry}"))?;
    lab.reboot_no_wait(h1)?;
    // The boot loader picked the hanging entry; the boot never reaches its
    // stage 2, so there is no /run/booted-system.
    ensure!(
        eventually(Duration::from_secs(10), || lab
            .boot_state(h1)
            .map(|b| b.selected.as_deref() == Some(hang_entry.as_str()))
            .unwrap_or(false)),
        "{h1}: did not boot the hanging entry"
    );
    ensure!(lab.booted_system(h1)?.is_none(), "hang: a booted system");
    ensure!(lab.oneshot(h1)?.is_none(), "hang: one-shot not consumed");
    std::thread::sleep(Duration::from_secs(2));
    let state = lab.exec_sh(
        h1,
        "systemctl is-active tether-lab-boot.service ssh.service || true",
    )?;
    ensure!(
        state == "activating\ninactive",
        "hanging boot: units {state:?}"
    );
    ensure!(
        !ssh_works(lab, h1),
        "{h1}: SSH answers during a hanging boot"
    );
    lab.crash(h1)?;
    ensure!(
        current_system(lab, h1)? == v2_1,
        "after hang + crash: not the default"
    );

    // GRUB (h2): grub.cfg's first entry is this system; no systemd-boot.
    set_profile(lab, h2, grub)?;
    switch_ok(lab, h2, grub, "switch")?;
    let cfg = lab.ssh_ok(h2, "cat /boot/grub/grub.cfg")?;
    let first_init = cfg
        .split_whitespace()
        .find_map(|w| w.strip_prefix("init="))
        .unwrap_or_default();
    ensure!(first_init == format!("{grub}/init"), "grub.cfg: {cfg}");
    let out = lab.ssh(h2, "bootctl is-installed")?;
    ensure!(
        out.status.code() == Some(1) && stdout_of(&out) == "no",
        "bootctl is-installed with GRUB: {out:?}"
    );
    ensure!(lab.boot_default(h2)? == grub, "grub: boot default");
    lab.reboot(h2)?;
    ensure!(current_system(lab, h2)? == grub, "grub: not booted");

    // bootNetworkDown (h2, back on systemd-boot): unreachable after a boot
    // into it; the power cycle after the one-shot boots the default.
    set_profile(lab, h2, netdown)?;
    switch_ok(lab, h2, netdown, "boot")?;
    set_profile(lab, h2, b2)?;
    switch_ok(lab, h2, b2, "switch")?;
    ensure!(lab.boot_default(h2)? == b2, "netdown: default");
    let nd_entry = lab
        .boot_entries(h2)?
        .into_iter()
        .find(|(_, t)| t == netdown)
        .map(|(id, _)| id)
        .ok_or_else(|| anyhow!("no entry for the netdown system"))?;
    lab.ssh_ok(h2, &format!("bootctl set-oneshot {nd_entry}"))?;
    lab.reboot_no_wait(h2)?;
    ensure!(
        eventually(Duration::from_secs(15), || lab
            .exec_sh(h2, "systemctl is-active tether-lab-boot.service")
            .map(|s| s == "active")
            .unwrap_or(false)),
        "netdown boot did not finish"
    );
    ensure!(
        lab.booted_system(h2)?.as_deref() == Some(netdown),
        "netdown not booted"
    );
    ensure!(
        !ssh_works(lab, h2),
        "{h2}: reachable after a bootNetworkDown boot"
    );
    let link = lab.exec_sh(h2, "ip -o link show dev eth0")?;
    ensure!(!link.contains("state UP"), "eth0: {link}");
    lab.crash(h2)?;
    ensure!(
        current_system(lab, h2)? == b2,
        "after netdown + crash: not the default"
    );

    // A new init interface cannot be activated live (exit 100), changes nothing.
    let (code, text) = switch(lab, h3, iface, "test")?;
    ensure!(
        code == 100 && text.contains("incompatible with the current configuration"),
        "init interface: {code} {text}"
    );
    ensure!(
        current_system(lab, h3)? == get(base, h3)?,
        "init interface test changed the system"
    );
    Ok(())
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn lab_selftest() -> Result<()> {
    // A lab test that cannot run fails: it never passes by skipping.
    ensure!(
        nix::unistd::geteuid().is_root(),
        "lab_selftest needs root (network namespaces and systemd-nspawn)"
    );
    let tmp =
        TempDir(std::env::temp_dir().join(format!("tether-lab-selftest-{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0)?;
    let root = tmp.0.as_path();

    // --- 1. three hosts boot ------------------------------------------------
    let lab = Lab::up(&UpOptions {
        name: LAB.into(),
        hosts: 3,
        state: false,
    })?
    .tear_down_on_drop();
    ensure!(lab.info.hosts.len() == 3, "expected 3 hosts");
    let names: Vec<String> = lab.info.hosts.iter().map(|h| h.name.clone()).collect();
    let (h1, h2, h3) = (names[0].as_str(), names[1].as_str(), names[2].as_str());
    let addr = |h: &str| -> Result<String> { Ok(lab.host(h)?.address.clone()) };

    // --- 2. SSH reaches each host, and only with its pinned key --------------
    for h in &lab.info.hosts {
        let got = lab.ssh_ok(&h.name, "hostname; cat /etc/machine-id")?;
        ensure!(
            got == format!("{}\n{}", h.name, h.machine_id),
            "{}: identity over SSH was {got:?}",
            h.name
        );
    }
    // host1's address with host2's key pinned: strict checking must refuse.
    let wrong_known = root.join("wrong_known_hosts");
    std::fs::write(
        &wrong_known,
        format!("{} {}\n", addr(h1)?, lab.host(h2)?.host_key),
    )?;
    let opts: Vec<String> = lab
        .ssh_options()
        .into_iter()
        .map(|o| {
            if o.starts_with("UserKnownHostsFile=") {
                format!("UserKnownHostsFile={}", wrong_known.display())
            } else {
                o
            }
        })
        .collect();
    let out = Command::new("ssh")
        .args(&opts)
        .arg(format!("root@{}", addr(h1)?))
        .arg("hostname")
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        !out.status.success() && stdout_of(&out).is_empty(),
        "SSH with a wrong pinned key reached {h1}: {}",
        stdout_of(&out)
    );

    // --- 3. base systems: nix copy into each host's store + switch ----------
    let base = lab.provision(&root.join("base"))?;
    for h in &names {
        let b = get(&base, h)?;
        ensure!(current_system(&lab, h)? == b, "{h}: not on its base system");
        ensure!(
            lab.boot_default(h)? == b,
            "{h}: boot default is not the base system"
        );
        ensure!(
            lab.boot_entries(h)? == vec![(entry_id(1), b.to_string())],
            "{h}: boot entries {:?}",
            lab.boot_entries(h)?
        );
        lab.ssh_ok(h, &format!("nix-store --verify-path {}", shell_quote(b)))?;
    }
    let b1 = get(&base, h1)?.to_string();

    // --- 4. `test`, then reboot: the old system is back ----------------------
    let v2 = fleet(
        &lab,
        root,
        "v2",
        &format!(
            "{{ {h1} = {{ label = \"v2\"; services = [ {{ name = \"web\"; port = 8080; body = \"v2\"; }} ]; }}; }}\n"
        ),
    )?;
    let v2_1 = get(&v2, h1)?.to_string();
    ensure!(v2_1 != b1, "label/services did not change the store path");
    lab.copy_to(h1, &v2_1)?;
    let (code, text) = switch(&lab, h1, &v2_1, "dry-activate")?;
    ensure!(code == 0, "dry-activate exited {code}: {text}");
    ensure!(
        text.contains("would start the following units: fixture-web.service"),
        "dry-activate output: {text}"
    );
    ensure!(
        current_system(&lab, h1)? == b1,
        "dry-activate changed the system"
    );
    switch_ok(&lab, h1, &v2_1, "test")?;
    ensure!(current_system(&lab, h1)? == v2_1, "test did not activate");
    ensure!(
        http_get(&lab, h1, 8080)? == "200 v2",
        "web service after test"
    );
    ensure!(lab.boot_default(h1)? == b1, "test changed the boot default");
    lab.reboot(h1)?;
    ensure!(
        current_system(&lab, h1)? == b1,
        "after test + reboot: not back on base"
    );
    ensure!(
        lab.ssh_ok(h1, "readlink /run/booted-system")? == b1,
        "booted-system is not the base system"
    );
    ensure!(
        lab.ssh_ok(h1, "systemctl is-active fixture-web.service || true")? != "active",
        "the tested system's unit survived the reboot"
    );

    // A crash during the trial (deploy-rs's second failure) boots the base too.
    switch_ok(&lab, h1, &v2_1, "test")?;
    lab.crash(h1)?;
    ensure!(
        current_system(&lab, h1)? == b1,
        "after test + crash: not back on base"
    );

    // --- 5. `switch`, then reboot: the new system stays ----------------------
    // Without a profile generation for it, `switch` installs no boot entry
    // for the system (the systemd-boot builder's rule): the default stays.
    switch_ok(&lab, h1, &v2_1, "switch")?;
    ensure!(
        lab.boot_default(h1)? == b1,
        "switch of a system that is no generation changed the boot default"
    );
    set_profile(&lab, h1, &v2_1)?;
    switch_ok(&lab, h1, &v2_1, "switch")?;
    ensure!(lab.boot_default(h1)? == v2_1, "switch: boot default");
    lab.reboot(h1)?;
    ensure!(
        current_system(&lab, h1)? == v2_1,
        "after switch + reboot: not on v2"
    );
    ensure!(
        eventually(Duration::from_secs(10), || {
            http_get(&lab, h1, 8080)
                .map(|s| s == "200 v2")
                .unwrap_or(false)
        }),
        "web service not back after reboot"
    );

    // --- 6. exit codes: 4 for a failing unit, 2 for a failing activation -----
    let failing = fleet(
        &lab,
        root,
        "failing",
        &format!("{{ {h1} = {{ failingUnits = [ \"broken\" ]; }}; }}\n"),
    )?;
    let actfail = fleet(
        &lab,
        root,
        "actfail",
        &format!("{{ {h1} = {{ activationFails = true; }}; }}\n"),
    )?;
    for (systems, want) in [(&failing, 4), (&actfail, 2)] {
        let p = get(systems, h1)?;
        lab.copy_to(h1, p)?;
        let (code, text) = switch(&lab, h1, p, "test")?;
        ensure!(code == want, "expected exit {want}, got {code}: {text}");
        switch_ok(&lab, h1, &v2_1, "test")?;
    }
    let (code, _) = switch(&lab, h1, &v2_1, "bogus")?;
    ensure!(code == 1, "unknown goal exited {code}, not 1");

    // --- 6b. systemd-boot: entries, loader.conf, bootctl, one-shot -----------
    boot_loader_checks(&lab, root, [h1, h2, h3], &base, &v2_1)?;

    // --- 7. another host's address makes the host unreachable ----------------
    let wrong = fleet(
        &lab,
        root,
        "wrong",
        &format!("{{ {h2} = {{ address = \"{}\"; }}; }}\n", addr(h1)?),
    )?;
    let w2 = get(&wrong, h2)?;
    lab.copy_to(h2, w2)?;
    // Under systemd-run, like tether, and a second later, so this SSH
    // session ends before the address it runs over goes away. (Not
    // --on-active: a timer's default AccuracySec=1min made it fire up to a
    // minute late.)
    let started = ssh_bounded(
        &lab,
        h2,
        &format!(
            "systemd-run --unit=fx-selftest-wrong --collect sh -c 'sleep 1; exec {}/bin/switch-to-configuration test'",
            shell_quote(w2)
        ),
        10,
    )?;
    ensure!(
        started.status.success(),
        "systemd-run on {h2}: {}",
        stderr_of(&started)
    );
    ensure!(
        eventually(Duration::from_secs(15), || !ssh_works(&lab, h2)),
        "{h2} still answers SSH at its address"
    );
    let seen = lab.exec_sh(h2, "ip -4 -o addr show dev eth0")?;
    ensure!(
        seen.contains(&format!("{}/", addr(h1)?)),
        "{h2} addresses: {seen}"
    );
    // The console still works; roll back from there (as a recovery console would).
    let back = lab.exec(
        h2,
        &[
            &format!("{}/bin/switch-to-configuration", get(&base, h2)?),
            "test",
        ],
    )?;
    ensure!(
        back.status.success(),
        "rollback of {h2}: {}",
        stderr_of(&back)
    );
    ensure!(
        eventually(Duration::from_secs(10), || lab
            .ssh(h2, "true")
            .map(|o| o.status.success())
            .unwrap_or(false)),
        "{h2} not reachable after rollback"
    );

    // --- 8. dropNewSsh: new SSH refused, an established session keeps working
    let dropssh = fleet(
        &lab,
        root,
        "drop",
        &format!("{{ {h3} = {{ dropNewSsh = true; }}; }}\n"),
    )?;
    let d3 = get(&dropssh, h3)?;
    lab.copy_to(h3, d3)?;
    let mut session = lab
        .ssh_command(h3)?
        .arg(format!(
            "{}/bin/switch-to-configuration test >/dev/null; echo activated $?; read line; echo still-alive $line",
            shell_quote(d3)
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = session.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let result = (|| -> Result<()> {
        let first = rx.recv_timeout(Duration::from_secs(30))?;
        ensure!(first == "activated 0", "dropNewSsh activation: {first}");
        ensure!(
            !ssh_works(&lab, h3),
            "a new SSH connection got through dropNewSsh"
        );
        let mut stdin = session.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        stdin.write_all(b"ping\n")?;
        drop(stdin);
        let second = rx.recv_timeout(Duration::from_secs(10))?;
        ensure!(
            second == "still-alive ping",
            "established session: {second}"
        );
        Ok(())
    })();
    let _ = session.kill();
    let _ = session.wait();
    let _ = reader.join();
    result?;
    let back = lab.exec(
        h3,
        &[
            &format!("{}/bin/switch-to-configuration", get(&base, h3)?),
            "test",
        ],
    )?;
    ensure!(
        back.status.success(),
        "rollback of {h3}: {}",
        stderr_of(&back)
    );
    lab.ssh_ok(h3, "true")
        .context("new SSH after dropping the rule")?;

    // --- 9. teardown leaves nothing -------------------------------------------
    let netns: Vec<String> = lab.info.hosts.iter().map(|h| h.netns.clone()).collect();
    let links: Vec<String> = lab.info.hosts.iter().map(|h| h.link.clone()).collect();
    let dir = lab.info.dir.clone();
    lab.down()?;
    for n in &netns {
        ensure!(
            !Path::new("/run/netns").join(n).exists(),
            "netns {n} left behind"
        );
    }
    for l in &links {
        ensure!(
            !Path::new("/sys/class/net").join(l).exists(),
            "link {l} left behind"
        );
    }
    if dir.exists() {
        bail!("lab directory {} left behind", dir.display());
    }
    ensure!(Lab::open(LAB).is_err(), "lab {LAB} still opens after down");
    Ok(())
}
