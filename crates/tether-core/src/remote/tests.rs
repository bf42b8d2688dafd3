//! Tests of the remote vocabulary: every operation's script checked by a
//! real `sh -n` with hostile values, so a quoting slip cannot reach a host;
//! and the parsers against captured output.
// The scripts are checked by running a real `sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

use super::plan::{CurrentSystem, ListUnitFiles};
use super::status::Status;
use super::*;
use crate::model::{DeployId, Goal, StorePath, Token};
use crate::shell::quote;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn spec() -> GuardSpec {
    GuardSpec {
        deploy_id: DeployId::new("20261121T084900", "abc123").unwrap(),
        token: Token::new("0123456789abcdef0123456789abcdef").unwrap(),
        current_system: StorePath::new("/nix/store/aaa-nixos-system-old").unwrap(),
        old_system: StorePath::new("/nix/store/aaa-nixos-system-old").unwrap(),
        new_system: StorePath::new("/nix/store/bbb-nixos-system-it's-new").unwrap(),
        lease: Duration::from_secs(15),
        rollback_limit: Duration::from_secs(300),
        deployer: "alice@laptop; $(rm -rf /)\tforged".into(),
        state: None,
    }
}

fn journal() -> JournalEntry {
    let s = spec();
    JournalEntry {
        deploy_id: s.deploy_id.clone(),
        event: JournalEvent::Confirmed,
        old: Some(s.old_system.clone()),
        new: s.new_system.clone(),
        deployer: "bob@x".into(),
        detail: "a\tb\nc'd".into(),
    }
}

fn persist() -> Persist {
    let s = spec();
    Persist {
        new_system: s.new_system.clone(),
        mode: PersistMode::SetProfile,
        trial: Some(s),
        journal: Some(journal()),
    }
}

/// An example of `op`, with values a shell must not interpret.
fn example(op: Op) -> Script {
    let s = spec();
    match op {
        Op::Preflight => Preflight {
            new_system: Some(s.new_system.clone()),
        }
        .request(),
        Op::ArmAndActivate => ArmAndActivate {
            spec: s,
            goal: Goal::Test,
        }
        .request(),
        Op::Renew => Renew { spec: s }.request(),
        Op::Confirm => Confirm {
            spec: s,
            persist: None,
        }
        .request(),
        Op::ConfirmAndPersist => Confirm {
            spec: s,
            persist: Some(persist()),
        }
        .request(),
        Op::Persist => persist().request(),
        Op::FinishTrial => FinishTrial {
            spec: s,
            journal: journal(),
        }
        .request(),
        Op::RequestRollback => RequestRollback {
            spec: s,
            reason: "it's broken; $(rm -rf /)".into(),
        }
        .request(),
        Op::Inspect => Inspect { spec: s }.request(),
        Op::DryActivate => DryActivate {
            new_system: s.new_system,
        }
        .request(),
        Op::Reboot => Reboot {
            deploy_id: s.deploy_id,
        }
        .request(),
        Op::BootState => BootState.request(),
        Op::CheckCommand => CheckCommand {
            command: "curl -fs 'http://localhost/' | grep \"it's ok\"".into(),
        }
        .request(),
        Op::Units => Units {
            units: vec!["nginx.service".into(), "it's.service".into()],
        }
        .request(),
        Op::SystemState => SystemState.request(),
        Op::Status => Status.request(),
        Op::PlanCurrentSystem => CurrentSystem.request(),
        Op::UnitFiles => ListUnitFiles {
            system: s.new_system,
        }
        .request(),
        Op::TrialNeeds => TrialNeeds {
            new_system: s.new_system,
            reboot_asked: true,
        }
        .request(),
        Op::PrepareBootTrial => PrepareBootTrial { spec: boot_spec() }.request(),
        Op::LookAtBootTrial => LookAtBootTrial {
            deploy_id: s.deploy_id,
        }
        .request(),
        Op::RenewBootTrial => ask(BootTrialRequest::Renew),
        Op::ConfirmBootTrial => ask(BootTrialRequest::Confirm),
        Op::RollBackBootTrial => ask(BootTrialRequest::RollBack),
        Op::FinishBootTrial => ask(BootTrialRequest::Finish(Box::new(Persist {
            trial: None,
            mode: PersistMode::SwitchGeneration(42),
            ..persist()
        }))),
        Op::AbandonBootTrial => ask(BootTrialRequest::Abandon),
        Op::CheckState => CheckState { spec: state() }.request(),
        Op::TakeSnapshots => TakeSnapshots {
            spec: state(),
            deploy_id: s.deploy_id,
        }
        .request(),
        Op::ListSnapshots => ListSnapshots { spec: state() }.request(),
        Op::RestoreSnapshots => RestoreSnapshots {
            spec: state(),
            deploy_id: s.deploy_id,
        }
        .request(),
        Op::PruneSnapshots => PruneSnapshots {
            spec: state(),
            keep: 3,
            protect: Some(s.deploy_id),
        }
        .request(),
        Op::RehearsalState => rehearsal_state(StateStep::Unload).request(),
    }
}

