#![allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic

use super::*;
use crate::inventory::Configuration;
use crate::model::host_key::tests::ed25519;
use crate::model::SshUser;
use crate::report::Outcome;
use crate::spec::{CheckType, HttpCheck, RehearsalSpec, TcpCheck};
use std::time::Duration;

fn host(name: &str, address: &str, staging: bool) -> Host {
    Host {
        name: name.parse().expect("name"),
        address: address.parse().expect("address"),
        ssh_user: SshUser::default(),
        ssh_port: 22,
        host_key: ed25519(1).parse().expect("key"),
        machine_id: None,
        tags: Vec::new(),
        configuration: Configuration::Named(name.to_owned()),
        ssh_options: Vec::new(),
        timeouts: Default::default(),
        trial: Default::default(),
        checks: Default::default(),
        state: Default::default(),
        rehearsal: RehearsalSpec {
            staging,
            ..RehearsalSpec::default()
        },
        sudo: crate::model::SudoMode::None,
    }
}

fn path(name: &str) -> StorePath {
    StorePath::new(&format!("/nix/store/{name}")).expect("store path")
}

fn toplevel(name: &str, system: &str) -> Toplevel {
    Toplevel {
        drv_path: path(&format!("{name}.drv")),
        out_path: path(name),
        system: Some(system.to_string()),
    }
}

fn variants(name: &str, system: &str, variant_system: &str, addresses: &[&str]) -> Variants {
    Variants {
        plain: toplevel(name, system),
        variant: toplevel(&format!("{name}-variant"), variant_system),
        addresses: Some(addresses.iter().map(|a| a.to_string()).collect()),
    }
}

#[test]
fn a_production_host_cannot_be_used_as_staging() {
    let prod = host("web1", "10.0.0.1", false);
    let other_prod = host("web2", "10.0.0.2", false);
    let err = check_hosts(&prod, &other_prod).unwrap_err();
    assert!(matches!(err, RehearsalRefusal::NotStaging { .. }));
    assert!(err.to_string().contains("rehearsal.staging = true"));
    let staging = host("stage", "10.0.0.9", true);
    assert!(check_hosts(&prod, &staging).is_ok());
    assert!(matches!(
        check_hosts(&staging, &staging),
        Err(RehearsalRefusal::SameHost { .. })
    ));
}

#[test]
fn the_old_revision_comes_from_from_then_a_clean_journal_revision() {
    let name: HostName = "web1".parse().unwrap();
    let journal = Some(("abc123".to_string(), "d1".to_string()));
    assert_eq!(
        old_source(&name, None, Some("v1"), journal.clone()).unwrap(),
        OldSource::Given {
            reference: "v1".into()
        }
    );
    assert!(matches!(
        old_source(&name, None, None, journal).unwrap(),
        OldSource::Journal { .. }
    ));
    let dirty = Some(("abc123-dirty".to_string(), "d1".to_string()));
    let err = old_source(&name, Some(&path("sys")), None, dirty).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("--from REF") && text.contains("journal"),
        "{text}"
    );
    assert!(old_source(&name, None, None, None).is_err());
}

#[allow(clippy::too_many_arguments)] // one line per field of Evaluated
fn evaluated<'a>(
    prod: &'a Host,
    runs: &'a StorePath,
    source: &'a OldSource,
    old: &'a Variants,
    new: &'a Variants,
    staging: &'a HostName,
    staging_system: Option<&'a str>,
    allow: bool,
) -> Evaluated<'a> {
    Evaluated {
        production: prod,
        runs,
        old_source: source,
        old,
        new,
        staging,
        staging_system,
        allow_arch_change: allow,
    }
}

#[test]
fn variants_must_match_production_and_never_declare_its_address() {
    let prod = host("web1", "10.0.0.1", false);
    let staging: HostName = "stage".parse().unwrap();
    let source = OldSource::Given {
        reference: "v1".into(),
    };
    let old = variants("old", "x86_64-linux", "x86_64-linux", &["10.0.0.9"]);
    let new = variants("new", "x86_64-linux", "x86_64-linux", &["10.0.0.9"]);
    let runs = path("old");
    let ok = check_variants(evaluated(
        &prod,
        &runs,
        &source,
        &old,
        &new,
        &staging,
        Some("x86_64-linux"),
        false,
    ));
    assert_eq!(ok.unwrap().warnings, Vec::<String>::new());

    let other = path("something-else");
    assert!(matches!(
        check_variants(evaluated(
            &prod,
            &other,
            &source,
            &old,
            &new,
            &staging,
            Some("x86_64-linux"),
            false
        )),
        Err(RehearsalRefusal::OldRevisionMismatch { .. })
    ));

    let leaky = variants("new", "x86_64-linux", "x86_64-linux", &["10.0.0.1"]);
    let err = check_variants(evaluated(
        &prod,
        &runs,
        &source,
        &old,
        &leaky,
        &staging,
        Some("x86_64-linux"),
        false,
    ))
    .unwrap_err();
    assert_eq!(
        err,
        RehearsalRefusal::CarriesProductionAddress {
            host: prod.name.clone(),
            address: "10.0.0.1".into(),
            side: Side::New
        }
    );
}

