//! "Confirmed" must mean proven, against real lab hosts (issue: close every
//! path where a broken system is confirmed, persisted or left hanging).
//! Each scenario asserts tether's outcome and exit code and the host's end
//! state: current system, boot default, profile generation, guard units,
//! garbage-collector roots and reachability; and that the fault it injects
//! really happened.
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

/// No trial is left on the host: no guard or activation unit (active,
/// restarting or failed), no deploy lock, no garbage-collector root of
/// tether's; and it answers SSH.
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

/// The host journal's events of this run's deploy, in order.
fn trial_events(f: &Fleet, host: &str, run: &Run) -> Vec<String> {
    f.deploy_events(host, &run.deploy_id())
}

fn position(run: &Run, pred: impl Fn(&Value) -> bool) -> Option<usize> {
    run.events.iter().position(pred)
}

fn has_warning(run: &Run, host: &str, needle: &str) -> bool {
    run.events.iter().any(|e| {
        e["host"] == host
            && e["event"] == "warning"
            && e["message"].as_str().unwrap_or("").contains(needle)
    })
}

fn elapsed_ms(run: &Run, pred: impl Fn(&Value) -> bool) -> u64 {
    let at = position(run, pred).unwrap_or_else(|| panic!("no such event: {run}"));
    run.events[at]["elapsedMs"].as_u64().unwrap()
}

/// SSH connections the host's sshd accepted so far.
fn accepted_connections(f: &Fleet, host: &str) -> usize {
    f.console(
        host,
        "journalctl -u ssh --no-pager -q | grep -c 'Accepted publickey'; true",
    )
    .parse()
    .unwrap_or(0)
}

/// A network drop that certainly costs tether its sessions: the link goes
/// down for `secs`, and meanwhile every SSH session on the host ends, as
/// when sshd or a middlebox forgets the connections.
fn drop_link_and_sessions(f: &Fleet, host: &str, secs: u64) {
    f.lab.cut(host).unwrap();
    f.console(host, "pkill -KILL -f '^sshd: root@notty'; true");
    std::thread::sleep(Duration::from_secs(secs));
    f.lab.heal(host).unwrap();
}

/// Acceptance 1: a slow activation that fails after a link drop during it
/// was confirmed before it had ended. It must never be.
#[test]
fn a_failing_activation_behind_a_link_drop_is_never_confirmed() {
    let f = Fleet::up("p01", 1);
    let before = state(&f, "host1");
    f.set_hosts(
        r#"{ host1 = { label = "v2"; activationFails = true; extraActivation = "echo TEST-SLOW; sleep 20"; }; }"#,
    );
    let mut live = LiveRun::start(f.spawn_deploy(&[]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-SLOW")
    });
    std::thread::sleep(Duration::from_secs(1));
    drop_link_and_sessions(&f, "host1", 6);
    let run = live.finish();
    assert!(
        has_warning(&run, "host1", "lost the activation's SSH session"),
        "the drop cost the activation's session: {run}"
    );
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    // Whoever saw the exit code first, the deployer or the guard, names it.
    let cause = run.cause("host1");
    let failed = if cause["why"]["kind"] == "activation-failed" {
        &cause["why"]
    } else {
        &cause["guard"]
    };
    assert_eq!(failed["kind"], "activation-failed", "{run}");
    assert_eq!(failed["exitCode"], 2, "the exit code was read: {run}");
    assert_eq!(state(&f, "host1"), before, "back on the old system");
    let events = trial_events(&f, "host1", &run);
    assert!(events.contains(&"rolled-back".to_string()), "{events:?}");
    assert!(!events.contains(&"confirmed".to_string()), "{events:?}");
    assert_clean(&f, "host1");
}

