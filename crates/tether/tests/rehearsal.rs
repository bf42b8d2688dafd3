//! Rehearsals against real lab hosts (issue 12): host1 is production, host2
//! a staging host (`rehearsal.staging = true`); both have a real btrfs
//! subvolume `/srv/state/db`. The fleet flake is a git repository, so each
//! deploy's revision is in tether's journal and the old system can be
//! rebuilt from it. The fixture's "db" service keeps a schema version and
//! records in its data directory, so a rehearsal can show a migration of
//! production's own data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Fleet;
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DATA: &str = "/srv/state/db/data";

fn commit(f: &Fleet, message: &str) {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&f.dir)
            .args([
                "-c",
                "user.name=lab",
                "-c",
                "user.email=lab@example.invalid",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !f.dir.join(".git").exists() {
        git(&["init", "-q"]);
    }
    git(&["add", "-A"]);
    git(&["commit", "-q", "--allow-empty", "-m", message]);
}

/// hosts.nix: host1 runs the db at `schema` (`breaks`: its migration
/// breaks the data), with state and checks; `extra` goes into host1's
/// inventory; host2 is the staging host.
fn fleet_hosts(f: &Fleet, label: &str, schema: u32, breaks: bool, extra: &str) {
    fleet_hosts_with(
        f,
        label,
        schema,
        breaks,
        extra,
        DATA,
        r#"btrfs = [ "/srv/state/db" ];"#,
    )
}

fn fleet_hosts_with(
    f: &Fleet,
    label: &str,
    schema: u32,
    breaks: bool,
    extra: &str,
    data: &str,
    volumes: &str,
) {
    f.set_hosts(&format!(
        r#"{{
  host1 = {{
    label = "{label}";
    services = [ {{ name = "db"; kind = "db"; port = 8080; schema = {schema}; migrationBreaks = {breaks}; dataDir = "{data}"; }} ];
    inventory = {{
      state = {{ {volumes} units = [ "fixture-db.service" ]; }};
      checkTimeout = 6;
      checks.db = {{ type = "http"; port = 8080; }};
      rehearsal.modules = [ ({{ config, ... }}: {{ fixture.address = config.tether.rehearsal.address; }}) ];
      {extra}
    }};
  }};
  host2 = {{ inventory = {{ rehearsal.staging = true; }}; }};
}}"#
    ));
}

fn record(f: &Fleet, text: &str) {
    let out = f.console(
        "host1",
        &format!(
            "python3 -c 'import urllib.request as u; print(u.urlopen(u.Request(\"http://127.0.0.1:8080/\", data=b\"{text}\")).read().decode())'"
        ),
    );
    assert_eq!(out, "recorded", "writing a record");
}

