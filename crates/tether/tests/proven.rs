//! "Confirmed" must mean proven, against real lab hosts (issue: close every
//! path where a broken system is confirmed, persisted or left hanging).
//! Each scenario asserts tether's outcome and exit code and the host's end
//! state: current system, boot default, profile generation, guard units,
//! garbage-collector roots and reachability.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{is_output, is_phase, Fleet, LiveRun, Run};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A host's state, to compare before and after.
#[derive(Debug, PartialEq, Eq)]
struct State {
    current: String,
    boot: String,
    generation: u32,
}

fn state(f: &Fleet, host: &str) -> State {
    State {
        current: f.current(host),
        boot: f.boot_default(host),
        generation: f.generation(host),
    }
}

/// No trial is left on the host: no guard or activation unit, no deploy
/// lock, no garbage-collector root of tether's; and it answers SSH.
fn assert_clean(f: &Fleet, host: &str) {
    common::wait_until(Duration::from_secs(5), "the guard to exit", || {
        f.console(
            host,
            "systemctl list-units --all --no-legend 'tether-guard-*' 'tether-activate-*' | wc -l",
        ) == "0"
    });
    assert_eq!(
        f.console(
            host,
            "test -e /run/tether/lock && echo lock; ls /nix/var/nix/gcroots/tether 2>/dev/null; true"
        ),
        "",
        "{host}: a lock or GC root was left"
    );
    assert!(f.reachable(host), "{host}: not reachable");
}

/// The journal events of the newest deploy on the host.
fn newest_events(f: &Fleet, host: &str) -> Vec<String> {
    let journal = f.target_journal(host);
    let Some(id) = journal.iter().map(|e| e.deploy_id.clone()).max() else {
        return Vec::new();
    };
    journal
        .iter()
        .filter(|e| e.deploy_id == id)
        .map(|e| e.event.clone())
        .collect()
}

fn position(run: &Run, pred: impl Fn(&Value) -> bool) -> Option<usize> {
    run.events.iter().position(pred)
}

/// Acceptance 1: a slow activation that fails after a link drop during it
/// was confirmed before it had ended. It must never be.
#[test]
fn a_failing_activation_behind_a_link_drop_is_never_confirmed() {
    let f = Fleet::up("p01", 1);
    let before = state(&f, "host1");
    f.set_hosts(
        r#"{ host1 = { label = "v2"; activationFails = true; extraActivation = "echo TEST-SLOW; sleep 9"; }; }"#,
    );
    let mut live = LiveRun::start(f.spawn_deploy(&[]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-SLOW")
    });
    std::thread::sleep(Duration::from_secs(1));
    f.lab.cut("host1").unwrap();
    std::thread::sleep(Duration::from_secs(6));
    f.lab.heal("host1").unwrap();
    let run = live.finish();
    assert_ne!(run.code, 0, "{run}");
    let outcome = run.outcome("host1");
    assert!(outcome == "rolled-back" || outcome == "unknown", "{run}");
    assert_eq!(state(&f, "host1"), before, "back on the old system");
    assert!(
        !newest_events(&f, "host1").contains(&"confirmed".to_string()),
        "{:?}",
        f.target_journal("host1")
    );
    assert_clean(&f, "host1");
}