#[test]
fn a_foreign_architecture_is_refused_unless_allowed_and_rebuilt() {
    let prod = host("arm1", "10.0.0.1", false);
    let staging: HostName = "stage".parse().unwrap();
    let source = OldSource::Given {
        reference: "v1".into(),
    };
    let runs = path("old");
    let old = variants("old", "aarch64-linux", "aarch64-linux", &[]);
    let new = variants("new", "aarch64-linux", "aarch64-linux", &[]);
    let x86 = Some("x86_64-linux");
    let err = check_variants(evaluated(
        &prod, &runs, &source, &old, &new, &staging, x86, false,
    ))
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("--allow-arch-change") && text.contains("same architecture"));
    // Allowed, but the variant was not rebuilt for the staging host.
    assert!(check_variants(evaluated(
        &prod, &runs, &source, &old, &new, &staging, x86, true
    ))
    .is_err());
    let old = variants("old", "aarch64-linux", "x86_64-linux", &[]);
    let new = variants("new", "aarch64-linux", "x86_64-linux", &[]);
    let ok = check_variants(evaluated(
        &prod, &runs, &source, &old, &new, &staging, x86, true,
    ))
    .unwrap();
    assert_eq!(ok.warnings.len(), 1, "{:?}", ok.warnings);
    assert!(ok.warnings[0].contains("architecture-specific problems are not covered"));
}

#[test]
fn checks_are_aimed_at_the_staging_host_and_guard_its_isolation() {
    let production: Address = "10.0.0.1".parse().unwrap();
    let staging: Address = "10.0.0.9".parse().unwrap();
    let checks = HostChecks {
        checks: vec![
            Check {
                name: "web".into(),
                kind: CheckKind::Http(HttpCheck {
                    url: Some("http://10.0.0.1:8080/health".into()),
                    ..HttpCheck::default()
                }),
                timeout: Duration::from_secs(5),
            },
            Check {
                name: "port".into(),
                kind: CheckKind::Tcp(TcpCheck {
                    port: 22,
                    address: Some(production.clone()),
                }),
                timeout: Duration::from_secs(5),
            },
        ],
        ..HostChecks::default()
    };
    let out = retarget_checks(&checks, &production, &staging);
    match &out.checks[0].kind {
        CheckKind::Http(h) => assert_eq!(h.url.as_deref(), Some("http://10.0.0.9:8080/health")),
        other => panic!("{other:?}"),
    }
    match &out.checks[1].kind {
        CheckKind::Tcp(t) => assert_eq!(t.address.as_ref(), Some(&staging)),
        other => panic!("{other:?}"),
    }
    let isolation = out.checks.last().unwrap();
    assert_eq!(isolation.name, ISOLATION_CHECK);
    match &isolation.kind {
        CheckKind::Command(c) => {
            assert_eq!(c.on, CommandOn::Target);
            assert!(c.command.contains("'inet 10.0.0.1/'"), "{}", c.command);
        }
        other => panic!("{other:?}"),
    }
}

fn event(ms: u64, kind: EventKind) -> Event {
    Event {
        host: "stage".parse().unwrap(),
        elapsed_ms: ms,
        kind,
    }
}

#[test]
fn a_stage_reads_durations_units_and_check_results_from_its_events() {
    let events = vec![
        event(
            0,
            EventKind::Phase {
                phase: Phase::Preflight,
            },
        ),
        event(
            100,
            EventKind::Phase {
                phase: Phase::Activating,
            },
        ),
        event(
            150,
            EventKind::Output {
                line: "restarting the following units: fixture-db.service".into(),
            },
        ),
        event(
            160,
            EventKind::Output {
                line: "starting the following units: fixture-web.service, fixture-x.service".into(),
            },
        ),
        event(400, EventKind::ActivationEnded { exit_code: Some(0) }),
        event(
            400,
            EventKind::Phase {
                phase: Phase::Checking,
            },
        ),
        event(
            500,
            EventKind::Check {
                check: "db".into(),
                kind: CheckType::Http,
                attempt: 1,
                passed: false,
                detail: "status 500".into(),
            },
        ),
        event(
            900,
            EventKind::Check {
                check: "db".into(),
                kind: CheckType::Http,
                attempt: 2,
                passed: false,
                detail: "status 503".into(),
            },
        ),
        event(
            1400,
            EventKind::Phase {
                phase: Phase::RollingBack,
            },
        ),
    ];
    let report = HostReport {
        host: "stage".parse().unwrap(),
        outcome: Outcome::Unchanged,
        old_system: None,
        old_generation: None,
        new_system: "/nix/store/x".into(),
        duration_ms: 1500,
        state: None,
    };
    let stage = Stage::of(&events, report);
    assert_eq!(stage.activation_ms, Some(300));
    assert_eq!(stage.checks_ms, Some(1000));
    assert_eq!(stage.restarted, vec!["fixture-db.service"]);
    assert_eq!(
        stage.started,
        vec!["fixture-web.service", "fixture-x.service"]
    );
    assert_eq!(stage.checks.len(), 1);
    assert_eq!(stage.checks[0].attempts, 2);
    assert_eq!(
        stage.failed_check().map(|c| c.detail.as_str()),
        Some("status 503")
    );
    assert!(!stage.reboot_trial);
}
