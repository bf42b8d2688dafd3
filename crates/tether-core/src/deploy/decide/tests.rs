//! The safe switch's decisions, table-tested without fakes: each case is
//! what the host said, and what tether must do next.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::model::{DeployId, Token};
use crate::remote::PersistMode;
use crate::remote::{ActivationState, GuardLife, Renewal};
use crate::report::{CheckFailure, Trouble};
use crate::spec::{CheckTarget, CheckType, HostChecks, Timeouts};
use std::time::Duration;

const OLD: &str = "/nix/store/aaaa-nixos-system-old";
const NEW: &str = "/nix/store/bbbb-nixos-system-new";

fn job(goal: Goal) -> HostJob {
    HostJob {
        host: "web1".parse().unwrap(),
        new_system: StorePath::new(NEW).unwrap(),
        platform: Some("x86_64-linux".into()),
        machine_id: Some("0123456789abcdef0123456789abcdef".into()),
        goal,
        trial: crate::model::TrialMode::Live,
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
        persist: PersistMode::SetProfile,
        reboot: None,
        early_preflight: None,
        closure_signers: None,
    }
}

fn facts(current: &str, profile: &str) -> Facts {
    Facts {
        machine_id: "0123456789abcdef0123456789abcdef".into(),
        hostname: "web1".into(),
        arch: "x86_64".into(),
        current_system: Some(current.into()).filter(|s: &String| !s.is_empty()),
        booted_system: Some(current.into()),
        profile_system: Some(profile.into()),
        profile_generation: Some(1),
        boot_id: "boot1".into(),
        ..Facts::default()
    }
}

fn old() -> StorePath {
    StorePath::new(OLD).unwrap()
}