/// Acceptance 2: the same, with an activation that succeeds: confirmed
/// only after it ended, with the checks run after the end.
#[test]
fn a_successful_activation_behind_a_link_drop_is_confirmed_only_after_it_ended() {
    let f = Fleet::up("p02", 1);
    let generation = f.generation("host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; extraActivation = "echo TEST-SLOW; sleep 9"; }; }"#);
    let new = f.systems()["host1"].clone();
    let mut live = LiveRun::start(f.spawn_deploy(&[]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-SLOW")
    });
    std::thread::sleep(Duration::from_secs(1));
    f.lab.cut("host1").unwrap();
    std::thread::sleep(Duration::from_secs(6));
    f.lab.heal("host1").unwrap();
    let run = live.finish();
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(
        state(&f, "host1"),
        State {
            current: new.clone(),
            boot: new,
            generation: generation + 1
        }
    );
    let ended = position(&run, |e| {
        e["host"] == "host1" && e["event"] == "activation-ended" && e["exitCode"] == 0
    })
    .unwrap_or_else(|| panic!("no activation end reported: {run}"));
    let first_check = position(&run, |e| e["host"] == "host1" && e["event"] == "check")
        .unwrap_or_else(|| panic!("no checks ran: {run}"));
    let confirming = position(&run, |e| is_phase(e, "host1", "confirming")).unwrap();
    assert!(
        ended < first_check && first_check < confirming,
        "the checks ran after the activation ended, the confirmation after them: {:#?}",
        run.events
    );
    assert_clean(&f, "host1");
}

/// Acceptance 3: a system someone activated by hand (`test`) was persisted
/// as confirmed without checks or a confirmation.
#[test]
fn a_system_activated_by_hand_is_persisted_only_after_its_checks_and_a_fresh_confirmation() {
    let f = Fleet::up("p03", 1);
    let before = state(&f, "host1");
    let check =
        r#"inventory = { checkTimeout = 3; checks.web = { type = "http"; port = 8080; }; };"#;
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; services = [ {{ name = "web"; status = 500; }} ]; {check} }}; }}"#
    ));
    let broken = f.systems()["host1"].clone();
    f.lab.copy_to("host1", &broken).unwrap();
    f.console(
        "host1",
        &format!("{broken}/bin/switch-to-configuration test >/dev/null 2>&1; true"),
    );
    assert_eq!(f.current("host1"), broken, "activated by hand");
    let run = f.deploy(&[]);
    assert_ne!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(run.why("host1")["kind"], "checks-failed", "{run}");
    assert_eq!(
        state(&f, "host1"),
        before,
        "back on what it boots; not persisted"
    );

    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v3"; services = [ {{ name = "web"; }} ]; {check} }}; }}"#
    ));
    let healthy = f.systems()["host1"].clone();
    f.lab.copy_to("host1", &healthy).unwrap();
    f.console(
        "host1",
        &format!("{healthy}/bin/switch-to-configuration test >/dev/null 2>&1; true"),
    );
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    let phases = run.phases("host1");
    for phase in ["arming", "checking", "confirming", "persisting"] {
        assert!(phases.contains(&phase.to_string()), "{phase}: {phases:?}");
    }
    assert_eq!(
        state(&f, "host1"),
        State {
            current: healthy.clone(),
            boot: healthy,
            generation: before.generation + 1
        }
    );
    assert_clean(&f, "host1");
}

/// Takes NixOS's switch lock on the host in a unit of its own, as an
/// orphaned activation would; returns the holder's PID.
fn hold_switch_lock(f: &Fleet, host: &str) -> String {
    f.console(
        host,
        "mkdir -p /run/nixos && systemd-run --unit=orphan-switch --quiet flock /run/nixos/switch-to-configuration.lock sleep 300",
    );
    let mut pid = String::new();
    common::wait_until(Duration::from_secs(5), "the lock holder", || {
        pid = f.console(host, "systemctl show -p MainPID --value orphan-switch");
        pid != "0" && !pid.is_empty()
    });
    pid
}

/// Acceptance 4: another process holding NixOS's switch lock made the
/// deploy block (a waiting switch-to-configuration) or report a rollback
/// that never happened (switch-to-configuration-ng's exit 11).
#[test]
fn a_held_switch_lock_is_refused_at_preflight_naming_its_holder() {
    let f = Fleet::up("p04", 1);
    let before = state(&f, "host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let pid = hold_switch_lock(&f, "host1");
    let run = f.deploy(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "refused", "{run}");
    assert_eq!(run.phases("host1"), ["preflight"], "{run}");
    let cause = run.cause("host1");
    assert_eq!(cause["kind"], "switch-lock-held", "{run}");
    assert_eq!(cause["holder"]["pid"].to_string(), pid, "{run}");
    assert_eq!(cause["holder"]["unit"], "orphan-switch.service", "{run}");
    assert!(
        cause["holder"]["command"]
            .as_str()
            .unwrap_or("")
            .contains("sleep 300"),
        "{run}"
    );
    assert_eq!(state(&f, "host1"), before);
    f.console("host1", "systemctl stop orphan-switch");
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
}

/// A package large enough that the copy takes a moment: time to take the
/// switch lock after the preflight and before the activation.
const BULK: &str = r#"packages = [ (builtins.derivation {
    name = "bulk-2.0"; system = builtins.currentSystem or "x86_64-linux";
    builder = "/bin/sh"; args = [ "-c" "/usr/bin/head -c 150000000 /dev/urandom > $out" ]; }) ];"#;