/// Acceptance 2: the same, with an activation that succeeds: confirmed
/// only after it ended, with the checks run after the end, as the host's
/// own clock tells.
#[test]
fn a_successful_activation_behind_a_link_drop_is_confirmed_only_after_it_ended() {
    let f = Fleet::up("p02", 1);
    let generation = f.generation("host1");
    f.set_hosts(
        r#"{ host1 = { label = "v2"; extraActivation = "echo TEST-SLOW; sleep 20";
             inventory.checks.stamp = { type = "command"; on = "target"; command = "date +%s.%N >>/run/p02-checks"; }; }; }"#,
    );
    let new = f.systems()["host1"].clone();
    let mut live = LiveRun::start(f.spawn_deploy(&[]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-SLOW")
    });
    std::thread::sleep(Duration::from_secs(1));
    drop_link_and_sessions(&f, "host1", 6);
    let run = live.finish();
    assert!(
        has_warning(&run, "host1", "lost the activation's SSH session"),
        "the drop cost the activation's session: {run}"
    );
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
    // The host's clock: when the wrapper recorded the exit code, when each
    // check attempt ran, when the confirmation was journalled.
    let id = run.deploy_id();
    let ended: f64 = f
        .console(
            "host1",
            &format!("stat -c %.9Y /run/tether/deploys/{id}/activation.rc"),
        )
        .parse()
        .unwrap();
    let checks: Vec<f64> = f
        .console("host1", "cat /run/p02-checks")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(!checks.is_empty(), "the check ran");
    assert!(
        checks.iter().all(|&t| t >= ended),
        "every check ran after the activation ended ({ended}): {checks:?}"
    );
    let confirmed = common::entry(&f.target_journal("host1"), "confirmed").epoch;
    assert!(confirmed as f64 >= ended.floor(), "{confirmed} < {ended}");
    // And tether's own account agrees: the end is reported once the 20 s
    // activation is over, the checks after it.
    let slow = elapsed_ms(&run, |e| is_output(e, "host1", "TEST-SLOW"));
    let end = elapsed_ms(&run, |e| {
        e["host"] == "host1" && e["event"] == "activation-ended" && e["exitCode"] == 0
    });
    assert!(
        end >= slow + 19_000,
        "activation end at {end} ms, slow at {slow} ms"
    );
    let ended_at = position(&run, |e| {
        e["host"] == "host1" && e["event"] == "activation-ended"
    })
    .unwrap();
    let first_check = position(&run, |e| e["host"] == "host1" && e["event"] == "check").unwrap();
    let confirming = position(&run, |e| is_phase(e, "host1", "confirming")).unwrap();
    assert!(ended_at < first_check && first_check < confirming, "{run}");
    assert_clean(&f, "host1");
}

/// Acceptance 1 and 2, on the host's side: the guard refuses a
/// confirmation with the right token while the activation runs, and after
/// it failed, whoever sends it.
#[test]
fn the_host_refuses_a_confirmation_while_the_activation_runs_or_after_it_failed() {
    use tether_core::model::{DeployId, StorePath, Token};
    use tether_core::ports::ScriptOutput;
    use tether_core::remote::{Confirm, ConfirmResult, GuardSpec, Operation};
    let f = Fleet::up("p17", 1);
    let before = state(&f, "host1");
    // Like NixOS, the activation script moves /run/current-system, then
    // switch-to-configuration starts the units: a slow one keeps it running
    // on the new system for 10 s, after which it fails (exit 2).
    f.set_hosts(
        r#"{ host1 = { label = "v2"; activationFails = true; services = [ { name = "slow"; startDelay = 10; } ]; }; }"#,
    );
    let new = f.systems()["host1"].clone();
    let live = LiveRun::start(f.spawn_deploy(&["--lease", "60"]));
    common::wait_until(
        Duration::from_secs(60),
        "the new system to be current",
        || f.current("host1") == new,
    );
    // The trial's own id and token, read on the host.
    let dir = f.console("host1", "ls -d /run/tether/deploys/*/");
    let id = dir
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let token = f.console("host1", &format!("cat {dir}token"));
    let (stamp, random) = id.split_once('-').unwrap();
    let confirm = Confirm {
        spec: GuardSpec {
            deploy_id: DeployId::new(stamp, random).unwrap(),
            token: Token::new(&token).unwrap(),
            current_system: StorePath::new(&before.current).unwrap(),
            old_system: StorePath::new(&before.current).unwrap(),
            new_system: StorePath::new(&new).unwrap(),
            lease: Duration::from_secs(60),
            rollback_limit: Duration::from_secs(30),
            deployer: "p17@test".into(),
            state: None,
        },
        persist: None,
    };
    let send = || {
        let stdout = f.console("host1", &confirm.script());
        confirm
            .parse(&ScriptOutput {
                stdout,
                stderr: String::new(),
                exit_code: Some(0),
            })
            .unwrap()
            .result
    };
    assert_eq!(send(), ConfirmResult::ActivationRunning);
    let run = live.finish();
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    let late = send();
    assert!(
        // Refused: the activation failed, the guard rolled back, or the
        // host already runs the old system again.
        matches!(
            late,
            ConfirmResult::ActivationFailed(_)
                | ConfirmResult::TooLate
                | ConfirmResult::NotRunningNew
        ),
        "{late:?}"
    );
    assert_eq!(state(&f, "host1"), before);
    assert!(!trial_events(&f, "host1", &run).contains(&"confirmed".to_string()));
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
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(run.why("host1")["kind"], "checks-failed", "{run}");
    assert_eq!(
        state(&f, "host1"),
        before,
        "back on what it boots; not persisted"
    );
    assert_clean(&f, "host1");

    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v3"; services = [ {{ name = "web"; }} ]; {check} }}; }}"#
    ));
    let healthy = f.systems()["host1"].clone();
    f.lab.copy_to("host1", &healthy).unwrap();
    f.console(
        "host1",
        &format!("{healthy}/bin/switch-to-configuration test >/dev/null 2>&1; true"),
    );
    let accepted = accepted_connections(&f, "host1");
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    // The whole trial, in order: armed, checked (and passed), then a
    // confirmation and only then persisting.
    let at = |phase: &str| {
        position(&run, |e| is_phase(e, "host1", phase))
            .unwrap_or_else(|| panic!("no {phase}: {run}"))
    };
    let passed = position(&run, |e| {
        e["host"] == "host1" && e["event"] == "check" && e["check"] == "web" && e["passed"] == true
    })
    .unwrap_or_else(|| panic!("the check never passed: {run}"));
    assert!(at("arming") < at("checking"), "{run}");
    assert!(
        at("checking") < passed && passed < at("confirming"),
        "{run}"
    );
    assert!(at("confirming") < at("persisting"), "{run}");
    let events = trial_events(&f, "host1", &run);
    let armed = events.iter().position(|e| e == "armed");
    let confirmed = events.iter().position(|e| e == "confirmed");
    assert!(
        armed.is_some() && confirmed.is_some() && armed < confirmed,
        "{events:?}"
    );
    // The shared connection and a brand-new one for the confirmation.
    assert!(
        accepted_connections(&f, "host1") >= accepted + 2,
        "the confirmation came over a connection of its own"
    );
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

