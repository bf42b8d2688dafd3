//! The safe switch against real lab hosts (issue: "The safe switch"). Each
//! scenario asserts tether's reported outcome and exit code and the host's
//! end state: current system, boot default, profile generation, and whether
//! it answers at its own address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{entry, is_output, is_phase, Fleet, LiveRun};
use std::time::Duration;

/// Base state of a provisioned host, to compare against after a deploy.
struct Before {
    current: String,
    boot: String,
    generation: u32,
}

fn before(f: &Fleet, host: &str) -> Before {
    Before {
        current: f.current(host),
        boot: f.boot_default(host),
        generation: f.generation(host),
    }
}

/// The host is exactly as it was: same system, boot default, generation,
/// and reachable at its own address.
fn assert_untouched(f: &Fleet, host: &str, b: &Before) {
    assert_eq!(f.current(host), b.current, "{host}: current system changed");
    assert_eq!(f.boot_default(host), b.boot, "{host}: boot default changed");
    assert_eq!(f.generation(host), b.generation, "{host}: profile changed");
    assert!(f.reachable(host), "{host}: not reachable at its address");
}

#[test]
fn happy_path_is_confirmed_persisted_and_survives_a_reboot() {
    let f = Fleet::up("d01", 1);
    let b = before(&f, "host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let new = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(run.host("host1")["persisted"], true);
    assert_eq!(f.current("host1"), new);
    assert_eq!(f.boot_default("host1"), new);
    assert_eq!(f.generation("host1"), b.generation + 1);
    assert_eq!(
        run.phases("host1"),
        [
            "preflight",
            "copying",
            "arming",
            "activating",
            // The default health checks: failedUnits = "new", systemRunning.
            "checking",
            "confirming",
            "persisting"
        ]
    );
    f.lab.reboot("host1").unwrap();
    assert_eq!(
        f.current("host1"),
        new,
        "the new system must survive a reboot"
    );
    assert!(f.reachable("host1"));
}

#[test]
fn the_same_system_again_is_unchanged_and_nothing_is_activated() {
    let f = Fleet::up("d02", 1);
    let b = before(&f, "host1");
    let journal = f.console("host1", "cat /var/lib/tether/journal 2>/dev/null; true");
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "unchanged", "{run}");
    assert_eq!(run.phases("host1"), ["preflight"]);
    assert_untouched(&f, "host1", &b);
    assert_eq!(
        f.console("host1", "cat /var/lib/tether/journal 2>/dev/null; true"),
        journal,
        "nothing may be armed or activated"
    );
}