#[test]
fn a_switch_lock_taken_after_the_preflight_blocks_nothing_and_is_never_called_a_rollback() {
    let f = Fleet::up("p05", 1);
    let before = state(&f, "host1");
    // switch-to-configuration-ng: the activation fails at once (exit 11).
    f.set_hosts(&format!(r#"{{ host1 = {{ label = "v2"; {BULK} }}; }}"#));
    f.systems();
    let mut live = LiveRun::start(f.spawn_deploy(&[]));
    live.wait_for(Duration::from_secs(60), |v| is_phase(v, "host1", "copying"));
    hold_switch_lock(&f, "host1");
    let run = live.finish();
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "failed", "{run}");
    assert_eq!(run.cause("host1")["kind"], "switch-lock-taken", "{run}");
    assert_eq!(run.cause("host1")["exitCode"], 11, "{run}");
    assert_eq!(state(&f, "host1"), before, "nothing was activated");
    // The guard journals the verdict it moved the state to, then exits.
    assert_clean(&f, "host1");
    let events = newest_events(&f, "host1");
    assert!(events.contains(&"not-activated".to_string()), "{events:?}");
    assert!(!events.contains(&"rolling-back".to_string()), "{events:?}");
    f.console("host1", "systemctl stop orphan-switch");

    // The older, waiting switch-to-configuration: bounded all the same. The
    // activation that still waits for the lock when its timeout ends is
    // stopped, nothing was activated, and the verdict names the holder.
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v3"; blockingSwitchLock = true; {BULK} }}; }}"#
    ));
    let new = f.systems()["host1"].clone();
    let started = Instant::now();
    let mut live = LiveRun::start(f.spawn_deploy(&[
        "--activation-timeout",
        "5",
        "--lease",
        "5",
        "--rollback-timeout",
        "20",
    ]));
    live.wait_for(Duration::from_secs(60), |v| is_phase(v, "host1", "copying"));
    let pid = hold_switch_lock(&f, "host1");
    let run = live.finish();
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "bounded: {:?}",
        started.elapsed()
    );
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "failed", "{run}");
    assert_eq!(run.cause("host1")["kind"], "switch-lock-waited", "{run}");
    assert_eq!(
        run.cause("host1")["holder"]["pid"].to_string(),
        pid,
        "the verdict names the lock's holder: {run}"
    );
    assert_eq!(state(&f, "host1"), before, "nothing was activated");
    assert_clean(&f, "host1");
    let events = newest_events(&f, "host1");
    assert!(events.contains(&"not-activated".to_string()), "{events:?}");
    assert!(!events.contains(&"rolling-back".to_string()), "{events:?}");
    assert_eq!(
        f.console("host1", "systemctl is-active orphan-switch"),
        "active",
        "tether stops only its own activation"
    );
    f.console("host1", "systemctl stop orphan-switch");
    let run = f.deploy(&[]);
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), new);
    assert_clean(&f, "host1");

    // Taken after the activation, while a check fails: the rollback cannot
    // run, so the host is unknown, never "rolled back", and the verdict
    // names the lock. v3's waiting switch-to-configuration gives up at the
    // rollback limit (timeout's 124), v4's ng-like one at once (exit 11).
    for (label, rollback_exit) in [("v4", 124), ("v5", 11)] {
        f.set_hosts(&format!(
            r#"{{ host1 = {{ label = "{label}"; services = [ {{ name = "web"; status = 500; }} ]; inventory = {{ checkTimeout = 6; checks.web = {{ type = "http"; port = 8080; }}; }}; }}; }}"#
        ));
        let broken = f.systems()["host1"].clone();
        let mut live = LiveRun::start(f.spawn_deploy(&["--rollback-timeout", "10"]));
        live.wait_for(Duration::from_secs(60), |v| {
            is_phase(v, "host1", "checking")
        });
        let pid = hold_switch_lock(&f, "host1");
        let run = live.finish();
        assert_eq!(run.code, 3, "{label}: {run}");
        assert_eq!(run.outcome("host1"), "unknown", "{label}: {run}");
        let cause = run.cause("host1");
        assert_eq!(cause["kind"], "rollback-failed", "{label}: {run}");
        assert_eq!(cause["exitCode"], rollback_exit, "{label}: {run}");
        assert_eq!(
            cause["switchLock"]["pid"].to_string(),
            pid,
            "{label}: {run}"
        );
        assert_eq!(
            f.current("host1"),
            broken,
            "{label}: the rollback did not run"
        );
        assert_clean(&f, "host1");
        let events = newest_events(&f, "host1");
        assert!(
            events.contains(&"rollback-failed".to_string()),
            "{events:?}"
        );
        f.console("host1", "systemctl stop orphan-switch");
    }
}

