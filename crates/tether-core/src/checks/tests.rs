//! The check logic against fake probes and a fake target, with a virtual
//! clock: what passes, what fails, and what a failure says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::model::{Address, StorePath};
use crate::ports::{CommandOutput, OnLine, RemoteError, ScriptOutput};
use crate::remote::{Op, Script};
use crate::spec::{CommandCheck, TcpCheck};
use std::cell::{Cell, RefCell};
use std::future::Future;

#[derive(Default)]
struct Clock0(Cell<Duration>);

impl Clock for Clock0 {
    fn now(&self) -> Duration {
        self.0.get()
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        self.0.set(self.0.get() + d);
        async {}
    }
}

/// A target answering check scripts: the units' states, the system state,
/// and target commands (exit code and stderr).
struct FakeTarget {
    units: String,
    system: String,
    /// Answers to the system-state look before `system` (one each).
    system_first: RefCell<std::collections::VecDeque<String>>,
    command: (i32, String),
    /// The operations asked for, in order.
    scripts: RefCell<Vec<Op>>,
}

impl Default for FakeTarget {
    fn default() -> Self {
        FakeTarget {
            units: String::new(),
            system: "system_state=running\nsystem=done\n".into(),
            system_first: RefCell::default(),
            command: (0, String::new()),
            scripts: RefCell::default(),
        }
    }
}

impl Target for FakeTarget {
    fn run(
        &self,
        script: &Script,
        _conn: Conn,
        _timeout: Duration,
        _on_line: Option<OnLine<'_>>,
    ) -> impl Future<Output = Result<ScriptOutput, RemoteError>> {
        self.scripts.borrow_mut().push(script.op);
        let out = match script.op {
            Op::Units => ScriptOutput {
                stdout: self.units.clone(),
                exit_code: Some(0),
                ..Default::default()
            },
            Op::SystemState => ScriptOutput {
                stdout: self
                    .system_first
                    .borrow_mut()
                    .pop_front()
                    .unwrap_or_else(|| self.system.clone()),
                exit_code: Some(0),
                ..Default::default()
            },
            Op::CheckCommand => ScriptOutput {
                stderr: self.command.1.clone(),
                exit_code: Some(self.command.0),
                ..Default::default()
            },
            other => panic!("the checks have no business running {other}"),
        };
        async move { Ok(out) }
    }
    async fn copy(&self, _path: &StorePath, _timeout: Duration) -> Result<(), RemoteError> {
        Ok(())
    }
}

#[derive(Default)]
struct FakeProbe {
    body: String,
    status: u16,
    command: CommandOutput,
    env: RefCell<Vec<(String, String)>>,
}

impl Probe for FakeProbe {
    fn http(&self, _request: &HttpRequest) -> impl Future<Output = Result<HttpResponse, String>> {
        let r = HttpResponse {
            status: self.status,
            body: self.body.clone(),
        };
        async move { Ok(r) }
    }
    async fn tcp(&self, _address: &Address, port: u16, _timeout: Duration) -> Result<(), String> {
        if port == 22 {
            Ok(())
        } else {
            Err("connection refused".into())
        }
    }
    fn command(
        &self,
        _command: &str,
        env: &[(String, String)],
        _timeout: Duration,
    ) -> impl Future<Output = Result<CommandOutput, String>> {
        *self.env.borrow_mut() = env.to_vec();
        let out = self.command.clone();
        async move { Ok(out) }
    }
}

fn host() -> CheckTarget {
    CheckTarget {
        name: "web1".parse().unwrap(),
        address: "10.0.0.1".parse().unwrap(),
        ssh_user: "deploy".parse().unwrap(),
    }
}

fn only(kind: CheckKind) -> HostChecks {
    HostChecks {
        checks: vec![Check {
            name: "c".into(),
            kind,
            timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }],
        timeout: Duration::from_secs(5),
        ..HostChecks::none()
    }
}

fn run(checks: &HostChecks, target: &FakeTarget, probe: &FakeProbe) -> (Vec<CheckFailure>, u32) {
    let attempts = Cell::new(0);
    let failures = futures::executor::block_on(run_checks(
        &host(),
        checks,
        &Baseline::None,
        target,
        probe,
        &Clock0::default(),
        &|_| attempts.set(attempts.get() + 1),
        None,
    ));
    (failures, attempts.get())
}

fn http(check: HttpCheck, status: u16, body: &str) -> Vec<CheckFailure> {
    let probe = FakeProbe {
        status,
        body: body.into(),
        ..FakeProbe::default()
    };
    run(
        &only(CheckKind::Http(check)),
        &FakeTarget::default(),
        &probe,
    )
    .0
}

#[test]
fn http_status_defaults_to_any_2xx_and_can_be_pinned() {
    assert!(http(HttpCheck::default(), 204, "").is_empty());
    let f = http(HttpCheck::default(), 500, "boom");
    assert_eq!(f.len(), 1);
    assert!(f[0].detail.contains("status 500 (expected 2xx)"), "{f:?}");
    assert!(f[0].detail.contains("boom"), "the body excerpt is shown");
    let pinned = HttpCheck {
        status: vec![301, 302],
        ..HttpCheck::default()
    };
    assert!(http(pinned.clone(), 302, "").is_empty());
    assert!(!http(pinned, 200, "").is_empty());
}

