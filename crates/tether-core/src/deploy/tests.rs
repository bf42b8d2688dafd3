//! The safe switch's decisions, against a scripted fake host and a clock
//! whose sleeps only advance virtual time. (The real thing is tested against
//! lab hosts in crates/tether/tests/.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::model::{DeployId, Goal, StorePath, Token};
use crate::ports::{
    Clock, CommandOutput, Conn, HttpRequest, HttpResponse, OnLine, Probe, RemoteError, Reporter,
    ScriptOutput, Stream, Target,
};
use crate::remote::{
    ArmAndActivate, Confirm, GuardSpec, JournalEntry, JournalEvent, Op, Operation, Persist,
    PersistMode, Script, StateProblem,
};
use crate::report::{
    CheckFailure, DataAfterRollback, Event, EventKind, HostReport, IdentityProblem, NotPersisted,
    Outcome, PersistProblem, Phase, Refusal, RollbackReason, TrialProblem, UnknownReason,
};
use crate::spec::{Check, CheckKind, CheckTarget, FailedUnits, HostChecks, HttpCheck, Timeouts};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

const OLD: &str = "/nix/store/aaaa-nixos-system-old";
const NEW: &str = "/nix/store/bbbb-nixos-system-new";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Activation {
    Exit(i32),
    Hang,
}

struct Fake {
    preflight: Result<String, RemoteError>,
    activation: Activation,
    confirm: RefCell<VecDeque<Result<String, RemoteError>>>,
    renew: Result<String, RemoteError>,
    inspect: RefCell<VecDeque<Result<String, RemoteError>>>,
    persist: String,
    /// What the system-state script (failedUnits, systemRunning) prints.
    system: String,
    calls: RefCell<Vec<(String, Conn)>>,
    /// Every request, in order (for tests that compare a whole request).
    requests: RefCell<Vec<Script>>,
    /// What the activation's session prints about the system afterwards.
    state_after: String,
    /// How long the activation and each confirmation take, in tokio's
    /// (paused) test time; zero for tests on the virtual clock.
    activation_takes: Duration,
    confirm_takes: Duration,
    /// When each renewal arrived (tokio test time since the deploy began).
    renewals: RefCell<Vec<Duration>>,
    started: Cell<Option<tokio::time::Instant>>,
    /// What arming prints instead of `arm=armed` (then nothing activates).
    arm_refusal: Option<String>,
    /// What the state operations print (`state.sh`), by operation.
    state_ops: Vec<(Op, String)>,
}

fn preflight(current: &str, profile: &str) -> String {
    format!("machine_id=m1\nhostname=h\narch=x86_64\ncurrent={current}\nbooted={current}\nprofile={profile}\nboot_id=boot1\npreflight=done\n")
}

impl Fake {
    fn healthy() -> Fake {
        Fake {
            preflight: Ok(preflight(OLD, OLD)),
            activation: Activation::Exit(0),
            confirm: RefCell::new(
                vec![Ok(format!(
                    "machine_id=m1\ncurrent={NEW}\nboot_id=boot1\nconfirm=confirmed\nstate=confirmed\n"
                ))]
                .into(),
            ),
            renew: Ok("state=armed\nguard=alive\nrenew=done\n".into()),
            inspect: RefCell::new(VecDeque::new()),
            persist: format!(
                "profile=ok\nboot_rc=0\ngeneration=2\nboot_loader=fixture\nboot_default={NEW}\npersisted=yes\n"
            ),
            system: "system_state=running\nsystem=done\n".into(),
            calls: RefCell::new(Vec::new()),
            requests: RefCell::new(Vec::new()),
            state_after: String::new(),
            activation_takes: Duration::ZERO,
            confirm_takes: Duration::ZERO,
            renewals: RefCell::new(Vec::new()),
            started: Cell::new(None),
            arm_refusal: None,
            state_ops: Vec::new(),
        }
    }
    fn called(&self, what: &str) -> bool {
        self.calls.borrow().iter().any(|(c, _)| c == what)
    }
    fn conn_of(&self, what: &str) -> Vec<Conn> {
        self.calls
            .borrow()
            .iter()
            .filter(|(c, _)| c == what)
            .map(|(_, conn)| *conn)
            .collect()
    }
}

fn ok(stdout: &str) -> Result<ScriptOutput, RemoteError> {
    Ok(ScriptOutput {
        stdout: stdout.into(),
        stderr: String::new(),
        exit_code: Some(0),
    })
}