/// Acceptance 5: a failed `switch-to-configuration boot` was reported as
/// confirmed and persisted when a lease renewal saw `finished` first.
#[test]
fn a_failed_boot_loader_install_is_not_persisted_whatever_the_renewals_do() {
    let f = Fleet::up("p06", 1);
    let before = state(&f, "host1");
    // At once, and slowly with renewals every second meanwhile.
    for (label, knobs, lease) in [
        ("v2", "bootFails = true;", "15"),
        ("v3", "bootFails = true; bootDelay = 6;", "5"),
    ] {
        f.set_hosts(&format!(
            r#"{{ host1 = {{ label = "{label}"; {knobs} }}; }}"#
        ));
        let new = f.systems()["host1"].clone();
        let run = f.deploy(&["--lease", lease]);
        assert_eq!(run.code, 1, "{label}: {run}");
        assert_eq!(
            run.outcome("host1"),
            "confirmed-not-persisted",
            "{label}: {run}"
        );
        assert_eq!(run.cause("host1")["kind"], "failed", "{label}: {run}");
        assert_eq!(run.cause("host1")["problem"]["bootExitCode"], 1, "{run}");
        assert_eq!(f.current("host1"), new, "{label}: it runs the new system");
        assert_eq!(
            f.boot_default("host1"),
            before.boot,
            "{label}: boots the old"
        );
        assert!(
            newest_events(&f, "host1").contains(&"confirmed-not-persisted".to_string()),
            "{:?}",
            f.target_journal("host1")
        );
        assert_clean(&f, "host1");
    }
    // A slow but working boot loader install is persisted.
    f.set_hosts(r#"{ host1 = { label = "v4"; bootDelay = 6; }; }"#);
    let new = f.systems()["host1"].clone();
    let run = f.deploy(&["--lease", "5"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.boot_default("host1"), new);
    assert_clean(&f, "host1");
}

/// Acceptance 6: a dead guard means no rollback; it must be restarted, or
/// the deploy must stop before anything is activated.
#[test]
fn a_guard_killed_or_stopped_during_a_failing_check_still_rolls_the_host_back() {
    let f = Fleet::up("p07", 1);
    let before = state(&f, "host1");
    for (label, how) in [
        ("v2", "systemctl kill --signal=KILL 'tether-guard-*'"),
        ("v3", "systemctl stop 'tether-guard-*'"),
    ] {
        f.set_hosts(&format!(
            r#"{{ host1 = {{ label = "{label}"; services = [ {{ name = "web"; status = 500; }} ]; inventory = {{ checkTimeout = 10; checks.web = {{ type = "http"; port = 8080; }}; }}; }}; }}"#
        ));
        let mut live = LiveRun::start(f.spawn_deploy(&[]));
        live.wait_for(Duration::from_secs(60), |v| {
            v["host"] == "host1" && v["event"] == "check"
        });
        f.console("host1", how);
        let run = live.finish();
        assert_eq!(run.code, 1, "{how}: {run}");
        assert_eq!(run.outcome("host1"), "rolled-back", "{how}: {run}");
        assert_eq!(state(&f, "host1"), before, "{how}");
        assert_clean(&f, "host1");
    }
}

#[test]
fn a_guard_that_dies_at_start_stops_the_deploy_before_anything_is_activated() {
    let f = Fleet::up("p08", 1);
    let before = state(&f, "host1");
    // A drop-in for every guard unit: it never runs.
    f.console(
        "host1",
        "mkdir -p /etc/systemd/system/tether-guard-.service.d && printf '[Service]\\nExecStart=\\nExecStart=/bin/false\\n' >/etc/systemd/system/tether-guard-.service.d/crash.conf && systemctl daemon-reload",
    );
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let run = f.deploy(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "failed", "{run}");
    assert_eq!(run.cause("host1")["kind"], "guard-died", "{run}");
    assert!(
        !run.phases("host1").contains(&"activating".to_string()),
        "{run}"
    );
    assert_eq!(state(&f, "host1"), before);
    f.console(
        "host1",
        "rm -rf /etc/systemd/system/tether-guard-.service.d && systemctl daemon-reload && systemctl reset-failed",
    );
    assert_clean(&f, "host1");
    let run = f.deploy(&[]);
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
}

/// Acceptance 7: after a `--goal test` deploy the running system is rooted
/// only by /run/current-system; a garbage collection during the next trial
/// must not take the system a rollback returns to.
#[test]
fn garbage_collection_during_a_trial_spares_the_system_a_rollback_returns_to() {
    let f = Fleet::up("p09", 1);
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let v2 = f.systems()["host1"].clone();
    let run = f.deploy(&["--goal", "test"]);
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), v2);
    let boot = f.boot_default("host1");
    assert_ne!(boot, v2);
    f.set_hosts(
        r#"{ host1 = { label = "v3"; services = [ { name = "web"; status = 500; } ]; inventory = { checkTimeout = 8; checks.web = { type = "http"; port = 8080; }; }; }; }"#,
    );
    let mut live = LiveRun::start(f.spawn_deploy(&[]));
    live.wait_for(Duration::from_secs(60), |v| {
        v["host"] == "host1" && v["event"] == "check"
    });
    f.console("host1", "nix-collect-garbage >/dev/null 2>&1; true");
    let run = live.finish();
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(
        f.current("host1"),
        v2,
        "back on the system of the test deploy"
    );
    assert!(f.has_path("host1", &v2), "{v2} survived the collection");
    assert_eq!(f.boot_default("host1"), boot);
    assert_clean(&f, "host1");
}