#[test]
fn a_system_with_another_hosts_address_rolls_itself_back_within_the_lease() {
    let f = Fleet::up("d03", 2);
    let b = before(&f, "host1");
    let other = f.address("host2");
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; address = "{other}"; }}; }}"#
    ));
    let run = f.deploy(&["--on", "host1"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    // The default lease is 15 s: the host is lost during the activation,
    // so its guard starts rolling back at most a lease after the end of a
    // one-second activation (plus the guard's half-second poll), on the
    // host's own clock.
    let journal = f.target_journal("host1");
    let armed = entry(&journal, "armed");
    let rolling_back = entry(&journal, "rolling-back");
    assert!(
        rolling_back.detail.contains("lease expired"),
        "{rolling_back:?}"
    );
    assert!(
        rolling_back.epoch - armed.epoch <= 15 + 5,
        "the guard rolled back {} s after arming",
        rolling_back.epoch - armed.epoch
    );
    assert_untouched(&f, "host1", &b);
    assert!(f.reachable("host2"), "host2 must not be disturbed");
}

#[test]
fn a_failing_unit_rolls_back_at_once() {
    let f = Fleet::up("d04", 1);
    let b = before(&f, "host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; failingUnits = [ "broken" ]; }; }"#);
    let run = f.deploy(&[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    // The activation failed with NixOS's "a unit failed" exit code.
    assert_eq!(run.why("host1")["kind"], "activation-failed", "{run}");
    assert_eq!(run.why("host1")["exitCode"], 4, "{run}");
    // At once: the failed activation itself started the rollback, not a
    // lapsed lease.
    let rolling_back = entry(&f.target_journal("host1"), "rolling-back").clone();
    assert!(
        !rolling_back.detail.contains("lease expired"),
        "{rolling_back:?}"
    );
    assert_untouched(&f, "host1", &b);
    assert_eq!(
        f.console(
            "host1",
            "systemctl is-active fixture-broken.service || true"
        ),
        "inactive"
    );
}

#[test]
fn a_hanging_activation_times_out_and_rolls_back() {
    let f = Fleet::up("d05", 1);
    let b = before(&f, "host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; hangActivation = true; }; }"#);
    let run = f.deploy(&["--activation-timeout", "4"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(run.why("host1")["kind"], "activation-timed-out", "{run}");
    assert_eq!(run.why("host1")["seconds"], 4, "{run}");
    assert_untouched(&f, "host1", &b);
    // The hung activation was stopped, not left holding the NixOS lock.
    assert_eq!(
        f.console(
            "host1",
            "systemctl list-units --no-legend 'tether-activate-*' | wc -l"
        ),
        "0"
    );
}

#[test]
fn an_activation_that_stops_sshd_rolls_back() {
    let f = Fleet::up("d06", 1);
    let b = before(&f, "host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; stopSshd = true; }; }"#);
    let run = f.deploy(&["--confirm-timeout", "5"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(run.why("host1")["kind"], "confirm-failed", "{run}");
    assert_untouched(&f, "host1", &b);
}

#[test]
fn dropped_new_connections_roll_back_though_established_ones_work() {
    let f = Fleet::up("d07", 1);
    let b = before(&f, "host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; dropNewSsh = true; }; }"#);
    let run = f.deploy(&["--confirm-timeout", "5"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    // The shared (established) connection still worked: the rollback was
    // asked for over it, not waited out.
    let rolling_back = entry(&f.target_journal("host1"), "rolling-back").clone();
    assert!(
        rolling_back.detail.starts_with("deployer asked"),
        "{rolling_back:?}"
    );
    assert_untouched(&f, "host1", &b);
}

#[test]
fn a_deployer_killed_before_confirming_leaves_a_host_that_rolls_back_by_itself() {
    let f = Fleet::up("d08", 1);
    let b = before(&f, "host1");
    f.set_hosts(
        r#"{ host1 = { label = "v2"; extraActivation = "echo TEST-ACTIVATED; sleep 2"; }; }"#,
    );
    let new = f.systems()["host1"].clone();
    let mut live = LiveRun::start(f.spawn_deploy(&["--lease", "6"]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-ACTIVATED")
    });
    live.kill();
    // Activation goes on in its own unit and reaches the new system...
    common::wait_until(
        Duration::from_secs(10),
        "the new system to be active",
        || f.current("host1") == new,
    );
    // ...then, with nobody to confirm, the guard rolls back.
    common::wait_until(Duration::from_secs(20), "the guard's rollback", || {
        f.current("host1") == b.current
    });
    assert_untouched(&f, "host1", &b);
    assert!(f
        .console("host1", "cat /var/lib/tether/journal")
        .contains("rolled-back"));
}

#[test]
fn a_host_rebooting_during_the_trial_comes_back_on_the_old_system() {
    let f = Fleet::up("d09", 1);
    let b = before(&f, "host1");
    f.set_hosts(
        r#"{ host1 = { label = "v2"; extraActivation = "echo TEST-ACTIVATING; sleep 3"; }; }"#,
    );
    let mut live = LiveRun::start(f.spawn_deploy(&["--lease", "6"]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-ACTIVATING")
    });
    f.lab.reboot("host1").unwrap();
    let run = live.finish();
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(run.cause("host1")["kind"], "rebooted", "{run}");
    assert_eq!(run.code, 1, "{run}");
    assert_untouched(&f, "host1", &b);
}

#[test]
fn swapped_addresses_in_the_inventory_are_refused_before_anything_is_copied() {
    let f = Fleet::up("d10", 2);
    let (b1, b2) = (before(&f, "host1"), before(&f, "host2"));
    let (a1, a2) = (f.address("host1"), f.address("host2"));
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; inventory.address = "{a2}"; }};
             host2 = {{ label = "v2"; inventory.address = "{a1}"; }}; }}"#
    ));
    let systems = f.systems();
    let run = f.deploy(&[]);
    assert_eq!(run.code, 1, "{run}");
    for (host, b) in [("host1", &b1), ("host2", &b2)] {
        assert_eq!(run.outcome(host), "refused", "{run}");
        assert_eq!(run.cause(host)["kind"], "identity", "{run}");
        assert_eq!(run.cause(host)["problem"], "host-key", "{run}");
        assert_eq!(run.phases(host), ["preflight"]);
        assert_untouched(&f, host, b);
    }
    assert!(!f.has_path("host1", &systems["host1"]) && !f.has_path("host1", &systems["host2"]));
    assert!(!f.has_path("host2", &systems["host2"]) && !f.has_path("host2", &systems["host1"]));
}

#[test]
fn a_host_presenting_an_unpinned_key_is_refused() {
    let f = Fleet::up("d11", 2);
    let b = before(&f, "host1");
    let wrong = f.host_key("host2");
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; inventory.hostKey = "{wrong}"; }}; }}"#
    ));
    let run = f.deploy(&["--on", "host1"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "refused", "{run}");
    assert_eq!(run.cause("host1")["kind"], "identity", "{run}");
    assert_eq!(run.cause("host1")["problem"], "host-key", "{run}");
    assert_untouched(&f, "host1", &b);
}

#[test]
fn two_deploys_to_one_host_never_overlap() {
    let f = Fleet::up("d12", 1);
    f.set_hosts(r#"{ host1 = { label = "v2"; extraActivation = "echo TEST-FIRST; sleep 4"; }; }"#);
    let new = f.systems()["host1"].clone();
    let mut first = LiveRun::start(f.spawn_deploy(&[]));
    first.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-FIRST")
    });
    // The second deploy (same fleet) arrives while the first is on trial.
    let second = f.deploy(&[]);
    assert_eq!(second.code, 1, "{second}");
    assert_eq!(second.outcome("host1"), "refused", "{second}");
    assert_eq!(second.cause("host1")["kind"], "another-deploy", "{second}");
    let first = first.finish();
    assert_eq!(first.code, 0, "{first}");
    assert_eq!(first.outcome("host1"), "confirmed", "{first}");
    assert_eq!(f.current("host1"), new);
    assert_eq!(f.boot_default("host1"), new);
}

#[test]
fn a_link_cut_during_the_copy_fails_the_host_without_activating() {
    let f = Fleet::up("d13", 1);
    let b = before(&f, "host1");
    // A large package makes the copy take long enough to cut it.
    f.set_hosts(
        r#"{ host1 = { label = "v2"; packages = [ (builtins.derivation {
            name = "bulk-1.0"; system = builtins.currentSystem or "x86_64-linux";
            builder = "/bin/sh"; args = [ "-c" "/usr/bin/head -c 400000000 /dev/urandom > $out" ]; }) ]; }; }"#,
    );
    f.systems();
    let mut live = LiveRun::start(f.spawn_deploy(&["--copy-timeout", "60"]));
    live.wait_for(Duration::from_secs(60), |v| is_phase(v, "host1", "copying"));
    f.lab.cut("host1").unwrap();
    let run = live.finish();
    f.lab.heal("host1").unwrap();
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "failed", "{run}");
    assert_eq!(run.cause("host1")["kind"], "copy", "{run}");
    assert!(!run.phases("host1").contains(&"activating".to_string()));
    assert_untouched(&f, "host1", &b);
}