impl Target for Fake {
    fn run(
        &self,
        script: &Script,
        conn: Conn,
        _timeout: Duration,
        on_line: Option<OnLine<'_>>,
    ) -> impl Future<Output = Result<ScriptOutput, RemoteError>> {
        let kind = match script.op {
            Op::Preflight => "preflight",
            // Arming rides along with the activation.
            Op::ArmAndActivate => "activate",
            Op::Confirm | Op::ConfirmAndPersist => "confirm",
            Op::Inspect => "inspect",
            Op::RequestRollback => "ask-rollback",
            Op::Renew => "renew",
            Op::Persist => "persist",
            Op::FinishTrial => "finish",
            Op::SystemState => "system",
            Op::TrialNeeds => "needs",
            _ => "other",
        };
        self.calls.borrow_mut().push((kind.to_string(), conn));
        self.requests.borrow_mut().push(script.clone());
        let hang = kind == "activate" && self.activation == Activation::Hang;
        let takes = match kind {
            "activate" => self.activation_takes,
            "confirm" => self.confirm_takes,
            _ => Duration::ZERO,
        };
        if kind == "renew" {
            if let Some(start) = self.started.get() {
                self.renewals.borrow_mut().push(start.elapsed());
            }
        }
        let state_answer = self
            .state_ops
            .iter()
            .find(|(op, _)| *op == script.op)
            .map(|(_, out)| out.clone());
        let result = match kind {
            _ if state_answer.is_some() => ok(&state_answer.unwrap_or_default()),
            // After a persisted deploy the host runs (and boots) the new system.
            "preflight" if self.called("persist") => self
                .preflight
                .clone()
                .and_then(|s| ok(&s.replace(&format!("={OLD}"), &format!("={NEW}")))),
            "preflight" => self.preflight.clone().and_then(|s| ok(&s)),
            "arm" => ok("arm=armed\n"),
            "activate" if self.arm_refusal.is_some() => {
                ok(self.arm_refusal.as_deref().unwrap_or_default())
            }
            "activate" => {
                self.calls.borrow_mut().push(("arm".into(), conn));
                if let Some(f) = on_line {
                    f(Stream::Stdout, "arm=armed");
                }
                match self.activation {
                    Activation::Exit(code) => Ok(ScriptOutput {
                        stdout: format!("arm=armed\n{}", self.state_after),
                        exit_code: Some(code),
                        ..Default::default()
                    }),
                    Activation::Hang => ok("arm=armed\n"),
                }
            }
            "confirm" => self
                .confirm
                .borrow_mut()
                .pop_front()
                .unwrap_or(Err(RemoteError::Unreachable("connection refused".into())))
                .and_then(|s| {
                    // Persisting rides along in the confirming session.
                    if script.op == Op::ConfirmAndPersist && s.contains("state=confirmed") {
                        self.calls.borrow_mut().push(("persist".into(), conn));
                        // Persisting reads back the system it persisted:
                        // the one the confirmation found running.
                        let current = s
                            .lines()
                            .find_map(|l| l.strip_prefix("current="))
                            .unwrap_or(NEW);
                        ok(&format!("{s}{}", self.persist.replace(NEW, current)))
                    } else {
                        ok(&s)
                    }
                }),
            "inspect" => self
                .inspect
                .borrow_mut()
                .pop_front()
                .unwrap_or(Err(RemoteError::Unreachable("no route".into())))
                .and_then(|s| ok(&s)),
            "renew" => self.renew.clone().and_then(|s| ok(&s)),
            "persist" => ok(&self.persist),
            "system" => ok(&self.system),
            // A change a live trial can show, on a host that could boot once.
            "needs" => ok("one_shot=yes\nboots_current=yes\nneeds=done\n"),
            _ => ok(""),
        };
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            if !takes.is_zero() {
                tokio::time::sleep(takes).await;
            }
            result
        }
    }

    fn copy(
        &self,
        _path: &StorePath,
        _timeout: Duration,
    ) -> impl Future<Output = Result<(), RemoteError>> {
        self.calls.borrow_mut().push(("copy".into(), Conn::Shared));
        async { Ok(()) }
    }
}

/// A clock whose sleeps return at once, having advanced virtual time.
#[derive(Default)]
struct VirtualClock(Cell<Duration>);

impl Clock for VirtualClock {
    fn now(&self) -> Duration {
        self.0.get()
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        self.0.set(self.0.get() + d);
        async {}
    }
}

#[derive(Default)]
struct Recorder(RefCell<Vec<Event>>);

impl Reporter for Recorder {
    fn event(&self, event: Event) {
        self.0.borrow_mut().push(event);
    }
}

fn job(goal: Goal) -> HostJob {
    HostJob {
        host: "web1".parse().unwrap(),
        new_system: StorePath::new(NEW).unwrap(),
        platform: Some("x86_64-linux".into()),
        machine_id: Some("m1".into()),
        goal,
        trial: crate::model::TrialMode::Auto,
        force_live: false,
        timeouts: Timeouts::default(),
        deploy_id: DeployId::new("20261121T000000", "abcdef").unwrap(),
        token: Token::new("0123456789abcdef0123456789abcdef").unwrap(),
        check_target: CheckTarget {
            name: "web1".parse().unwrap(),
            address: "10.231.1.11".parse().unwrap(),
            ssh_user: "root".parse().unwrap(),
        },
        checks: HostChecks::none(),
        state: Default::default(),
        deployer: "alice@laptop".into(),
        source: SystemSource::Copy,
        persist: crate::remote::PersistMode::SetProfile,
        reboot: None,
        early_preflight: None,
        closure_signers: None,
    }
}

/// The guard a deploy of `job` arms on a host that runs [`OLD`].
fn spec_of(job: &HostJob) -> GuardSpec {
    GuardSpec {
        deploy_id: job.deploy_id.clone(),
        token: job.token.clone(),
        current_system: StorePath::new(OLD).unwrap(),
        old_system: StorePath::new(OLD).unwrap(),
        new_system: job.new_system.clone(),
        lease: job.timeouts.lease,
        rollback_limit: job.timeouts.rollback,
        deployer: job.deployer.clone(),
        state: None,
    }
}

fn deploy(fake: &Fake, goal: Goal) -> (HostReport, Vec<Event>) {
    deploy_checked(fake, goal, HostChecks::none(), &FakeProbe::default())
}

fn deploy_checked(
    fake: &Fake,
    goal: Goal,
    checks: HostChecks,
    probe: &FakeProbe,
) -> (HostReport, Vec<Event>) {
    let clock = VirtualClock::default();
    let rec = Recorder::default();
    let job = HostJob {
        checks,
        ..job(goal)
    };
    let report =
        futures::executor::block_on(run_host(&job, fake, probe, &clock, &rec, Duration::ZERO));
    (report, rec.0.into_inner())
}

/// Deployer-side probes answering HTTP from a script of statuses (the last
/// one repeats).
#[derive(Default)]
struct FakeProbe {
    statuses: RefCell<VecDeque<u16>>,
    requests: RefCell<Vec<HttpRequest>>,
}

impl FakeProbe {
    fn answering(statuses: &[u16]) -> FakeProbe {
        FakeProbe {
            statuses: RefCell::new(statuses.iter().copied().collect()),
            ..FakeProbe::default()
        }
    }
}