fn rehearsal_state(step: StateStep) -> RehearsalState {
    RehearsalState {
        step,
        rehearsal_id: spec().deploy_id,
        paths: vec!["/srv/db-1".parse().unwrap(), "/srv/other".parse().unwrap()],
        datasets: vec!["tank/db".parse().unwrap()],
        units: vec!["db.service".parse().unwrap()],
    }
}

#[test]
fn every_rehearsal_state_step_and_stream_script_is_valid_sh() {
    for step in [
        StateStep::CheckStaging,
        StateStep::Snapshot,
        StateStep::DropSource,
        StateStep::Load,
        StateStep::Usage,
        StateStep::Unload,
    ] {
        assert_parses_as_sh(&rehearsal_state(step).request().text);
    }
    let r = rehearsal_state(StateStep::Load);
    for volume in [
        Volume::Btrfs("/srv/db-1".parse().unwrap()),
        Volume::Zfs("tank/db".parse().unwrap()),
    ] {
        assert_parses_as_sh(&r.send_script(&volume));
        assert_parses_as_sh(&r.receive_script(&volume));
    }
    let out = ScriptOutput {
        stdout: "done=/srv/db-1 loaded\nfailed=/srv/other nothing was received\nstep=done\n"
            .to_string(),
        ..ScriptOutput::default()
    };
    let report = r.parse(&out).unwrap();
    assert_eq!(report.detail("/srv/db-1"), Some("loaded"));
    assert_eq!(report.failures(), "/srv/other: nothing was received");
}

/// A state declaration with values a shell must not interpret.
fn state() -> crate::spec::StateSpec {
    crate::spec::StateSpec {
        btrfs: vec!["/srv/db-1".parse().unwrap()],
        zfs: vec!["tank/db".parse().unwrap()],
        units: vec!["db.service".parse().unwrap()],
        restore_on_rollback: true,
        keep: 2,
    }
}

fn boot_spec() -> BootTrialSpec {
    let s = spec();
    BootTrialSpec {
        deploy_id: s.deploy_id,
        token: s.token,
        old_system: s.old_system,
        new_system: s.new_system,
        generation: Some(41),
        lease: Duration::from_secs(15),
        first_lease: Duration::from_secs(45),
        deployer: s.deployer,
        state: Some(state()),
    }
}

fn ask(request: BootTrialRequest) -> Script {
    AskBootTrial {
        spec: boot_spec(),
        request,
    }
    .request()
}