/// Runs `tether rehearse ARGS --json`; returns the exit code, the
/// rehearsal record and stderr.
fn rehearse(f: &Fleet, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["rehearse", "--json"];
    all.extend_from_slice(args);
    let out = f.tether(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "rehearsal")
        .unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// Production as the rehearsal must leave it: its system, boot default,
/// data, and no snapshot of tether's beyond its pre-deploy ones.
struct Production {
    current: String,
    boot: String,
    schema: String,
    records: String,
}

impl Production {
    fn read(f: &Fleet) -> Production {
        Production {
            current: f.current("host1"),
            boot: f.boot_default("host1"),
            schema: f.console("host1", &format!("cat {DATA}/schema")),
            records: f.console("host1", &format!("cat {DATA}/records")),
        }
    }

    fn assert_untouched(&self, f: &Fleet) {
        let now = Production::read(f);
        assert_eq!(now.current, self.current, "production's system changed");
        assert_eq!(now.boot, self.boot, "production's boot default changed");
        assert_eq!(now.schema, self.schema, "production's data was migrated");
        assert_eq!(now.records, self.records, "production's records changed");
        let leftovers = f.console(
            "host1",
            "ls /srv/state/.tether-snapshots/db 2>/dev/null | grep -v pre-deploy || true",
        );
        assert_eq!(leftovers, "", "rehearsal snapshots left on production");
    }
}

/// Watches, while a rehearsal runs, that production stays reachable and
/// that the staging host never carries production's address.
struct Watch {
    stop: Arc<AtomicBool>,
    problems: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Watch {
    fn start(f: &Arc<Fleet>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let problems = Arc::new(Mutex::new(Vec::new()));
        let (f, stop2, problems2) = (f.clone(), stop.clone(), problems.clone());
        let production = f.address("host1");
        let thread = std::thread::spawn(move || {
            let mut looks = 0;
            while !stop2.load(Ordering::SeqCst) {
                if !f.reachable("host1") {
                    problems2
                        .lock()
                        .unwrap()
                        .push("production unreachable".into());
                }
                let addrs = f.console("host2", "ip -o -4 addr show scope global");
                if addrs.contains(&format!("inet {production}/")) {
                    problems2
                        .lock()
                        .unwrap()
                        .push(format!("staging carries production's address: {addrs}"));
                }
                looks += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            looks
        });
        Watch {
            stop,
            problems,
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let looks = self.thread.take().unwrap().join().unwrap();
        assert!(looks > 3, "the watch looked only {looks} times");
        let problems = self.problems.lock().unwrap().clone();
        assert!(problems.is_empty(), "during the rehearsal: {problems:?}");
    }
}

fn check<'a>(stage: &'a Value, name: &str) -> &'a Value {
    stage["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {stage}"))
}

#[test]
fn a_healthy_upgrade_is_rehearsed_on_staging_with_productions_data_and_then_deploys() {
    let f = Arc::new(Fleet::up_with_state("r01", 2));
    fleet_hosts(&f, "v1", 1, false, "");
    commit(&f, "v1");
    f.deploy(&["--on", "host1"])
        .expect_code(0)
        .expect_outcome("host1", "confirmed");
    record(&f, "order-1 written in production");
    f.settle("host1");

    // v2 migrates the data to schema 2; production's deploys now need a
    // rehearsal, and a check proves the staging host has production's data.
    fleet_hosts(
        &f,
        "v2",
        2,
        false,
        &format!(
            r#"rehearsal.required = true;
      checks.data = {{ type = "command"; on = "target"; command = "grep -q order-1 {DATA}/records"; }};"#
        ),
    );
    commit(&f, "v2");
    let production = Production::read(&f);
    let staging_system = f.current("host2");
    let staging_address = f.address("host2");
    f.console("host2", "echo staging-own > /srv/state/db/marker");

    let watch = Watch::start(&f);
    let (code, report, stderr) = rehearse(&f, &["host1", "--on", "host2"]);
    watch.finish();
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["result"], "passed", "{report:#}");
    assert_eq!(report["production"], "host1");
    assert_eq!(
        report["productionOld"].as_str().unwrap(),
        production.current
    );
    assert_eq!(report["oldSource"]["from"], "journal");
    let old = &report["oldStage"];
    let new = &report["newStage"];
    assert_eq!(old["outcome"], "confirmed", "{report:#}");
    assert_eq!(new["outcome"], "confirmed", "{report:#}");
    // Both variants are staging's, never production's systems.
    assert_ne!(old["system"].as_str().unwrap(), production.current);
    assert_ne!(new["system"], report["productionNew"]);
    // Production's checks ran against the staging host, with its data.
    for stage in [old, new] {
        assert_eq!(check(stage, "db")["passed"], true, "{stage:#}");
        assert_eq!(check(stage, "rehearsal-isolation")["passed"], true);
    }
    assert_eq!(check(new, "data")["passed"], true, "{new:#}");
    let db_unit = "fixture-db.service";
    let touched: Vec<&str> = ["started", "restarted"]
        .iter()
        .flat_map(|k| {
            new[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap())
        })
        .collect();
    assert!(touched.contains(&db_unit), "{new:#}");
    assert!(new["activationMs"].as_u64().is_some());
    assert_eq!(new["rebootTrial"], false);
    let state = &report["state"][0];
    assert_eq!(state["path"], "/srv/state/db");
    assert!(state["streamed"].as_u64().unwrap() > 0, "{state}");
    assert!(state["before"].as_u64().is_some() && state["after"].as_u64().is_some());
    assert_eq!(report["cleanedUp"], true, "{report:#}");

    // Production untouched; staging back on its own system and state.
    production.assert_untouched(&f);
    assert_eq!(f.current("host2"), staging_system);
    assert_eq!(
        f.console("host2", "cat /srv/state/db/marker"),
        "staging-own"
    );
    assert_eq!(
        f.console(
            "host2",
            "ls /srv/state/.tether-snapshots/db 2>/dev/null | grep -v pre-deploy || true"
        ),
        ""
    );
    assert!(f
        .console("host2", "ip -o -4 addr show scope global")
        .contains(&format!("inet {staging_address}/")));

    // The journal has it; history shows it; the deploy it stands for passes
    // the gate.
    let history = f.tether(&["history"]);
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(
        text.contains("rehearsal") && text.contains("passed"),
        "{text}"
    );
    f.settle("host1");
    f.deploy(&["--on", "host1"])
        .expect_code(0)
        .expect_outcome("host1", "confirmed");
    assert_eq!(f.console("host1", &format!("cat {DATA}/schema")), "2");
    let status = f.tether(&["status", "--on", "host1"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("last rehearsal") && text.contains("passed on host2 at"),
        "{text}"
    );
    assert!(text.contains("(the system it runs)"), "{text}");
}

#[test]
fn a_migration_that_breaks_is_caught_on_staging_and_production_is_refused() {
    let f = Fleet::up_with_state("r02", 2);
    fleet_hosts(&f, "v1", 1, false, "");
    commit(&f, "v1");
    let staging_system = f.current("host2");

    // Nothing to rehearse from yet: the lab installed host1's system, not a
    // tether deploy from this repository.
    let (code, _, stderr) = rehearse(&f, &["host1", "--on", "host2"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--from REF") && stderr.contains("journal"),
        "{stderr}"
    );
    // A production host is never a staging host.
    let (code, _, stderr) = rehearse(&f, &["host2", "--on", "host1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("rehearsal.staging = true"), "{stderr}");
    assert_eq!(
        f.current("host2"),
        staging_system,
        "a refusal changed staging"
    );

    f.deploy(&["--on", "host1"])
        .expect_code(0)
        .expect_outcome("host1", "confirmed");
    record(&f, "order-1 written in production");
    f.settle("host1");
    fleet_hosts(&f, "v2", 2, true, "rehearsal.required = true;");
    commit(&f, "v2 breaks the data");
    let production = Production::read(&f);

    let (code, report, stderr) = rehearse(&f, &["host1", "--on", "host2"]);
    assert_eq!(code, 1, "{report:#}\n{stderr}");
    assert_eq!(report["result"], "failed", "{report:#}");
    assert_eq!(report["side"], "new");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("check db failed"),
        "{report:#}"
    );
    assert_eq!(report["oldStage"]["outcome"], "confirmed");
    assert_eq!(report["newStage"]["outcome"], "rolled-back");
    assert_eq!(report["cleanedUp"], true);
    production.assert_untouched(&f);
    assert_eq!(f.current("host2"), staging_system);

    let run = f.deploy(&["--on", "host1"]);
    run.expect_code(1).expect_outcome("host1", "refused");
    assert!(
        run.reason("host1").contains("tether rehearse host1"),
        "{run}"
    );
    production.assert_untouched(&f);
}

#[test]
fn a_kernel_change_is_rehearsed_with_a_reboot_trial_on_staging() {
    let f = Fleet::up("r03", 2);
    let hosts = |label: &str, kernel: &str| {
        f.set_hosts(&format!(
            r#"{{
  host1 = {{
    label = "{label}"; kernelVersion = "{kernel}";
    services = [ {{ name = "web"; kind = "http"; port = 8080; }} ];
    inventory = {{
      checks.web = {{ type = "http"; port = 8080; }};
      rehearsal.modules = [ ({{ config, ... }}: {{ fixture.address = config.tether.rehearsal.address; }}) ];
    }};
  }};
  host2 = {{ inventory = {{ rehearsal.staging = true; }}; }};
}}"#
        ))
    };
    hosts("v1", "6.1.0-fixture");
    commit(&f, "v1");
    f.deploy(&["--on", "host1"])
        .expect_code(0)
        .expect_outcome("host1", "confirmed");
    f.settle("host1");
    hosts("v2", "6.6.0-fixture");
    commit(&f, "v2: a new kernel");
    let production = f.current("host1");
    let staging_system = f.current("host2");

    let (code, report, stderr) = rehearse(
        &f,
        &[
            "host1",
            "--on",
            "host2",
            "--lease",
            "5",
            "--reboot-timeout",
            "60",
        ],
    );
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["result"], "passed", "{report:#}");
    // host2's own system has the fixture's default kernel, as v1 does, so
    // only the new variant needs a boot.
    assert_eq!(report["oldStage"]["rebootTrial"], false, "{report:#}");
    assert_eq!(report["newStage"]["rebootTrial"], true, "{report:#}");
    assert_eq!(report["newStage"]["outcome"], "confirmed");
    assert_eq!(check(&report["newStage"], "web")["passed"], true);
    assert_eq!(report["cleanedUp"], true, "{report:#}");
    assert_eq!(f.current("host1"), production, "production changed");
    assert_eq!(f.current("host2"), staging_system, "staging not returned");
    assert_eq!(
        f.console("host2", "readlink -f /run/booted-system"),
        staging_system,
        "staging does not boot its own system again"
    );
}

