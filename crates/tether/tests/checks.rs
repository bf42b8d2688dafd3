//! Health checks against real lab hosts (issue 4): each acceptance item is
//! one scenario that deploys fixture services with checks declared in the
//! inventory and asserts the outcome, its reason and the host's end state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{parse_run, Fleet};
use serde_json::Value;
use std::time::Duration;

/// A new system for host1 with `extra` mkSystem arguments and inventory
/// `inventory` (both Nix attribute-set bodies).
fn host1(f: &Fleet, label: &str, extra: &str, inventory: &str) {
    f.set_hosts(&format!(
        r#"{{ host1 = {{ label = "{label}"; {extra} inventory = {{ {inventory} }}; }}; }}"#
    ));
}

/// Asserts host1 was rolled back because health checks failed, and
/// returns the failure (`check`, `kind`, `attempts`, `detail`) of `check`.
fn assert_rolled_back(f: &Fleet, run: &common::Run, old: &str, check: &str) -> Value {
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(run.outcome("host1"), "rolled-back", "{run}");
    assert_eq!(f.current("host1"), old, "host1 is back on the old system");
    assert!(f.reachable("host1"));
    run.failed_checks("host1")
        .into_iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("check {check} is not among the failures: {run}"))
}

fn detail(failed: &Value) -> &str {
    failed["detail"].as_str().unwrap_or("")
}

fn assert_confirmed(run: &common::Run) {
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.outcome("host1"), "confirmed", "{run}");
}

#[test]
fn a_service_answering_500_is_rolled_back_naming_the_http_check_and_status() {
    let f = Fleet::up("c01", 1);
    let old = f.current("host1");
    host1(
        &f,
        "v2",
        r#"services = [ { name = "web"; status = 500; body = "internal trouble"; } ];"#,
        r#"checkTimeout = 3; checks.web = { type = "http"; port = 8080; };"#,
    );
    let run = f.deploy(&[]);
    let failed = assert_rolled_back(&f, &run, &old, "web");
    assert_eq!(
        (&failed["check"], &failed["kind"]),
        (&"web".into(), &"http".into())
    );
    assert!(detail(&failed).contains("status 500"), "{failed}");
    assert!(detail(&failed).contains("internal trouble"), "{failed}");
    assert!(run.phases("host1").contains(&"checking".to_string()));
    // Every attempt is an event.
    let attempts: Vec<_> = run
        .events
        .iter()
        .filter(|e| e["event"] == "check" && e["check"] == "web")
        .collect();
    assert!(attempts.len() >= 3, "{attempts:?}");
    assert!(attempts
        .iter()
        .all(|e| e["passed"] == false && e["type"] == "http"));
    assert!(!run.phases("host1").contains(&"confirming".to_string()));
}

#[test]
fn a_service_healthy_three_seconds_after_activation_is_confirmed() {
    let f = Fleet::up("c02", 1);
    host1(
        &f,
        "v2",
        r#"services = [ { name = "web"; delay = 3; } ];"#,
        r#"checkTimeout = 15; checks.web = { type = "http"; port = 8080; body = "ok"; };"#,
    );
    let new = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    assert_confirmed(&run);
    assert_eq!(f.current("host1"), new);
    let web: Vec<_> = run
        .events
        .iter()
        .filter(|e| e["event"] == "check" && e["check"] == "web")
        .collect();
    assert!(web.len() >= 2, "it was retried: {web:?}");
    assert_eq!(web.last().unwrap()["passed"], true);
    assert!(web[0]["detail"].as_str().unwrap().contains("503"));
    let phases = run.phases("host1");
    let checking = phases.iter().position(|p| p == "checking").unwrap();
    let confirming = phases.iter().position(|p| p == "confirming").unwrap();
    assert!(checking < confirming, "{phases:?}");
}

#[test]
fn a_body_that_does_not_match_is_rolled_back() {
    let f = Fleet::up("c03", 1);
    let old = f.current("host1");
    host1(
        &f,
        "v2",
        r#"services = [ { name = "web"; body = "version 1"; } ];"#,
        r#"checkTimeout = 2; checks.web = { type = "http"; port = 8080; path = "/health"; bodyRegex = "^version [2-9]"; };"#,
    );
    let run = f.deploy(&[]);
    let failed = assert_rolled_back(&f, &run, &old, "web");
    assert!(detail(&failed).contains("does not match"), "{failed}");
    assert!(detail(&failed).contains("version 1"), "{failed}");
}