#[test]
fn a_previous_system_set_by_hand_is_still_restored() {
    let f = Fleet::up("d14", 1);
    // Someone switched this host by hand (nix-env --set; switch-to-configuration switch).
    f.set_hosts(r#"{ host1 = { label = "by-hand"; }; }"#);
    let by_hand = f.systems()["host1"].clone();
    f.lab.install_system("host1", &by_hand).unwrap();
    let b = before(&f, "host1");
    assert_eq!(b.current, by_hand);
    f.set_hosts(r#"{ host1 = { label = "v3"; failingUnits = [ "broken" ]; }; }"#);
    let run = f.deploy(&[]);
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_untouched(&f, "host1", &b);
}

#[test]
fn four_hosts_at_once_where_one_breaks_its_network() {
    let f = Fleet::up("d15", 4);
    let b3 = before(&f, "host3");
    let a4 = f.address("host4");
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v2"; }}; host2 = {{ label = "v2"; }};
             host3 = {{ label = "v2"; address = "{a4}"; }}; host4 = {{ label = "v2"; }}; }}"#
    ));
    let systems = f.systems();
    let run = f.deploy(&["--lease", "8"]);
    assert_eq!(run.code, 1, "{run}");
    for h in ["host1", "host2", "host4"] {
        assert_eq!(run.outcome(h), "confirmed", "{run}");
        assert_eq!(f.current(h), systems[h]);
        assert_eq!(f.boot_default(h), systems[h]);
    }
    assert_eq!(run.outcome("host3"), "rolled-back", "{run}");
    assert_untouched(&f, "host3", &b3);
    // In parallel: every host had started before any host had finished.
    let first_outcome = run
        .events
        .iter()
        .position(|e| e["event"] == "outcome")
        .unwrap();
    for h in ["host1", "host2", "host3", "host4"] {
        let started = run
            .events
            .iter()
            .position(|e| is_phase(e, h, "preflight"))
            .unwrap_or_else(|| panic!("{h} never started: {run}"));
        assert!(
            started < first_outcome,
            "{h} started after another host ended"
        );
    }
}