/// The revision HEAD of the fleet's repository.
fn head(f: &Fleet) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(&f.dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_foreign_architecture_is_refused_with_the_options_and_rehearsed_when_allowed() {
    let f = Fleet::up("r04", 2);
    // host1's configuration declares aarch64-linux; the lab installs it as
    // a NixOS installer would (tether itself refuses to deploy a system of
    // another platform than the host's). Its rehearsal module rebuilds the
    // variant for the staging host's platform.
    let hosts = |label: &str, platform_module: bool| {
        let platform = if platform_module {
            r#"({ lib, ... }: { fixture.hostPlatform = lib.mkForce "x86_64-linux"; })"#
        } else {
            ""
        };
        f.set_hosts(&format!(
            r#"{{
  host1 = {{
    label = "{label}"; hostPlatform = "aarch64-linux";
    services = [ {{ name = "web"; kind = "http"; port = 8080; }} ];
    inventory = {{
      checks.web = {{ type = "http"; port = 8080; }};
      rehearsal.modules = [ ({{ config, ... }}: {{ fixture.address = config.tether.rehearsal.address; }}) {platform} ];
    }};
  }};
  host2 = {{ inventory = {{ rehearsal.staging = true; }}; }};
}}"#
        ))
    };
    hosts("v1", false);
    commit(&f, "v1 on aarch64");
    let v1 = head(&f);
    let systems = f.systems();
    f.lab.install_system("host1", &systems["host1"]).unwrap();
    let production = f.current("host1");
    assert_eq!(production, systems["host1"]);
    hosts("v2", false);
    commit(&f, "v2");
    let staging_system = f.current("host2");

    let (code, _, stderr) = rehearse(&f, &["host1", "--on", "host2", "--from", &v1]);
    assert_eq!(code, 2, "{stderr}");
    for needle in [
        "aarch64-linux",
        "x86_64-linux",
        "same architecture",
        "--allow-arch-change",
    ] {
        assert!(stderr.contains(needle), "{needle:?} missing: {stderr}");
    }
    // Allowed, but nothing builds the variant for x86_64: still refused.
    let (code, _, stderr) = rehearse(
        &f,
        &[
            "host1",
            "--on",
            "host2",
            "--from",
            &v1,
            "--allow-arch-change",
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        f.current("host2"),
        staging_system,
        "a refusal changed staging"
    );

    // Today's rehearsal modules apply to both revisions' variants.
    hosts("v2", true);
    commit(&f, "v2, rehearsal variants built for x86_64");
    let (code, report, stderr) = rehearse(
        &f,
        &[
            "host1",
            "--on",
            "host2",
            "--from",
            &v1,
            "--allow-arch-change",
        ],
    );
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["result"], "passed", "{report:#}");
    assert_eq!(report["oldSource"]["from"], "given");
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("architecture-specific problems are not covered"),
        "{report:#}"
    );
    assert!(stderr.contains("architecture-specific problems are not covered"));
    assert_eq!(report["newStage"]["outcome"], "confirmed");
    assert_eq!(f.current("host1"), production, "production changed");
    assert_eq!(f.current("host2"), staging_system);
}