#[test]
fn a_required_unit_that_is_inactive_is_rolled_back() {
    let f = Fleet::up("c04", 1);
    let old = f.current("host1");
    host1(
        &f,
        "v2",
        r#"services = [ { name = "web"; } ];"#,
        r#"checkTimeout = 2; checks.daemons = { type = "units"; units = [ "fixture-web.service" "fixture-db.service" ]; };"#,
    );
    let run = f.deploy(&[]);
    let failed = assert_rolled_back(&f, &run, &old, "daemons");
    assert_eq!(
        (&failed["check"], &failed["kind"]),
        (&"daemons".into(), &"units".into())
    );
    assert!(
        detail(&failed).contains("fixture-db.service (inactive)"),
        "{failed}"
    );
    assert!(
        !detail(&failed).contains("fixture-web.service ("),
        "{failed}"
    );
}

/// A host unit (not part of any fixture system) that fails before the
/// deploy. The new systems start a timer that makes it fail again every
/// 100 ms, so it is failed after the switch too, although switch-to-
/// configuration runs `systemctl reset-failed` as NixOS does.
const LEGACY_UNIT: &str = r#"
cat >/etc/systemd/system/legacy.service <<'EOF'
[Unit]
Description=a unit that was broken before tether came
StartLimitIntervalSec=0
[Service]
Type=oneshot
ExecStart=/bin/false
EOF
cat >/etc/systemd/system/legacy.timer <<'EOF'
[Timer]
OnActiveSec=0
OnUnitInactiveSec=100ms
AccuracySec=1ms
EOF
systemctl daemon-reload
systemctl start legacy.service || true
systemctl is-failed legacy.service
"#;

