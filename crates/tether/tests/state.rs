//! State snapshots against real lab hosts (issue 18): every host of these
//! labs has a real btrfs filesystem (loop device, subvolume
//! `/srv/state/db`) and a zfs-fuse pool (`tank/db`, `tank/db/log`); the
//! fixture's "db" service keeps a schema version and records in its state
//! directory, so each scenario can tell old data from migrated data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{entry, is_phase, Fleet, LiveRun};
use serde_json::Value;
use std::time::Duration;

/// The db service: `schema`, and whether its migration breaks the data.
fn db(schema: u32, breaks: bool, data_dir: &str) -> String {
    format!(
        r#"services = [ {{ name = "db"; kind = "db"; port = 8080; schema = {schema}; migrationBreaks = {breaks}; dataDir = "{data_dir}"; }} ];"#
    )
}

/// The inventory's state and checks for host1.
fn state(btrfs: &[&str], zfs: &[&str], restore: bool, keep: u32) -> String {
    let list = |items: &[&str]| {
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        r#"state = {{ btrfs = [ {} ]; zfs = [ {} ]; units = [ "fixture-db.service" ]; restoreOnRollback = {restore}; keep = {keep}; }};
           checkTimeout = 4; checks.db = {{ type = "http"; port = 8080; }};"#,
        list(btrfs),
        list(zfs)
    )
}

fn host1(f: &Fleet, label: &str, system: &str, inventory: &str) {
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "{label}"; {system} inventory = {{ {inventory} }}; }}; }}"#
    ));
}

/// Writes a record through the db service (as an application would).
fn record(f: &Fleet, text: &str) {
    let out = f.console(
        "host1",
        &format!(
            "python3 -c 'import urllib.request as u; print(u.urlopen(u.Request(\"http://127.0.0.1:8080/\", data=b\"{text}\")).read().decode())'"
        ),
    );
    assert_eq!(out, "recorded", "writing a record");
}

fn schema(f: &Fleet, dir: &str) -> String {
    f.console("host1", &format!("cat {dir}/schema"))
}

fn records(f: &Fleet, dir: &str) -> String {
    f.console("host1", &format!("cat {dir}/records"))
}

/// What the db service answers now (`200 schema 1, …` or `500 …`).
fn db_answer(f: &Fleet) -> String {
    f.console(
        "host1",
        r#"python3 -c '
import urllib.request as u, urllib.error as e
try:
    r = u.urlopen("http://127.0.0.1:8080/"); print(r.status, r.read().decode().strip())
except e.HTTPError as x:
    print(x.code, x.read().decode().strip())'"#,
    )
}