impl Probe for FakeProbe {
    fn http(&self, request: &HttpRequest) -> impl Future<Output = Result<HttpResponse, String>> {
        self.requests.borrow_mut().push(request.clone());
        let mut statuses = self.statuses.borrow_mut();
        let status = if statuses.len() > 1 {
            statuses.pop_front()
        } else {
            statuses.front().copied()
        };
        let result = status
            .map(|status| HttpResponse {
                status,
                body: format!("status {status}"),
            })
            .ok_or_else(|| "connection refused".to_string());
        async move { result }
    }
    async fn tcp(
        &self,
        _address: &crate::model::Address,
        _port: u16,
        _timeout: Duration,
    ) -> Result<(), String> {
        Ok(())
    }
    async fn command(
        &self,
        _command: &str,
        _env: &[(String, String)],
        _timeout: Duration,
    ) -> Result<CommandOutput, String> {
        Ok(CommandOutput::default())
    }
}

fn http_checks(failed_units: FailedUnits) -> HostChecks {
    HostChecks {
        checks: vec![Check {
            name: "web".into(),
            kind: CheckKind::Http(HttpCheck {
                port: Some(8080),
                ..HttpCheck::default()
            }),
            timeout: Duration::from_secs(5),
        }],
        failed_units,
        system_running: true,
        timeout: Duration::from_secs(15),
        interval: Duration::from_secs(1),
    }
}

fn rolled_back_inspection() -> RefCell<VecDeque<Result<String, RemoteError>>> {
    RefCell::new(
        vec![Ok(format!(
            "current={OLD}\nboot_id=boot1\nstate=rolled-back\nreason=asked\ninspect=done\n"
        ))]
        .into(),
    )
}

/// Why a rolled-back host was rolled back.
fn why_rolled_back(outcome: &Outcome) -> &TrialProblem {
    match outcome {
        Outcome::RolledBack {
            reason: RollbackReason::ByGuard { why, .. } | RollbackReason::Rebooted { why },
        } => why,
        other => panic!("expected rolled back, got {other:?}"),
    }
}

/// The health checks that failed, when that is why.
fn failed_checks(why: &TrialProblem) -> &[CheckFailure] {
    match why {
        TrialProblem::ChecksFailed { failures, .. } => failures,
        other => panic!("expected failed checks, got {other:?}"),
    }
}

fn phases_of(events: &[Event]) -> Vec<Phase> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Phase { phase } => Some(*phase),
            _ => None,
        })
        .collect()
}

#[test]
fn a_failing_http_check_rolls_back_at_the_deadline_naming_check_and_status() {
    let fake = Fake {
        inspect: rolled_back_inspection(),
        ..Fake::healthy()
    };
    let probe = FakeProbe::answering(&[500]);
    let (report, events) =
        deploy_checked(&fake, Goal::Switch, http_checks(FailedUnits::New), &probe);
    let failures = failed_checks(why_rolled_back(&report.outcome));
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].check, "web");
    assert!(failures[0].detail.contains("status 500"), "{failures:?}");
    assert!(fake.called("ask-rollback"));
    assert!(!fake.called("confirm") && !fake.called("persist"));
    assert_eq!(
        probe.requests.borrow()[0].url,
        "http://10.231.1.11:8080/",
        "the default URL is the host's address"
    );
    // Retried every second for the 15 s deadline, each attempt an event.
    let attempts = events
        .iter()
        .filter(
            |e| matches!(&e.kind, EventKind::Check { check, passed: false, .. } if check == "web"),
        )
        .count();
    assert!((15..=17).contains(&attempts), "{attempts} attempts");
    assert!(phases_of(&events).contains(&Phase::Checking));
}