/// Acceptance 8: any local user could open tether's lock files and hold
/// them; no lock wait was bounded; an arm held up could resume later.
#[test]
fn a_local_user_cannot_block_a_deploy_and_a_held_up_arm_never_arms_late() {
    let f = Fleet::up("p10", 1);
    // The layout an older tether left: readable by everyone, a lock file
    // a non-root user holds open.
    f.console(
        "host1",
        "useradd -M mallory; mkdir -p /run/tether && chmod 755 /run/tether && touch /run/tether/lock.flock && chmod 644 /run/tether/lock.flock \
         && systemd-run --unit=mallory-lock --uid=mallory --quiet flock -s /run/tether/lock.flock sleep 300",
    );
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let v2 = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), v2);
    assert_eq!(f.console("host1", "stat -c %a /run/tether"), "700");
    assert_eq!(
        f.console(
            "host1",
            "runuser -u mallory -- flock -n /run/tether/arm.lock true 2>/dev/null && echo held || echo denied"
        ),
        "denied"
    );

    // tether's own arm lock held past the bounded wait: refused, and the
    // arm never happens later.
    f.console(
        "host1",
        "systemd-run --unit=arm-lock --quiet flock /run/tether/arm.lock sleep 60",
    );
    common::wait_until(Duration::from_secs(5), "the arm lock holder", || {
        f.console("host1", "systemctl is-active arm-lock; true") == "active"
    });
    f.set_hosts(r#"{ host1 = { label = "v3"; }; }"#);
    let run = f.deploy(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "refused", "{run}");
    assert_eq!(run.cause("host1")["kind"], "arm-lock-timeout", "{run}");
    let id = run.summary["deployId"].as_str().unwrap().to_string();
    // Longer than the arm's own deadline: had it been waiting, it would
    // have armed by now.
    std::thread::sleep(Duration::from_secs(25));
    assert!(
        !f.target_journal("host1").iter().any(|e| e.deploy_id == id),
        "the refused deploy armed later: {:?}",
        f.target_journal("host1")
    );
    assert_eq!(f.current("host1"), v2);
    f.console("host1", "systemctl stop arm-lock mallory-lock");
    assert_clean(&f, "host1");
}

