//! Fleet rollouts against real lab hosts (issue: "Fleet rollouts and the
//! operator's view"): canaries, batches, maxFailures, revertOnFailure, the
//! parallel bound, the event stream, plain output and Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{is_output, Fleet, LiveRun};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// host1..host8 get a new label; `broken` also takes host1's address.
fn eight_with_one_broken(f: &Fleet, broken: &str) {
    let a1 = f.address("host1");
    let mut nix = String::from("{");
    for i in 1..=8 {
        let h = format!("host{i}");
        if h == broken {
            nix.push_str(&format!(r#" {h} = {{ label = "v2"; address = "{a1}"; }};"#));
        } else {
            nix.push_str(&format!(r#" {h} = {{ label = "v2"; }};"#));
        }
    }
    nix.push_str(" }");
    f.set_hosts(&nix);
}

fn systems_now(f: &Fleet) -> BTreeMap<String, String> {
    (1..=8)
        .map(|i| format!("host{i}"))
        .map(|h| (h.clone(), f.current(&h)))
        .collect()
}

#[test]
fn canary_then_batches_stop_at_the_first_failure_and_skip_the_rest() {
    let f = Fleet::up("r01", 8);
    let before = systems_now(&f);
    eight_with_one_broken(&f, "host6");
    let new = f.systems();
    let run = f.deploy(&[
        "--canary",
        "1",
        "--batch",
        "3",
        "--max-failures",
        "0",
        "--lease",
        "6",
    ]);
    assert_eq!(run.code, 1, "{run}");
    for h in ["host1", "host2", "host3", "host4"] {
        assert_eq!(run.outcome(h), "confirmed", "{run}");
        assert_eq!(f.current(h), new[h]);
    }
    assert_eq!(run.outcome("host6"), "rolled-back", "{run}");
    assert_eq!(f.current("host6"), before["host6"]);
    // host5 and host7 were in flight with host6 and finish normally.
    for h in ["host5", "host7"] {
        assert_eq!(run.outcome(h), "confirmed", "{run}");
    }
    // The third batch never started: skipped and untouched.
    assert_eq!(run.outcome("host8"), "skipped", "{run}");
    assert_eq!(run.cause("host8")["kind"], "too-many-failures", "{run}");
    assert_eq!(f.current("host8"), before["host8"]);
    assert!(
        !f.has_path("host8", &new["host8"]),
        "nothing may be copied to a skipped host"
    );
    assert!(run.phases("host8").is_empty());
    // The canary finished before any other host started.
    let first_other = run
        .events
        .iter()
        .position(|e| e["host"] != "host1" && e["event"] == "phase")
        .unwrap();
    let canary_done = run
        .events
        .iter()
        .position(|e| e["host"] == "host1" && e["event"] == "outcome")
        .unwrap();
    assert!(canary_done < first_other);
}

#[test]
fn revert_on_failure_returns_every_host_of_the_run_to_its_old_system() {
    let f = Fleet::up("r02", 8);
    let before = systems_now(&f);
    eight_with_one_broken(&f, "host6");
    let run = f.deploy(&[
        "--canary",
        "1",
        "--batch",
        "3",
        "--max-failures",
        "0",
        "--revert-on-failure",
        "--lease",
        "6",
    ]);
    assert_eq!(run.code, 1, "{run}\n{:#}", run.summary);
    assert_eq!(systems_now(&f), before, "every host ends on its old system");
    for i in 1..=8 {
        let h = format!("host{i}");
        let expected = if h == "host8" {
            "skipped"
        } else {
            "rolled-back"
        };
        assert_eq!(run.outcome(&h), expected, "{run}");
        assert_eq!(f.boot_default(&h), before[&h], "{h}: boot default");
    }
    assert_eq!(run.cause("host1")["kind"], "reverted", "{run}");
}

#[test]
fn parallel_bounds_the_hosts_in_flight_and_the_stream_agrees_with_the_hosts() {
    let f = Fleet::up("r03", 8);
    // A slower activation makes overlap likely, so the bound is exercised.
    let mut nix = String::from("{");
    for i in 1..=8 {
        nix.push_str(&format!(
            r#" host{i} = {{ label = "v2"; extraActivation = "sleep 1"; }};"#
        ));
    }
    nix.push_str(" }");
    f.set_hosts(&nix);
    let new = f.systems();
    let run = f.deploy(&["--parallel", "4"]);
    assert_eq!(run.code, 0, "{run}");
    // Every line of the stream was JSON (parse_run checks), in time order.
    let mut in_flight = BTreeSet::new();
    let mut most = 0;
    let mut last_ms = 0;
    for e in &run.events {
        if e["event"] == "summary" {
            continue;
        }
        let ms = e["elapsedMs"].as_u64().unwrap();
        assert!(ms >= last_ms, "events out of order");
        last_ms = ms;
        let host = e["host"].as_str().unwrap().to_string();
        if e["event"] == "outcome" {
            in_flight.remove(&host);
        } else {
            in_flight.insert(host);
            most = most.max(in_flight.len());
        }
    }
    assert!(most <= 4, "{most} hosts were in flight at once");
    assert!(most >= 2, "hosts should overlap (saw at most {most})");
    // The summary agrees with each host's real end state.
    let hosts = run.summary["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 8);
    for h in hosts {
        let name = h["host"].as_str().unwrap();
        assert_eq!(h["outcome"], "confirmed");
        assert_eq!(h["newSystem"].as_str().unwrap(), new[name]);
        assert_eq!(f.current(name), new[name]);
        assert_eq!(f.generation(name), h["generation"].as_u64().unwrap() as u32);
    }
    assert_eq!(run.summary["exitCode"], Value::from(0));
}

#[test]
fn plain_output_has_no_control_characters() {
    let f = Fleet::up("r04", 2);
    f.set_hosts(
        r#"{ host1 = { label = "v2"; }; host2 = { label = "v2"; failingUnits = [ "x" ]; }; }"#,
    );
    let out = f.tether(&["deploy"]);
    assert_eq!(out.status.code(), Some(1));
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        let bad: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
            .collect();
        assert!(
            bad.is_empty(),
            "{name} has control characters {bad:?}:\n{text}"
        );
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("host1") && table.contains("confirmed"),
        "{table}"
    );
    assert!(
        table.contains("host2") && table.contains("rolled-back"),
        "{table}"
    );
    assert!(table.contains("1 -> 2"), "old -> new generation: {table}");
}

#[test]
fn the_first_ctrl_c_lets_hosts_in_flight_finish_and_starts_no_more() {
    let f = Fleet::up("r05", 4);
    f.set_hosts(
        r#"{ host1 = { label = "v2"; extraActivation = "echo TEST-CANARY; sleep 3"; };
             host2 = { label = "v2"; }; host3 = { label = "v2"; }; host4 = { label = "v2"; }; }"#,
    );
    let new = f.systems();
    let before: BTreeMap<String, String> = (2..=4)
        .map(|i| format!("host{i}"))
        .map(|h| (h.clone(), f.current(&h)))
        .collect();
    let mut live = LiveRun::start(f.spawn_deploy(&["--canary", "1"]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_output(v, "host1", "TEST-CANARY")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(live.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let run = live.finish();
    assert_eq!(run.code, 1, "{run}");
    // The canary in flight finished its safe switch.
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
    assert_eq!(f.current("host1"), new["host1"]);
    for (h, old) in &before {
        assert_eq!(run.outcome(h), "skipped", "{run}");
        assert_eq!(run.cause(h)["kind"], "interrupted", "{run}");
        assert_eq!(&f.current(h), old);
    }
    // No trial left armed anywhere (a finished guard exits at its next poll).
    for i in 1..=4 {
        let h = format!("host{i}");
        common::wait_until(
            Duration::from_secs(3),
            &format!("{h}'s guards to exit"),
            || {
                f.console(
                    &h,
                    "systemctl list-units --no-legend 'tether-guard-*' | wc -l",
                ) == "0"
            },
        );
    }
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
}