fn refused(outcome: Result<Start, Outcome>) -> Refusal {
    match outcome {
        Err(Outcome::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn start_refuses_a_host_that_is_not_the_one_meant_before_anything_else() {
    let mut f = facts(OLD, OLD);
    f.machine_id = "ffffffffffffffffffffffffffffffff".into();
    f.missing_tools = vec!["flock".into()];
    assert!(matches!(
        refused(start(&job(Goal::Switch), &f)),
        Refusal::Identity {
            problem: IdentityProblem::MachineId { .. }
        }
    ));
    let mut f = facts(OLD, OLD);
    f.arch = "aarch64".into();
    assert!(matches!(
        refused(start(&job(Goal::Switch), &f)),
        Refusal::Identity {
            problem: IdentityProblem::Architecture { .. }
        }
    ));
}

#[test]
fn start_refuses_missing_tools_another_deploy_and_no_current_system() {
    let mut f = facts(OLD, OLD);
    f.missing_tools = vec!["flock".into()];
    assert_eq!(
        refused(start(&job(Goal::Switch), &f)),
        Refusal::MissingTools {
            tools: vec!["flock".into()]
        }
    );
    let mut f = facts(OLD, OLD);
    f.busy_with = Some("20260101T000000-aa".into());
    assert_eq!(
        refused(start(&job(Goal::Switch), &f)),
        Refusal::AnotherDeploy {
            deploy_id: "20260101T000000-aa".into()
        }
    );
    assert_eq!(
        refused(start(&job(Goal::Switch), &facts("", OLD))),
        Refusal::NoCurrentSystem
    );
}

#[test]
fn a_session_that_is_not_root_is_refused() {
    let mut f = facts(OLD, OLD);
    f.uid = Some(1000);
    assert_eq!(
        refused(start(&job(Goal::Switch), &f)),
        Refusal::NotRoot { uid: 1000 }
    );
    f.uid = Some(0);
    assert!(start(&job(Goal::Switch), &f).is_ok());
}

#[test]
fn an_untrusted_user_copies_only_a_closure_signed_by_a_key_the_host_trusts() {
    use crate::model::ClosureSigners;
    use std::collections::BTreeSet;
    let mut f = facts(OLD, OLD);
    f.nix_untrusted = Some("deploy".into());
    f.trusted_keys = vec!["cache.nixos.org-1".into(), "ours-1".into()];
    let untrusted = Refusal::NixUntrusted {
        user: "deploy".into(),
        trusted_keys: f.trusted_keys.clone(),
    };
    // Signatures not looked at, none, or by keys the host does not trust.
    assert_eq!(refused(start(&job(Goal::Switch), &f)), untrusted);
    let signed_by = |keys: &[&str]| HostJob {
        closure_signers: Some(ClosureSigners::Keys(
            keys.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>(),
        )),
        ..job(Goal::Switch)
    };
    assert_eq!(refused(start(&signed_by(&[]), &f)), untrusted);
    assert_eq!(refused(start(&signed_by(&["theirs-1"]), &f)), untrusted);
    // Signed by a trusted key, or nothing to copy: it goes on.
    assert!(start(&signed_by(&["theirs-1", "ours-1"]), &f).is_ok());
    let on_host = Facts {
        has_new_system: true,
        ..f.clone()
    };
    assert!(start(&job(Goal::Switch), &on_host).is_ok());
    let rollback = HostJob {
        source: SystemSource::OnTarget,
        ..job(Goal::Switch)
    };
    assert!(start(&rollback, &f).is_ok());
}

#[test]
fn start_picks_the_path_each_goal_and_state_needs() {
    let cases = [
        // goal, current, profile -> plan (None: unchanged)
        (Goal::Switch, OLD, OLD, Some(Plan::Trial)),
        (Goal::Test, OLD, OLD, Some(Plan::Trial)),
        (Goal::Boot, OLD, OLD, Some(Plan::SetBootDefault)),
        (Goal::DryActivate, OLD, OLD, Some(Plan::DryActivate)),
        (Goal::Switch, NEW, NEW, None),
        (Goal::Test, NEW, OLD, None),
    ];
    for (goal, current, profile, plan) in cases {
        let result = start(&job(goal), &facts(current, profile));
        match plan {
            Some(plan) => {
                let s = result.unwrap();
                assert_eq!(s.plan, plan, "{goal:?} {current} {profile}");
                assert_eq!(s.old.as_str(), current);
                assert_eq!(s.current.as_str(), current);
            }
            None => assert_eq!(result, Err(Outcome::Unchanged), "{goal:?} {current}"),
        }
    }
}

/// Regression (issue: "confirmed must mean proven"): a system someone
/// activated by hand with `test` was persisted as confirmed without its
/// checks or a confirmation. Now it goes through the whole trial, and a
/// rollback returns to what the host boots.
#[test]
fn a_new_system_activated_by_hand_gets_the_whole_trial_before_it_is_persisted() {
    let s = start(&job(Goal::Switch), &facts(NEW, OLD)).unwrap();
    assert_eq!(s.plan, Plan::Trial);
    assert_eq!(s.current.as_str(), NEW);
    assert_eq!(
        s.old.as_str(),
        OLD,
        "a rollback returns to the boot default"
    );
    // The boot loader's default counts, not only the profile's.
    let mut f = facts(NEW, NEW);
    f.boot_default = Some(crate::remote::BootDefault {
        loader: crate::remote::BootLoader::SystemdBoot,
        system: Some(OLD.into()),
    });
    let s = start(&job(Goal::Switch), &f).unwrap();
    assert_eq!((s.plan, s.old.as_str()), (Plan::Trial, OLD));
    // Persisted everywhere: nothing to do.
    let mut f = facts(NEW, NEW);
    f.boot_default = Some(crate::remote::BootDefault {
        loader: crate::remote::BootLoader::SystemdBoot,
        system: Some(NEW.into()),
    });
    assert_eq!(start(&job(Goal::Switch), &f), Err(Outcome::Unchanged));
    // Nothing else to return to: refused, never persisted unchecked.
    let mut f = facts(NEW, NEW);
    f.boot_default = None;
    f.profile_system = None;
    assert!(matches!(
        refused(start(&job(Goal::Switch), &f)),
        Refusal::NothingToReturnTo { .. }
    ));
}

#[test]
fn a_held_switch_lock_refuses_the_host_naming_the_holder() {
    let mut f = facts(OLD, OLD);
    let holder = crate::remote::LockHolder {
        pid: Some(4242),
        unit: Some("orphan.service".into()),
        command: Some("flock /run/nixos/switch-to-configuration.lock sleep 60".into()),
    };
    f.switch_lock = Some(holder.clone());
    assert_eq!(
        refused(start(&job(Goal::Switch), &f)),
        Refusal::SwitchLockHeld { holder }
    );
}

#[test]
fn a_system_already_in_the_hosts_store_is_not_copied() {
    let mut f = facts(OLD, OLD);
    assert!(start(&job(Goal::Switch), &f).unwrap().copy);
    f.has_new_system = true;
    assert!(!start(&job(Goal::Switch), &f).unwrap().copy);
    let mut j = job(Goal::Switch);
    j.source = SystemSource::OnTarget;
    assert!(!start(&j, &facts(OLD, OLD)).unwrap().copy);
}

#[test]
fn a_host_key_mismatch_in_the_preflight_is_an_identity_refusal() {
    assert!(matches!(
        preflight_failed(CallError::Remote(RemoteError::HostKey("x".into()))),
        Outcome::Refused {
            reason: Refusal::Identity {
                problem: IdentityProblem::HostKey { .. }
            }
        }
    ));
    assert!(matches!(
        preflight_failed(CallError::Remote(RemoteError::Unreachable("x".into()))),
        Outcome::Failed {
            reason: Failure::Preflight { .. }
        }
    ));
}

#[test]
fn arming_that_did_not_arm_ends_the_deploy_with_nothing_activated() {
    assert_eq!(after_arm(&ArmResult::Armed, &old()), None);
    assert!(matches!(
        after_arm(&ArmResult::Busy("d".into()), &old()),
        Some(Outcome::Refused {
            reason: Refusal::AnotherDeploy { .. }
        })
    ));
    assert_eq!(
        after_arm(&ArmResult::Changed(String::new()), &old()),
        Some(Outcome::Refused {
            reason: Refusal::SystemChanged {
                saw: OLD.into(),
                now: None
            }
        })
    );
    assert!(matches!(
        after_arm(&ArmResult::MissingTool("flock".into()), &old()),
        Some(Outcome::Refused {
            reason: Refusal::GuardTool { .. }
        })
    ));
    assert!(matches!(
        after_arm(&ArmResult::Failed("systemd-run".into()), &old()),
        Some(Outcome::Failed {
            reason: Failure::GuardNotStarted { .. }
        })
    ));
    let cases = [
        (ArmResult::GuardDied, "failed"),
        (ArmResult::Expired, "failed"),
        (ArmResult::LockTimeout, "refused"),
        (ArmResult::Untrusted, "refused"),
    ];
    for (arm, outcome) in cases {
        assert_eq!(after_arm(&arm, &old()).unwrap().name(), outcome, "{arm:?}");
    }
}

fn armed(exit_code: Option<i32>) -> ArmReport {
    ArmReport {
        arm: ArmResult::Armed,
        exit_code,
        died: false,
        switch_locked: false,
        lease_renewed: exit_code == Some(0),
        first_look: None,
    }
}

#[test]
fn the_activations_session_decides_what_follows() {
    assert_eq!(
        after_activation(Ok(armed(Some(0))), true, &old()),
        Activated::Ended {
            first_look: None,
            lease_renewed: true
        }
    );
    assert_eq!(
        after_activation(Ok(armed(Some(4))), true, &old()),
        Activated::Abandon(TrialProblem::ActivationFailed { exit_code: Some(4) })
    );
    // Stopped before it recorded an exit code (systemd-run then says 0):
    // never a success.
    let stopped = ArmReport {
        died: true,
        ..armed(None)
    };
    assert_eq!(
        after_activation(Ok(stopped), true, &old()),
        Activated::Abandon(TrialProblem::ActivationDied)
    );
    // switch-to-configuration-ng could not take the switch lock: nothing
    // was activated, nothing is rolled back.
    let locked = ArmReport {
        switch_locked: true,
        ..armed(Some(11))
    };
    assert_eq!(
        after_activation(Ok(locked), true, &old()),
        Activated::Done(Outcome::Failed {
            reason: Failure::SwitchLockTaken {
                exit_code: Some(11),
                holder: None
            }
        })
    );
    assert_eq!(
        after_activation(
            Err(CallError::Remote(RemoteError::Timeout(
                Duration::from_secs(4)
            ))),
            true,
            &old()
        ),
        Activated::Abandon(TrialProblem::ActivationTimedOut { seconds: 4 })
    );
    let lost = || CallError::Remote(RemoteError::Unreachable("broken pipe".into()));
    assert!(matches!(
        after_activation(Err(lost()), false, &old()),
        Activated::LostArming(TrialProblem::SessionLostArming { .. })
    ));
    assert!(matches!(
        after_activation(Err(lost()), true, &old()),
        Activated::LostSession(_)
    ));
    assert!(matches!(
        after_activation(
            Err(CallError::Parse {
                error: ParseError("x".into()),
                stderr_tail: String::new()
            }),
            false,
            &old()
        ),
        Activated::Done(Outcome::Failed {
            reason: Failure::Arming { .. }
        })
    ));
}

fn confirm_report(result: ConfirmResult, state: GuardState) -> ConfirmReport {
    ConfirmReport {
        result,
        machine_id: "m".into(),
        current_system: Some(NEW.into()),
        boot_id: "boot1".into(),
        state,
        persist: None,
    }
}

#[test]
fn a_confirmation_attempt_confirms_retries_or_ends_the_trial() {
    use ConfirmResult as R;
    use GuardState as S;
    let cases = [
        (R::Confirmed, S::Confirmed, ConfirmStep::Confirmed(None)),
        // Our earlier attempt confirmed; its answer was lost.
        (R::TooLate, S::Confirmed, ConfirmStep::Confirmed(None)),
        (R::TooLate, S::Finished, ConfirmStep::Confirmed(None)),
        (R::TooLate, S::RolledBack, ConfirmStep::TooLate),
        (R::NoTrial, S::Missing, ConfirmStep::TooLate),
        (R::BadToken, S::Armed, ConfirmStep::BadToken),
        (
            R::NotRunningNew,
            S::Armed,
            ConfirmStep::Retry(ConfirmAttempt::NotRunningNew {
                current: Some(NEW.into()),
            }),
        ),
    ];
    for (result, state, step) in cases {
        assert_eq!(
            confirm_attempt(Ok(confirm_report(result.clone(), state.clone()))),
            step,
            "{result:?} {state:?}"
        );
    }
    assert!(matches!(
        confirm_attempt(Err(CallError::Remote(RemoteError::Unreachable(
            "refused".into()
        )))),
        ConfirmStep::Retry(ConfirmAttempt::Unanswered { .. })
    ));
}

fn persist_report(profile_set: bool, boot_rc: Option<i32>) -> PersistReport {
    let ok = profile_set && boot_rc == Some(0);
    PersistReport {
        profile_set,
        boot_rc,
        generation: Some(2),
        boot_default: Some(crate::remote::BootDefault {
            loader: crate::remote::BootLoader::SystemdBoot,
            system: Some(if ok { NEW } else { OLD }.into()),
        }),
        persisted: ok,
    }
}

fn new() -> StorePath {
    StorePath::new(NEW).unwrap()
}

#[test]
fn persisted_only_when_profile_and_boot_loader_both_took_it() {
    assert_eq!(
        persisted(Ok(persist_report(true, Some(0))), &new(), ""),
        Outcome::Confirmed {
            generation: Some(2),
            persisted: true
        }
    );
    for (profile, rc) in [(true, Some(1)), (false, None), (true, None)] {
        assert!(
            matches!(
                persisted(Ok(persist_report(profile, rc)), &new(), "boom"),
                Outcome::ConfirmedNotPersisted {
                    reason: NotPersisted::Failed { .. }
                }
            ),
            "{profile} {rc:?}"
        );
    }
    // The host says persisted, but its boot default is another system.
    let mut elsewhere = persist_report(true, Some(0));
    elsewhere.boot_default = Some(crate::remote::BootDefault {
        loader: crate::remote::BootLoader::SystemdBoot,
        system: Some(OLD.into()),
    });
    assert!(matches!(
        persisted(Ok(elsewhere), &new(), ""),
        Outcome::ConfirmedNotPersisted {
            reason: NotPersisted::Failed { .. }
        }
    ));
    assert!(matches!(
        persisted(Err(ParseError("x".into())), &new(), ""),
        Outcome::ConfirmedNotPersisted {
            reason: NotPersisted::NoReport { .. }
        }
    ));
    assert_eq!(
        boot_default_set(Ok(persist_report(true, Some(0))), &new(), ""),
        Outcome::BootDefaultSet {
            generation: Some(2)
        }
    );
    assert!(matches!(
        boot_default_set(Ok(persist_report(true, Some(1))), &new(), ""),
        Outcome::Failed {
            reason: Failure::BootDefault { .. }
        }
    ));
}

fn renewal(state: GuardState, activation: Option<ActivationState>) -> Renewal {
    Renewal {
        state,
        activation,
        guard: GuardLife::Alive,
    }
}

/// Regression (issue: "confirmed must mean proven", item 4): a renewal
/// that saw `finished` first used to end the trial, and the outcome was
/// then read from the profile alone. The keeper now leaves every confirmed
/// state to the trial.
#[test]
fn a_renewal_never_decides_a_confirmed_trial() {
    for state in [
        GuardState::Armed,
        GuardState::Confirmed,
        GuardState::Finished,
        GuardState::PersistFailed,
    ] {
        assert_eq!(
            after_renewal(&Ok(renewal(state.clone(), None))),
            Renewed::Renewed,
            "{state}"
        );
    }
    for state in [
        GuardState::RolledBack,
        GuardState::RollingBack,
        GuardState::RollbackFailed,
        GuardState::NotActivated,
        GuardState::Missing,
    ] {
        assert_eq!(
            after_renewal(&Ok(renewal(state.clone(), None))),
            Renewed::GuardLeft(state)
        );
    }
    let mut dead = renewal(GuardState::Armed, None);
    dead.guard = GuardLife::Dead;
    assert_eq!(after_renewal(&Ok(dead)), Renewed::GuardDead);
    let mut restarted = renewal(GuardState::Armed, None);
    restarted.guard = GuardLife::Restarted;
    assert_eq!(after_renewal(&Ok(restarted)), Renewed::GuardRestarted);
    assert_eq!(
        after_renewal(&Err(CallError::Remote(RemoteError::Unreachable(
            "x".into()
        )))),
        Renewed::NoAnswer
    );
}

/// Regression (issue: "confirmed must mean proven", item 1): after a lost
/// session the deploy went on to confirm before the activation had ended.
/// It now waits for the end, and only an exit code of 0 lets it go on.
#[test]
fn after_a_lost_session_only_the_activations_end_lets_the_trial_go_on() {
    use ActivationState as A;
    let cases = [
        (Some(A::NotStarted), Progress::Wait),
        (Some(A::Running), Progress::Wait),
        (None, Progress::Wait),
        (
            Some(A::Exited {
                code: 0,
                switch_locked: false,
            }),
            Progress::Ended,
        ),
        (
            Some(A::Exited {
                code: 2,
                switch_locked: false,
            }),
            Progress::Abandon(TrialProblem::ActivationFailed { exit_code: Some(2) }),
        ),
        (
            Some(A::Died),
            Progress::Abandon(TrialProblem::ActivationDied),
        ),
    ];
    for (activation, progress) in cases {
        assert_eq!(
            activation_progress(&renewal(GuardState::Armed, activation.clone())),
            progress,
            "{activation:?}"
        );
    }
    assert!(matches!(
        activation_progress(&renewal(
            GuardState::Armed,
            Some(A::Exited {
                code: 11,
                switch_locked: true
            })
        )),
        Progress::Done(Outcome::Failed {
            reason: Failure::SwitchLockTaken { .. }
        })
    ));
    assert_eq!(
        activation_progress(&renewal(GuardState::RolledBack, Some(A::Running))),
        Progress::GuardLeft(GuardState::RolledBack)
    );
}

#[test]
fn a_confirmation_needs_the_activation_to_have_ended_well() {
    assert_eq!(
        confirm_attempt(Ok(confirm_report(
            ConfirmResult::ActivationRunning,
            GuardState::Armed
        ))),
        ConfirmStep::Retry(ConfirmAttempt::ActivationRunning)
    );
    assert_eq!(
        confirm_attempt(Ok(confirm_report(
            ConfirmResult::ActivationFailed(Some(2)),
            GuardState::Armed
        ))),
        ConfirmStep::ActivationFailed(Some(2))
    );
}

fn inspection(state: GuardState, current: &str, boot_id: &str) -> Inspection {
    Inspection {
        current_system: Some(current.into()),
        boot_id: boot_id.into(),
        state,
        cause: None,
        activation: None,
        rollback_rc: None,
        profile_system: Some(OLD.into()),
        profile_generation: Some(1),
        boot_default: None,
        switch_lock: None,
        restore: None,
    }
}

fn why() -> TrialProblem {
    TrialProblem::ConfirmTooLate
}

#[test]
fn an_inspection_says_how_the_trial_ended() {
    let j = job(Goal::Switch);
    let verdict = |i: &Inspection| after_inspection(i, "boot1", &old(), &j, &why());
    assert!(matches!(
        verdict(&inspection(GuardState::RolledBack, OLD, "boot1")),
        Verdict::Done(Outcome::RolledBack {
            reason: RollbackReason::ByGuard { guard: None, .. }
        })
    ));
    let mut lapsed = inspection(GuardState::RolledBack, OLD, "boot1");
    lapsed.cause = Some(GuardCause::LeaseExpired);
    assert!(matches!(
        verdict(&lapsed),
        Verdict::Done(Outcome::RolledBack {
            reason: RollbackReason::ByGuard {
                guard: Some(GuardCause::LeaseExpired),
                ..
            }
        })
    ));
    // Asked for by tether: `why` says it all.
    lapsed.cause = Some(GuardCause::Requested);
    assert!(matches!(
        verdict(&lapsed),
        Verdict::Done(Outcome::RolledBack {
            reason: RollbackReason::ByGuard { guard: None, .. }
        })
    ));
    assert!(matches!(
        verdict(&inspection(GuardState::RollbackFailed, NEW, "boot1")),
        Verdict::Done(Outcome::Unknown {
            reason: UnknownReason::RollbackFailed { .. }
        })
    ));
    assert!(matches!(
        verdict(&inspection(GuardState::Missing, OLD, "boot2")),
        Verdict::Done(Outcome::RolledBack {
            reason: RollbackReason::Rebooted { .. }
        })
    ));
    assert!(matches!(
        verdict(&inspection(GuardState::Missing, NEW, "boot2")),
        Verdict::Done(Outcome::Unknown {
            reason: UnknownReason::RebootedOnOther { .. }
        })
    ));
    assert!(matches!(
        verdict(&inspection(GuardState::Missing, OLD, "boot1")),
        Verdict::Done(Outcome::Failed {
            reason: Failure::NotArmed { .. }
        })
    ));
    assert!(matches!(
        verdict(&inspection(GuardState::Missing, NEW, "boot1")),
        Verdict::Done(Outcome::Unknown {
            reason: UnknownReason::StateVanished { .. }
        })
    ));
    assert_eq!(
        verdict(&inspection(GuardState::Confirmed, NEW, "boot1")),
        Verdict::Persist
    );
    assert!(matches!(
        verdict(&inspection(GuardState::RollingBack, NEW, "boot1")),
        Verdict::Wait(_)
    ));
}

#[test]
fn a_finished_trial_counts_as_persisted_only_when_the_profile_has_the_new_system() {
    let j = job(Goal::Switch);
    let mut i = inspection(GuardState::Finished, NEW, "boot1");
    assert!(matches!(
        after_inspection(&i, "boot1", &old(), &j, &why()),
        Verdict::Done(Outcome::ConfirmedNotPersisted {
            reason: NotPersisted::ProfileElsewhere { .. }
        })
    ));
    i.profile_system = Some(NEW.into());
    // The profile alone is not enough: the boot loader must boot it too.
    assert!(matches!(
        after_inspection(&i, "boot1", &old(), &j, &why()),
        Verdict::Done(Outcome::ConfirmedNotPersisted { .. })
    ));
    i.boot_default = Some(crate::remote::BootDefault {
        loader: crate::remote::BootLoader::SystemdBoot,
        system: Some(NEW.into()),
    });
    assert_eq!(
        after_inspection(&i, "boot1", &old(), &j, &why()),
        Verdict::Done(Outcome::Confirmed {
            generation: Some(1),
            persisted: true
        })
    );
    // Goal test never persists.
    assert_eq!(
        after_inspection(
            &inspection(GuardState::Confirmed, NEW, "boot1"),
            "boot1",
            &old(),
            &job(Goal::Test),
            &why()
        ),
        Verdict::Done(Outcome::Confirmed {
            generation: None,
            persisted: false
        })
    );
}

#[test]
fn a_failed_persist_and_an_activation_that_never_took_the_lock_end_as_they_are() {
    let j = job(Goal::Switch);
    assert!(matches!(
        after_inspection(
            &inspection(GuardState::PersistFailed, NEW, "boot1"),
            "boot1",
            &old(),
            &j,
            &why()
        ),
        Verdict::Done(Outcome::ConfirmedNotPersisted { .. })
    ));
    // ng's exit 11: the activation ended, refused by the lock.
    let refused = Inspection {
        activation: Some(ActivationState::Exited {
            code: 11,
            switch_locked: true,
        }),
        ..inspection(GuardState::NotActivated, OLD, "boot1")
    };
    assert!(matches!(
        after_inspection(&refused, "boot1", &old(), &j, &why()),
        Verdict::Done(Outcome::Failed {
            reason: Failure::SwitchLockTaken {
                exit_code: Some(11),
                ..
            }
        })
    ));
    // The older switch-to-configuration: stopped while it waited.
    let waiting = Inspection {
        activation: Some(ActivationState::Died),
        ..inspection(GuardState::NotActivated, OLD, "boot1")
    };
    assert!(matches!(
        after_inspection(&waiting, "boot1", &old(), &j, &why()),
        Verdict::Done(Outcome::Failed {
            reason: Failure::SwitchLockWaited { .. }
        })
    ));
}

#[test]
fn after_a_reboot_the_host_must_boot_and_run_the_new_system() {
    let new = StorePath::new(NEW).unwrap();
    assert_eq!(after_reboot(NEW, NEW, &new), None);
    assert!(matches!(
        after_reboot(OLD, OLD, &new),
        Some(Outcome::Unhealthy {
            reason: Unhealthy::BootedOther { .. }
        })
    ));
}

#[test]
fn reasons_read_as_sentences() {
    let failures = vec![CheckFailure {
        check: "web".into(),
        kind: CheckType::Http,
        attempts: 2,
        detail: "GET http://x/ answered 500".into(),
    }];
    let cases: Vec<(Outcome, &str)> = vec![
        (
            Outcome::RolledBack {
                reason: RollbackReason::ByGuard {
                    why: TrialProblem::ActivationFailed { exit_code: Some(4) },
                    guard: None,
                },
            },
            "activation failed: switch-to-configuration test exited 4 (a unit failed to start or is failed after the switch)",
        ),
        (
            Outcome::RolledBack {
                reason: RollbackReason::ByGuard {
                    why: TrialProblem::LostContact {
                        lease_seconds: 15,
                        after: Some(Trouble::SessionLostDuringActivation),
                    },
                    guard: Some(GuardCause::LeaseExpired),
                },
            },
            "the SSH session was lost during activation; lost contact with the host for the whole lease (15s); its guard rolls it back (guard: lease expired: the deployer did not confirm in time)",
        ),
        (
            Outcome::RolledBack {
                reason: RollbackReason::ByGuard {
                    why: TrialProblem::ChecksFailed {
                        seconds: 30,
                        failures,
                    },
                    guard: None,
                },
            },
            "health check failed within 30s: check \"web\" (http), 2 attempts: GET http://x/ answered 500",
        ),
        (
            Outcome::Refused {
                reason: Refusal::Identity {
                    problem: IdentityProblem::HostKey {
                        detail: "Host key verification failed.".into(),
                    },
                },
            },
            "identity: the host did not present the pinned host key (Host key verification failed.); nothing was copied or activated",
        ),
    ];
    for (outcome, sentence) in cases {
        assert_eq!(outcome.reason().unwrap(), sentence);
    }
}

fn with_generations(gens: &[u32], profile: u32) -> HostStatus {
    HostStatus {
        generations: gens
            .iter()
            .map(|n| crate::remote::status::Generation {
                number: *n,
                system: format!("/nix/store/s{n}"),
            })
            .collect(),
        profile_generation: Some(profile),
        ..HostStatus::default()
    }
}

#[test]
fn a_rollback_goes_to_the_newest_generation_below_the_current_one() {
    assert_eq!(
        choose_generation(&with_generations(&[1, 3, 4], 4), None)
            .unwrap()
            .0,
        3
    );
    assert_eq!(
        choose_generation(&with_generations(&[1, 3, 4], 3), None)
            .unwrap()
            .0,
        1
    );
    assert_eq!(
        choose_generation(&with_generations(&[1, 3, 4], 4), Some(1))
            .unwrap()
            .1
            .as_str(),
        "/nix/store/s1"
    );
}

#[test]
fn a_missing_generation_is_refused_naming_those_that_exist() {
    assert_eq!(
        choose_generation(&with_generations(&[2, 3], 3), Some(1)),
        Err(NoGeneration::Missing {
            wanted: 1,
            existing: vec![2, 3]
        })
    );
    assert_eq!(
        choose_generation(&with_generations(&[3], 3), None),
        Err(NoGeneration::NoneBefore {
            current: 3,
            existing: vec![3]
        })
    );
    assert_eq!(
        choose_generation(&HostStatus::default(), None),
        Err(NoGeneration::NoProfile)
    );
}

mod reboot_trial {
    use super::super::boot::{trial_boot_seen, TrialBoot};
    use crate::model::{StorePath, TrialMode};
    use crate::remote::{
        BootDefault, BootLoader, BootTrialCause, BootTrialSeen, BootTrialState, RebootReason,
        TrialNeedsReport,
    };
    use crate::report::{BootTrialProblem, Outcome, Refusal, RollbackReason, UnknownReason};
    use crate::trial_choice::{choose_trial, TrialKind};

    fn needs(reasons: Vec<RebootReason>, one_shot: bool) -> TrialNeedsReport {
        TrialNeedsReport {
            reasons,
            one_shot,
            boot_default: Some(BootDefault {
                loader: if one_shot {
                    BootLoader::SystemdBoot
                } else {
                    BootLoader::Grub
                },
                system: Some("/nix/store/a-old".into()),
            }),
            boots_current: true,
            current_system: Some("/nix/store/a-old".into()),
            switch_lock: None,
        }
    }

    #[test]
    fn auto_reboots_exactly_when_the_change_needs_a_boot() {
        let kernel = needs(vec![RebootReason::Kernel], true);
        assert_eq!(
            choose_trial(TrialMode::Auto, false, false, &kernel),
            Ok(TrialKind::Reboot {
                reasons: vec![RebootReason::Kernel]
            })
        );
        assert_eq!(
            choose_trial(TrialMode::Auto, false, false, &needs(vec![], true)),
            Ok(TrialKind::Live)
        );
        // Asked for, a reboot trial runs even for a change a live trial shows.
        assert_eq!(
            choose_trial(TrialMode::Reboot, false, false, &needs(vec![], true)),
            Ok(TrialKind::Reboot { reasons: vec![] })
        );
    }

    #[test]
    fn live_refuses_a_change_that_needs_a_boot_unless_forced_and_never_with_reboot() {
        let check = needs(
            vec![RebootReason::PreSwitchCheck {
                exit_code: Some(1),
                output: "systemd changed".into(),
            }],
            true,
        );
        assert!(matches!(
            choose_trial(TrialMode::Live, false, false, &check),
            Err(Refusal::NeedsReboot { .. })
        ));
        assert!(matches!(
            choose_trial(TrialMode::Live, true, false, &check),
            Ok(TrialKind::LiveForced { .. })
        ));
        assert!(matches!(
            choose_trial(TrialMode::Live, true, true, &check),
            Err(Refusal::ForceLiveWithReboot { .. })
        ));
        let text = choose_trial(TrialMode::Live, false, false, &check)
            .unwrap_err()
            .to_string();
        assert!(text.contains("systemd changed"), "{text}");
    }

    #[test]
    fn without_a_one_shot_boot_the_reboot_trial_is_refused_never_degraded() {
        for mode in [TrialMode::Auto, TrialMode::Reboot] {
            assert!(matches!(
                choose_trial(
                    mode,
                    false,
                    false,
                    &needs(vec![RebootReason::Initrd], false)
                ),
                Err(Refusal::NoOneShotBoot {
                    boot_loader: Some(BootLoader::Grub),
                    ..
                })
            ));
        }
        let mut other = needs(vec![RebootReason::Kernel], true);
        other.boots_current = false;
        assert!(matches!(
            choose_trial(TrialMode::Auto, false, false, &other),
            Err(Refusal::BootsOtherSystem { .. })
        ));
    }

    fn seen(boot: &str, booted: &str, state: BootTrialState) -> BootTrialSeen {
        BootTrialSeen {
            boot_id: boot.into(),
            booted_system: Some(booted.into()),
            current_system: Some(booted.into()),
            state: Some(state),
            ours: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_look_at_a_rebooting_host_waits_until_it_booted_the_new_system_under_the_guard() {
        let new = StorePath::new("/nix/store/b-new").unwrap();
        let before = "boot-1";
        let look = |s: &BootTrialSeen| trial_boot_seen(s, before, &new, None);
        assert!(matches!(
            look(&seen(before, "/nix/store/a-old", BootTrialState::Prepared)),
            TrialBoot::Waiting(_)
        ));
        assert!(matches!(
            look(&seen(
                "boot-2",
                "/nix/store/b-new",
                BootTrialState::Prepared
            )),
            TrialBoot::Waiting(_)
        ));
        assert_eq!(
            look(&seen("boot-2", "/nix/store/b-new", BootTrialState::Booted)),
            TrialBoot::Booted
        );
        // A booted state seen on the old boot id is not the trial boot.
        assert!(matches!(
            look(&seen(before, "/nix/store/b-new", BootTrialState::Booted)),
            TrialBoot::Waiting(_)
        ));
    }

    #[test]
    fn a_host_back_on_the_old_system_is_rolled_back_with_the_guards_cause() {
        let new = StorePath::new("/nix/store/b-new").unwrap();
        let mut s = seen("boot-3", "/nix/store/a-old", BootTrialState::RolledBack);
        s.cause = Some(BootTrialCause::LeaseLapsed);
        let why = BootTrialProblem::LostContact { lease_seconds: 15 };
        match trial_boot_seen(&s, "boot-1", &new, Some(&why)) {
            TrialBoot::Over(Outcome::RolledBack {
                reason:
                    RollbackReason::BootTrial {
                        why: w,
                        guard: Some(BootTrialCause::LeaseLapsed),
                        restore_problem: None,
                    },
            }) => assert_eq!(w, why),
            other => panic!("{other:?}"),
        }
        // Still on the trial boot after giving up: wait for the guard.
        let s = seen("boot-2", "/nix/store/b-new", BootTrialState::Booted);
        assert!(matches!(
            trial_boot_seen(&s, "boot-1", &new, Some(&why)),
            TrialBoot::Waiting(_)
        ));
        // Restore failed: still back on the old system, and says what failed.
        let mut s = seen("boot-3", "/nix/store/a-old", BootTrialState::RestoreFailed);
        s.problem = Some("boot-loader(1)".into());
        let text = match trial_boot_seen(&s, "boot-1", &new, None) {
            TrialBoot::Over(o @ Outcome::RolledBack { .. }) => o.reason().unwrap(),
            other => panic!("{other:?}"),
        };
        assert!(text.contains("boot-loader(1)"), "{text}");
        // Another deploy's trial (or none): unknown, never a guess.
        let mut s = seen("boot-3", "/nix/store/a-old", BootTrialState::RolledBack);
        s.state = None;
        s.ours = false;
        assert!(matches!(
            trial_boot_seen(&s, "boot-1", &new, None),
            TrialBoot::Over(Outcome::Unknown {
                reason: UnknownReason::BootTrialGone { .. }
            })
        ));
    }
}