/// Removes an ssh_config drop-in when dropped.
struct SshConfigDropIn(std::path::PathBuf);

impl Drop for SshConfigDropIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Acceptance 9: the user's ssh_config could make tether accept a host key
/// other than the pinned one.
#[test]
fn a_users_ssh_config_cannot_make_tether_accept_an_unpinned_host() {
    let f = Fleet::up("p11", 2);
    let before = state(&f, "host1");
    let address = f.address("host1");
    // Accept whatever key the host presents, for this lab host only.
    let dropin = SshConfigDropIn(std::path::PathBuf::from(format!(
        "/etc/ssh/ssh_config.d/zz-tether-test-{}.conf",
        address.replace('.', "-")
    )));
    std::fs::write(
        &dropin.0,
        format!("Match host {address}\n    KnownHostsCommand /bin/echo %H %t %K\n    VerifyHostKeyDNS yes\n"),
    )
    .unwrap();
    let wrong = f.host_key("host2");
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; inventory.hostKey = "{wrong}"; }}; }}"#
    ));
    let run = f.deploy(&["--on", "host1"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "refused", "{run}");
    assert_eq!(run.cause("host1")["problem"], "host-key", "{run}");
    assert_eq!(state(&f, "host1"), before);
    drop(dropin);
}

/// Every /proc/*/cmdline on this machine (which sees the lab hosts'
/// processes too), NULs as spaces.
fn all_command_lines() -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            lines.push(String::from_utf8_lossy(&bytes).replace('\0', " "));
        }
    }
    lines
}

