//! The reboot trial on lab hosts that behave like systemd-boot NixOS hosts
//! (docs/fixture.md: entries per generation, `loader.conf`, an emulated
//! `bootctl` over stand-in EFI variables, a boot loader that boots the
//! one-shot entry once). Each scenario asserts the host's end state:
//! booted, current and default system, one-shot, profile generation,
//! boot entries, guard leftovers, reachability, and tether's outcome and
//! exit code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{is_phase, Fleet, LiveRun, Run};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Short limits so a lapsed trial boot returns within seconds: lease 5 s,
/// a host has 40 s to come back from a reboot (the guard's first lease on
/// the trial boot is then 20 s; eight containers booting at once on two
/// cores take a good part of that).
const FAST: &[&str] = &["--lease", "5", "--reboot-timeout", "40"];

fn deploy(f: &Fleet, extra: &[&str]) -> Run {
    let mut args = FAST.to_vec();
    args.extend_from_slice(extra);
    f.deploy(&args)
}

/// Everything a host's boot state is made of, read through its console.
#[derive(Debug, PartialEq, Eq)]
struct BootState {
    booted: String,
    current: String,
    default: String,
    one_shot: Option<String>,
    generation: u32,
    /// The systems of the boot entries.
    entries: Vec<String>,
}

fn boot_state(f: &Fleet, host: &str) -> BootState {
    let mut entries: Vec<String> = f
        .lab
        .boot_entries(host)
        .unwrap()
        .into_iter()
        .map(|(_, system)| system)
        .collect();
    entries.sort();
    BootState {
        booted: f.console(host, "readlink -f /run/booted-system"),
        current: f.current(host),
        default: f.boot_default(host),
        one_shot: f.lab.oneshot(host).unwrap(),
        generation: f.generation(host),
        entries,
    }
}

/// No guard unit, trial state or lock of either trial kind is left (the
/// guard sees the trial finished within its next poll, a second).
fn assert_no_leftovers(f: &Fleet, host: &str) {
    common::wait_until(Duration::from_secs(5), "the guard to exit", || {
        f.console(
            host,
            "systemctl is-active tether-boot-trial.service || true",
        ) != "active"
    });
    assert_eq!(
        f.console(
            host,
            "ls /etc/systemd/system.control 2>/dev/null | grep -c tether; \
             find /etc/systemd/system.control -name 'tether-*' 2>/dev/null | wc -l; \
             st=none; [ -r /var/lib/tether/boot-trial/state ] && read -r st </var/lib/tether/boot-trial/state; echo $st; \
             systemctl list-units --state=active --no-legend 'tether-guard-*' 'tether-activate-*' 'tether-boot-*' 'tether-reboot-*' | wc -l; \
             test -e /run/tether/lock && echo lock; true"
        )
        .lines()
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()[..],
        ["0", "0", "finished", "0"][..],
        "{host}: a reboot trial must leave nothing behind but its finished state"
    );
}

/// Like [`assert_no_leftovers`] after a trial that ended on the old
/// system: the guard removed itself and says rolled-back.
fn assert_cleaned_up_after_rollback(f: &Fleet, host: &str) {
    let out = f.console(
        host,
        "find /etc/systemd/system.control -name 'tether-*' 2>/dev/null | wc -l; \
         cat /var/lib/tether/boot-trial/state; \
         test -e /nix/var/nix/gcroots/tether/boot-trial-old && echo gcroot; true",
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["0", "rolled-back"],
        "{host}: the guard must remove itself and record the rollback"
    );
}