#[test]
fn zfs_state_is_rehearsed_with_its_child_datasets_and_staging_gets_its_own_back() {
    let f = Fleet::up_with_state("r05", 2);
    let data = "/tank/db/data";
    let volumes = r#"zfs = [ "tank/db" ];"#;
    let extra = format!(
        r#"checks.data = {{ type = "command"; on = "target"; command = "grep -q order-1 {data}/records && test -e /tank/db/log/production-log"; }};"#
    );
    fleet_hosts_with(&f, "v1", 1, false, "", data, volumes);
    commit(&f, "v1");
    f.deploy(&["--on", "host1"])
        .expect_code(0)
        .expect_outcome("host1", "confirmed");
    record(&f, "order-1 written in production");
    f.console("host1", "touch /tank/db/log/production-log");
    f.settle("host1");
    fleet_hosts_with(&f, "v2", 2, false, &extra, data, volumes);
    commit(&f, "v2");
    let production = f.current("host1");
    let production_datasets = f.console("host1", "zfs list -H -o name -t all -r tank | sort");
    let staging_system = f.current("host2");
    f.console("host2", "echo staging-own > /tank/db/marker");

    let (code, report, stderr) = rehearse(&f, &["host1", "--on", "host2"]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    assert_eq!(report["result"], "passed", "{report:#}");
    assert_eq!(
        check(&report["newStage"], "data")["passed"],
        true,
        "{report:#}"
    );
    let state = &report["state"][0];
    assert_eq!(state["path"], "tank/db");
    assert!(state["streamed"].as_u64().unwrap() > 0, "{state}");
    assert_eq!(report["cleanedUp"], true, "{report:#}");

    assert_eq!(f.current("host1"), production);
    assert_eq!(
        f.console("host1", "zfs list -H -o name -t all -r tank | sort"),
        production_datasets,
        "production's datasets or snapshots changed"
    );
    assert_eq!(f.console("host1", &format!("cat {data}/schema")), "1");
    assert_eq!(f.current("host2"), staging_system);
    assert_eq!(f.console("host2", "cat /tank/db/marker"), "staging-own");
    let leftovers = f.console(
        "host2",
        "zfs list -H -o name -t all -r tank | grep tether- || true",
    );
    assert_eq!(leftovers, "", "rehearsal datasets left on staging");
}