fn assert_parses_as_sh(script: &str) {
    let mut child = Command::new("sh")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sh -n rejected the script: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_operation_is_valid_sh_even_with_quotes_in_values() {
    for op in Op::ALL {
        let script = example(op);
        assert_eq!(
            script.op, op,
            "the example of {op} is labelled {}",
            script.op
        );
        assert_parses_as_sh(&script.text);
    }
    // Also the guards themselves.
    assert_parses_as_sh(&guard::guard_script());
    assert_parses_as_sh(&boot_trial::boot_guard_script(None));
    assert_parses_as_sh(&boot_trial::boot_guard_script(Some(&state())));
}

#[test]
fn values_are_quoted_never_spliced() {
    let script = example(Op::RequestRollback).text;
    assert!(
        script.contains(r#"'it'\''s broken; $(rm -rf /)'"#),
        "{script}"
    );
    assert!(example(Op::ArmAndActivate)
        .text
        .contains(r#"'/nix/store/bbb-nixos-system-it'\''s-new'"#));
}

#[test]
fn the_guard_knows_every_state_and_event_by_its_one_wire_name() {
    let guard = guard::guard_script();
    for state in GuardState::WRITTEN {
        assert!(
            guard.contains(&format!("={}\n", quote(state.wire()))),
            "{state} missing from the guard's names"
        );
        assert_eq!(GuardState::parse(state.wire()), state);
    }
    for event in JournalEvent::ALL {
        assert!(guard.contains(&format!("={}\n", quote(event.wire()))));
        assert_eq!(JournalEvent::parse(event.wire()), Some(event));
    }
    assert_eq!(GuardState::parse(""), GuardState::Missing);
    assert_eq!(
        GuardState::parse("from-the-future"),
        GuardState::Other("from-the-future".into())
    );
}

#[test]
fn guard_causes_are_read_from_the_guards_words() {
    assert_eq!(GuardCause::parse("requested"), Some(GuardCause::Requested));
    assert_eq!(
        GuardCause::parse("lease-expired"),
        Some(GuardCause::LeaseExpired)
    );
    assert_eq!(
        GuardCause::parse("activation-failed 4"),
        Some(GuardCause::ActivationFailed { exit_code: 4 })
    );
    assert_eq!(GuardCause::parse("activation-failed"), None);
    assert_eq!(GuardCause::parse(""), None);
}

fn out(stdout: &str) -> ScriptOutput {
    ScriptOutput {
        stdout: stdout.into(),
        stderr: String::new(),
        exit_code: Some(0),
    }
}

#[test]
fn preflight_output_is_parsed_ignoring_banners() {
    let f = Preflight::default()
        .parse(&out("Welcome to host1!\nmachine_id=0123\nhostname=host1\narch=aarch64\ncurrent=/nix/store/x-sys\nbooted=\nprofile=/nix/store/x-sys\nboot_id=b1\nmissing=flock\nbusy=20260101T000000-aa\npreflight=done\n"))
        .unwrap();
    assert_eq!(f.machine_id, "0123");
    assert_eq!(f.arch, "aarch64");
    assert_eq!(f.current_system.as_deref(), Some("/nix/store/x-sys"));
    assert_eq!(f.booted_system, None);
    assert_eq!(f.missing_tools, vec!["flock".to_string()]);
    assert_eq!(f.busy_with.as_deref(), Some("20260101T000000-aa"));
}

#[test]
fn a_truncated_preflight_is_an_error() {
    assert!(Preflight::default().parse(&out("machine_id=1\n")).is_err());
}

#[test]
fn arm_results() {
    let op = ArmAndActivate {
        spec: spec(),
        goal: Goal::Test,
    };
    let arm = |s: &str| op.parse(&out(s)).map(|r| r.arm);
    assert_eq!(arm("arm=armed\n").unwrap(), ArmResult::Armed);
    assert_eq!(
        arm("arm=busy\nbusy=D1\n").unwrap(),
        ArmResult::Busy("D1".into())
    );
    assert_eq!(
        arm("arm=changed\ncurrent=/nix/store/c-sys\n").unwrap(),
        ArmResult::Changed("/nix/store/c-sys".into())
    );
    assert!(arm("").is_err());
    // Armed: the exit code is the activation's, with the first look.
    let report = op
        .parse(&ScriptOutput {
            stdout:
                "arm=armed\nlease_renewed=yes\nsystem_state=running\nfailed_count=0\nsystem=done\n"
                    .into(),
            stderr: String::new(),
            exit_code: Some(4),
        })
        .unwrap();
    assert_eq!(report.exit_code, Some(4));
    assert!(report.lease_renewed);
    assert!(!report.died);
    assert_eq!(report.first_look.unwrap().state, "running");
    // A wrapper stopped before it recorded its code has no exit code.
    let report = op
        .parse(&ScriptOutput {
            stdout: "arm=armed\nactivation_died=yes\n".into(),
            stderr: String::new(),
            exit_code: Some(1),
        })
        .unwrap();
    assert_eq!(report.exit_code, None);
    assert!(report.died);
}

#[test]
fn confirm_after_the_guard_fired_is_too_late() {
    let r = Confirm {
        spec: spec(),
        persist: None,
    }
    .parse(&out(
        "machine_id=m\ncurrent=/nix/store/old\nboot_id=b\nconfirm=too-late\nstate=rolled-back\n",
    ))
    .unwrap();
    assert_eq!(r.result, ConfirmResult::TooLate);
    assert_eq!(r.state, GuardState::RolledBack);
    assert_eq!(r.persist, None);
}

#[test]
fn persist_report() {
    let new = spec().new_system;
    let r = persist()
        .parse(&out(&format!(
            "profile=ok\nboot_rc=0\ngeneration=7\nboot_loader=fixture\nboot_default={new}\npersisted=yes\n"
        )))
        .unwrap();
    assert!(r.profile_set);
    assert_eq!(r.boot_rc, Some(0));
    assert_eq!(r.generation, Some(7));
    assert!(r.is_persisted(&new));
    // The host's word alone is not enough: the boot default must be it.
    let elsewhere = persist()
        .parse(&out(
            "profile=ok\nboot_rc=0\ngeneration=7\nboot_loader=fixture\nboot_default=/nix/store/x\npersisted=yes\n",
        ))
        .unwrap();
    assert!(!elsewhere.is_persisted(&new));
    assert!(
        !persist()
            .parse(&out("profile=failed\ngeneration=\n"))
            .unwrap()
            .profile_set
    );
}

#[test]
fn goal_semantics() {
    assert!(Goal::Switch.activates() && Goal::Switch.persists());
    assert!(Goal::Test.activates() && !Goal::Test.persists());
    assert!(!Goal::Boot.activates() && Goal::Boot.persists());
    assert!(!Goal::DryActivate.activates() && !Goal::DryActivate.persists());
    assert_eq!("dry-activate".parse::<Goal>().unwrap(), Goal::DryActivate);
    assert!("reboot".parse::<Goal>().is_err());
}

#[test]
fn deploy_ids_and_tokens_are_validated() {
    assert!(DeployId::new("20261121T084900", "ab; rm").is_none());
    assert!(Token::new("short").is_none());
    assert_eq!(format!("{:?}", spec().token), "Token(…)");
}

#[test]
fn preflight_records_the_units_failed_before_the_switch() {
    let f = Preflight::default().parse(&out("machine_id=m\nhostname=h\narch=x86_64\ncurrent=/nix/store/x\nboot_id=b\nfailed_unit=a.service\nfailed_unit=b.mount\npreflight=done\n")).unwrap();
    assert_eq!(f.failed_units, ["a.service", "b.mount"]);
    assert!(Preflight::default().script().contains("--state=failed"));
}

#[test]
fn unit_states_and_system_state_are_parsed() {
    let units = Units { units: Vec::new() }
        .parse(&out(
            "banner\nunit_state=nginx.service active\nunit_state=db.service inactive\n",
        ))
        .unwrap();
    assert_eq!(
        units,
        [
            ("nginx.service".to_string(), "active".to_string()),
            ("db.service".to_string(), "inactive".to_string())
        ]
    );
    let state = SystemState
        .parse(&out(
            "system_state=degraded\nfailed_unit=x.service\nsystem=done\n",
        ))
        .unwrap();
    assert_eq!(state.state, "degraded");
    assert_eq!(state.failed_units, ["x.service"]);
    assert!(SystemState.parse(&out("system_state=running\n")).is_err());
}

#[test]
fn a_target_command_check_keeps_its_own_exit_status_and_stderr() {
    let script = CheckCommand {
        command: "echo oops >&2; exit 3".into(),
    }
    .script();
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
}

#[test]
fn journal_lines_cannot_be_forged_by_tabs_or_newlines() {
    let dir = std::env::temp_dir().join(format!("tether-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("journal");
    let script = journal()
        .append_script()
        .replace(&quote(JOURNAL), &quote(&path.to_string_lossy()));
    let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert_eq!(text.trim_end().split('\t').count(), 7, "{text:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resolve_follows_links_like_readlink_f() {
    let dir = std::env::temp_dir().join(format!("tether-resolve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("store/abc-system")).unwrap();
    // profile -> system-2-link -> store/abc-system, as on a NixOS host.
    std::os::unix::fs::symlink("store/abc-system", dir.join("system-2-link")).unwrap();
    std::os::unix::fs::symlink("system-2-link", dir.join("profile")).unwrap();
    std::os::unix::fs::symlink("store/gone", dir.join("dangling")).unwrap();
    let script = format!(
        "{RESOLVE_FUNCTION}\nresolve {p}; echo \"$r\"\nresolve {d}; echo \"[$r]\"\npwd\n",
        p = quote(&dir.join("profile").to_string_lossy()),
        d = quote(&dir.join("dangling").to_string_lossy()),
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let expected = std::fs::canonicalize(dir.join("profile")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n[]\n/\n", expected.display())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `command` with a stand-in `sudo` (a shell function, so nothing
/// is written or put on PATH): with `-S` it takes one line from stdin (the
/// password, as the real one does, byte by byte) and reports it on
/// stderr; either way it runs the rest as given.
fn run_with_fake_sudo(command: &str, stdin: &str) -> (String, String) {
    let fake = r#"sudo() { while [ "$1" != -- ]; do if [ "$1" = -S ]; then IFS= read -r pw; printf %s "$pw" >&2; fi; shift; done; shift; "$@"; }; "#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{fake}{command}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_password_session_hands_sudo_the_password_and_the_shell_only_the_script() {
    use crate::model::{SudoMode, SudoPassword};
    let e = sudo::Elevation {
        mode: SudoMode::Password,
        password: SudoPassword::new("pa'ss $(x) word"),
    };
    let script = "read rest || true; echo \"script ran; stdin after: ${rest:-empty}\"";
    let stdin = format!("{}{script}\n", e.stdin_prefix().unwrap());
    let (out, seen) = run_with_fake_sudo(&e.command_for_stdin_script(), &stdin);
    assert_eq!(seen, "pa'ss $(x) word");
    assert_eq!(out.trim(), "script ran; stdin after: empty");

    // A script in the command with a data stream on stdin: the stream
    // reaches the script whole, without the password or the mark.
    let stream = "line one\nline two\n";
    let stdin = format!("{}{stream}", e.stdin_prefix().unwrap());
    let (out, seen) = run_with_fake_sudo(&e.command_for_argv_script("exec cat"), &stdin);
    assert_eq!(seen, "pa'ss $(x) word");
    assert_eq!(out, stream);
}

#[test]
fn a_passwordless_session_gets_the_script_unchanged() {
    use crate::model::SudoMode;
    let e = sudo::Elevation {
        mode: SudoMode::Passwordless,
        password: None,
    };
    assert!(e.stdin_prefix().is_none());
    let (out, seen) = run_with_fake_sudo(&e.command_for_stdin_script(), "echo it ran\n");
    assert_eq!((out.trim(), seen.as_str()), ("it ran", ""));
}

/// Runs [`TrialNeeds`]' script against systems in a temporary directory
/// (the running and booted system, the new one with its own
/// `switch-to-configuration check` exiting `check_rc`), with a stand-in
/// `bootctl` that counts its runs and says systemd-boot is installed.
/// Returns the parsed report, whether the boot loader was looked at, and
/// how many times `bootctl is-installed` ran.
fn trial_needs_on_fixture(
    reboot_asked: bool,
    new_kernel: &str,
    check_rc: i32,
) -> (TrialNeedsReport, bool, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tether-needs-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for (system, kernel) in [("old", "kernel-1"), ("new", new_kernel)] {
        let s = dir.join(system);
        std::fs::create_dir_all(s.join("bin")).unwrap();
        std::fs::write(dir.join(kernel), "").unwrap();
        std::os::unix::fs::symlink(dir.join(kernel), s.join("kernel")).unwrap();
        std::fs::write(s.join("init-interface-version"), "systemd 1\n").unwrap();
        let stc = s.join("bin/switch-to-configuration");
        std::fs::write(&stc, format!("#!/bin/sh\necho checked\nexit {check_rc}\n")).unwrap();
        std::fs::set_permissions(&stc, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    std::os::unix::fs::symlink(dir.join("old"), dir.join("current")).unwrap();
    std::os::unix::fs::symlink(dir.join("old"), dir.join("booted")).unwrap();
    let new_system = StorePath::new("/nix/store/bbb-nixos-system-new").unwrap();
    let op = TrialNeeds {
        new_system: new_system.clone(),
        reboot_asked,
    };
    let d = |p: &str| quote(&dir.join(p).to_string_lossy());
    let calls = dir.join("bootctl-calls");
    let fake_bootctl = format!(
        "bootctl() {{ if [ \"$1\" = is-installed ]; then echo x >> {calls}; return 0; fi; echo '[]'; }}\n",
        calls = quote(&calls.to_string_lossy())
    );
    let script = fake_bootctl
        + &op
            .script()
            .replace(&quote(new_system.as_str()), &d("new"))
            .replace(
                "/run/current-system",
                &dir.join("current").to_string_lossy(),
            )
            .replace("/run/booted-system", &dir.join("booted").to_string_lossy());
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let report = op
        .parse(&ScriptOutput {
            stdout: stdout.clone(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
            exit_code: out.status.code(),
        })
        .unwrap();
    let looked = stdout.lines().any(|l| l.starts_with("boots_current="));
    let runs = std::fs::read_to_string(&calls)
        .map(|s| s.lines().count())
        .unwrap_or(0);
    std::fs::remove_dir_all(&dir).unwrap();
    (report, looked, runs)
}

#[test]
fn a_live_trial_change_never_runs_bootctl() {
    let (report, looked, runs) = trial_needs_on_fixture(false, "kernel-1", 0);
    assert!(report.reasons.is_empty(), "{:?}", report.reasons);
    assert!(!looked);
    assert_eq!(runs, 0);
    assert!(!report.one_shot);
}

#[test]
fn the_boot_loader_is_read_once_when_a_reboot_trial_could_follow() {
    // Asked for (`--trial reboot`), a kernel change, a failed pre-switch check.
    for (asked, kernel, rc) in [
        (true, "kernel-1", 0),
        (false, "kernel-2", 0),
        (false, "kernel-1", 1),
    ] {
        let (report, looked, runs) = trial_needs_on_fixture(asked, kernel, rc);
        assert!(looked, "asked {asked}, kernel {kernel}, check exit {rc}");
        assert!(
            report.one_shot,
            "asked {asked}, kernel {kernel}, check exit {rc}"
        );
        assert_eq!(runs, 1, "bootctl is-installed asked once per script");
        assert_eq!(report.reasons.is_empty(), asked);
    }
}