fn kernel_change(host: &str, extra: &str) -> String {
    format!(r#"{{ {host} = {{ kernelVersion = "6.9.0-fixture"; {extra} }}; }}"#)
}

/// `tether plan --json [--copy]`: host1's `trial`.
fn plan_trial(f: &Fleet, copy: bool) -> Value {
    let mut args = vec!["plan", "--json"];
    if copy {
        args.push("--copy");
    }
    let out = f.tether(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["hosts"][0]["trial"].clone()
}

fn phases_include(run: &Run, host: &str, phase: &str) -> bool {
    run.phases(host).iter().any(|p| p == phase)
}

#[test]
fn a_healthy_kernel_change_is_confirmed_only_after_the_host_booted_it() {
    let f = Fleet::up("rb01", 1);
    let before = boot_state(&f, "host1");
    let boot_before = f.lab.boot_id("host1").unwrap();
    f.set_hosts(&kernel_change("host1", ""));
    let new = f.systems()["host1"].clone();
    // The plan says which trial, and why, once the closure is on the host.
    assert_eq!(plan_trial(&f, false), Value::Null);
    let trial = plan_trial(&f, true);
    assert_eq!(trial["kind"], "reboot", "{trial}");
    let reasons: Vec<&str> = trial["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(reasons, ["kernel", "initrd", "kernel-modules"], "{trial}");
    let run = deploy(&f, &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(run.host("host1")["persisted"], true, "{run}");
    for phase in ["rebooting", "booted", "confirming", "persisting"] {
        assert!(phases_include(&run, "host1", phase), "{phase}: {run}");
    }
    // Confirmation came after the boot: no confirming phase before booted.
    let phases = run.phases("host1");
    let booted = phases.iter().position(|p| p == "booted").unwrap();
    let confirming = phases.iter().position(|p| p == "confirming").unwrap();
    assert!(booted < confirming, "{phases:?}");
    assert_ne!(f.lab.boot_id("host1").unwrap(), boot_before, "it rebooted");
    let after = boot_state(&f, "host1");
    assert_eq!(after.booted, new);
    assert_eq!(after.current, new);
    assert_eq!(after.default, new);
    assert_eq!(after.one_shot, None);
    assert_eq!(after.generation, before.generation + 1);
    assert!(after.entries.contains(&new) && after.entries.contains(&before.current));
    assert!(f.reachable("host1"));
    assert_no_leftovers(&f, "host1");
}

#[test]
fn a_kernel_change_whose_boot_loses_the_network_returns_to_the_old_system_by_itself() {
    let f = Fleet::up("rb02", 1);
    let before = boot_state(&f, "host1");
    f.set_hosts(&kernel_change("host1", "bootNetworkDown = true;"));
    let started = Instant::now();
    let run = deploy(&f, &[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(run.cause("host1")["kind"], "boot-trial", "{run}");
    assert!(phases_include(&run, "host1", "rebooting"), "{run}");
    assert!(!phases_include(&run, "host1", "booted"), "{run}");
    // Within the reboot timeout (the guard's first lease of 20 s and two
    // container boots) plus building, copying and preparing.
    assert!(
        started.elapsed() < Duration::from_secs(80),
        "{:?}",
        started.elapsed()
    );
    let after = boot_state(&f, "host1");
    assert_eq!(after, before, "profile, entries and default as before");
    assert!(f.reachable("host1"));
    assert_cleaned_up_after_rollback(&f, "host1");
    let journal = f.target_journal("host1");
    assert!(
        journal
            .iter()
            .any(|e| e.event == "rolled-back" && e.source == "guard"),
        "{journal:?}"
    );
}

/// A deploy whose trial boot stays in its health checks: an HTTP check on
/// a service that answers 503 for its first 60 s.
fn slow_check_change(f: &Fleet) -> LiveRun {
    f.set_hosts(
        r#"{ host1 = {
            kernelVersion = "6.9.0-fixture";
            services = [ { name = "web"; port = 8080; delay = 60; } ];
            inventory = { checkTimeout = 120; checks.web = { type = "http"; port = 8080; }; };
        }; }"#,
    );
    let mut args = FAST.to_vec();
    args.extend_from_slice(&["--confirm-timeout", "5"]);
    f.systems();
    LiveRun::start(f.spawn_deploy(&args))
}

#[test]
fn a_host_that_crashes_during_its_trial_boot_comes_back_on_the_old_system() {
    let f = Fleet::up("rb03", 1);
    let before = boot_state(&f, "host1");
    let mut live = slow_check_change(&f);
    live.wait_for(Duration::from_secs(90), |e| {
        is_phase(e, "host1", "checking")
    });
    // On the trial boot (the new system booted), PID 1 dies.
    let on_trial = boot_state(&f, "host1");
    assert_ne!(
        on_trial.booted, before.booted,
        "the trial boot runs the new system"
    );
    f.lab.crash("host1").unwrap();
    let run = live.finish();
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(run.code, 1, "{run}");
    let after = boot_state(&f, "host1");
    assert_eq!(after, before);
    assert_cleaned_up_after_rollback(&f, "host1");
}

#[test]
fn a_trial_boot_that_hangs_is_unknown_in_time_and_a_power_cycle_boots_the_old_system() {
    let f = Fleet::up("rb04", 1);
    let before = boot_state(&f, "host1");
    f.set_hosts(&kernel_change("host1", "bootHangs = true;"));
    let run = f.deploy(&["--lease", "5", "--reboot-timeout", "12"]);
    assert_eq!(run.code, 3, "{run}");
    assert_eq!(run.outcome("host1"), "unknown", "{run}");
    let cause = run.cause("host1");
    assert_eq!(cause["kind"], "not-back-from-trial-boot", "{run}");
    assert_eq!(cause["seconds"], 12, "{run}");
    assert!(
        run.reason("host1").contains("next power cycle")
            && run.reason("host1").contains("old system"),
        "{run}"
    );
    // Within the timeout, on tether's own clock: 12 s plus one last look.
    let at = |phase: &str| -> u64 {
        run.events
            .iter()
            .find(|e| {
                if phase == "outcome" {
                    e["host"] == "host1" && e["event"] == "outcome"
                } else {
                    is_phase(e, "host1", phase)
                }
            })
            .and_then(|e| e["elapsedMs"].as_u64())
            .unwrap_or_else(|| panic!("no {phase}: {run}"))
    };
    let waited = at("outcome") - at("rebooting");
    assert!(waited <= 12_000 + 10_000 + 2_000, "{waited} ms");
    // What tether said is true: the power cycle boots the old system.
    assert!(!f.reachable("host1"), "the trial boot hangs");
    f.lab.crash("host1").unwrap();
    wait_for_state(&f, "host1", "rolled-back");
    assert_eq!(boot_state(&f, "host1"), before);
    assert_cleaned_up_after_rollback(&f, "host1");
}

fn wait_for_state(f: &Fleet, host: &str, state: &str) {
    common::wait_until(Duration::from_secs(120), state, || {
        f.lab
            .exec_sh(host, "cat /var/lib/tether/boot-trial/state")
            .map(|s| s == state)
            .unwrap_or(false)
    });
}

#[test]
fn a_deployer_killed_after_the_trial_reboot_leaves_the_host_to_return_by_itself() {
    let f = Fleet::up("rb05", 1);
    let before = boot_state(&f, "host1");
    let mut live = slow_check_change(&f);
    live.wait_for(Duration::from_secs(90), |e| is_phase(e, "host1", "booted"));
    let killed = Instant::now();
    live.kill();
    wait_for_state(&f, "host1", "rolled-back");
    // At most the guard's first lease (20 s) and a boot.
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "{:?}",
        killed.elapsed()
    );
    f.lab.wait_ready("host1", Duration::from_secs(30)).unwrap();
    assert_eq!(boot_state(&f, "host1"), before);
    assert_cleaned_up_after_rollback(&f, "host1");
}

#[test]
fn a_switch_inhibitor_is_deployed_by_booting_and_refused_live_before_any_change() {
    let f = Fleet::up("rb06", 1);
    let before = boot_state(&f, "host1");
    f.set_hosts(r#"{ host1 = { switchInhibited = true; label = "dbus-broker"; }; }"#);
    let new = f.systems()["host1"].clone();
    // --trial live: refused, naming the check's output; nothing activated.
    let refused = deploy(&f, &["--trial", "live"]);
    assert_eq!(refused.code, 1, "{refused}");
    assert_eq!(refused.outcome("host1"), "refused", "{refused}");
    assert_eq!(refused.cause("host1")["kind"], "needs-reboot", "{refused}");
    let reason = refused.reason("host1");
    assert!(
        reason.contains("pre-switch checks") && reason.contains("critical components"),
        "{reason}"
    );
    assert!(!phases_include(&refused, "host1", "arming"), "{refused}");
    assert_eq!(boot_state(&f, "host1"), before);
    // auto: the reboot trial, confirmed.
    let run = deploy(&f, &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert!(phases_include(&run, "host1", "booted"), "{run}");
    let after = boot_state(&f, "host1");
    assert_eq!(
        (after.booted, after.current, after.default),
        (new.clone(), new.clone(), new)
    );
    assert_no_leftovers(&f, "host1");
}

#[test]
fn a_change_that_needs_no_reboot_stays_a_live_trial() {
    let f = Fleet::up("rb07", 1);
    let boot_before = f.lab.boot_id("host1").unwrap();
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let new = f.systems()["host1"].clone();
    assert_eq!(plan_trial(&f, true)["kind"], "live");
    let run = deploy(&f, &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert!(!phases_include(&run, "host1", "rebooting"), "{run}");
    assert!(phases_include(&run, "host1", "activating"), "{run}");
    assert_eq!(f.lab.boot_id("host1").unwrap(), boot_before, "no reboot");
    assert_eq!(f.current("host1"), new);
    assert_eq!(f.boot_default("host1"), new);
    assert_eq!(f.lab.oneshot("host1").unwrap(), None);
}

#[test]
fn a_canaried_kernel_rollout_ends_every_host_confirmed_or_back_on_its_old_system() {
    let f = Fleet::up("rb08", 8);
    let before: Vec<BootState> = (1..=8)
        .map(|i| boot_state(&f, &format!("host{i}")))
        .collect();
    let mut hosts = String::from("{ ");
    for i in 1..=8 {
        let extra = if i == 5 {
            "bootNetworkDown = true;"
        } else {
            ""
        };
        hosts.push_str(&format!(
            r#"host{i} = {{ kernelVersion = "6.9.0-fixture"; {extra} }}; "#
        ));
    }
    hosts.push('}');
    f.set_hosts(&hosts);
    let systems = f.systems();
    let run = deploy(&f, &["--canary", "1", "--parallel", "4"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host5"), "rolled-back", "{run}");
    for i in 1..=8 {
        let host = format!("host{i}");
        let state = boot_state(&f, &host);
        let outcome = run.outcome(&host);
        match outcome.as_str() {
            "confirmed" => {
                let new = &systems[&host];
                assert_eq!(
                    (&state.booted, &state.current, &state.default),
                    (new, new, new)
                );
                assert_no_leftovers(&f, &host);
            }
            "rolled-back" | "skipped" => assert_eq!(state, before[i - 1], "{host}"),
            other => panic!("{host}: {other}: {run}"),
        }
        assert!(f.reachable(&host), "{host}");
    }
    assert_eq!(run.outcome("host1"), "confirmed", "the canary: {run}");
}

#[test]
fn a_rollback_to_a_generation_with_another_kernel_goes_through_the_reboot_trial() {
    let f = Fleet::up("rb09", 1);
    let before = boot_state(&f, "host1");
    f.set_hosts(&kernel_change("host1", ""));
    let run = deploy(&f, &[]);
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    let generations = f.generation("host1");
    let out = f.tether(&[
        "rollback",
        "--json",
        "--lease",
        "5",
        "--reboot-timeout",
        "40",
    ]);
    let rollback = common::parse_run(out, Duration::ZERO);
    assert_eq!(rollback.code, 0, "{rollback}");
    assert_eq!(rollback.outcome("host1"), "confirmed", "{rollback}");
    assert!(phases_include(&rollback, "host1", "booted"), "{rollback}");
    let after = boot_state(&f, "host1");
    assert_eq!(after.booted, before.booted);
    assert_eq!(after.current, before.current);
    assert_eq!(after.default, before.current);
    // Back to the existing generation: no new one, none deleted.
    assert_eq!(after.generation, before.generation);
    assert_eq!(
        f.console(
            "host1",
            "ls /nix/var/nix/profiles | grep -c '^system-.*-link$'"
        ),
        generations.to_string()
    );
    assert_no_leftovers(&f, "host1");
}

#[test]
fn a_host_without_one_shot_boot_refuses_the_reboot_trial_and_changes_nothing() {
    let f = Fleet::up("rb10", 1);
    // The host runs (and boots through) a GRUB system first.
    f.set_hosts(r#"{ host1 = { bootLoader = "grub"; }; }"#);
    let run = deploy(&f, &[]);
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    let grub = boot_state(&f, "host1");
    f.set_hosts(&kernel_change("host1", r#"bootLoader = "grub";"#));
    let run = deploy(&f, &[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "refused", "{run}");
    let cause: &Value = run.cause("host1");
    assert_eq!(cause["kind"], "no-one-shot-boot", "{run}");
    assert!(run.reason("host1").contains("GRUB"), "{run}");
    assert!(run.reason("host1").contains("one"), "{run}");
    assert!(!phases_include(&run, "host1", "arming"), "{run}");
    assert_eq!(boot_state(&f, "host1"), grub, "nothing changed");
}

#[test]
fn a_host_that_never_reboots_into_its_trial_is_put_back_as_it_was() {
    let f = Fleet::up("rb11", 1);
    let before = boot_state(&f, "host1");
    // Reboots are refused on this host: the scheduled reboot never comes.
    f.console(
        "host1",
        "systemctl mask --runtime reboot.target >/dev/null 2>&1; true",
    );
    f.set_hosts(&kernel_change("host1", ""));
    let run = f.deploy(&["--lease", "5", "--reboot-timeout", "10"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "failed", "{run}");
    let cause = run.cause("host1");
    assert_eq!(cause["kind"], "prepare-boot-trial", "{run}");
    assert_eq!(cause["step"], "reboot", "{run}");
    // No one-shot left for a later reboot to boot an unconfirmed system;
    // profile, entries and default as before; the guard gone.
    assert_eq!(boot_state(&f, "host1"), before);
    assert_cleaned_up_after_rollback(&f, "host1");
    assert_eq!(
        f.console("host1", "cat /var/lib/tether/boot-trial/cause"),
        "abandoned"
    );
    // The next deploy is not refused as busy.
    f.console(
        "host1",
        "systemctl unmask --runtime reboot.target >/dev/null 2>&1; true",
    );
    let run = deploy(&f, &[]);
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
}