/// Waits until another process holds NixOS's switch lock on the host.
fn wait_switch_lock_held(f: &Fleet, host: &str) {
    common::wait_until(
        Duration::from_secs(10),
        "the switch lock to be held",
        || {
            f.console(
            host,
            "flock -n /run/nixos/switch-to-configuration.lock true 2>/dev/null && echo free || echo held",
        ) == "held"
        },
    );
}

/// The PID holding the switch lock in `orphan-switch`.
fn orphan_pid(f: &Fleet, host: &str) -> String {
    let pid = f.console(host, "systemctl show -p MainPID --value orphan-switch");
    assert!(pid != "0" && !pid.is_empty(), "no lock holder");
    pid
}

/// Takes NixOS's switch lock on the host in a unit of its own, as an
/// orphaned activation would; returns the holder's PID once it holds it.
fn hold_switch_lock(f: &Fleet, host: &str) -> String {
    f.console(
        host,
        "mkdir -p /run/nixos && systemd-run --unit=orphan-switch --collect --quiet flock /run/nixos/switch-to-configuration.lock sleep 300",
    );
    wait_switch_lock_held(f, host);
    orphan_pid(f, host)
}

/// A `beforeSwitchLock` snippet for a fixture system: the orphan takes the
/// lock right before this system's switch-to-configuration asks for it,
/// that is after tether's preflight, and nothing else changes.
const ORPHAN_TAKES_THE_LOCK: &str = "systemd-run --unit=orphan-switch --collect --quiet flock /run/nixos/switch-to-configuration.lock sleep 300; while flock -n /run/nixos/switch-to-configuration.lock true; do sleep 0.1; done";