/// The deploy's preflight can be a build (and a copy) old by the time it
/// arms: arming on the host itself refuses when the host no longer runs the
/// system the guard would return to, and leaves everything as it was.
#[test]
fn arming_refuses_a_host_whose_system_changed_since_the_preflight() {
    use tether_core::model::StorePath;
    use tether_core::model::{DeployId, Goal, Token};
    use tether_core::remote::{ArmAndActivate, GuardSpec, Operation};
    let f = Fleet::up("d16", 1);
    let b = before(&f, "host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let other = f.systems()["host1"].clone();
    let spec = GuardSpec {
        deploy_id: DeployId::new("20261121T000000", "c0ffee").unwrap(),
        token: Token::new("0123456789abcdef0123456789abcdef").unwrap(),
        // What a stale preflight would have seen: not what the host runs.
        current_system: StorePath::new(&other).unwrap(),
        old_system: StorePath::new(&other).unwrap(),
        new_system: StorePath::new(&other).unwrap(),
        lease: Duration::from_secs(15),
        rollback_limit: Duration::from_secs(300),
        deployer: "test@lab".into(),
        state: None,
    };
    let op = ArmAndActivate {
        spec,
        goal: Goal::Test,
    };
    let out = f.console("host1", &op.script());
    assert!(out.contains("arm=changed"), "{out}");
    assert!(out.contains(&format!("current={}", b.current)), "{out}");
    assert_eq!(
        f.console(
            "host1",
            "test -e /run/tether/lock && echo held; systemctl is-active tether-guard-20261121T000000-c0ffee; true"
        ),
        "inactive",
        "no lock taken, no guard started"
    );
    assert_untouched(&f, "host1", &b);
}