#[test]
fn http_body_substring_and_regex_must_match() {
    let check = HttpCheck {
        body: Some("healthy".into()),
        body_regex: Some(r"^version \d+".into()),
        ..HttpCheck::default()
    };
    assert!(http(check.clone(), 200, "version 3: healthy").is_empty());
    let f = http(check.clone(), 200, "version 3: sick");
    assert!(
        f[0].detail.contains("does not contain \"healthy\""),
        "{f:?}"
    );
    let f = http(check, 200, "v3: healthy");
    assert!(f[0].detail.contains("does not match"), "{f:?}");
}

#[test]
fn failures_retry_every_interval_until_the_deadline() {
    let (failures, attempts) = run(
        &only(CheckKind::Tcp(TcpCheck {
            port: 5432,
            address: None,
        })),
        &FakeTarget::default(),
        &FakeProbe::default(),
    );
    // 5 s deadline, 1 s interval: attempts at 0, 1, 2, 3, 4 and 5 s.
    assert_eq!(attempts, 6);
    assert_eq!(failures[0].attempts, 6);
    assert!(failures[0].detail.contains("10.0.0.1:5432"));
    let (failures, attempts) = run(
        &only(CheckKind::Tcp(TcpCheck {
            port: 22,
            address: None,
        })),
        &FakeTarget::default(),
        &FakeProbe::default(),
    );
    assert!(failures.is_empty());
    assert_eq!(attempts, 1, "a passed check is not tried again");
}

#[test]
fn deployer_commands_get_the_host_in_their_environment() {
    let probe = FakeProbe {
        command: CommandOutput {
            exit_code: Some(2),
            stdout: String::new(),
            stderr: "first\nno route to db\n".into(),
        },
        ..FakeProbe::default()
    };
    let (failures, _) = run(
        &only(CheckKind::Command(CommandCheck {
            on: CommandOn::Deployer,
            command: "check-db".into(),
        })),
        &FakeTarget::default(),
        &probe,
    );
    assert!(failures[0].detail.contains("exited 2"), "{failures:?}");
    assert!(failures[0].detail.contains("no route to db"));
    let env = probe.env.borrow();
    assert!(env.contains(&("TETHER_HOST".into(), "web1".into())));
    assert!(env.contains(&("TETHER_ADDRESS".into(), "10.0.0.1".into())));
    assert!(env.contains(&("TETHER_SSH_USER".into(), "deploy".into())));
}

#[test]
fn target_commands_report_exit_code_and_stderr() {
    let target = FakeTarget {
        command: (3, "database is read-only\n".into()),
        ..FakeTarget::default()
    };
    let (failures, _) = run(
        &only(CheckKind::Command(CommandCheck {
            on: CommandOn::Target,
            command: "pg_isready".into(),
        })),
        &target,
        &FakeProbe::default(),
    );
    assert!(failures[0].detail.contains("exited 3 on the target"));
    assert!(failures[0].detail.contains("database is read-only"));
    assert_eq!(target.scripts.borrow()[0], Op::CheckCommand);
}

#[test]
fn units_must_all_be_active() {
    let target = FakeTarget {
        units: "unit_state=a.service active\nunit_state=b.service inactive\n".into(),
        ..FakeTarget::default()
    };
    let (failures, _) = run(
        &only(CheckKind::Units(vec![
            "a.service".into(),
            "b.service".into(),
        ])),
        &target,
        &FakeProbe::default(),
    );
    assert_eq!(failures[0].detail, "not active: b.service (inactive)");
}

#[test]
fn system_running_waits_out_starting_and_accepts_degraded_only_when_allowed() {
    assert!(judge_system_running(FailedUnits::New, "starting").is_err());
    assert!(judge_system_running(FailedUnits::New, "running").is_ok());
    assert!(judge_system_running(FailedUnits::New, "degraded").is_ok());
    assert!(judge_system_running(FailedUnits::Ignore, "degraded").is_ok());
    assert!(judge_system_running(FailedUnits::Any, "degraded").is_err());
    assert!(judge_system_running(FailedUnits::New, "maintenance").is_err());
}

fn failed(units: &[&str]) -> SystemStateLook {
    SystemStateLook {
        state: if units.is_empty() {
            "running"
        } else {
            "degraded"
        }
        .into(),
        failed_units: units.iter().map(|u| u.to_string()).collect(),
        failed_count: Some(units.len() as u32),
    }
}