/// Acceptance 4: another process holding NixOS's switch lock made the
/// deploy block (a waiting switch-to-configuration) or report a rollback
/// that never happened (switch-to-configuration-ng's exit 11).
#[test]
fn a_held_switch_lock_is_refused_at_preflight_naming_its_holder() {
    let f = Fleet::up("p04", 1);
    let before = state(&f, "host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let new = f.systems()["host1"].clone();
    let pid = hold_switch_lock(&f, "host1");
    let run = f.deploy(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "refused", "{run}");
    assert_eq!(run.phases("host1"), ["preflight"], "{run}");
    // Within seconds of its preflight, not after a wait.
    let preflight = elapsed_ms(&run, |e| is_phase(e, "host1", "preflight"));
    let refused = elapsed_ms(&run, |e| e["host"] == "host1" && e["event"] == "outcome");
    assert!(refused - preflight < 10_000, "{preflight} -> {refused} ms");
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
    assert!(trial_events(&f, "host1", &run).is_empty(), "nothing armed");
    assert_clean(&f, "host1");
    f.console("host1", "systemctl stop orphan-switch");
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(
        state(&f, "host1"),
        State {
            current: new.clone(),
            boot: new,
            generation: before.generation + 1
        }
    );
    assert_clean(&f, "host1");
}

#[test]
fn a_switch_lock_taken_after_the_preflight_blocks_nothing_and_is_never_called_a_rollback() {
    let f = Fleet::up("p05", 1);
    let before = state(&f, "host1");
    // switch-to-configuration-ng: the activation fails at once (exit 11).
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; beforeSwitchLock = "{ORPHAN_TAKES_THE_LOCK}"; }}; }}"#
    ));
    let run = f.deploy(&[]);
    let pid = orphan_pid(&f, "host1");
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "failed", "{run}");
    assert_eq!(run.cause("host1")["kind"], "switch-lock-taken", "{run}");
    assert_eq!(run.cause("host1")["exitCode"], 11, "{run}");
    assert_eq!(state(&f, "host1"), before, "nothing was activated");
    // The guard journals the verdict it moved the state to, then exits.
    assert_clean(&f, "host1");
    let events = trial_events(&f, "host1", &run);
    assert!(events.contains(&"not-activated".to_string()), "{events:?}");
    assert!(!events.contains(&"rolling-back".to_string()), "{events:?}");
    assert_eq!(
        f.console("host1", "systemctl show -p MainPID --value orphan-switch"),
        pid,
        "tether leaves the holder alone"
    );
    f.console("host1", "systemctl stop orphan-switch");

    // The older, waiting switch-to-configuration: bounded all the same. The
    // activation that still waits for the lock when its timeout ends is
    // stopped, nothing was activated, and the verdict names the holder.
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v3"; blockingSwitchLock = true; beforeSwitchLock = "{ORPHAN_TAKES_THE_LOCK}"; }}; }}"#
    ));
    let started = Instant::now();
    let run = f.deploy(&[
        "--activation-timeout",
        "5",
        "--lease",
        "5",
        "--rollback-timeout",
        "20",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "bounded: {:?}",
        started.elapsed()
    );
    let pid = orphan_pid(&f, "host1");
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
    let events = trial_events(&f, "host1", &run);
    assert!(events.contains(&"not-activated".to_string()), "{events:?}");
    assert!(!events.contains(&"rolling-back".to_string()), "{events:?}");
    assert_eq!(
        f.console("host1", "systemctl is-active orphan-switch"),
        "active",
        "tether stops only its own activation"
    );
    f.console("host1", "systemctl stop orphan-switch");
    f.set_hosts(r#"{ host1 = { label = "v3"; blockingSwitchLock = true; }; }"#);
    let v3 = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), v3);
    assert_clean(&f, "host1");

    // Taken after the activation, while a check fails: the rollback cannot
    // run, so the host is unknown, never "rolled back", and the verdict
    // names the lock. v3's waiting switch-to-configuration gives up at the
    // rollback limit (timeout's 124), v4's ng-like one at once (exit 11).
    for (label, rollback_exit) in [("v4", 124), ("v5", 11)] {
        let boot = f.boot_default("host1");
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
        assert_eq!(f.boot_default("host1"), boot, "{label}: not persisted");
        assert_clean(&f, "host1");
        let events = trial_events(&f, "host1", &run);
        assert!(
            events.contains(&"rollback-failed".to_string()),
            "{events:?}"
        );
        assert!(!events.contains(&"rolled-back".to_string()), "{events:?}");
        f.console("host1", "systemctl stop orphan-switch");
    }
}

/// Acceptance 5: a failed `switch-to-configuration boot` was reported as
/// confirmed and persisted when a lease renewal saw `finished` first.
/// Every interleaving: at once; slowly, with renewals every second while
/// the boot loader installs; and with the persisting session held open
/// after the trial's state was written (`bootLinger`), so that renewals
/// read the final state before the session reports.
#[test]
fn a_failed_boot_loader_install_is_not_persisted_whatever_the_renewals_do() {
    let f = Fleet::up("p06", 1);
    let boot = f.boot_default("host1");
    for (label, knobs, lease) in [
        ("v2", "bootFails = true;", "15"),
        ("v3", "bootFails = true; bootDelay = 6;", "5"),
        ("v4", "bootFails = true; bootLinger = 6;", "5"),
    ] {
        let generation = f.generation("host1");
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
        assert_eq!(f.boot_default("host1"), boot, "{label}: boots the old");
        // The profile was set before the boot loader failed, as
        // nixos-rebuild leaves it.
        assert_eq!(f.generation("host1"), generation + 1, "{label}");
        let events = trial_events(&f, "host1", &run);
        assert!(
            events.contains(&"confirmed-not-persisted".to_string()),
            "{label}: {events:?}"
        );
        assert!(
            !events.contains(&"confirmed".to_string()),
            "{label}: {events:?}"
        );
        assert_clean(&f, "host1");
    }
    // Slow or late-reporting but working boot loader installs persist.
    for (label, knobs) in [("v5", "bootDelay = 6;"), ("v6", "bootLinger = 6;")] {
        let generation = f.generation("host1");
        f.set_hosts(&format!(
            r#"{{ host1 = {{ label = "{label}"; {knobs} }}; }}"#
        ));
        let new = f.systems()["host1"].clone();
        let run = f.deploy(&["--lease", "5"]);
        assert_eq!(run.code, 0, "{label}: {run}");
        assert_eq!(run.outcome("host1"), "confirmed", "{label}: {run}");
        assert_eq!(run.host("host1")["persisted"], true, "{label}: {run}");
        assert_eq!(
            state(&f, "host1"),
            State {
                current: new.clone(),
                boot: new,
                generation: generation + 1
            },
            "{label}"
        );
        assert_clean(&f, "host1");
    }
}

