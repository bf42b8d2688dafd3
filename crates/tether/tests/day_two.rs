//! Day-two operations against real lab hosts (issue: "Day-two operations"):
//! rollback on demand through the safe switch, the deploy journal and
//! `history`, and `deploy --reboot`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{is_output, parse_run, Fleet, LiveRun, Run};
use serde_json::Value;
use std::time::{Duration, Instant};

fn run_json(f: &Fleet, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = f.tether(args);
    parse_run(out, started.elapsed())
}

fn history(f: &Fleet) -> Vec<Value> {
    let out = f.tether(&["history", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn rollback_returns_to_the_previous_generation_and_forward_again() {
    let f = Fleet::up("y01", 1);
    f.set_hosts(r#"{ host1 = { label = "A"; }; }"#);
    let a = f.systems()["host1"].clone();
    f.deploy(&[]).expect_outcome("host1", "confirmed");
    f.set_hosts(r#"{ host1 = { label = "B"; }; }"#);
    let b = f.systems()["host1"].clone();
    f.deploy(&[]).expect_outcome("host1", "confirmed");
    let gen_b = f.generation("host1");

    let back = run_json(&f, &["rollback", "--json"]);
    assert_eq!(back.code, 0, "{back}");
    assert_eq!(back.outcome("host1"), "confirmed", "{back}");
    assert_eq!(f.current("host1"), a);
    assert_eq!(f.boot_default("host1"), a);
    assert_eq!(
        f.generation("host1"),
        gen_b - 1,
        "the profile goes back a generation"
    );

    let forward = run_json(&f, &["rollback", "--json", "--to", &gen_b.to_string()]);
    assert_eq!(forward.code, 0, "{forward}\n{:#}", forward.summary);
    assert_eq!(f.current("host1"), b);
    assert_eq!(f.boot_default("host1"), b);
    assert_eq!(f.generation("host1"), gen_b);

    let missing = run_json(&f, &["rollback", "--json", "--to", "99"]);
    assert_eq!(missing.code, 1, "{missing}");
    assert_eq!(missing.outcome("host1"), "refused", "{missing}");
    let cause = missing.cause("host1");
    assert_eq!(
        (&cause["kind"], &cause["problem"], &cause["wanted"]),
        (&"no-generation".into(), &"missing".into(), &99.into()),
        "{missing}"
    );
    assert!(
        cause["existing"]
            .as_array()
            .unwrap()
            .contains(&Value::from(gen_b)),
        "names the generations that exist: {missing}"
    );
    assert_eq!(f.current("host1"), b);
}

#[test]
fn a_rollback_to_a_generation_that_breaks_the_network_rolls_itself_back() {
    let f = Fleet::up("y02", 2);
    // An earlier, broken generation: set as profile and boot default only
    // (goal boot), never activated, then a good system deployed on top.
    let other = f.address("host2");
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "broken"; address = "{other}"; }}; }}"#
    ));
    let staged = f.deploy(&["--on", "host1", "--goal", "boot"]);
    assert_eq!(staged.outcome("host1"), "boot-default-set", "{staged}");
    f.set_hosts(r#"{ host1 = { label = "good"; }; }"#);
    let good = f.systems()["host1"].clone();
    f.deploy(&["--on", "host1"])
        .expect_outcome("host1", "confirmed");
    let generation = f.generation("host1");

    let run = run_json(&f, &["rollback", "--json", "--on", "host1", "--lease", "6"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(f.current("host1"), good);
    assert_eq!(f.boot_default("host1"), good);
    assert_eq!(f.generation("host1"), generation);
    assert!(f.reachable("host1"));
}

#[test]
fn history_lists_confirmed_rolled_back_and_refused_runs() {
    let f = Fleet::up("y03", 2);
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    f.deploy(&["--on", "host1"]).expect_code(0);
    f.set_hosts(r#"{ host1 = { label = "v3"; failingUnits = [ "x" ]; }; }"#);
    f.deploy(&["--on", "host1"])
        .expect_outcome("host1", "rolled-back");
    let wrong = f.host_key("host2");
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "v4"; inventory.hostKey = "{wrong}"; }}; }}"#
    ));
    let refused = f.deploy(&["--on", "host1"]);
    assert_eq!(refused.outcome("host1"), "refused", "{refused}");

    let runs = history(&f);
    assert_eq!(runs.len(), 3, "{runs:#?}");
    let outcomes: Vec<&str> = runs
        .iter()
        .map(|r| r["hosts"][0]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["refused", "rolled-back", "confirmed"],
        "newest first"
    );
    for r in &runs {
        assert_eq!(r["status"], "finished");
        assert_eq!(r["command"], "deploy");
        assert_eq!(r["selection"], "host1");
    }
    assert_eq!(runs[2]["exitCode"], 0);
    assert_eq!(runs[1]["exitCode"], 1);
    // One run in detail, with its phases as events.
    let id = runs[1]["id"].as_str().unwrap();
    let out = f.tether(&["history", id, "--json"]);
    assert!(out.status.success());
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The journal kept the reason, and the typed cause with the outcome.
    assert!(
        detail["run"]["hosts"][0]["reason"].is_string(),
        "{detail:#}"
    );
    let outcome = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "outcome")
        .unwrap();
    assert_eq!(
        outcome["data"]["cause"]["why"]["exitCode"], 4,
        "{outcome:#}"
    );
    let phases: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "phase")
        .map(|e| e["data"]["phase"].as_str().unwrap())
        .collect();
    assert!(
        phases.contains(&"activating") && phases.contains(&"rolling-back"),
        "{phases:?}"
    );
    // Plain output too.
    let table = f.tether(&["history"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("host1=refused") && text.contains("host1=confirmed"),
        "{text}"
    );
}

