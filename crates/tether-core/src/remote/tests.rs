//! Tests of the remote vocabulary: parsers against captured output, and every
//! script checked by a real `sh -n` so a quoting slip cannot reach a host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn spec() -> GuardSpec {
    GuardSpec {
        deploy_id: DeployId::new("20261121T084900", "abc123").unwrap(),
        token: Token::new("0123456789abcdef0123456789abcdef").unwrap(),
        old_system: StorePath::new("/nix/store/aaa-nixos-system-old").unwrap(),
        new_system: StorePath::new("/nix/store/bbb-nixos-system-it's-new").unwrap(),
        lease: Duration::from_secs(15),
        deployer: "alice@laptop".into(),
    }
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
fn every_script_is_valid_sh_even_with_quotes_in_values() {
    let s = spec();
    for script in [
        preflight_script(),
        arm_script(&s),
        arm_and_activate_script(&s, Goal::Test),
        renew_script(&s),
        request_rollback_script(&s, "it's broken; $(rm -rf /)"),
        confirm_script(&s),
        confirm_then(
            &s,
            &persist_script(&s.new_system, PersistMode::SetProfile, Some(&s)),
        ),
        inspect_script(&s),
        persist_script(&s.new_system, PersistMode::SetProfile, Some(&s)),
        persist_script(&s.new_system, PersistMode::SwitchGeneration(3), None),
        reboot_script(&s.deploy_id),
        boot_state_script(),
        dry_activate_script(&s.new_system),
        journal_script(
            &s.deploy_id,
            "confirmed",
            Some(&s.old_system),
            &s.new_system,
            "bob@x",
            "a\tb\nc",
        ),
        GUARD_SCRIPT.to_string(),
        check_command_script("curl -fs 'http://localhost/' | grep \"it's ok\""),
        units_script(&["nginx.service".into(), "it's.service".into()]),
        system_state_script(),
    ] {
        assert_parses_as_sh(&script);
    }
}

#[test]
fn values_are_quoted_never_spliced() {
    let s = spec();
    let script = request_rollback_script(&s, "x'; touch /tmp/pwned; echo '");
    assert!(script.contains(r#"'x'\''; touch /tmp/pwned; echo '\'''"#));
    assert!(arm_and_activate_script(&s, Goal::Test)
        .contains(r#"'/nix/store/bbb-nixos-system-it'\''s-new'"#));
}

#[test]
fn preflight_output_is_parsed_ignoring_banners() {
    let out = "Welcome to host1!\nmachine_id=0123\nhostname=host1\narch=aarch64\ncurrent=/nix/store/x-sys\nbooted=\nprofile=/nix/store/x-sys\nboot_id=b1\nmissing=flock\nbusy=20260101T000000-aa\npreflight=done\n";
    let f = parse_preflight(out).unwrap();
    assert_eq!(f.machine_id, "0123");
    assert_eq!(f.nix_system(), "aarch64-linux");
    assert_eq!(f.current_system.as_deref(), Some("/nix/store/x-sys"));
    assert_eq!(f.booted_system, None);
    assert_eq!(f.missing_tools, vec!["flock".to_string()]);
    assert_eq!(f.busy_with.as_deref(), Some("20260101T000000-aa"));
}

#[test]
fn a_truncated_preflight_is_an_error() {
    assert!(parse_preflight("machine_id=1\n").is_err());
}

#[test]
fn arm_results() {
    assert_eq!(parse_arm("arm=armed\n").unwrap(), ArmResult::Armed);
    assert_eq!(
        parse_arm("arm=busy\nbusy=D1\n").unwrap(),
        ArmResult::Busy("D1".into())
    );
    assert_eq!(
        parse_arm("arm=changed\ncurrent=/nix/store/c-sys\n").unwrap(),
        ArmResult::Changed("/nix/store/c-sys".into())
    );
    assert!(parse_arm("").is_err());
}

#[test]
fn confirm_after_the_guard_fired_is_too_late() {
    let r = parse_confirm(
        "machine_id=m\ncurrent=/nix/store/old\nboot_id=b\nconfirm=too-late\nstate=rolled-back\nreason=lease expired\n",
    )
    .unwrap();
    assert_eq!(r.result, ConfirmResult::TooLate);
    assert_eq!(r.state, GuardState::RolledBack);
    assert_eq!(r.reason.as_deref(), Some("lease expired"));
}

#[test]
fn persist_report() {
    let r = parse_persist("profile=ok\nboot_rc=0\ngeneration=7\n").unwrap();
    assert!(r.profile_set);
    assert_eq!(r.boot_rc, Some(0));
    assert_eq!(r.generation, Some(7));
    assert!(
        !parse_persist("profile=failed\ngeneration=\n")
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
    let out = "machine_id=m\nhostname=h\narch=x86_64\ncurrent=/nix/store/x\nboot_id=b\nfailed_unit=a.service\nfailed_unit=b.mount\npreflight=done\n";
    let f = parse_preflight(out).unwrap();
    assert_eq!(f.failed_units, ["a.service", "b.mount"]);
    assert!(preflight_script().contains("--state=failed"));
}

#[test]
fn unit_states_and_system_state_are_parsed() {
    let units =
        parse_units("banner\nunit_state=nginx.service active\nunit_state=db.service inactive\n");
    assert_eq!(
        units,
        [
            ("nginx.service".to_string(), "active".to_string()),
            ("db.service".to_string(), "inactive".to_string())
        ]
    );
    let state =
        parse_system_state("system_state=degraded\nfailed_unit=x.service\nsystem=done\n").unwrap();
    assert_eq!(state.state, "degraded");
    assert_eq!(state.failed_units, ["x.service"]);
    assert!(parse_system_state("system_state=running\n").is_err());
}

#[test]
fn a_target_command_check_keeps_its_own_exit_status_and_stderr() {
    let script = check_command_script("echo oops >&2; exit 3");
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
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