/// The guard unit's main PID (0 when none runs).
fn guard_pid(f: &Fleet, host: &str) -> u32 {
    f.console(
        host,
        "for u in $(systemctl list-units --no-legend --plain 'tether-guard-*' | cut -d' ' -f1); do systemctl show -p MainPID --value \"$u\"; done | head -1",
    )
    .parse()
    .unwrap_or(0)
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
        let pid = guard_pid(&f, "host1");
        assert_ne!(pid, 0, "{how}: a guard runs");
        f.console("host1", how);
        if label == "v2" {
            // systemd starts the killed guard again.
            common::wait_until(Duration::from_secs(5), "the guard's restart", || {
                let now = guard_pid(&f, "host1");
                now != 0 && now != pid
            });
        }
        let run = live.finish();
        if label == "v3" {
            // Nothing restarts a stopped unit: tether noticed and did.
            assert!(
                has_warning(
                    &run,
                    "host1",
                    "the host's guard was gone; tether started it again"
                ),
                "{run}"
            );
        }
        assert_eq!(run.code, 1, "{how}: {run}");
        assert_eq!(run.outcome("host1"), "rolled-back", "{how}: {run}");
        assert_eq!(state(&f, "host1"), before, "{how}");
        let events = trial_events(&f, "host1", &run);
        assert!(
            events.contains(&"rolled-back".to_string()),
            "{how}: {events:?}"
        );
        assert_eq!(
            events.iter().filter(|e| *e == "armed").count(),
            1,
            "{how}: a restarted guard does not arm again: {events:?}"
        );
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
    let new = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "failed", "{run}");
    assert_eq!(run.cause("host1")["kind"], "guard-died", "{run}");
    assert!(
        !run.phases("host1").contains(&"activating".to_string()),
        "{run}"
    );
    assert_eq!(state(&f, "host1"), before);
    // Before any cleanup: no guard left running or restarting, no activation,
    // no lock, no roots.
    assert_eq!(
        f.console(
            "host1",
            "systemctl list-units --no-legend --state=active,activating,reloading 'tether-guard-*' 'tether-activate-*' | wc -l"
        ),
        "0"
    );
    assert_eq!(
        f.console(
            "host1",
            "test -e /run/tether/lock && echo lock; ls /nix/var/nix/gcroots/tether 2>/dev/null; true"
        ),
        ""
    );
    f.console(
        "host1",
        "rm -rf /etc/systemd/system/tether-guard-.service.d && systemctl daemon-reload && systemctl reset-failed",
    );
    assert_clean(&f, "host1");
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(
        state(&f, "host1"),
        State {
            current: new.clone(),
            boot: new,
            generation: before.generation + 1
        }
    );
    assert_clean(&f, "host1");
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
    assert_clean(&f, "host1");
    let boot = f.boot_default("host1");
    let generation = f.generation("host1");
    assert_ne!(boot, v2);
    // A path nothing roots: the collection must take it.
    let canary = f.console(
        "host1",
        "echo p09-canary >/tmp/canary && nix-store --add /tmp/canary",
    );
    assert!(f.has_path("host1", &canary));
    f.set_hosts(
        r#"{ host1 = { label = "v3"; services = [ { name = "web"; status = 500; } ]; inventory = { checkTimeout = 8; checks.web = { type = "http"; port = 8080; }; }; }; }"#,
    );
    let mut live = LiveRun::start(f.spawn_deploy(&[]));
    live.wait_for(Duration::from_secs(60), |v| {
        v["host"] == "host1" && v["event"] == "check"
    });
    // During the trial v2 has one root: tether's.
    let roots = f.console("host1", &format!("nix-store -q --roots {v2}"));
    let roots: Vec<&str> = roots.lines().collect();
    assert!(
        roots.len() == 1 && roots[0].contains("/nix/var/nix/gcroots/tether/"),
        "{roots:?}"
    );
    f.console("host1", "nix-collect-garbage >/tmp/gc.log 2>&1");
    assert!(!f.has_path("host1", &canary), "the collection ran");
    let run = live.finish();
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(
        f.current("host1"),
        v2,
        "back on the system of the test deploy"
    );
    assert!(f.has_path("host1", &v2), "{v2} survived the collection");
    assert_eq!(f.boot_default("host1"), boot);
    assert_eq!(f.generation("host1"), generation);
    assert_clean(&f, "host1");
}

