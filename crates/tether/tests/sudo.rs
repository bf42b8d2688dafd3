//! Deploying as a non-root user with sudo against real lab hosts (issue
//! 14). Every lab host has a `deploy` user that logs in with the deployer's
//! key and that the host's Nix daemon trusts; each test gives it the sudo
//! rule (or the Nix trust) its scenario needs, through the host's console.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{is_phase, Fleet, LiveRun, Run};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NOPASSWD: &str = "echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy";

/// A password the scans below look for without ever having it in a
/// command line: written into files through the console in two pieces.
const PASSWORD: &str = "Tether-sudo-s3cret-4711";

fn hosts(f: &Fleet, host1: &str, host2: &str) {
    f.set_hosts(&format!(
        r#"{{
  host1 = {{ {host1} }};
  host2 = {{ {host2} }};
}}"#
    ));
}

/// `deploy --json ARGS` with `input` on stdin.
fn deploy_with_input(f: &Fleet, args: &[&str], input: &str) -> Run {
    let mut all = vec!["deploy", "--json"];
    all.extend_from_slice(args);
    LiveRun::start(f.spawn_with_input(&all, input)).finish()
}

#[test]
fn passwordless_sudo_deploys_checks_plans_rolls_back_and_survives_the_first_story() {
    let f = Fleet::up("u01", 1);
    f.console("host1", NOPASSWD);
    let set = |label: &str, extra: &str| {
        f.set_hosts(&format!(
            r#"{{ host1 = {{ label = "{label}"; {extra} inventory = {{ sshUser = "deploy"; checks.ssh = {{ type = "tcp"; port = 22; }}; }}; }}; }}"#
        ))
    };
    set("v1", "");
    let first = f.current("host1");
    // The guard is root's: look while the trial's checks run.
    let mut live = LiveRun::start(f.spawn_deploy(&["--on", "host1"]));
    live.wait_for(Duration::from_secs(60), |v| {
        is_phase(v, "host1", "checking")
    });
    let guard_user = f.console(
        "host1",
        "for u in $(systemctl list-units 'tether-guard-*' --no-legend --plain | cut -d' ' -f1); do ps -o user= -p \"$(systemctl show -p MainPID --value \"$u\")\"; done",
    );
    let run = live.finish();
    run.expect_code(0).expect_outcome("host1", "confirmed");
    assert_eq!(guard_user.trim(), "root", "{run}");
    let v1 = f.current("host1");
    assert_ne!(v1, first);
    // The closure was copied by the deploy user: the host's store has it.
    assert!(f.has_path("host1", &v1));

    // status reads the host through sudo: identity, system, no guards
    // once the confirmed guard has exited.
    f.settle("host1");
    let status = f.tether(&["status", "--on", "host1", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json ({e}): {}",
            String::from_utf8_lossy(&status.stderr)
        )
    });
    let row = &rows[0];
    assert_eq!(row["reachable"], true, "{row:#}");
    assert_eq!(row["identity"], "ok", "{row:#}");
    assert_eq!(row["currentSystem"], v1.as_str(), "{row:#}");
    assert_eq!(
        row["armedGuards"].as_array().map(Vec::len),
        Some(0),
        "{row:#}"
    );

    // plan's dry activation runs as root too: the change is planned.
    set("v2", "");
    let plan = f.tether(&["plan", "--on", "host1", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap_or_else(|e| {
        panic!(
            "plan --json ({e}): {}",
            String::from_utf8_lossy(&plan.stderr)
        )
    });
    let h = &doc["hosts"][0];
    assert_eq!(h["status"], "planned", "{doc:#}");
    assert_eq!(h["unchanged"], false, "{doc:#}");
    assert_eq!(h["currentSystem"], v1.as_str(), "{doc:#}");
    f.settle("host1");
    f.deploy(&["--on", "host1"])
        .expect_code(0)
        .expect_outcome("host1", "confirmed");
    f.settle("host1");
    let back = f.tether(&["rollback", "--on", "host1", "--json"]);
    assert!(
        back.status.success(),
        "rollback: {}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert_eq!(f.current("host1"), v1);

    // The first story, as the deploy user: a wrong address cuts the host
    // off; it rolls itself back.
    f.settle("host1");
    set("v3", r#"address = "10.231.250.99";"#);
    let run = f.deploy(&["--on", "host1", "--lease", "5"]);
    run.expect_outcome("host1", "rolled-back");
    common::wait_until(Duration::from_secs(60), "host1 back on v1", || {
        f.reachable("host1") && f.current("host1") == v1
    });
}

/// Every process's command line and environment on this machine that
/// holds `needle`.
fn local_processes_holding(needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return hits;
    };
    for entry in dir.flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        for what in ["cmdline", "environ"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(what)) {
                if String::from_utf8_lossy(&bytes).contains(needle) {
                    hits.push(format!("pid {pid} {what}"));
                }
            }
        }
    }
    hits
}