#[test]
fn the_journal_survives_a_deployer_killed_mid_run() {
    let f = Fleet::up("y04", 1);
    f.set_hosts(r#"{ host1 = { label = "v2"; extraActivation = "echo TEST-MID; sleep 2"; }; }"#);
    let mut live = LiveRun::start(f.spawn_deploy(&["--lease", "5"]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-MID")
    });
    live.kill();
    let runs = history(&f);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "interrupted");
    assert!(runs[0]["hosts"][0]["outcome"].is_null());
    let db = rusqlite::Connection::open(f.state_dir().join("journal.sqlite")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // The next deploy works and is recorded normally.
    f.set_hosts(r#"{ host1 = { label = "v3"; }; }"#);
    common::wait_until(
        Duration::from_secs(20),
        "the abandoned trial to end",
        || {
            f.console(
                "host1",
                "test -d /run/tether/lock && echo busy || echo free",
            ) == "free"
        },
    );
    f.deploy(&[]).expect_code(0);
    let runs = history(&f);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["status"], "finished");
}

#[test]
fn deploy_with_reboot_ends_confirmed_on_the_new_booted_system() {
    let f = Fleet::up("y05", 1);
    let generation = f.generation("host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; kernelVersion = "6.6.0-fixture"; }; }"#);
    let new = f.systems()["host1"].clone();
    let run = f.deploy(&["--reboot"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert!(run.phases("host1").contains(&"rebooting".to_string()));
    assert_booted_cleanly(&f, "host1", &new, generation + 1);
}

/// The host booted `system`, runs it, boots it by default at `generation`,
/// answers at its own address, and has no trial or lock left over.
fn assert_booted_cleanly(f: &Fleet, host: &str, system: &str, generation: u32) {
    assert_eq!(f.console(host, "readlink -f /run/booted-system"), system);
    assert_eq!(f.current(host), system);
    assert_eq!(f.boot_default(host), system);
    assert_eq!(f.generation(host), generation);
    assert!(f.reachable(host), "{host}: not reachable");
    assert_eq!(
        f.console(
            host,
            "systemctl list-units --all --no-legend 'tether-guard-*' 'tether-activate-*' | wc -l; \
             ls /run/tether/deploys 2>/dev/null | wc -l; test -e /run/tether/lock && echo lock; true"
        ),
        "0\n0",
        "{host}: no guard, trial or lock may be left"
    );
}

#[test]
fn a_host_that_never_comes_back_from_its_reboot_is_unknown_within_the_timeout() {
    let f = Fleet::up("y06", 1);
    let generation = f.generation("host1");
    f.set_hosts(r#"{ host1 = { label = "v2"; }; }"#);
    let new = f.systems()["host1"].clone();
    f.lab.hold("host1").unwrap();
    let run = f.deploy(&["--reboot", "--reboot-timeout", "8"]);
    assert_eq!(run.code, 3, "{run}");
    assert_eq!(run.outcome("host1"), "unknown", "{run}");
    let cause = run.cause("host1");
    assert_eq!(cause["kind"], "not-back-from-reboot", "{run}");
    assert_eq!(cause["seconds"], 8, "{run}");
    assert!(cause["lastSeen"].is_string(), "{run}");
    // Within the timeout, on tether's own clock: from the reboot to the
    // verdict, 8 s plus at most one last 10 s attempt to reach the host.
    let at = |pred: &dyn Fn(&Value) -> bool| {
        run.events
            .iter()
            .find(|e| pred(e))
            .and_then(|e| e["elapsedMs"].as_u64())
            .unwrap_or_else(|| panic!("event missing: {run}"))
    };
    let rebooting = at(&|e| common::is_phase(e, "host1", "rebooting"));
    let verdict = at(&|e| e["host"] == "host1" && e["event"] == "outcome");
    assert!(
        verdict - rebooting <= 8_000 + 10_000 + 2_000,
        "{} ms from the reboot to the verdict",
        verdict - rebooting
    );
    // Once it does come back, it is on the system that was persisted
    // before the reboot, with nothing left over.
    f.lab.release("host1").unwrap();
    f.lab.wait_ready("host1", Duration::from_secs(60)).unwrap();
    assert_booted_cleanly(&f, "host1", &new, generation + 1);
}
