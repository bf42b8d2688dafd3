//! `tether status` against real lab hosts (issue 6, items 2 and 3): every
//! condition a fleet can be in shows in the table and in `--json`, the two
//! agree, and a trial its guard rolled back while the deployer was dead is
//! reconciled into the deployer's journal by the next `status`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{is_output, wait_until, Fleet, LiveRun};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;
use tether::adapters::journal::Journal;

/// `tether status --json`, parsed: host name → its object.
fn status_json(f: &Fleet) -> (i32, BTreeMap<String, Value>, String) {
    let out = f.tether(&["status", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON array ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let by_host = rows
        .into_iter()
        .map(|r| (r["host"].as_str().unwrap().to_string(), r))
        .collect();
    (out.status.code().unwrap_or(-1), by_host, stderr)
}

/// The human table, cut at the header's column starts: host → column → cell.
fn status_table(out: &Output) -> BTreeMap<String, BTreeMap<String, String>> {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().expect("a header line");
    let mut starts: Vec<(usize, &str)> = Vec::new();
    let mut at = 0;
    for name in header.split_whitespace() {
        let i = at + header[at..].find(name).unwrap();
        starts.push((i, name));
        at = i + name.len();
    }
    let mut rows = BTreeMap::new();
    for line in lines {
        // Notes after the table are `host: kind: message`.
        if line
            .split_whitespace()
            .next()
            .is_some_and(|w| w.ends_with(':'))
        {
            continue;
        }
        let mut cells = BTreeMap::new();
        for (k, (start, name)) in starts.iter().enumerate() {
            let end = starts
                .get(k + 1)
                .map_or(line.len(), |s| s.0)
                .min(line.len());
            let cell = line.get(*start..end).unwrap_or("").trim().to_string();
            cells.insert(name.to_string(), cell);
        }
        rows.insert(cells["HOST"].clone(), cells);
    }
    rows
}

fn num_cell(v: &Value) -> String {
    v.as_u64().map_or("-".into(), |n| n.to_string())
}

/// Every table cell says what the JSON says.
fn assert_table_agrees(table: &BTreeMap<String, String>, json: &Value) {
    let host = json["host"].as_str().unwrap();
    let reachable = json["reachable"].as_bool().unwrap();
    assert_eq!(
        table["REACHABLE"],
        if reachable {
            "yes".to_string()
        } else {
            format!("no ({})", json["error"]["kind"].as_str().unwrap())
        },
        "{host}"
    );
    assert_eq!(
        table["IDENTITY"],
        json["identity"].as_str().unwrap(),
        "{host}"
    );
    assert_eq!(table["GEN"], num_cell(&json["currentGeneration"]), "{host}");
    assert_eq!(
        table["BOOT-GEN"],
        num_cell(&json["bootDefaultGeneration"]),
        "{host}"
    );
    let reboot = match json["rebootNeeded"].as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    assert_eq!(table["REBOOT"], reboot, "{host}");
    let failed: Vec<&str> = json["failedUnits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let failed = if failed.is_empty() {
        "-".to_string()
    } else {
        failed.join(",")
    };
    assert_eq!(table["FAILED-UNITS"], failed, "{host}");
    for g in json["leftoverGuards"].as_array().unwrap() {
        let id = g["deployId"].as_str().unwrap();
        assert!(
            table["GUARDS"].contains(&format!("leftover {id}")),
            "{host}: {table:?}"
        );
    }
    for g in json["armedGuards"].as_array().unwrap() {
        let id = g.as_str().unwrap();
        assert!(
            table["GUARDS"].contains(&format!("armed {id}")),
            "{host}: {table:?}"
        );
    }
    if let Some(lock) = json["staleLock"].as_str() {
        assert!(
            table["GUARDS"].contains(&format!("stale-lock {lock}")),
            "{host}"
        );
    }
    match json["lastDeploy"].as_object() {
        None => assert_eq!(table["LAST-DEPLOY"], "-", "{host}"),
        Some(d) => assert!(
            table["LAST-DEPLOY"].starts_with(&format!(
                "{} {}",
                d["outcome"].as_str().unwrap(),
                d["deployId"].as_str().unwrap()
            )),
            "{host}: {table:?}"
        ),
    }
}

/// Starts a deploy whose activation sleeps, and SIGKILLs the deployer once
/// the activation runs: the trial is armed and nobody will confirm it.
fn kill_deployer_mid_trial(f: &Fleet, host: &str, lease: &str) {
    let mut live = LiveRun::start(f.spawn_deploy(&["--on", host, "--lease", lease]));
    live.wait_for(Duration::from_secs(180), |v| {
        is_output(v, host, "STATUS-TRIAL")
    });
    live.kill();
}

/// The deploy id of the newest line of the host's own journal.
fn newest_deploy_id(f: &Fleet, host: &str) -> String {
    f.console(host, "tail -n 1 /var/lib/tether/journal | cut -f2")
}

#[test]
fn status_shows_a_cut_host_a_failed_unit_a_leftover_guard_and_a_pending_reboot() {
    let f = Fleet::up("s01", 4);
    f.set_hosts(
        r#"{
  host2 = { failingUnits = [ "broken" ]; };
  host3 = { label = "v2"; extraActivation = "echo STATUS-TRIAL; sleep 30"; };
  host4 = { kernelVersion = "6.2.0-fixture"; };
}"#,
    );
    let systems = f.systems();
    // host2: its switch starts a unit that fails (switch exits 4, which
    // install_system reports as an error; the unit's failure is the point).
    let _ = f.lab.install_system("host2", &systems["host2"]);
    assert_eq!(
        f.console(
            "host2",
            "systemctl is-failed fixture-broken.service || true"
        ),
        "failed"
    );
    // host4: a new kernel, switched to but not booted. A reboot first, so
    // that /run/booted-system exists: the lab's provisioning switches to the
    // base system without booting it.
    f.lab.reboot("host4").unwrap();
    f.lab.install_system("host4", &systems["host4"]).unwrap();
    // host3: a real trial whose deployer was killed and whose guard was
    // stopped by hand (a killed guard is restarted by systemd, and only the
    // deployer would start a stopped one again): its state directory still
    // says armed, its lock is held, and no guard is left to finish it.
    kill_deployer_mid_trial(&f, "host3", "60");
    let trial = newest_deploy_id(&f, "host3");
    f.console("host3", "systemctl stop 'tether-guard-*'; true");
    wait_until(Duration::from_secs(10), "host3's guard to be gone", || {
        f.console(
            "host3",
            &format!("systemctl is-active tether-guard-{trial} || true"),
        ) != "active"
    });
    // host1: nothing reaches it.
    f.lab.cut("host1").unwrap();

    let (code, json, stderr) = status_json(&f);
    assert_eq!(code, 1, "an unreachable host fails status: {stderr}");
    assert_eq!(json.len(), 4, "no host is dropped: {json:?}");

    let h1 = &json["host1"];
    assert_eq!(h1["reachable"], false);
    assert_eq!(h1["identity"], "unverified");
    // A cut link drops the host route too, so ssh fails at once ("Invalid
    // argument" / "No route to host") rather than timing out.
    let kind = h1["error"]["kind"].as_str().unwrap().to_string();
    assert!(["unreachable", "timeout"].contains(&kind.as_str()), "{h1}");
    assert!(!h1["error"]["message"].as_str().unwrap().is_empty(), "{h1}");

    let h2 = &json["host2"];
    assert_eq!(h2["reachable"], true);
    assert_eq!(h2["identity"], "ok");
    assert!(
        h2["failedUnits"]
            .as_array()
            .unwrap()
            .contains(&Value::from("fixture-broken.service")),
        "{h2}"
    );
    assert_eq!(h2["currentSystem"], systems["host2"].as_str());
    assert_eq!(h2["rebootNeeded"], false);

    let h3 = &json["host3"];
    assert_eq!(h3["identity"], "ok");
    assert_eq!(h3["leftoverGuards"][0]["deployId"], trial.as_str(), "{h3}");
    assert_eq!(h3["leftoverGuards"][0]["state"], "armed", "{h3}");
    assert_eq!(h3["armedGuards"].as_array().unwrap().len(), 0, "{h3}");
    assert_eq!(h3["staleLock"], trial.as_str(), "{h3}");
    assert_eq!(h3["lastDeploy"]["deployId"], trial.as_str(), "{h3}");
    assert_eq!(h3["lastDeploy"]["outcome"], "unfinished", "{h3}");
    assert!(
        h3["lastDeploy"]["by"].as_str().unwrap_or("").contains('@'),
        "the deployer is named: {h3}"
    );
    // The trial never became the boot default.
    assert_ne!(h3["bootDefaultSystem"], systems["host3"].as_str());
    assert_eq!(h3["rebootNeeded"], false);

    let h4 = &json["host4"];
    assert_eq!(h4["rebootNeeded"], true, "{h4}");
    assert_eq!(h4["currentSystem"], systems["host4"].as_str());
    assert_eq!(h4["bootDefaultSystem"], systems["host4"].as_str());
    assert_ne!(h4["bootedSystem"], h4["currentSystem"]);
    assert_eq!(h4["currentGeneration"], h4["bootDefaultGeneration"]);
    for h in ["host2", "host4"] {
        assert_eq!(
            json[h]["leftoverGuards"].as_array().unwrap().len(),
            0,
            "{h}"
        );
        assert_eq!(json[h]["staleLock"], Value::Null, "{h}");
        assert_eq!(
            json[h]["failedUnits"].as_array().unwrap().is_empty(),
            h == "host4"
        );
    }

    let out = f.tether(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let table = status_table(&out);
    assert_eq!(
        table.keys().collect::<Vec<_>>(),
        ["host1", "host2", "host3", "host4"],
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for (host, row) in &table {
        assert_table_agrees(row, &json[host]);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // Shown when the test fails (and with --nocapture).
    println!("{text}");
    assert!(
        text.contains(&format!("host1: {kind}: ssh:")),
        "the reason is shown: {text}"
    );

    // Once host1 is back, every host answers: exit 0 even though hosts have
    // failed units, a leftover guard and a pending reboot (those are data).
    f.lab.heal("host1").unwrap();
    let (code, json, stderr) = status_json(&f);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json["host1"]["reachable"], true);
    assert_eq!(json["host1"]["identity"], "ok");

    // A host that answers with a key other than the pinned one is not who
    // the inventory says: identity mismatch, exit 1.
    f.set_hosts(&format!(
        r#"{{ host2 = {{ inventory = {{ hostKey = "{}"; }}; }}; }}"#,
        f.host_key("host1")
    ));
    let (code, json, stderr) = status_json(&f);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(json["host2"]["identity"], "mismatch", "{}", json["host2"]);
    assert_eq!(json["host2"]["error"]["kind"], "host-key");
    assert_eq!(json["host1"]["identity"], "ok");
}

#[test]
fn a_guard_rollback_while_the_deployer_was_dead_is_reconciled_by_status() {
    let f = Fleet::up("s02", 1);
    let old = f.current("host1");
    f.set_hosts(
        r#"{ host1 = { label = "v2"; extraActivation = "echo STATUS-TRIAL; sleep 30"; }; }"#,
    );
    kill_deployer_mid_trial(&f, "host1", "5");
    let id = newest_deploy_id(&f, "host1");
    wait_until(
        Duration::from_secs(60),
        "host1's guard to roll back",
        || {
            f.console("host1", "cat /var/lib/tether/journal")
                .lines()
                .any(|l| l.contains(&id) && l.contains("\trolled-back\t"))
        },
    );
    assert_eq!(f.current("host1"), old);

    let journal = Journal::open(&f.state_dir().join("journal.sqlite")).unwrap();
    // The killed deploy recorded its run when it started, and no end.
    let (recorded, _) = journal
        .run(&id)
        .unwrap()
        .unwrap_or_else(|| panic!("deploy did not record run {id} in the journal"));
    assert_eq!(recorded.command, "deploy");
    let before = &recorded.hosts[0];
    assert_eq!(
        before.outcome, None,
        "the killed deployer recorded no outcome"
    );

    let (code, json, stderr) = status_json(&f);
    assert_eq!(code, 0, "{stderr}");
    let h = &json["host1"];
    assert_eq!(h["lastDeploy"]["deployId"], id.as_str(), "{h}");
    assert_eq!(h["lastDeploy"]["outcome"], "rolled-back", "{h}");
    assert_eq!(h["journalReconciled"], 1, "{h}");

    let runs = journal.runs(10, Some(&["host1".to_string()])).unwrap();
    let run = runs.iter().find(|r| r.id == id).expect("the run");
    let host = &run.hosts[0];
    assert_eq!(host.outcome.as_deref(), Some("rolled-back"), "{host:?}");
    assert!(host.reconciled, "{host:?}");
    assert!(
        host.reason
            .as_deref()
            .unwrap_or("")
            .contains("lease expired"),
        "{host:?}"
    );
    assert_eq!(host.old_system.as_deref(), Some(old.as_str()));

    // Reconciling is idempotent: a second status learns nothing new.
    let (_, json, _) = status_json(&f);
    assert_eq!(json["host1"]["journalReconciled"], 0);
}