#[test]
fn password_sudo_works_and_the_password_is_in_no_argument_environment_event_journal_or_log() {
    let f = Arc::new(Fleet::up("u02", 2));
    let (a, b) = PASSWORD.split_at(9);
    for host in ["host1", "host2"] {
        f.console(
            host,
            &format!(
                "printf '%s%s\\n' '{a}' '{b}' > /root/.pw && printf 'deploy:' | cat - /root/.pw | chpasswd && echo 'deploy ALL=(ALL) ALL' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy"
            ),
        );
    }
    let inventory = r#"label = "v1"; inventory = { sshUser = "deploy"; sudo = "password"; };"#;
    hosts(&f, inventory, inventory);
    let before = f.current("host2");

    // Without --ask-sudo-password: refused, naming the flag.
    let run = f.deploy(&["--on", "host2"]);
    run.expect_code(1).expect_outcome("host2", "refused");
    assert!(run.reason("host2").contains("--ask-sudo-password"), "{run}");
    // A wrong password: refused with its own reason, nothing changed.
    let run = deploy_with_input(&f, &["--on", "host2", "--ask-sudo-password"], "wrong\n");
    run.expect_code(1).expect_outcome("host2", "refused");
    assert!(
        run.reason("host2").contains("refused the password"),
        "{run}"
    );
    assert_eq!(f.current("host2"), before);
    assert!(
        f.target_journal("host2").is_empty(),
        "a refusal wrote the host's journal"
    );

    // Watch both machines while the real deploy runs.
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(Mutex::new(Vec::<String>::new()));
    let watcher = {
        let (f, stop, hits) = (f.clone(), stop.clone(), hits.clone());
        std::thread::spawn(move || {
            let mut looks = 0;
            while !stop.load(Ordering::SeqCst) {
                for h in local_processes_holding(PASSWORD) {
                    hits.lock().unwrap().push(format!("deployer: {h}"));
                }
                for host in ["host1", "host2"] {
                    let found = f.console(
                        host,
                        "for p in /proc/[0-9]*; do for w in cmdline environ; do tr '\\0' '\\n' <$p/$w 2>/dev/null | grep -qFf /root/.pw && echo \"$p/$w $(tr '\\0' ' ' <$p/cmdline 2>/dev/null)\"; done; done; true",
                    );
                    if !found.trim().is_empty() {
                        hits.lock().unwrap().push(format!("{host}: {found}"));
                    }
                }
                looks += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            looks
        })
    };
    let password_line = format!("{PASSWORD}\n");
    let run = deploy_with_input(&f, &["--ask-sudo-password"], &password_line);
    stop.store(true, Ordering::SeqCst);
    let looks = watcher.join().unwrap();
    run.expect_code(0)
        .expect_outcome("host1", "confirmed")
        .expect_outcome("host2", "confirmed");
    assert!(looks >= 2, "the watch looked {looks} times");
    assert_eq!(*hits.lock().unwrap(), Vec::<String>::new());

    // Nowhere it writes: events, stderr, the deployer's journal, the
    // hosts' journals and logs.
    let events = serde_json::to_string(&run.events).unwrap();
    assert!(!events.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    for entry in walk(f.state_dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PASSWORD),
            "{} holds the password",
            entry.display()
        );
    }
    for host in ["host1", "host2"] {
        let found = f.console(
            host,
            "{ cat /var/lib/tether/journal; journalctl --no-pager -o cat; cat /var/log/auth.log 2>/dev/null; } | grep -cFf /root/.pw || true",
        );
        assert_eq!(
            found.trim(),
            "0",
            "{host}: the password is in a journal or log"
        );
    }

    // A kernel change through password sudo: the reboot trial's sessions
    // after the boot (and its confirmation) get the password again.
    f.settle("host2");
    let kernel = r#"label = "v1"; kernelVersion = "6.9.0-fixture"; inventory = { sshUser = "deploy"; sudo = "password"; };"#;
    hosts(&f, inventory, kernel);
    let run = deploy_with_input(
        &f,
        &["--on", "host2", "--ask-sudo-password"],
        &password_line,
    );
    run.expect_code(0).expect_outcome("host2", "confirmed");
    let phases = run.phases("host2");
    assert!(
        phases.iter().any(|p| p == "booted") && phases.iter().any(|p| p == "persisting"),
        "{run}"
    );
    let events = serde_json::to_string(&run.events).unwrap();
    assert!(!events.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    let found = f.console(
        "host2",
        "{ cat /var/lib/tether/journal; journalctl --no-pager -o cat; } | grep -cFf /root/.pw || true",
    );
    assert_eq!(
        found.trim(),
        "0",
        "host2: the password is in a journal or log"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn no_sudo_an_untrusted_nix_user_and_sudo_none_are_each_refused_at_preflight() {
    let f = Fleet::up("u03", 2);
    // host1: the deploy user has no sudo rule. host2: sudo works, but its
    // Nix daemon no longer trusts the user.
    f.console(
        "host2",
        &format!("{NOPASSWD} && sed -i 's/^trusted-users = .*/trusted-users = root/' /etc/nix/nix.conf && systemctl restart nix-daemon"),
    );
    let inventory = r#"label = "v1"; inventory = { sshUser = "deploy"; };"#;
    hosts(&f, inventory, inventory);
    let before = (f.current("host1"), f.current("host2"));
    let run = f.deploy(&[]);
    run.expect_code(1)
        .expect_outcome("host1", "refused")
        .expect_outcome("host2", "refused");
    assert!(
        run.reason("host1").contains("asks for a password")
            && run.reason("host1").contains("no sudo rule"),
        "{run}"
    );
    let untrusted = run.reason("host2");
    assert!(
        untrusted.contains("does not trust \"deploy\"")
            && untrusted.contains("trusted-users")
            && untrusted.contains("sign"),
        "{run}"
    );
    assert_eq!(run.phases("host2"), vec!["preflight"], "{run}");
    assert_eq!((f.current("host1"), f.current("host2")), before);
    let v1 = f.systems()["host2"].clone();
    assert!(!f.has_path("host2", &v1), "the closure was copied anyway");

    // The other fix: a closure signed by a key the host trusts is taken
    // from an untrusted user. Signed here, the key trusted on host2.
    let keys = f.state_dir().join("signing");
    std::fs::create_dir_all(&keys).unwrap();
    let (secret, public) = (keys.join("secret"), keys.join("public"));
    let nix = |args: &[&str]| {
        let out = std::process::Command::new("nix-store")
            .env("NIX_CONFIG", tether_lab::nix_settings::NIX_CONFIG)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    nix(&[
        "--generate-binary-cache-key",
        "tether-lab-sign-1",
        secret.to_str().unwrap(),
        public.to_str().unwrap(),
    ]);
    let signed = std::process::Command::new("nix")
        .env("NIX_CONFIG", tether_lab::nix_settings::NIX_CONFIG)
        .args([
            "--extra-experimental-features",
            "nix-command",
            "store",
            "sign",
            "-r",
            "-k",
        ])
        .arg(&secret)
        .arg(&v1)
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let public = std::fs::read_to_string(&public).unwrap();
    // Trusting a different key is not enough: refused, naming the key.
    f.console(
        "host2",
        "echo 'trusted-public-keys = other-1:b/sITndlZAVX0NaWdio18/ZNAJfbJmSKN6Bow94ak5s=' >> /etc/nix/nix.conf && systemctl restart nix-daemon",
    );
    let run = f.deploy(&["--on", "host2"]);
    run.expect_code(1).expect_outcome("host2", "refused");
    assert!(run.reason("host2").contains("other-1"), "{run}");
    f.console(
        "host2",
        &format!(
            "sed -i 's|^trusted-public-keys = .*|trusted-public-keys = {}|' /etc/nix/nix.conf && systemctl restart nix-daemon",
            public.trim()
        ),
    );
    f.deploy(&["--on", "host2"])
        .expect_code(0)
        .expect_outcome("host2", "confirmed");
    assert_eq!(f.current("host2"), v1);

    // With a password, sudo says what it could not say before: the user
    // has no rule.
    f.console("host1", "echo 'deploy:pw-4711' | chpasswd");
    hosts(
        &f,
        r#"label = "v1"; inventory = { sshUser = "deploy"; sudo = "password"; };"#,
        inventory,
    );
    let run = deploy_with_input(&f, &["--on", "host1", "--ask-sudo-password"], "pw-4711\n");
    run.expect_code(1).expect_outcome("host1", "refused");
    assert!(
        run.reason("host1").contains("sudoers does not let"),
        "{run}"
    );
    // A host without sudo at all.
    f.console("host1", "mv /usr/bin/sudo /usr/bin/sudo.off");
    hosts(&f, inventory, inventory);
    let run = f.deploy(&["--on", "host1"]);
    run.expect_code(1).expect_outcome("host1", "refused");
    assert!(run.reason("host1").contains("no sudo command"), "{run}");
    f.console("host1", "mv /usr/bin/sudo.off /usr/bin/sudo");
    assert_eq!(f.current("host1"), before.0);

    // sudo = "none" with a user that is not root: refused, naming the fix.
    hosts(
        &f,
        r#"label = "v1"; inventory = { sshUser = "deploy"; sudo = "none"; };"#,
        inventory,
    );
    let run = f.deploy(&["--on", "host1"]);
    run.expect_code(1).expect_outcome("host1", "refused");
    assert!(run.reason("host1").contains("not root (uid 1000)"), "{run}");
    assert_eq!(f.current("host1"), before.0);
    // A misspelt mode names host and field, before anything changes.
    hosts(
        &f,
        r#"label = "v1"; inventory = { sshUser = "deploy"; sudo = "yes"; };"#,
        inventory,
    );
    let out = f.tether(&["deploy", "--on", "host1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host1") && err.contains("sudo"), "{err}");
}

#[test]
fn password_sudo_snapshots_restores_and_lists_state() {
    let f = Fleet::up_with_state("u04", 1);
    f.console(
        "host1",
        "echo 'deploy:pw-state-4711' | chpasswd && echo 'deploy ALL=(ALL) ALL' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy",
    );
    let data = "/srv/state/db/data";
    let system = |label: &str, schema: u32, breaks: bool| {
        f.set_hosts(&format!(
            r#"{{ host1 = {{ label = "{label}";
                services = [ {{ name = "db"; kind = "db"; port = 8080; schema = {schema}; migrationBreaks = {breaks}; dataDir = "{data}"; }} ];
                inventory = {{ sshUser = "deploy"; sudo = "password";
                  state = {{ btrfs = [ "/srv/state/db" ]; zfs = [ "tank/db" ]; units = [ "fixture-db.service" ]; restoreOnRollback = true; }};
                  checkTimeout = 4; checks.db = {{ type = "http"; port = 8080; }}; }}; }}; }}"#
        ))
    };
    let password = "pw-state-4711\n";
    system("v1", 1, false);
    deploy_with_input(&f, &["--ask-sudo-password"], password)
        .expect_code(0)
        .expect_outcome("host1", "confirmed");
    let old = f.current("host1");
    f.console(
        "host1",
        "python3 -c 'import urllib.request as u; u.urlopen(u.Request(\"http://127.0.0.1:8080/\", data=b\"order-1\")).read()'",
    );
    f.settle("host1");

    // A migration that breaks: snapshotted before activation, rolled back,
    // the old data restored, all through sudo.
    system("v2", 2, true);
    let run = deploy_with_input(&f, &["--ask-sudo-password"], password);
    run.expect_code(1).expect_outcome("host1", "rolled-back");
    let id = run.deploy_id();
    assert_eq!(
        run.host("host1")["state"]["data"]["data"],
        "restored",
        "{run}"
    );
    assert_eq!(f.current("host1"), old);
    assert_eq!(f.console("host1", &format!("cat {data}/schema")), "1");
    assert!(f
        .console("host1", &format!("cat {data}/records"))
        .contains("order-1"));

    // `snapshots` reads them through sudo as well.
    let out = f
        .spawn_with_input(
            &[
                "snapshots",
                "--json",
                "--on",
                "host1",
                "--ask-sudo-password",
            ],
            password,
        )
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed[0]["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed:#}"))
        .iter()
        .filter_map(|s| s["deployId"].as_str())
        .collect();
    assert!(ids.contains(&id.as_str()), "{listed:#}");
}