#[test]
fn checks_that_pass_after_a_while_lead_to_the_confirmation() {
    let fake = Fake::healthy();
    let probe = FakeProbe::answering(&[503, 503, 503, 200]);
    let (report, events) =
        deploy_checked(&fake, Goal::Switch, http_checks(FailedUnits::New), &probe);
    assert!(
        matches!(report.outcome, Outcome::Confirmed { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(
        phases_of(&events),
        vec![
            Phase::Preflight,
            Phase::Copying,
            Phase::Arming,
            Phase::Activating,
            Phase::Checking,
            Phase::Confirming,
            Phase::Persisting
        ]
    );
    let calls: Vec<String> = fake.calls.borrow().iter().map(|(c, _)| c.clone()).collect();
    let last_system = calls.iter().rposition(|c| c == "system").unwrap();
    let confirm = calls.iter().position(|c| c == "confirm").unwrap();
    assert!(last_system < confirm, "checks run before the confirmation");
    assert_eq!(probe.requests.borrow().len(), 4);
}

#[test]
fn a_unit_failed_before_the_switch_passes_new_but_not_any() {
    let with_failed = |mode| {
        let fake = Fake {
            preflight: Ok(preflight(OLD, OLD) + "failed_unit=legacy.service\n"),
            system: "system_state=degraded\nfailed_unit=legacy.service\nsystem=done\n".into(),
            inspect: rolled_back_inspection(),
            ..Fake::healthy()
        };
        let probe = FakeProbe::answering(&[200]);
        deploy_checked(&fake, Goal::Switch, http_checks(mode), &probe).0
    };
    let new = with_failed(FailedUnits::New);
    assert!(matches!(new.outcome, Outcome::Confirmed { .. }), "{new:?}");
    let any = with_failed(FailedUnits::Any);
    let failures = failed_checks(why_rolled_back(&any.outcome));
    assert_eq!(failures[0].check, "failedUnits");
    assert!(
        failures[0].detail.contains("legacy.service"),
        "{failures:?}"
    );
}

#[test]
fn a_unit_that_failed_with_the_switch_is_new_and_rolls_back() {
    let fake = Fake {
        system: "system_state=degraded\nfailed_unit=app.service\nsystem=done\n".into(),
        inspect: rolled_back_inspection(),
        ..Fake::healthy()
    };
    let probe = FakeProbe::answering(&[200]);
    let (report, _) = deploy_checked(&fake, Goal::Switch, http_checks(FailedUnits::New), &probe);
    let failures = failed_checks(why_rolled_back(&report.outcome));
    assert_eq!(failures[0].check, "failedUnits");
    assert!(
        failures[0].detail.contains("app.service")
            && failures[0].detail.contains("not failed before"),
        "{failures:?}"
    );
}

#[test]
fn healthy_switch_is_confirmed_over_a_fresh_connection_then_persisted() {
    let fake = Fake::healthy();
    let (report, events) = deploy(&fake, Goal::Switch);
    assert_eq!(
        report.outcome,
        Outcome::Confirmed {
            generation: Some(2),
            persisted: true
        }
    );
    assert_eq!(fake.conn_of("confirm"), vec![Conn::Fresh]);
    // The trial activates with `test`, never `switch`: exactly this request.
    let activation = fake
        .requests
        .borrow()
        .iter()
        .find(|r| r.op == Op::ArmAndActivate)
        .cloned()
        .unwrap();
    assert_eq!(
        activation,
        ArmAndActivate {
            spec: spec_of(&job(Goal::Switch)),
            goal: Goal::Test
        }
        .request()
    );
    assert!(fake.called("arm") && fake.called("persist"));
    let phases: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Phase { phase } => Some(*phase),
            _ => None,
        })
        .collect();
    assert_eq!(
        phases,
        vec![
            Phase::Preflight,
            Phase::Copying,
            Phase::Arming,
            Phase::Activating,
            Phase::Confirming,
            Phase::Persisting
        ]
    );
}

#[test]
fn goal_test_confirms_without_persisting() {
    let fake = Fake::healthy();
    let (report, _) = deploy(&fake, Goal::Test);
    assert_eq!(
        report.outcome,
        Outcome::Confirmed {
            generation: None,
            persisted: false
        }
    );
    assert!(!fake.called("persist") && fake.called("finish"));
}

#[test]
fn the_same_system_again_is_unchanged_and_touches_nothing() {
    let fake = Fake {
        preflight: Ok(preflight(NEW, NEW)),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert_eq!(report.outcome, Outcome::Unchanged);
    assert!(!fake.called("copy") && !fake.called("arm"));
}

#[test]
fn a_foreign_machine_id_is_refused_before_copying() {
    let fake = Fake {
        preflight: Ok(preflight(OLD, OLD).replace("machine_id=m1", "machine_id=m2")),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert!(
        matches!(
            &report.outcome,
            Outcome::Refused {
                reason: Refusal::Identity {
                    problem: IdentityProblem::MachineId { .. }
                }
            }
        ),
        "{:?}",
        report.outcome
    );
    assert!(!fake.called("copy"));
}

#[test]
fn an_unpinned_host_key_is_refused() {
    let fake = Fake {
        preflight: Err(RemoteError::HostKey("Host key verification failed.".into())),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert!(
        matches!(
            &report.outcome,
            Outcome::Refused {
                reason: Refusal::Identity {
                    problem: IdentityProblem::HostKey { .. }
                }
            }
        ),
        "{:?}",
        report.outcome
    );
    assert!(!fake.called("copy"));
}

#[test]
fn a_system_for_another_architecture_is_refused() {
    let fake = Fake {
        preflight: Ok(preflight(OLD, OLD).replace("arch=x86_64", "arch=aarch64")),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert!(
        matches!(
            &report.outcome,
            Outcome::Refused {
                reason: Refusal::Identity {
                    problem: IdentityProblem::Architecture { host_system, .. }
                }
            } if host_system == "aarch64-linux"
        ),
        "{:?}",
        report.outcome
    );
}

#[test]
fn a_host_busy_with_another_deploy_is_refused() {
    let fake = Fake {
        preflight: Ok(preflight(OLD, OLD) + "busy=20260101T000000-aa\n"),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert_eq!(
        report.outcome,
        Outcome::Refused {
            reason: Refusal::AnotherDeploy {
                deploy_id: "20260101T000000-aa".into()
            }
        }
    );
    assert!(!fake.called("copy"));
}

#[test]
fn failed_activation_rolls_back_at_once_and_names_the_exit_code() {
    let fake = Fake {
        activation: Activation::Exit(4),
        inspect: RefCell::new(
            vec![Ok(format!(
                "current={OLD}\nboot_id=boot1\nstate=rolled-back\nreason=activation exited 4\ninspect=done\n"
            ))]
            .into(),
        ),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert_eq!(
        why_rolled_back(&report.outcome),
        &TrialProblem::ActivationFailed { exit_code: Some(4) }
    );
    assert!(fake.called("ask-rollback"));
    assert!(!fake.called("confirm") && !fake.called("persist"));
}

#[test]
fn a_confirmation_after_the_guard_fired_is_reported_rolled_back() {
    let fake = Fake {
        confirm: RefCell::new(
            vec![Ok(format!(
                "machine_id=m1\ncurrent={OLD}\nboot_id=boot1\nconfirm=too-late\nstate=rolled-back\nreason=lease expired\n"
            ))]
            .into(),
        ),
        inspect: RefCell::new(
            vec![Ok(format!(
                "current={OLD}\nboot_id=boot1\nstate=rolled-back\nreason=lease expired\ninspect=done\n"
            ))]
            .into(),
        ),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{:?}",
        report.outcome
    );
    assert!(!fake.called("persist"));
}

#[test]
fn no_fresh_connection_means_no_confirmation_and_a_rollback() {
    let fake = Fake {
        confirm: RefCell::new(VecDeque::new()),
        inspect: RefCell::new(
            vec![
                Err(RemoteError::Unreachable("refused".into())),
                Ok(format!(
                    "current={OLD}\nboot_id=boot1\nstate=rolled-back\nreason=deployer asked\ninspect=done\n"
                )),
            ]
            .into(),
        ),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert!(
        matches!(
            why_rolled_back(&report.outcome),
            TrialProblem::ConfirmFailed { .. }
        ),
        "{:?}",
        report.outcome
    );
    assert!(fake.called("ask-rollback"));
}

#[test]
fn a_host_lost_for_good_is_unknown_never_success() {
    let fake = Fake {
        activation: Activation::Hang,
        renew: Err(RemoteError::Unreachable("timed out".into())),
        inspect: RefCell::new(VecDeque::new()),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert!(
        matches!(
            &report.outcome,
            Outcome::Unknown {
                reason: UnknownReason::NoVerdict {
                    why: TrialProblem::LostContact { .. },
                    ..
                }
            }
        ),
        "{:?}",
        report.outcome
    );
}

#[test]
fn a_host_that_rebooted_into_the_old_system_is_rolled_back() {
    let fake = Fake {
        activation: Activation::Hang,
        renew: Err(RemoteError::Unreachable("timed out".into())),
        inspect: RefCell::new(
            vec![Ok(format!(
                "current={OLD}\nboot_id=boot2\nstate=missing\nreason=\ninspect=done\n"
            ))]
            .into(),
        ),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert!(
        matches!(
            &report.outcome,
            Outcome::RolledBack {
                reason: RollbackReason::Rebooted { .. }
            }
        ),
        "{:?}",
        report.outcome
    );
}

#[test]
fn a_failed_persist_is_loud_and_not_a_success() {
    let fake = Fake {
        persist: format!(
            "profile=ok\nboot_rc=1\ngeneration=2\nboot_loader=fixture\nboot_default={OLD}\npersisted=no\n"
        ),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert!(
        matches!(
            &report.outcome,
            Outcome::ConfirmedNotPersisted {
                reason: NotPersisted::Failed {
                    problem: PersistProblem {
                        profile_set: true,
                        boot_exit_code: Some(1),
                        ..
                    }
                }
            }
        ),
        "{:?}",
        report.outcome
    );
    assert!(!report.outcome.is_success());
}

#[test]
fn exit_codes_tell_success_failure_and_unknown_apart() {
    let r = |outcome| HostReport {
        host: "h".parse().unwrap(),
        outcome,
        old_system: None,
        old_generation: None,
        new_system: NEW.into(),
        duration_ms: 0,
        state: None,
    };
    let confirmed = r(Outcome::Confirmed {
        generation: None,
        persisted: true,
    });
    let rolled = r(Outcome::RolledBack {
        reason: RollbackReason::Reverted { failed_hosts: 1 },
    });
    let unknown = r(Outcome::Unknown {
        reason: UnknownReason::BadToken,
    });
    use crate::report::RunResult;
    assert_eq!(
        RunResult::of(&[confirmed.clone(), r(Outcome::Unchanged)]),
        RunResult::AllSucceeded
    );
    assert_eq!(
        RunResult::of(&[confirmed.clone(), rolled.clone()]),
        RunResult::SomeFailed
    );
    assert_eq!(
        RunResult::of(&[rolled, unknown, confirmed]),
        RunResult::SomeUnknown
    );
}

#[test]
fn a_system_already_on_the_target_is_not_copied_and_switches_generation() {
    let fake = Fake::healthy();
    let mut j = job(Goal::Switch);
    j.source = SystemSource::OnTarget;
    j.persist = crate::remote::PersistMode::SwitchGeneration(2);
    let clock = VirtualClock::default();
    let rec = Recorder::default();
    let report = futures::executor::block_on(run_host(
        &j,
        &fake,
        &FakeProbe::default(),
        &clock,
        &rec,
        Duration::ZERO,
    ));
    assert!(
        matches!(report.outcome, Outcome::Confirmed { .. }),
        "{:?}",
        report.outcome
    );
    assert!(!fake.called("copy"));
    // Persisted as that generation: exactly this request.
    let confirm = fake
        .requests
        .borrow()
        .iter()
        .find(|r| r.op == Op::ConfirmAndPersist)
        .cloned()
        .unwrap();
    let mut persist = Persist {
        new_system: j.new_system.clone(),
        mode: PersistMode::SwitchGeneration(2),
        trial: Some(spec_of(&j)),
        journal: None,
    };
    persist.journal = Some(JournalEntry {
        deploy_id: j.deploy_id.clone(),
        event: JournalEvent::Confirmed,
        old: Some(StorePath::new(OLD).unwrap()),
        new: j.new_system.clone(),
        deployer: j.deployer.clone(),
        detail: "confirmed over a fresh connection".into(),
    });
    assert_eq!(
        confirm,
        Confirm {
            spec: spec_of(&j),
            persist: Some(persist)
        }
        .request()
    );
}

mod rollout {
    use super::*;
    use crate::model::HostName;
    use crate::rollout::plan_stages;
    use crate::spec::{BatchSize, RolloutSettings};
    use std::sync::atomic::AtomicBool;

    /// The trial a revert of `job`'s deploy arms: from the new system back
    /// to the old, under the derived id and the revert's own token.
    fn revert_request(job: &HostJob) -> Script {
        ArmAndActivate {
            spec: GuardSpec {
                deploy_id: job.deploy_id.derived("revert").unwrap(),
                token: Token::new(REVERT_TOKEN).unwrap(),
                current_system: StorePath::new(NEW).unwrap(),
                old_system: StorePath::new(NEW).unwrap(),
                new_system: StorePath::new(OLD).unwrap(),
                lease: job.timeouts.lease,
                rollback_limit: job.timeouts.rollback,
                deployer: job.deployer.clone(),
                state: None,
            },
            goal: Goal::Test,
        }
        .request()
    }

    const REVERT_TOKEN: &str = "fedcba9876543210fedcba9876543210";

    fn host_job(name: &str) -> HostJob {
        let mut j = job(Goal::Switch);
        j.host = name.parse().unwrap();
        j
    }

    fn broken() -> Fake {
        Fake {
            activation: Activation::Exit(4),
            inspect: RefCell::new(
                vec![Ok(format!(
                    "current={OLD}\nboot_id=boot1\nstate=rolled-back\nreason=x\ninspect=done\n"
                ))]
                .into(),
            ),
            ..Fake::healthy()
        }
    }

    /// Runs `fakes` (host1..hostN) under the given settings.
    fn roll(
        fakes: Vec<Fake>,
        settings: RolloutSettings,
        canaries: &[&str],
    ) -> (Vec<HostReport>, Vec<Fake>) {
        let n = fakes.len();
        let names: Vec<HostName> = (1..=n)
            .map(|i| format!("host{i}").parse().unwrap())
            .collect();
        let canaries: Vec<HostName> = canaries.iter().map(|c| c.parse().unwrap()).collect();
        let plan = plan_stages(&names, &canaries, &settings);
        let interrupted = AtomicBool::new(false);
        let token = || Token::new(REVERT_TOKEN);
        let clock = VirtualClock::default();
        let rec = Recorder::default();
        let jobs: Vec<(HostJob, &Fake)> = fakes
            .iter()
            .enumerate()
            .map(|(i, f)| (host_job(&format!("host{}", i + 1)), f))
            .collect();
        let reports = futures::executor::block_on(run_fleet(
            jobs,
            Rollout {
                plan: &plan,
                interrupted: &interrupted,
                new_token: &token,
            },
            &FakeProbe::default(),
            &clock,
            &rec,
        ));
        (reports, fakes)
    }

    fn outcomes(reports: &[HostReport]) -> Vec<&'static str> {
        reports.iter().map(|r| r.outcome.name()).collect()
    }

    #[test]
    fn a_failing_canary_stops_the_rollout_and_the_rest_are_skipped_untouched() {
        let (reports, fakes) = roll(
            vec![broken(), Fake::healthy(), Fake::healthy()],
            RolloutSettings::default(),
            &["host1"],
        );
        assert_eq!(outcomes(&reports), ["rolled-back", "skipped", "skipped"]);
        assert!(fakes[1].calls.borrow().is_empty() && fakes[2].calls.borrow().is_empty());
    }

    #[test]
    fn max_failures_zero_stops_after_the_first_failure_in_a_batch() {
        let (reports, _) = roll(
            vec![
                Fake::healthy(),
                Fake::healthy(),
                broken(),
                Fake::healthy(),
                Fake::healthy(),
            ],
            RolloutSettings {
                batch: Some(BatchSize::Count(2)),
                max_failures: Some(0),
                parallel: Some(1),
                ..Default::default()
            },
            &["host1"],
        );
        assert_eq!(
            outcomes(&reports),
            [
                "confirmed",
                "confirmed",
                "rolled-back",
                "skipped",
                "skipped"
            ]
        );
    }

    #[test]
    fn without_a_limit_every_host_is_tried() {
        let (reports, _) = roll(
            vec![broken(), Fake::healthy(), broken()],
            RolloutSettings::default(),
            &[],
        );
        assert_eq!(
            outcomes(&reports),
            ["rolled-back", "confirmed", "rolled-back"]
        );
    }

    /// A healthy host that can also confirm a second trial (the revert).
    fn revertible() -> Fake {
        let f = Fake::healthy();
        f.confirm.borrow_mut().push_back(Ok(format!(
            "machine_id=m1\ncurrent={OLD}\nboot_id=boot1\nconfirm=confirmed\nstate=confirmed\n"
        )));
        f
    }

    #[test]
    fn revert_on_failure_switches_confirmed_hosts_back_newest_first() {
        let (reports, fakes) = roll(
            vec![revertible(), revertible(), broken()],
            RolloutSettings {
                batch: Some(BatchSize::Count(1)),
                max_failures: Some(0),
                revert_on_failure: Some(true),
                ..Default::default()
            },
            &[],
        );
        assert_eq!(
            outcomes(&reports),
            ["rolled-back", "rolled-back", "rolled-back"]
        );
        assert_eq!(
            reports[0].outcome,
            Outcome::RolledBack {
                reason: RollbackReason::Reverted { failed_hosts: 1 }
            }
        );
        // The revert re-used the host's own old system: nothing copied again.
        let copies = fakes[0]
            .calls
            .borrow()
            .iter()
            .filter(|(c, _)| c == "copy")
            .count();
        assert_eq!(copies, 1);
        for (f, name) in fakes[..2].iter().zip(["host1", "host2"]) {
            assert!(
                f.requests
                    .borrow()
                    .contains(&revert_request(&host_job(name))),
                "{name} was not reverted to its old system"
            );
        }
    }

    #[test]
    fn a_revert_asks_its_own_preflight_and_never_reuses_the_early_one() {
        let names: Vec<HostName> = vec!["host1".parse().unwrap(), "host2".parse().unwrap()];
        let plan = plan_stages(
            &names,
            &[],
            &RolloutSettings {
                batch: Some(BatchSize::Count(1)),
                max_failures: Some(0),
                revert_on_failure: Some(true),
                ..Default::default()
            },
        );
        let interrupted = AtomicBool::new(false);
        let token = || Token::new(REVERT_TOKEN);
        let fakes = [revertible(), broken()];
        let jobs = fakes
            .iter()
            .zip(&names)
            .map(|(f, name)| {
                let mut j = host_job(name.as_str());
                j.early_preflight = Some(ok(&preflight(OLD, OLD)).unwrap());
                (j, f)
            })
            .collect();
        let reports = futures::executor::block_on(run_fleet(
            jobs,
            Rollout {
                plan: &plan,
                interrupted: &interrupted,
                new_token: &token,
            },
            &FakeProbe::default(),
            &VirtualClock::default(),
            &Recorder::default(),
        ));
        assert_eq!(outcomes(&reports), ["rolled-back", "rolled-back"]);
        // host1's deploy used the early preflight; its revert asked afresh
        // (and so saw the new system it reverted from).
        assert_eq!(fakes[0].conn_of("preflight").len(), 1);
        assert!(fakes[0]
            .requests
            .borrow()
            .contains(&revert_request(&host_job("host1"))));
    }

    #[test]
    fn an_interrupted_rollout_starts_no_new_host() {
        let names: Vec<HostName> = vec!["host1".parse().unwrap()];
        let plan = plan_stages(&names, &[], &RolloutSettings::default());
        let interrupted = AtomicBool::new(true);
        let token = || None;
        let fake = Fake::healthy();
        let reports = futures::executor::block_on(run_fleet(
            vec![(host_job("host1"), &fake)],
            Rollout {
                plan: &plan,
                interrupted: &interrupted,
                new_token: &token,
            },
            &FakeProbe::default(),
            &VirtualClock::default(),
            &Recorder::default(),
        ));
        assert_eq!(outcomes(&reports), ["skipped"]);
        assert!(fake.calls.borrow().is_empty());
    }
}

#[test]
fn a_trial_the_host_confirmed_while_the_deployer_thought_it_lost_still_stands() {
    // Renewals time out (a slow host) and the confirmation's answer is lost,
    // but the host did record our confirmation: persist, never "unknown".
    let fake = Fake {
        activation: Activation::Hang,
        renew: Err(RemoteError::Timeout(Duration::from_secs(5))),
        inspect: RefCell::new(
            vec![Ok(format!(
                "current={NEW}\nboot_id=boot1\nstate=confirmed\nreason=\ninspect=done\n"
            ))]
            .into(),
        ),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert_eq!(
        report.outcome,
        Outcome::Confirmed {
            generation: Some(2),
            persisted: true
        }
    );
    assert!(fake.called("persist"));
}

/// The activation's session brings the first look; a pass needs one more,
/// a settle later, over the shared connection (checks::SYSTEM_SETTLE).
#[test]
fn the_built_in_checks_first_look_comes_from_the_activation_session() {
    let fake = Fake {
        state_after: "system_state=running\nsystem=done\n".into(),
        ..Fake::healthy()
    };
    let (report, events) = deploy_checked(
        &fake,
        Goal::Switch,
        HostChecks::default(),
        &FakeProbe::default(),
    );
    assert!(
        matches!(report.outcome, Outcome::Confirmed { .. }),
        "{:?}",
        report.outcome
    );
    assert_eq!(
        fake.conn_of("system"),
        [Conn::Shared],
        "one look of its own, after the settle"
    );
    let passed: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Check {
                check,
                passed: true,
                ..
            } => Some(check.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(passed.len(), 2, "{passed:?}");
}

/// A clock on tokio's paused test time: the trial and the lease keeper
/// sleep concurrently, as they do for real.
struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(d)
    }
}

/// Deploys on tokio's paused clock; returns when each renewal arrived.
fn renewals_during(fake: Fake) -> Vec<Duration> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let start = tokio::time::Instant::now();
        fake.started.set(Some(start));
        let clock = TokioClock(start);
        let report = run_host(
            &job(Goal::Switch),
            &fake,
            &FakeProbe::default(),
            &clock,
            &Recorder::default(),
            Duration::ZERO,
        )
        .await;
        assert!(
            matches!(report.outcome, Outcome::Confirmed { .. }),
            "{:?}",
            report.outcome
        );
    });
    fake.renewals.into_inner()
}

fn whole_seconds(times: &[Duration]) -> Vec<u64> {
    times.iter().map(|t| t.as_secs()).collect()
}

#[test]
fn the_keeper_renews_every_fifth_of_a_lease_during_a_slow_trial() {
    // Lease 15 s: a renewal every 3 s while activation (4 s) and the
    // confirmation (5 s) take their time.
    let fake = Fake {
        activation_takes: Duration::from_secs(4),
        confirm_takes: Duration::from_secs(5),
        ..Fake::healthy()
    };
    assert_eq!(whole_seconds(&renewals_during(fake)), vec![3, 6]);
}

#[test]
fn a_renewal_by_the_activation_session_postpones_the_keepers_next() {
    // The activation's session renewed the lease when it ended (4 s): the
    // keeper's next renewal is a fifth of a lease after that, not after its
    // own last one.
    let fake = Fake {
        activation_takes: Duration::from_secs(4),
        confirm_takes: Duration::from_secs(5),
        state_after: "lease_renewed=yes\n".into(),
        ..Fake::healthy()
    };
    assert_eq!(whole_seconds(&renewals_during(fake)), vec![3, 7]);
}

#[test]
fn a_short_trial_renewed_by_its_activation_needs_no_renewal_session() {
    let fake = Fake {
        activation_takes: Duration::from_millis(800),
        confirm_takes: Duration::from_millis(1500),
        state_after: "lease_renewed=yes\n".into(),
        ..Fake::healthy()
    };
    assert!(renewals_during(fake).is_empty());
}

#[test]
fn an_early_preflight_is_used_instead_of_asking_again() {
    let fake = Fake::healthy();
    let clock = VirtualClock::default();
    let job = HostJob {
        early_preflight: Some(ok(&preflight(OLD, OLD)).unwrap()),
        ..job(Goal::Switch)
    };
    let report = futures::executor::block_on(run_host(
        &job,
        &fake,
        &FakeProbe::default(),
        &clock,
        &Recorder::default(),
        Duration::ZERO,
    ));
    assert!(
        matches!(report.outcome, Outcome::Confirmed { .. }),
        "{:?}",
        report.outcome
    );
    assert!(!fake.called("preflight"));
    assert!(fake.called("copy") && fake.called("confirm"));
}

#[test]
fn a_host_whose_system_changed_since_the_preflight_is_refused_untouched() {
    let fake = Fake {
        arm_refusal: Some("arm=changed\ncurrent=/nix/store/cccc-nixos-system-other\n".into()),
        ..Fake::healthy()
    };
    let (report, _) = deploy(&fake, Goal::Switch);
    assert_eq!(
        report.outcome,
        Outcome::Refused {
            reason: Refusal::SystemChanged {
                saw: OLD.into(),
                now: Some("/nix/store/cccc-nixos-system-other".into())
            }
        }
    );
    assert!(!fake.called("confirm") && !fake.called("ask-rollback"));
}

/// host1's job with one btrfs subvolume declared.
fn job_with_state(restore: bool) -> HostJob {
    let mut job = job(Goal::Switch);
    job.state = crate::spec::StateSpec {
        btrfs: vec!["/srv/db".parse().unwrap()],
        restore_on_rollback: restore,
        ..Default::default()
    };
    job
}

fn run_job(fake: &Fake, job: &HostJob) -> HostReport {
    futures::executor::block_on(run_host(
        job,
        fake,
        &FakeProbe::default(),
        &VirtualClock::default(),
        &Recorder::default(),
        Duration::ZERO,
    ))
}

fn ops(fake: &Fake) -> Vec<Op> {
    fake.requests.borrow().iter().map(|r| r.op).collect()
}

const SNAPPED: &str = "snap=btrfs /srv/db 20261121T084900-abc123.pre-deploy /srv/.tether-snapshots/db/20261121T084900-abc123.pre-deploy\ntake=done\n";

#[test]
fn a_declared_volume_the_host_lacks_refuses_the_deploy_before_the_copy() {
    let fake = Fake {
        state_ops: vec![(
            Op::CheckState,
            "problem=no-path /srv/db\ncheck=done\n".into(),
        )],
        ..Fake::healthy()
    };
    let report = run_job(&fake, &job_with_state(true));
    match &report.outcome {
        Outcome::Refused {
            reason: Refusal::State { problems },
        } => assert_eq!(problems, &vec![StateProblem::NoPath("/srv/db".into())]),
        other => panic!("{other:?}"),
    }
    assert!(report.outcome.reason().unwrap().contains("state.btrfs"));
    assert!(!fake.called("copy") && !fake.called("activate"));
}

#[test]
fn a_failed_snapshot_refuses_the_deploy_after_the_copy_and_before_arming() {
    let fake = Fake {
        state_ops: vec![
            (Op::CheckState, "check=done\n".into()),
            (
                Op::TakeSnapshots,
                "take_failed=btrfs /srv/db No space left on device\ntake=done\n".into(),
            ),
        ],
        ..Fake::healthy()
    };
    let report = run_job(&fake, &job_with_state(true));
    assert!(
        matches!(
            &report.outcome,
            Outcome::Refused { reason: Refusal::SnapshotFailed { failure } } if failure.why.contains("No space")
        ),
        "{:?}",
        report.outcome
    );
    assert!(fake.called("copy"));
    assert!(!fake.called("activate"));
}

#[test]
fn snapshots_come_after_the_trial_choice_and_before_arming_and_a_confirmation_prunes() {
    let fake = Fake {
        state_ops: vec![
            (Op::CheckState, "check=done\n".into()),
            (Op::TakeSnapshots, SNAPPED.into()),
            (
                Op::PruneSnapshots,
                "pruned=btrfs /srv/db 20261120T000000-000000.pre-deploy\nprune=done\n".into(),
            ),
        ],
        ..Fake::healthy()
    };
    let report = run_job(&fake, &job_with_state(false));
    assert!(
        matches!(report.outcome, Outcome::Confirmed { .. }),
        "{:?}",
        report.outcome
    );
    let order = ops(&fake);
    let at = |op: Op| order.iter().position(|o| *o == op).unwrap();
    assert!(at(Op::CheckState) < at(Op::TrialNeeds), "{order:?}");
    assert!(at(Op::TrialNeeds) < at(Op::TakeSnapshots), "{order:?}");
    assert!(at(Op::TakeSnapshots) < at(Op::ArmAndActivate), "{order:?}");
    assert!(at(Op::ArmAndActivate) < at(Op::PruneSnapshots), "{order:?}");
    let state = report.state.unwrap();
    assert_eq!(state.snapshots.len(), 1);
    assert_eq!(state.pruned.unwrap().pruned.len(), 1);
    assert_eq!(state.data, None);
}

#[test]
fn a_rollback_without_restore_says_the_data_was_kept_and_how_to_restore_it() {
    let fake = Fake {
        activation: Activation::Exit(4),
        inspect: RefCell::new(
            vec![Ok(format!(
                "current={OLD}\nboot_id=boot1\nstate=rolled-back\nreason=x\ninspect=done\n"
            ))]
            .into(),
        ),
        state_ops: vec![
            (Op::CheckState, "check=done\n".into()),
            (Op::TakeSnapshots, SNAPPED.into()),
        ],
        ..Fake::healthy()
    };
    let job = job_with_state(false);
    let report = run_job(&fake, &job);
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{:?}",
        report.outcome
    );
    let data = report.state.unwrap().data.unwrap();
    assert_eq!(
        data,
        DataAfterRollback::KeptAsIs {
            restore_command: format!("tether snapshots restore --on web1 {}", job.deploy_id)
        }
    );
    assert!(!ops(&fake).contains(&Op::PruneSnapshots));
}

#[test]
fn a_rollback_with_restore_reports_what_the_guard_restored() {
    let fake = Fake {
        activation: Activation::Exit(4),
        inspect: RefCell::new(
            vec![Ok(format!(
                "current={OLD}\nboot_id=boot1\nstate=rolled-back\nreason=x\nrestore_rc=0\nrestored=btrfs /srv/db /srv/.tether-snapshots/db/x.failed-state.1\ninspect=done\n"
            ))]
            .into(),
        ),
        state_ops: vec![
            (Op::CheckState, "check=done\n".into()),
            (Op::TakeSnapshots, SNAPPED.into()),
        ],
        ..Fake::healthy()
    };
    let report = run_job(&fake, &job_with_state(true));
    assert!(
        matches!(report.outcome, Outcome::RolledBack { .. }),
        "{:?}",
        report.outcome
    );
    match report.state.unwrap().data.unwrap() {
        DataAfterRollback::Restored { report } => {
            assert_eq!(
                report.restored[0].failed_state,
                "/srv/.tether-snapshots/db/x.failed-state.1"
            )
        }
        other => panic!("{other:?}"),
    }
}