#[test]
fn a_unit_failed_before_the_deploy_passes_failed_units_new_but_not_any() {
    let f = Fleet::up("c05", 1);
    assert_eq!(f.console("host1", LEGACY_UNIT), "failed");
    let restart = r#"extraActivation = "systemctl start legacy.timer";"#;
    host1(&f, "v2", restart, r#"failedUnits = "new";"#);
    let new = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    assert_confirmed(&run);
    assert_eq!(f.current("host1"), new);
    assert!(run
        .events
        .iter()
        .any(|e| e["check"] == "failedUnits" && e["passed"] == true));

    host1(
        &f,
        "v3",
        restart,
        r#"failedUnits = "any"; checkTimeout = 2;"#,
    );
    f.settle("host1");
    let run = f.deploy(&[]);
    let failed = assert_rolled_back(&f, &run, &new, "failedUnits");
    assert_eq!(failed["check"], "failedUnits");
    assert!(detail(&failed).contains("legacy.service"), "{failed}");
}

#[test]
fn a_failing_target_command_is_rolled_back_with_its_stderr() {
    let f = Fleet::up("c06", 1);
    let old = f.current("host1");
    host1(
        &f,
        "v2",
        "",
        r#"checkTimeout = 2; checks.db = { type = "command"; on = "target"; command = "test -e /etc/hostname && echo \"db on $(cat /proc/sys/kernel/hostname) is down\" >&2 && exit 3"; };"#,
    );
    let run = f.deploy(&[]);
    let failed = assert_rolled_back(&f, &run, &old, "db");
    assert_eq!(
        (&failed["check"], &failed["kind"]),
        (&"db".into(), &"command".into())
    );
    assert!(
        detail(&failed).contains("exited 3 on the target"),
        "{failed}"
    );
    assert!(detail(&failed).contains("db on host1 is down"), "{failed}");
}

#[test]
fn deployer_commands_pass_and_fail_with_the_host_in_their_environment() {
    let f = Fleet::up("c07", 1);
    let addr = f.address("host1");
    let probe = format!(
        r#"checks.local = {{ type = "command"; on = "deployer"; command = "test \"$TETHER_HOST\" = host1 && test \"$TETHER_ADDRESS\" = {addr} && test \"$TETHER_SSH_USER\" = root"; }};"#
    );
    host1(&f, "v2", "", &probe);
    let v2 = f.systems()["host1"].clone();
    let run = f.deploy(&[]);
    assert_confirmed(&run);
    assert!(run
        .events
        .iter()
        .any(|e| e["check"] == "local" && e["passed"] == true));

    host1(
        &f,
        "v3",
        "",
        r#"checkTimeout = 2; checks.local = { type = "command"; on = "deployer"; command = "echo \"no quorum for $TETHER_HOST\" >&2; exit 1"; };"#,
    );
    f.settle("host1");
    let run = f.deploy(&[]);
    let failed = assert_rolled_back(&f, &run, &v2, "local");
    assert!(
        detail(&failed).contains("exited 1 on the deployer"),
        "{failed}"
    );
    assert!(detail(&failed).contains("no quorum for host1"), "{failed}");
}

#[test]
fn a_host_header_checks_a_name_based_virtual_host_by_ip() {
    let f = Fleet::up("c08", 1);
    let services = r#"services = [ { name = "web"; status = 404; body = "no such site"; vhosts."app.example.org" = { status = 200; body = "the app"; }; } ];"#;
    host1(
        &f,
        "v2",
        services,
        r#"checkTimeout = 5; checks.app = { type = "http"; port = 8080; headers.Host = "app.example.org"; body = "the app"; };"#,
    );
    let run = f.deploy(&[]);
    assert_confirmed(&run);
    // The same check without the Host header gets the default site.
    let old = f.current("host1");
    host1(
        &f,
        "v3",
        services,
        r#"checkTimeout = 2; checks.app = { type = "http"; port = 8080; body = "the app"; };"#,
    );
    f.settle("host1");
    let run = f.deploy(&[]);
    let failed = assert_rolled_back(&f, &run, &old, "app");
    assert!(detail(&failed).contains("status 404"), "{failed}");
}

#[test]
fn tether_check_passes_a_healthy_fleet_and_names_a_stopped_service() {
    let f = Fleet::up("c09", 2);
    let both = r#"services = [ { name = "web"; } ]; inventory.checks.web = { type = "http"; port = 8080; };"#;
    f.set_hosts(&format!(
        "{{ host1 = {{ label = \"v2\"; {both} }}; host2 = {{ label = \"v2\"; {both} }}; }}"
    ));
    let run = f.deploy(&[]);
    assert_eq!(run.code, 0, "{run}");

    let out = f.tether(&["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("host1  healthy") && stdout.contains("host2  healthy"));

    f.console("host2", "systemctl stop fixture-web.service");
    let out = f.tether(&["check", "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("host2  check web (http) FAILED"),
        "{stdout}"
    );
    assert!(stdout.contains("host1  healthy"), "{stdout}");

    // --timeout bounds the retries: on tether's own clock, the last attempt
    // ends within the 2 s plus one attempt's own timeout (5 s).
    let out = f.tether(&["check", "--json", "--timeout", "2"]);
    let run = parse_run(out, Duration::ZERO);
    let last = run
        .events
        .iter()
        .filter(|e| e["event"] == "check" && e["host"] == "host2")
        .filter_map(|e| e["elapsedMs"].as_u64())
        .max()
        .unwrap_or_else(|| panic!("no check events: {run}"));
    assert!(last <= 2_000 + 5_000 + 1_000, "last attempt at {last} ms");

    let out = f.tether(&["check", "--json", "--timeout", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let run = parse_run(out, Duration::ZERO);
    let host2 = &run.summary["hosts"][1];
    assert_eq!(host2["host"], "host2");
    assert_eq!(host2["healthy"], false);
    assert_eq!(host2["failures"][0]["check"], "web");
    assert!(run
        .events
        .iter()
        .any(|e| e["event"] == "check" && e["host"] == "host2" && e["passed"] == false));
}

#[test]
fn every_invalid_check_or_ssh_setting_exits_2_naming_host_and_field_and_touches_no_host() {
    let f = Fleet::up("c10", 1);
    let before = f.current("host1");
    let cases = [
        (
            r#"checks.web = { type = "htp"; };"#,
            r#"field "checks.web.type": unknown check type "htp""#,
        ),
        (
            r#"checks.web = { type = "http"; url = "http//nope"; };"#,
            r#"field "checks.web.url""#,
        ),
        (
            r#"checks.web = { type = "tcp"; port = 70000; };"#,
            r#"field "checks.web.port": 70000 is out of range"#,
        ),
        (
            r#"checks.web = { type = "http"; bodyRegex = "(unclosed"; };"#,
            r#"field "checks.web.bodyRegex""#,
        ),
        (
            r#"checks.web = { type = "http"; colour = "red"; };"#,
            r#"field "checks.web.colour": unknown field"#,
        ),
        (
            r#"checks.web = { type = "command"; on = "laptop"; command = "true"; };"#,
            r#"field "checks.web.on""#,
        ),
        (r#"failedUnits = "some";"#, r#"field "failedUnits""#),
        // Found at load, not mid-deploy (issue: "confirmed must mean proven", 12).
        (
            r#"checks.web = { type = "http"; headers.X-Token = builtins.fromJSON "\"a\\u0001b\""; };"#,
            r#"field "checks.web.headers.X-Token": "a\u{1}b" is not valid here: header values must be visible ASCII"#,
        ),
        (
            r#"checks.web = { type = "http"; caFile = "/nonexistent/ca.pem"; };"#,
            r#"field "checks.web.caFile": "/nonexistent/ca.pem" is not a readable file"#,
        ),
        (
            r#"checks.daemons = { type = "units"; units = [ "fixture-*.service" ]; };"#,
            r#"field "checks.daemons.units[0]": "fixture-*.service" is not valid here: globs are not allowed"#,
        ),
        (
            r#"checks.daemons = { type = "units"; units = [ "nginx" ]; };"#,
            r#"field "checks.daemons.units[0]": "nginx" is not valid here: not a systemd unit name"#,
        ),
        // sshOptions that would weaken the pinned key or the fresh
        // confirmation, or break the session (item 8).
        (
            r#"sshOptions = [ "-o" "KnownHostsCommand=/bin/echo" ];"#,
            r#"field "sshOptions[1]": KnownHostsCommand is not allowed"#,
        ),
        (
            r#"sshOptions = [ "-oVerifyHostKeyDNS=yes" ];"#,
            r#"field "sshOptions[0]": VerifyHostKeyDNS is not allowed"#,
        ),
        (
            r#"sshOptions = [ "-o" "GlobalKnownHostsFile=/etc/ssh/ssh_known_hosts" ];"#,
            r#"field "sshOptions[1]": GlobalKnownHostsFile is not allowed"#,
        ),
        (
            r#"sshOptions = [ "-F" "/etc/ssh/other_config" ];"#,
            r#"field "sshOptions[0]": -F is not allowed"#,
        ),
        (
            r#"sshOptions = [ "-o" "ControlMaster=auto" ];"#,
            r#"field "sshOptions[1]": ControlMaster is not allowed"#,
        ),
        (
            r#"sshOptions = [ "-o" "ControlPath=/tmp/cm-%r" ];"#,
            r#"field "sshOptions[1]": ControlPath is not allowed"#,
        ),
        (
            r#"sshOptions = [ "-C" "-S" "/tmp/cm" ];"#,
            r#"field "sshOptions[1]": -S is not allowed"#,
        ),
        (
            r#"sshOptions = [ "-M" ];"#,
            r#"field "sshOptions[0]": -M is not allowed"#,
        ),
        (
            r#"sshOptions = [ "ProxyJump=bastion" ];"#,
            r#"field "sshOptions[0]": "ProxyJump=bastion" is not an ssh option"#,
        ),
    ];
    for (inventory, expected) in cases {
        host1(&f, "v2", "", inventory);
        let run = f.deploy(&[]);
        assert_eq!(run.code, 2, "{inventory}: {}", run.stderr);
        assert!(
            run.stderr.contains(r#"host "host1""#) && run.stderr.contains(expected),
            "{inventory}: {}",
            run.stderr
        );
        assert!(run.events.is_empty(), "no host was started: {inventory}");
    }
    let out = f.tether(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(f.current("host1"), before);
    assert_eq!(
        f.console("host1", "ls /run/tether/deploys 2>/dev/null | wc -l"),
        "0"
    );
}