#[test]
fn failed_units_new_compares_with_the_baseline_and_without_one_means_any() {
    let both = failed(&["old.service", "new.service"]);
    let old = failed(&["old.service"]);
    let before = Baseline::Before(vec!["old.service".into()]);
    let e = judge_failed_units(FailedUnits::New, &before, &both).unwrap_err();
    assert_eq!(
        e,
        "failed units that were not failed before the switch: new.service"
    );
    assert!(judge_failed_units(FailedUnits::New, &before, &old).is_ok());
    assert!(judge_failed_units(FailedUnits::New, &Baseline::None, &old).is_err());
    assert!(judge_failed_units(FailedUnits::Any, &before, &old).is_err());
    assert!(judge_failed_units(FailedUnits::Ignore, &before, &both).is_ok());
    assert!(judge_failed_units(FailedUnits::Any, &before, &failed(&[])).is_ok());
}

#[test]
fn a_failed_unit_counted_but_gone_from_the_list_is_no_pass() {
    // systemd counted one failed unit, which was restarting by the time
    // the names were listed: no verdict from that look.
    let flapping = SystemStateLook {
        state: "degraded".into(),
        failed_units: Vec::new(),
        failed_count: Some(1),
    };
    let before = Baseline::Before(Vec::new());
    for mode in [FailedUnits::New, FailedUnits::Any] {
        let e = judge_failed_units(mode, &before, &flapping).unwrap_err();
        assert!(e.contains("changed state"), "{e}");
    }
    assert!(judge_failed_units(FailedUnits::Ignore, &before, &flapping).is_ok());
}

/// Runs the system checks with `first` as the activation's own look and
/// the target answering `later`; the attempts seen and the virtual time.
fn system_checks(
    mode: FailedUnits,
    first: SystemStateLook,
    later: &str,
) -> (Vec<CheckFailure>, Vec<CheckAttempt>, Duration) {
    let checks = HostChecks {
        failed_units: mode,
        system_running: true,
        timeout: Duration::from_secs(3),
        ..HostChecks::none()
    };
    let target = FakeTarget {
        system: later.into(),
        ..FakeTarget::default()
    };
    let clock = Clock0::default();
    let attempts = RefCell::new(Vec::new());
    let failures = futures::executor::block_on(run_checks(
        &host(),
        &checks,
        &Baseline::Before(Vec::new()),
        &target,
        &FakeProbe::default(),
        &clock,
        &|a| attempts.borrow_mut().push(a),
        Some(&first),
    ));
    (failures, attempts.into_inner(), clock.now())
}

#[test]
fn a_unit_that_keeps_failing_is_caught_though_the_first_look_missed_it() {
    // Right after the activation the unit was between two failures.
    let later = "system_state=degraded\nfailed_count=1\nfailed_unit=legacy.service\nsystem=done\n";
    let (failures, attempts, _) = system_checks(FailedUnits::Any, failed(&[]), later);
    let names: Vec<&str> = failures.iter().map(|f| f.check.as_str()).collect();
    assert_eq!(names, ["failedUnits", "systemRunning"]);
    assert!(failures[0].detail.contains("legacy.service"));
    // The early pass was no attempt: every reported one failed.
    assert!(attempts.iter().all(|a| !a.passed), "{attempts:?}");
}

#[test]
fn a_unit_failing_over_and_over_is_caught_though_single_looks_miss_it() {
    // Every other look lands while the unit is starting again.
    let bad = "system_state=degraded\nfailed_count=1\nfailed_unit=legacy.service\nsystem=done\n";
    let clean = "system_state=running\nfailed_count=0\nsystem=done\n";
    let checks = HostChecks {
        failed_units: FailedUnits::Any,
        system_running: false,
        timeout: Duration::from_secs(6),
        ..HostChecks::none()
    };
    let target = FakeTarget {
        system: bad.into(),
        system_first: RefCell::new(
            [bad, clean, bad, clean, bad, clean]
                .map(String::from)
                .into(),
        ),
        ..FakeTarget::default()
    };
    let clock = Clock0::default();
    let failures = futures::executor::block_on(run_checks(
        &host(),
        &checks,
        &Baseline::Before(Vec::new()),
        &target,
        &FakeProbe::default(),
        &clock,
        &|_| {},
        Some(&failed(&[])),
    ));
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].detail.contains("legacy.service"));
}

#[test]
fn a_healthy_system_passes_on_its_second_look_one_settle_later() {
    let healthy = "system_state=running\nfailed_count=0\nsystem=done\n";
    let (failures, attempts, took) = system_checks(FailedUnits::New, failed(&[]), healthy);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(attempts.len(), 2, "one pass each: {attempts:?}");
    assert!(attempts.iter().all(|a| a.passed && a.attempt == 1));
    assert_eq!(took, SYSTEM_SETTLE);
}

#[test]
fn the_default_url_is_the_hosts_address_with_port_and_path() {
    let a: Address = "fd00::1".parse().unwrap();
    let c = HttpCheck {
        port: Some(8080),
        path: Some("/health".into()),
        ..HttpCheck::default()
    };
    assert_eq!(c.url_for(&a), "http://[fd00::1]:8080/health");
    assert_eq!(
        HttpCheck::default().url_for(&"10.0.0.1".parse().unwrap()),
        "http://10.0.0.1/"
    );
}