/// Acceptance 8: any local user could open tether's lock files and hold
/// them; no lock wait was bounded; an arm held up could resume later.
#[test]
fn a_local_user_cannot_block_a_deploy_and_a_held_up_arm_never_arms_late() {
    let f = Fleet::up("p10", 1);
    // The layout an older tether left: /run/tether and its arm lock
    // readable by everyone, and a non-root user holding the lock open.
    f.console(
        "host1",
        "useradd -M mallory; mkdir -p /run/tether && chmod 755 /run/tether && touch /run/tether/arm.lock && chmod 644 /run/tether/arm.lock \
         && systemd-run --unit=mallory-lock --uid=mallory --quiet flock -s /run/tether/arm.lock sleep 300",
    );
    common::wait_until(Duration::from_secs(5), "mallory's lock", || {
        f.console(
            "host1",
            "flock -n -x /run/tether/arm.lock true && echo free || echo held",
        ) == "held"
    });
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let v2 = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), v2);
    assert_eq!(f.console("host1", "stat -c %a /run/tether"), "700");
    // Everything tether keeps there, the token too, is root's alone.
    assert_eq!(
        f.console(
            "host1",
            "find /run/tether ! -user root -o -perm /077 ! -type l"
        ),
        "",
        "files another user could open"
    );
    assert_eq!(
        f.console(
            "host1",
            "runuser -u mallory -- flock -n /run/tether/arm.lock true 2>/dev/null && echo opened || echo denied"
        ),
        "denied"
    );
    f.console("host1", "systemctl stop mallory-lock");
    assert_clean(&f, "host1");

    // An arm held up on the host (frozen while it waited for its lock)
    // past tether's wait: tether gives up, and the arm, let go later,
    // gives up by itself instead of arming.
    let before = state(&f, "host1");
    f.console(
        "host1",
        "systemd-run --unit=arm-lock --collect --quiet flock /run/tether/arm.lock sleep 4",
    );
    f.set_hosts(r#"{ host1 = { label = "v3"; }; }"#);
    let mut live = LiveRun::start(f.spawn_deploy(&[]));
    live.wait_for(Duration::from_secs(60), |v| is_phase(v, "host1", "arming"));
    let frozen = {
        let mut shell = String::new();
        common::wait_until(
            Duration::from_secs(4),
            "the arm waiting for its lock",
            || {
                shell = f.console(
                "host1",
                "p=$(pgrep -f '^flock -w [0-9]+ 9$' | head -1); [ -n \"$p\" ] && ps -o ppid= -p \"$p\" | tr -d ' '; true",
            );
                !shell.is_empty()
            },
        );
        f.console("host1", &format!("kill -STOP {shell}"));
        shell
    };
    let run = live.finish();
    assert_ne!(run.code, 0, "{run}");
    assert_ne!(run.outcome("host1"), "confirmed", "{run}");
    let id = run.deploy_id();
    // Let the arm go on, long after its deadline.
    f.console("host1", &format!("kill -CONT {frozen}"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !f.target_journal("host1").iter().any(|e| e.deploy_id == id),
        "the abandoned deploy armed later: {:?}",
        f.target_journal("host1")
    );
    assert_eq!(
        f.console(
            "host1",
            "ps -o pid= -p {frozen} >/dev/null && echo running || echo gone"
                .replace("{frozen}", &frozen)
                .as_str()
        ),
        "gone",
        "the late arm exited"
    );
    assert_eq!(state(&f, "host1"), before, "nothing was activated");
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
/// other than the pinned one, or share a connection with the
/// confirmation. The drop-in matches only this lab's host address, so the
/// tests running beside this one are not affected.
#[test]
fn a_users_ssh_config_cannot_make_tether_accept_an_unpinned_host() {
    let f = Fleet::up("p11", 2);
    let before = state(&f, "host1");
    let address = f.address("host1");
    let dropin = SshConfigDropIn(std::path::PathBuf::from(format!(
        "/etc/ssh/ssh_config.d/zz-tether-test-{}.conf",
        address.replace('.', "-")
    )));
    let control = f.lab.info.dir.join("user-cm-%C");
    std::fs::write(
        &dropin.0,
        format!(
            "Match host {address}\n    KnownHostsCommand /bin/echo %H %t %K\n    VerifyHostKeyDNS yes\n    ControlMaster auto\n    ControlPath {}\n    ControlPersist 60\n",
            control.display()
        ),
    )
    .unwrap();
    // The control run: with this configuration a plain ssh, told to trust
    // only another host's key, connects all the same.
    let wrong = f.host_key("host2");
    let wrong_hosts = f.lab.info.dir.join("p11-wrong-known-hosts");
    std::fs::write(&wrong_hosts, format!("{address} {wrong}\n")).unwrap();
    let plain = std::process::Command::new("ssh")
        .args(["-i", &f.lab.info.ssh_key.display().to_string()])
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=no"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", wrong_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .arg(format!("root@{address}"))
        .arg("true")
        .output()
        .unwrap();
    assert!(
        plain.status.success(),
        "the drop-in makes ssh accept any key: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; inventory.hostKey = "{wrong}"; }}; }}"#
    ));
    let run = f.deploy(&["--on", "host1"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "refused", "{run}");
    assert_eq!(run.cause("host1")["problem"], "host-key", "{run}");
    assert_eq!(state(&f, "host1"), before);
    assert!(trial_events(&f, "host1", &run).is_empty(), "nothing armed");

    // With the right key, the user's ControlMaster must not carry the
    // confirmation: it still comes over a brand-new connection.
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let v2 = f.systems()["host1"].clone();
    let accepted = accepted_connections(&f, "host1");
    let run = f.deploy(&["--on", "host1"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), v2);
    assert!(
        accepted_connections(&f, "host1") >= accepted + 2,
        "the confirmation came over a connection of its own"
    );
    assert_clean(&f, "host1");
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
/// activation, on the deployer and on the target. Every command line on
/// the machine (deployer and hosts alike) is collected, every 20 ms, from
/// before the deploy starts until it ends: arming, renewals, the
/// confirmation and persisting included.
#[test]
fn the_deploy_token_is_in_no_process_arguments_on_either_machine() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let f = Fleet::up("p12", 1);
    f.set_hosts(r#"{ host1 = { label = "v2"; extraActivation = "echo TEST-LONG; sleep 15"; }; }"#);
    let new = f.systems()["host1"].clone();
    let done = Arc::new(AtomicBool::new(false));
    let scanner = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !done.load(Ordering::SeqCst) {
                seen.extend(all_command_lines());
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let mut live = LiveRun::start(f.spawn_deploy(&["--lease", "5"]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-LONG")
    });
    let token = f.console("host1", "cat /run/tether/deploys/*/token");
    assert_eq!(token.len(), 32, "{token:?}");
    // The units systemd runs for the trial, as systemd records them.
    let units = f.console(
        "host1",
        "systemctl show -p ExecStart 'tether-guard-*' 'tether-activate-*'",
    );
    assert!(units.contains("guard.sh"), "{units}");
    assert!(!units.contains(&token), "the token is in a unit: {units}");
    let run = live.finish();
    done.store(true, Ordering::SeqCst);
    let seen = scanner.join().unwrap();
    assert!(
        seen.iter().any(|l| l.contains("ssh") && l.contains("eval")),
        "the scan saw tether's sessions"
    );
    for line in &seen {
        assert!(
            !line.contains(&token),
            "the token is in a command line: {line}"
        );
    }
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), new);
    assert_eq!(f.boot_default("host1"), new);
    assert_clean(&f, "host1");
}

/// Acceptance 11, a `--json` reader that stops reading once the trial has
/// begun: one task renewed every lease and wrote the output, so a stalled
/// reader rolled every host back.
#[test]
fn a_stalled_json_reader_does_not_roll_back_a_healthy_host() {
    use std::io::{BufRead, BufReader, Read};
    use std::os::fd::AsRawFd;
    let f = Fleet::up("p13", 1);
    let generation = f.generation("host1");
    f.set_hosts(
        r#"{ host1 = { label = "v2"; extraActivation = "seq 1 3000 | sed 's/^/noise line /' >&2; sleep 2"; }; }"#,
    );
    let new = f.systems()["host1"].clone();
    let mut child = f.spawn_deploy(&[]);
    let stderr = common::drain(child.stderr.take().unwrap());
    let stdout = child.stdout.take().unwrap();
    // The smallest pipe the kernel allows, so the writer blocks early.
    nix::fcntl::fcntl(stdout.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    let mut reader = BufReader::new(stdout);
    let mut out = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "ended early: {out}"
        );
        out.push_str(&line);
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if is_phase(&v, "host1", "activating") {
            break;
        }
    }
    // Not read for 30 s from the start of the trial: twice the 15 s lease.
    std::thread::sleep(Duration::from_secs(30));
    reader.read_to_string(&mut out).unwrap();
    let status = common::wait_bounded(&mut child);
    let run = common::parse_run(
        std::process::Output {
            status,
            stdout: out.into_bytes(),
            stderr: stderr.join().unwrap().into_bytes(),
        },
        Duration::ZERO,
    );
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
    let events = trial_events(&f, "host1", &run);
    assert!(!events.contains(&"rolling-back".to_string()), "{events:?}");
    assert_clean(&f, "host1");
}

/// Acceptance 11, a journal another process holds in an exclusive
/// transaction, taken once the trial has begun and held for three leases:
/// every event waited for SQLite on the renewing task.
#[test]
fn a_journal_locked_by_another_process_does_not_roll_back_a_healthy_host() {
    use rusqlite::{Connection, OpenFlags};
    let f = Fleet::up("p14", 1);
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    assert_eq!(f.deploy(&[]).outcome("host1"), "confirmed");
    let db = Connection::open_with_flags(
        f.state_dir().join("journal.sqlite"),
        OpenFlags::SQLITE_OPEN_READ_WRITE,
    )
    .unwrap();
    f.set_hosts(r#"{ host1 = { label = "v3"; extraActivation = "echo TEST-HELD; sleep 20"; }; }"#);
    let new = f.systems()["host1"].clone();
    let generation = f.generation("host1");
    let mut live = LiveRun::start(f.spawn_deploy(&["--lease", "6"]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-HELD")
    });
    // The write lock, held: every writer waits (or gives up) meanwhile.
    db.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    std::thread::sleep(Duration::from_secs(20));
    db.execute_batch("ROLLBACK;").unwrap();
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
    let events = trial_events(&f, "host1", &run);
    assert!(!events.contains(&"rolling-back".to_string()), "{events:?}");
    // The record was delayed, not lost: every event of the stream is in
    // the journal, the output written while the lock was held included.
    let id = run.deploy_id();
    let recorded: i64 = db
        .query_row(
            "SELECT count(*) FROM events WHERE run_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let streamed = run.events.iter().filter(|e| e["host"] == "host1").count();
    assert_eq!(recorded as usize, streamed, "{run}");
    let outcome: String = db
        .query_row(
            "SELECT outcome FROM run_hosts WHERE run_id = ?1 AND host = 'host1'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outcome, "confirmed");
    assert_clean(&f, "host1");
}

/// Acceptance 12: a check URL's credentials and token ended up verbatim in
/// the event stream, the deployer's journal and the target's journal.
#[test]
fn a_check_urls_secrets_reach_no_stream_or_journal() {
    let f = Fleet::up("p15", 1);
    let before = state(&f, "host1");
    let address = f.address("host1");
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; services = [ {{ name = "web"; status = 500; }} ]; inventory = {{ checkTimeout = 2; checks.web = {{ type = "http"; url = "http://alice:s3cret-pw@{address}:8080/health?token=T0KEN-xyz"; }}; }}; }}; }}"#
    ));
    let out = f.tether(&["deploy", "--json"]);
    let stream = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let run = common::parse_run(out, Duration::ZERO);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(state(&f, "host1"), before);
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
    for secret in ["s3cret-pw", "T0KEN-xyz"] {
        assert!(!stderr.contains(secret), "{secret} on stderr");
    }
    assert_clean(&f, "host1");
}