/// Every tether snapshot of the host, from `tether snapshots --json`.
fn snapshots(f: &Fleet) -> Vec<Value> {
    let out = f.tether(&["snapshots", "--json", "--on", "host1"]);
    assert!(
        out.status.success(),
        "snapshots: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["snapshots"].as_array().cloned().unwrap_or_default()
}

/// Every ZFS snapshot on the host (tether's and anybody's).
fn zfs_snapshots(f: &Fleet) -> Vec<String> {
    f.console("host1", "zfs list -H -t snapshot -o name")
        .lines()
        .map(str::to_string)
        .collect()
}

const BTRFS_DATA: &str = "/srv/state/db/data";
const ZFS_DATA: &str = "/tank/db/data";

/// Deploys the db at schema 1 (confirmed) and writes a record the test can
/// look for after a rollback.
fn base(f: &Fleet, data: &str, inventory: &str) -> String {
    host1(f, "v1", &db(1, false, data), inventory);
    f.deploy(&[])
        .expect_code(0)
        .expect_outcome("host1", "confirmed");
    record(f, "order-1 written before the upgrade");
    f.settle("host1");
    f.current("host1")
}

#[test]
fn every_deploy_snapshots_each_volume_and_a_confirmed_one_prunes_to_keep() {
    let f = Fleet::up_with_state("s01", 1);
    let inv = state(&["/srv/state/db"], &["tank/db"], false, 2);
    let mut ids = Vec::new();
    for label in ["v1", "v2", "v3"] {
        host1(&f, label, &db(1, false, BTRFS_DATA), &inv);
        let run = f.deploy(&[]);
        run.expect_code(0).expect_outcome("host1", "confirmed");
        let id = run.deploy_id();
        // One pre-deploy snapshot per declared volume, in the outcome.
        let taken = run.host("host1")["state"]["snapshots"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let locations: Vec<&str> = taken
            .iter()
            .map(|s| s["location"].as_str().unwrap())
            .collect();
        assert_eq!(
            locations,
            vec![
                format!("/srv/state/.tether-snapshots/db/{id}.pre-deploy"),
                format!("tank/db@tether-{id}-pre-deploy"),
            ],
            "{run}"
        );
        assert!(taken.iter().all(|s| s["kind"] == "pre-deploy"));
        // Taken before activation.
        let phases = run.phases("host1");
        let snap_at = run
            .events
            .iter()
            .position(|e| e["event"] == "state" && e["action"] == "snapshotted")
            .unwrap_or_else(|| panic!("no snapshotted event: {run}"));
        let armed_at = run
            .events
            .iter()
            .position(|e| is_phase(e, "host1", "arming"))
            .unwrap();
        assert!(snap_at < armed_at, "{phases:?}");
        // In the host's journal too.
        let journal = f.target_journal("host1");
        assert!(
            journal
                .iter()
                .any(|e| e.deploy_id == id && e.event == "snapshotted"),
            "{journal:#?}"
        );
        ids.push(id);
        f.settle("host1");
    }
    // keep = 2: the first deploy's snapshots are gone, on every volume and
    // ZFS child; the last two remain.
    let listed = snapshots(&f);
    let btrfs: Vec<String> = listed
        .iter()
        .filter(|s| s["fs"] == "btrfs")
        .map(|s| s["deployId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(btrfs, ids[1..].to_vec(), "{listed:#?}");
    let on_disk = f.console("host1", "ls /srv/state/.tether-snapshots/db");
    assert_eq!(
        on_disk,
        format!("{}.pre-deploy\n{}.pre-deploy", ids[1], ids[2])
    );
    let zfs = zfs_snapshots(&f);
    let mut expected = Vec::new();
    for ds in ["tank/db", "tank/db/log"] {
        for id in &ids[1..] {
            expected.push(format!("{ds}@tether-{id}-pre-deploy"));
        }
    }
    assert_eq!(zfs, expected);
    // Read-only, as a snapshot should be.
    assert_eq!(
        f.console(
            "host1",
            &format!(
                "btrfs property get -ts /srv/state/.tether-snapshots/db/{}.pre-deploy ro",
                ids[2]
            )
        ),
        "ro=true"
    );
    // The deployer's history shows the snapshots of a run.
    let out = f.tether(&["history", "--json", "--limit", "1"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = runs[0]["id"].as_str().unwrap().to_string();
    let out = f.tether(&["history", &run_id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("snapshotted") && text.contains(&format!("tank/db@tether-{}", ids[2])),
        "{text}"
    );
    // `snapshots prune --keep 1` by hand: only the newest deploy's remain,
    // on every volume and ZFS child; nothing of anybody else's is touched.
    f.console("host1", "zfs snapshot tank/db@mine");
    let out = f.tether(&["snapshots", "prune", "--on", "host1", "--keep", "1"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        f.console("host1", "ls /srv/state/.tether-snapshots/db"),
        format!("{}.pre-deploy", ids[2])
    );
    assert_eq!(
        zfs_snapshots(&f),
        vec![
            format!("tank/db@tether-{}-pre-deploy", ids[2]),
            "tank/db@mine".to_string(),
            format!("tank/db/log@tether-{}-pre-deploy", ids[2]),
        ]
    );
    // plan names what a deploy would snapshot.
    host1(&f, "v4", &db(1, false, BTRFS_DATA), &inv);
    let out = f.tether(&["plan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("snapshots before activation: btrfs /srv/state/db, zfs tank/db"),
        "{text}"
    );
}

#[test]
fn a_broken_migration_rolls_back_the_system_and_restores_the_old_data() {
    let f = Fleet::up_with_state("s02", 1);
    let inv = state(&["/srv/state/db"], &[], true, 5);
    let old = base(&f, BTRFS_DATA, &inv);
    host1(&f, "v2", &db(2, true, BTRFS_DATA), &inv);
    let run = f.deploy(&[]);
    run.expect_code(1).expect_outcome("host1", "rolled-back");
    let id = run.deploy_id();
    assert_eq!(run.failed_checks("host1")[0]["check"], "db", "{run}");
    // The old system and the old data: schema 1, the record written before
    // the deploy, nothing the migration wrote.
    assert_eq!(f.current("host1"), old);
    assert_eq!(schema(&f, BTRFS_DATA), "1");
    let now = records(&f, BTRFS_DATA);
    assert!(now.contains("order-1 written before the upgrade"), "{now}");
    assert!(!now.contains("migrated"), "{now}");
    assert!(
        db_answer(&f).starts_with("200 schema 1"),
        "{}",
        db_answer(&f)
    );
    assert_eq!(
        f.console("host1", "systemctl is-active fixture-db.service"),
        "active"
    );
    // What the trial wrote is kept in the failed-state snapshot.
    let failed = f.console(
        "host1",
        &format!("ls -d /srv/state/.tether-snapshots/db/{id}.failed-state.*"),
    );
    assert_eq!(
        f.console("host1", &format!("cat {failed}/data/schema")),
        "2"
    );
    let kept = f.console("host1", &format!("cat {failed}/data/records"));
    assert!(kept.contains("migrated from schema 1 to 2"), "{kept}");
    assert!(f.has_path("host1", &format!("{failed}/data/broken")));
    // The outcome says so, and the host's journal restored before it
    // rolled back.
    let data = &run.host("host1")["state"]["data"];
    assert_eq!(data["data"], "restored", "{run}");
    assert_eq!(
        data["report"]["restored"][0]["failedState"],
        failed.as_str()
    );
    let journal = f.target_journal("host1");
    let events = f.deploy_events("host1", &id);
    let restored_at = events.iter().position(|e| *e == "data-restored");
    let rolled_back_at = events.iter().position(|e| *e == "rolled-back");
    assert!(
        restored_at.is_some() && restored_at < rolled_back_at,
        "{events:?}"
    );
    assert_eq!(entry(&journal, "data-restored").source, "guard");
}

#[test]
fn a_deployer_killed_during_the_trial_leaves_the_restore_to_the_guard() {
    let f = Fleet::up_with_state("s03", 1);
    let inv = state(&["/srv/state/db"], &["tank/db"], true, 5);
    let old = base(&f, BTRFS_DATA, &inv);
    host1(&f, "v2", &db(2, true, BTRFS_DATA), &inv);
    let mut live = LiveRun::start(f.spawn_deploy(&["--lease", "6"]));
    // The migration has run and the checks see it fail: kill the deployer.
    live.wait_for(Duration::from_secs(90), |v| {
        v["event"] == "check" && v["check"] == "db" && v["passed"] == false
    });
    live.kill();
    assert_eq!(schema(&f, BTRFS_DATA), "2", "the trial migrated the data");
    common::wait_until(Duration::from_secs(90), "the guard's rollback", || {
        f.target_journal("host1")
            .iter()
            .any(|e| e.event == "rolled-back")
    });
    assert_eq!(f.current("host1"), old);
    assert_eq!(schema(&f, BTRFS_DATA), "1");
    assert!(records(&f, BTRFS_DATA).contains("order-1 written before the upgrade"));
    assert!(
        db_answer(&f).starts_with("200 schema 1"),
        "{}",
        db_answer(&f)
    );
    let journal = f.target_journal("host1");
    let restored = entry(&journal, "data-restored");
    assert!(restored.detail.contains("/srv/state/db"), "{restored:?}");
    assert!(restored.detail.contains("tank/db"), "{restored:?}");
}

#[test]
fn without_restore_on_rollback_the_data_stays_migrated_and_the_snapshot_is_named() {
    let f = Fleet::up_with_state("s04", 1);
    let inv = state(&["/srv/state/db"], &[], false, 5);
    let old = base(&f, BTRFS_DATA, &inv);
    host1(&f, "v2", &db(2, true, BTRFS_DATA), &inv);
    let run = f.deploy(&[]);
    run.expect_code(1).expect_outcome("host1", "rolled-back");
    let id = run.deploy_id();
    // The system is back; the data is as the trial left it.
    assert_eq!(f.current("host1"), old);
    assert_eq!(schema(&f, BTRFS_DATA), "2");
    assert!(
        db_answer(&f).starts_with("500 schema 2 is newer"),
        "{}",
        db_answer(&f)
    );
    let command = format!("tether snapshots restore --on host1 {id}");
    let data = &run.host("host1")["state"]["data"];
    assert_eq!(data["data"], "kept-as-is", "{run}");
    assert_eq!(data["restoreCommand"], command.as_str());
    assert!(
        run.stderr.contains(&command)
            || run.events.iter().any(|e| {
                e["event"] == "state"
                    && e["action"] == "data-kept"
                    && e["summary"].as_str().unwrap_or("").contains(&command)
            }),
        "{run}"
    );
    // status points to it too.
    let out = f.tether(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&command), "{text}");
    // And the command does it: old data back, the failed state kept.
    f.settle("host1");
    let out = f.tether(&["snapshots", "restore", "--on", "host1", &id]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(schema(&f, BTRFS_DATA), "1");
    assert!(
        db_answer(&f).starts_with("200 schema 1"),
        "{}",
        db_answer(&f)
    );
    assert!(snapshots(&f)
        .iter()
        .any(|s| s["kind"] == "failed-state" && s["deployId"] == id.as_str()));
}

#[test]
fn snapshots_restore_of_a_confirmed_deploy_brings_its_data_back_and_keeps_the_current_data() {
    let f = Fleet::up_with_state("s05", 1);
    let inv = state(&["/srv/state/db"], &["tank/db"], false, 5);
    base(&f, BTRFS_DATA, &inv);
    host1(&f, "v2", &db(2, false, BTRFS_DATA), &inv);
    let run = f.deploy(&[]);
    run.expect_code(0).expect_outcome("host1", "confirmed");
    let id = run.deploy_id();
    f.settle("host1");
    record(&f, "order-2 written after the upgrade");
    f.console("host1", "echo after > /tank/db/log/marker");
    let before = zfs_snapshots(&f);
    let out = f.tether(&["snapshots", "restore", "--on", "host1", &id, "--json"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["restored"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    // The pre-deploy data: what was written after the deploy is gone from
    // the live data (v2 migrated the restored data again when it started).
    let now = records(&f, BTRFS_DATA);
    assert!(now.contains("order-1"), "{now}");
    assert!(!now.contains("order-2"), "{now}");
    assert!(!f.has_path("host1", "/tank/db/log/marker"));
    assert_eq!(
        f.console("host1", "systemctl is-active fixture-db.service"),
        "active"
    );
    // ... and kept in the failed state.
    let failed = f.console(
        "host1",
        &format!("ls -d /srv/state/.tether-snapshots/db/{id}.failed-state.*"),
    );
    assert!(f
        .console("host1", &format!("cat {failed}/data/records"))
        .contains("order-2"));
    let listed = snapshots(&f);
    let zfs_failed = listed
        .iter()
        .find(|s| s["fs"] == "zfs" && s["kind"] == "failed-state")
        .unwrap_or_else(|| panic!("no ZFS failed state: {listed:#?}"));
    let copy = zfs_failed["location"].as_str().unwrap();
    f.console(
        "host1",
        &format!("zfs set mountpoint=/mnt/failed {copy} && zfs mount -a 2>/dev/null; true"),
    );
    assert_eq!(
        f.console("host1", "cat /mnt/failed/log/marker"),
        "after",
        "the failed state's copy holds the child's data"
    );
    // Nothing was destroyed: every snapshot there before is there after.
    let after = zfs_snapshots(&f);
    for s in &before {
        assert!(after.contains(s), "{s} was destroyed: {after:?}");
    }
    // While a deploy is on trial, a restore is refused.
    host1(
        &f,
        "v3",
        &format!(
            r#"{} extraActivation = "echo TEST-ACTIVATED; sleep 6";"#,
            db(2, false, BTRFS_DATA)
        ),
        &inv,
    );
    let mut live = LiveRun::start(f.spawn_deploy(&[]));
    live.wait_for(Duration::from_secs(60), |v| {
        common::is_output(v, "host1", "TEST-ACTIVATED")
    });
    let out = f.tether(&["snapshots", "restore", "--on", "host1", &id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("on trial"), "{err}");
    live.finish()
        .expect_code(0)
        .expect_outcome("host1", "confirmed");
}

#[test]
fn a_declared_volume_that_does_not_exist_is_refused_before_anything_changes() {
    let f = Fleet::up_with_state("s06", 1);
    let old = f.current("host1");
    host1(
        &f,
        "v2",
        &db(1, false, BTRFS_DATA),
        &state(&["/srv/state/nope"], &["tank/nope"], true, 5),
    );
    let new = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    run.expect_code(1).expect_outcome("host1", "refused");
    let cause = run.cause("host1");
    assert_eq!(cause["kind"], "state", "{run}");
    let reason = run.reason("host1");
    assert!(
        reason.contains("state.btrfs: /srv/state/nope does not exist"),
        "{reason}"
    );
    assert!(
        reason.contains("state.zfs: no dataset tank/nope"),
        "{reason}"
    );
    assert_eq!(f.current("host1"), old);
    assert!(!f.has_path("host1", &new), "nothing was copied");
    assert!(!f.has_path("host1", "/srv/state/.tether-snapshots"));
    // A subvolume that is a mount point could not be swapped by a rename.
    host1(
        &f,
        "v2",
        &db(1, false, BTRFS_DATA),
        &state(&["/srv/state"], &[], true, 5),
    );
    let run = f.deploy(&[]);
    run.expect_code(1).expect_outcome("host1", "refused");
    assert!(
        run.reason("host1")
            .contains("state.btrfs: /srv/state is a mount point"),
        "{run}"
    );
    assert_eq!(f.current("host1"), old);
    // Input that is not a path or a dataset at all never reaches a host.
    for (field, bad) in [
        ("state.btrfs", r#"state.btrfs = [ "var/lib/db" ];"#),
        ("state.zfs", r#"state.zfs = [ "tank" ];"#),
        ("state.units", r#"state.units = [ "postgresql" ];"#),
        ("state.keep", r#"state.keep = 0;"#),
        ("state.btrfs", r#"state.btrfs = [ "/srv/a" "/srv/a/b" ];"#),
        ("state.units", r#"state.units = [ "system.slice" ];"#),
    ] {
        host1(&f, "v3", "", bad);
        let out = f.tether(&["hosts"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}: {err}");
        assert!(
            err.contains("host1") && err.contains(field),
            "{field}: {err}"
        );
    }
}

#[test]
fn a_full_filesystem_refuses_the_deploy_before_activation() {
    let f = Fleet::up_with_state("s07", 1);
    let old = f.current("host1");
    // Fill the filesystem, data and metadata, from another subvolume.
    f.console(
        "host1",
        r#"btrfs subvolume create /srv/state/filler >/dev/null
dd if=/dev/zero of=/srv/state/filler/big bs=1M 2>/dev/null
python3 -c '
import os
n = 0
try:
    while True:
        os.mkdir("/srv/state/filler/d%07d-%s" % (n, "x" * 200)); n += 1
except OSError:
    pass'
sync; true"#,
    );
    host1(
        &f,
        "v2",
        &db(1, false, BTRFS_DATA),
        &state(&["/srv/state/db"], &[], true, 5),
    );
    let run = f.deploy(&[]);
    run.expect_code(1).expect_outcome("host1", "refused");
    let id = run.deploy_id();
    assert_eq!(run.cause("host1")["kind"], "snapshot-failed", "{run}");
    let reason = run.reason("host1");
    assert!(
        reason.contains("/srv/state/db") && reason.contains("nothing was activated"),
        "{reason}"
    );
    assert_eq!(f.current("host1"), old);
    assert!(
        !run.phases("host1").contains(&"arming".to_string()),
        "{run}"
    );
    let journal = f.target_journal("host1");
    let events = f.deploy_events("host1", &id);
    assert_eq!(events, vec!["snapshot-failed"], "{journal:#?}");
}

#[test]
fn zfs_datasets_and_their_children_are_restored_one_by_one_and_no_other_snapshot_is_destroyed() {
    let f = Fleet::up_with_state("s08", 1);
    let inv = state(&[], &["tank/db"], true, 5);
    let old = base(&f, ZFS_DATA, &inv);
    // The user's own snapshots, and data in the child dataset.
    f.console(
        "host1",
        "echo before > /tank/db/log/file && zfs snapshot -r tank/db@mine",
    );
    let before = zfs_snapshots(&f);
    assert!(
        before.contains(&"tank/db/log@mine".to_string()),
        "{before:?}"
    );
    host1(
        &f,
        "v2",
        &format!(
            r#"{} extraActivation = "echo trial > /tank/db/log/file";"#,
            db(2, true, ZFS_DATA)
        ),
        &inv,
    );
    let run = f.deploy(&[]);
    run.expect_code(1).expect_outcome("host1", "rolled-back");
    let id = run.deploy_id();
    assert_eq!(f.current("host1"), old);
    // Both datasets are back: the parent's schema and the child's file.
    assert_eq!(schema(&f, ZFS_DATA), "1");
    assert_eq!(f.console("host1", "cat /tank/db/log/file"), "before");
    assert!(
        db_answer(&f).starts_with("200 schema 1"),
        "{}",
        db_answer(&f)
    );
    let after = zfs_snapshots(&f);
    for s in &before {
        assert!(after.contains(s), "{s} was destroyed: {after:?}");
    }
    assert!(after.contains(&format!("tank/db/log@tether-{id}-pre-deploy")));
    // The failed state is a copy with both datasets.
    let copies = f.console("host1", "zfs list -H -o name -r tank/tether-failed");
    assert!(
        copies.contains("-failed-state-") && copies.contains("/db/log"),
        "{copies}"
    );

    // A snapshot taken after the pre-deploy one (here by the trial itself)
    // would be destroyed by a rollback: tether refuses, names it, destroys
    // nothing, and the system still rolls back.
    f.settle("host1");
    host1(
        &f,
        "v3",
        &format!(
            r#"{} extraActivation = "/sbin/zfs snapshot tank/db/log@user-during-trial";"#,
            db(2, true, ZFS_DATA)
        ),
        &inv,
    );
    let before = zfs_snapshots(&f);
    let run = f.deploy(&[]);
    run.expect_code(1).expect_outcome("host1", "rolled-back");
    assert_eq!(f.current("host1"), old);
    let data = &run.host("host1")["state"]["data"];
    assert_eq!(data["data"], "restore-failed", "{run}");
    let why = data["report"]["failure"]["why"].as_str().unwrap_or("");
    assert!(why.contains("tank/db/log@user-during-trial"), "{run}");
    let after = zfs_snapshots(&f);
    for s in &before {
        assert!(after.contains(s), "{s} was destroyed: {after:?}");
    }
    assert!(after.contains(&"tank/db/log@user-during-trial".to_string()));
    assert_eq!(schema(&f, ZFS_DATA), "2", "the data was left as it was");
    assert!(entry(&f.target_journal("host1"), "data-restore-failed")
        .detail
        .contains("user-during-trial"));
}

#[test]
fn a_failed_reboot_trial_restores_the_data_before_the_old_system_boots() {
    let f = Fleet::up_with_state("s09", 1);
    let inv = state(&["/srv/state/db"], &["tank/db"], true, 5);
    let old = base(&f, BTRFS_DATA, &inv);
    f.console("host1", "echo before > /tank/db/log/file");
    let boot_before = f.lab.boot_id("host1").unwrap();
    // A kernel change (a reboot trial) whose migration breaks the data.
    host1(
        &f,
        "v2",
        &format!(
            r#"kernelVersion = "6.9.0-fixture"; {} extraActivation = "echo trial > /tank/db/log/file";"#,
            db(2, true, BTRFS_DATA)
        ),
        &inv,
    );
    let run = f.deploy(&["--lease", "5", "--reboot-timeout", "60"]);
    run.expect_code(1).expect_outcome("host1", "rolled-back");
    let id = run.deploy_id();
    assert!(run.phases("host1").contains(&"booted".to_string()), "{run}");
    assert_ne!(f.lab.boot_id("host1").unwrap(), boot_before);
    assert_eq!(f.current("host1"), old);
    assert_eq!(
        f.lab.booted_system("host1").unwrap().as_deref(),
        Some(old.as_str())
    );
    // The old system booted on the old data.
    assert_eq!(schema(&f, BTRFS_DATA), "1");
    assert!(records(&f, BTRFS_DATA).contains("order-1"));
    assert_eq!(f.console("host1", "cat /tank/db/log/file"), "before");
    assert!(
        db_answer(&f).starts_with("200 schema 1"),
        "{}",
        db_answer(&f)
    );
    // Restored on the trial boot, before the reboot into the old system.
    let journal = f.target_journal("host1");
    let events = f.deploy_events("host1", &id);
    let at = |event: &str| events.iter().position(|e| *e == event);
    assert!(
        at("booted") < at("rolling-back")
            && at("rolling-back") < at("data-restored")
            && at("data-restored") < at("rolled-back"),
        "{events:?}"
    );
    assert!(entry(&journal, "data-restored")
        .detail
        .contains("before rebooting into the previous system"));
    assert_eq!(
        run.host("host1")["state"]["data"]["data"],
        "restored",
        "{run}"
    );
}

#[test]
fn a_crash_during_a_reboot_trial_restores_the_data_as_the_old_system_boots() {
    let f = Fleet::up_with_state("s10", 1);
    let inv =
        state(&["/srv/state/db"], &[], true, 5).replace("checkTimeout = 4;", "checkTimeout = 120;");
    let old = base(&f, BTRFS_DATA, &inv);
    host1(
        &f,
        "v2",
        &format!(
            r#"kernelVersion = "6.9.0-fixture"; {}"#,
            db(2, true, BTRFS_DATA)
        ),
        &inv,
    );
    f.systems();
    let mut live = LiveRun::start(f.spawn_deploy(&[
        "--lease",
        "5",
        "--reboot-timeout",
        "60",
        "--confirm-timeout",
        "5",
    ]));
    // The trial boot migrated the data and its checks fail: PID 1 dies.
    live.wait_for(Duration::from_secs(120), |v| {
        v["event"] == "check" && v["check"] == "db" && v["passed"] == false
    });
    assert_eq!(schema(&f, BTRFS_DATA), "2");
    f.lab.crash("host1").unwrap();
    let run = live.finish();
    run.expect_outcome("host1", "rolled-back");
    let id = run.deploy_id();
    assert_eq!(f.current("host1"), old);
    common::wait_until(Duration::from_secs(30), "the db on the old data", || {
        db_answer(&f).starts_with("200 schema 1")
    });
    assert_eq!(schema(&f, BTRFS_DATA), "1");
    assert!(records(&f, BTRFS_DATA).contains("order-1"));
    let journal = f.target_journal("host1");
    let restored = journal
        .iter()
        .find(|e| e.deploy_id == id && e.event == "data-restored")
        .unwrap_or_else(|| panic!("no data-restored: {journal:#?}"));
    assert!(
        restored.detail.contains("as the previous system booted"),
        "{restored:?}"
    );
}