/// Acceptance 10: the token was in `sh -c '<script>'` for the whole
/// activation, on the deployer and on the target.
#[test]
fn the_deploy_token_is_in_no_process_arguments_on_either_machine() {
    let f = Fleet::up("p12", 1);
    f.set_hosts(r#"{ host1 = { label = "v2"; extraActivation = "echo TEST-LONG; sleep 30"; }; }"#);
    let mut live = LiveRun::start(f.spawn_deploy(&[]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-LONG")
    });
    let token = f.console("host1", "cat /run/tether/deploys/*/token");
    assert_eq!(token.len(), 32, "{token:?}");
    for _ in 0..10 {
        for line in all_command_lines() {
            assert!(
                !line.contains(&token),
                "the token is in a command line: {line}"
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let run = live.finish();
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
}

/// Acceptance 11, a `--json` reader that stops reading: one task renewed
/// every lease and wrote the output, so a stalled reader rolled every host
/// back.
#[test]
fn a_stalled_json_reader_does_not_roll_back_a_healthy_host() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let f = Fleet::up("p13", 1);
    f.set_hosts(
        r#"{ host1 = { label = "v2"; extraActivation = "seq 1 3000 | sed 's/^/noise line /' >&2; sleep 2"; }; }"#,
    );
    let new = f.systems()["host1"].clone();
    let mut child = f.spawn_deploy(&[]);
    let mut stdout = child.stdout.take().unwrap();
    // The smallest pipe the kernel allows, so the writer blocks early.
    nix::fcntl::fcntl(stdout.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    // Not read for 30 s: twice the 15 s lease.
    std::thread::sleep(Duration::from_secs(30));
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let run = common::parse_run(
        std::process::Output {
            status,
            stdout: out.into_bytes(),
            stderr: stderr.into_bytes(),
        },
        Duration::ZERO,
    );
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), new);
    assert!(
        !newest_events(&f, "host1").contains(&"rolling-back".to_string()),
        "{:?}",
        f.target_journal("host1")
    );
}

/// Acceptance 11, a journal another process holds in an exclusive
/// transaction: every event waited for SQLite on the renewing task.
#[test]
fn a_journal_locked_by_another_process_does_not_roll_back_a_healthy_host() {
    let f = Fleet::up("p14", 1);
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    assert_eq!(f.deploy(&[]).outcome("host1"), "confirmed");
    let db = rusqlite::Connection::open(f.state_dir().join("journal.sqlite")).unwrap();
    // The write lock, held: every writer waits (or gives up) meanwhile.
    db.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    f.set_hosts(r#"{ host1 = { label = "v3"; extraActivation = "sleep 3"; }; }"#);
    let new = f.systems()["host1"].clone();
    let live = LiveRun::start(f.spawn_deploy(&["--lease", "6"]));
    // Held for several leases.
    std::thread::sleep(Duration::from_secs(30));
    db.execute_batch("ROLLBACK;").unwrap();
    let run = live.finish();
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), new);
    assert!(
        !newest_events(&f, "host1").contains(&"rolling-back".to_string()),
        "{:?}",
        f.target_journal("host1")
    );
}

/// Acceptance 12: a check URL's credentials and token ended up verbatim in
/// the event stream, the deployer's journal and the target's journal.
#[test]
fn a_check_urls_secrets_reach_no_stream_or_journal() {
    let f = Fleet::up("p15", 1);
    let address = f.address("host1");
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; services = [ {{ name = "web"; status = 500; }} ]; inventory = {{ checkTimeout = 2; checks.web = {{ type = "http"; url = "http://alice:s3cret-pw@{address}:8080/health?token=T0KEN-xyz"; }}; }}; }}; }}"#
    ));
    let out = f.tether(&["deploy", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let stream = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut journal = Vec::new();
    for name in ["journal.sqlite", "journal.sqlite-wal"] {
        if let Ok(bytes) = std::fs::read(f.state_dir().join(name)) {
            journal.extend(bytes);
        }
    }
    let journal = String::from_utf8_lossy(&journal).into_owned();
    let target = f.console("host1", "cat /var/lib/tether/journal");
    for (name, text) in [
        ("NDJSON", &stream),
        ("SQLite journal", &journal),
        ("target journal", &target),
    ] {
        for secret in ["s3cret-pw", "T0KEN-xyz"] {
            assert!(!text.contains(secret), "{secret} in the {name}");
        }
        assert!(
            text.contains("alice:***@") && text.contains("token=***"),
            "no redacted URL in the {name}: {text}"
        );
    }
}

/// Acceptance 14: an IPv6 host, end to end.
#[test]
fn an_ipv6_host_deploys_reports_its_status_and_rolls_back() {
    let f = Fleet::up("p16", 1);
    let address6 = f.lab.host("host1").unwrap().address6.clone();
    let base = f.current("host1");
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; inventory.address = "{address6}"; }}; }}"#
    ));
    let new = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), new);
    let out = f.tether(&["status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &status[0];
    assert_eq!(row["address"], address6.as_str());
    assert_eq!(row["identity"], "ok", "{row}");
    assert_eq!(row["currentSystem"], new.as_str(), "{row}");
    let back = common::parse_run(f.tether(&["rollback", "--json"]), Duration::ZERO);
    assert_eq!(back.code, 0, "{back}");
    assert_eq!(back.outcome("host1"), "confirmed", "{back}");
    assert_eq!(f.current("host1"), base);
    assert_eq!(f.boot_default("host1"), base);
    assert_clean(&f, "host1");
}