/// Restores the lab's IPv4 route to a host when dropped.
struct Ipv4Route<'a>(&'a Fleet);

impl Drop for Ipv4Route<'_> {
    fn drop(&mut self) {
        let _ = self.0.lab.heal("host1");
    }
}

/// Acceptance 14: an IPv6 host, end to end: a deploy, a guard rollback
/// after a failing check, status, and a manual rollback, with the host's
/// IPv4 route gone so that nothing can fall back to it.
#[test]
fn an_ipv6_host_deploys_reports_its_status_and_rolls_back() {
    let f = Fleet::up("p16", 1);
    let host = f.lab.host("host1").unwrap().clone();
    let (address6, address) = (host.address6.clone(), host.address.clone());
    let base = f.current("host1");
    let generation = f.generation("host1");
    let route = Ipv4Route(&f);
    let del = std::process::Command::new("ip")
        .args(["route", "del", &format!("{address}/32")])
        .status()
        .unwrap();
    assert!(del.success());
    assert!(!f.reachable("host1"), "IPv4 no longer reaches the host");
    let inventory = format!(r#"inventory.address = "{address6}";"#);
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; {inventory} }}; }}"#
    ));
    let new = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(
        state(&f, "host1"),
        State {
            current: new.clone(),
            boot: new.clone(),
            generation: generation + 1
        }
    );
    // A failing check: the guard rolls back over IPv6 too.
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v3"; services = [ {{ name = "web"; status = 500; }} ]; inventory = {{ address = "{address6}"; checkTimeout = 3; checks.web = {{ type = "http"; port = 8080; }}; }}; }}; }}"#
    ));
    let run = f.deploy(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert!(
        run.failed_checks("host1")[0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("[{address6}]:8080")),
        "the check went to the IPv6 address: {run}"
    );
    assert_eq!(f.current("host1"), new);
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; {inventory} }}; }}"#
    ));
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
    assert_eq!(
        f.generation("host1"),
        generation,
        "back to the first generation"
    );
    drop(route);
    assert_clean(&f, "host1");
}
