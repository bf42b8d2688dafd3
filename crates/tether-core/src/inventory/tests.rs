//! Scenarios for inventory validation: one test per kind of mistake a user
//! can make, each checking that the error names the host and the field.

use serde_json::{json, Value};

use super::*;
use crate::model::host_key::tests::{ed25519, key_line};

fn doc(tether: Value) -> EvalDocument {
    EvalDocument {
        has_tether: true,
        tether,
        nixos_configurations: vec!["web1".into(), "web2".into(), "shared".into()],
    }
}

fn name_cfg(name: &str, implicit: bool) -> Value {
    json!({"kind": "name", "name": name, "implicit": implicit})
}

fn web1() -> Value {
    json!({
        "address": "10.231.1.11",
        "hostKey": ed25519(1),
        "configuration": name_cfg("web1", true),
    })
}

fn with(mut host: Value, field: &str, value: Value) -> Value {
    host[field] = value;
    host
}

fn errors_of(tether: Value) -> Vec<String> {
    match Inventory::from_eval(doc(tether)) {
        Ok(inv) => panic!("expected errors, got {inv:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn single_error(host: Value) -> String {
    let errors = errors_of(json!({"hosts": {"web1": host}}));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors[0].clone()
}

#[test]
fn a_minimal_host_gets_the_defaults() {
    let inv = Inventory::from_eval(doc(json!({"hosts": {"web1": web1()}}))).expect("valid");
    let host = inv.get("web1").expect("web1");
    assert_eq!(host.ssh_user.as_str(), "root");
    assert_eq!(host.ssh_port, 22);
    assert!(host.tags.is_empty());
    assert_eq!(host.machine_id, None);
    assert_eq!(host.configuration, Configuration::Named("web1".into()));
}

#[test]
fn defaults_apply_and_hosts_override_them() {
    let tether = json!({
        "defaults": {"sshUser": "deploy", "sshPort": 2222, "tags": ["all"]},
        "hosts": {
            "web1": with(with(web1(), "sshPort", json!(22)), "tags", json!(["web", "all"])),
            "web2": {
                "address": "web2.example.com",
                "hostKey": format!("{} comment", ed25519(2)),
                "machineId": "0123456789abcdef0123456789abcdef",
                "configuration": name_cfg("shared", false),
            },
        },
    });
    let inv = Inventory::from_eval(doc(tether)).expect("valid");
    let names: Vec<&str> = inv.hosts().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["web1", "web2"]);
    let web1 = inv.get("web1").expect("web1");
    assert_eq!((web1.ssh_user.as_str(), web1.ssh_port), ("deploy", 22));
    let tags: Vec<&str> = web1.tags.iter().map(Tag::as_str).collect();
    assert_eq!(tags, ["all", "web"]);
    let web2 = inv.get("web2").expect("web2");
    assert_eq!(web2.ssh_port, 2222);
    assert_eq!(web2.configuration, Configuration::Named("shared".into()));
    assert_eq!(web2.host_key.comment(), Some("comment"));
}

#[test]
fn inline_configurations_and_derivations_are_accepted() {
    let tether = json!({"hosts": {
        "a": with(web1(), "configuration", json!({"kind": "configuration"})),
        "b": with(with(web1(), "address", json!("10.0.0.2")), "configuration", json!({"kind": "derivation"})),
    }});
    let inv = Inventory::from_eval(doc(tether)).expect("valid");
    assert_eq!(
        inv.get("a").map(|h| &h.configuration),
        Some(&Configuration::Inline)
    );
    assert_eq!(
        inv.get("b").map(|h| &h.configuration),
        Some(&Configuration::Derivation)
    );
}

#[test]
fn missing_tether_output_is_reported() {
    let errors = Inventory::from_eval(EvalDocument {
        has_tether: false,
        tether: Value::Null,
        nixos_configurations: vec![],
    })
    .expect_err("no output");
    assert_eq!(errors.0[0].problem, Problem::NoTetherOutput);
}

#[test]
fn missing_address_names_host_and_field() {
    let mut host = web1();
    host.as_object_mut().map(|o| o.remove("address"));
    assert_eq!(
        single_error(host),
        "host \"web1\": field \"address\": required field is missing"
    );
}

#[test]
fn empty_or_invalid_address_is_rejected() {
    assert_eq!(
        single_error(with(web1(), "address", json!(""))),
        "host \"web1\": field \"address\": \"\" is not a valid address: empty"
    );
    assert!(single_error(with(web1(), "address", json!("10.0.0.300")))
        .starts_with("host \"web1\": field \"address\": \"10.0.0.300\" is not a valid address"));
    assert!(single_error(with(web1(), "address", json!(42)))
        .ends_with("field \"address\": expected a string, found the number 42"));
}

#[test]
fn missing_host_key_is_rejected() {
    let mut host = web1();
    host.as_object_mut().map(|o| o.remove("hostKey"));
    assert_eq!(
        single_error(host),
        "host \"web1\": field \"hostKey\": required field is missing"
    );
}

#[test]
fn host_key_with_bad_base64_is_rejected() {
    assert_eq!(
        single_error(with(web1(), "hostKey", json!("ssh-ed25519 AAAA!!!!"))),
        "host \"web1\": field \"hostKey\": not a valid OpenSSH public key (base64 does not decode)"
    );
}

#[test]
fn host_key_with_unknown_type_is_rejected() {
    let msg = single_error(with(web1(), "hostKey", json!("ssh-dss AAAAB3NzaC1kc3M=")));
    assert!(
        msg.starts_with("host \"web1\": field \"hostKey\": not a valid OpenSSH public key (unknown key type \"ssh-dss\""),
        "{msg}"
    );
}

#[test]
fn host_key_whose_data_names_another_type_is_rejected() {
    let key = key_line("ssh-ed25519", "ssh-rsa", &[0; 32]);
    assert_eq!(
        single_error(with(web1(), "hostKey", json!(key))),
        "host \"web1\": field \"hostKey\": not a valid OpenSSH public key (key data says \"ssh-rsa\" but the key is written as \"ssh-ed25519\")"
    );
}

#[test]
fn unknown_field_is_named_with_a_suggestion() {
    assert_eq!(
        single_error(with(web1(), "sshPrt", json!(22))),
        "host \"web1\": field \"sshPrt\": unknown field (did you mean \"sshPort\"?)"
    );
    assert_eq!(
        single_error(with(web1(), "colour", json!("red"))),
        "host \"web1\": field \"colour\": unknown field"
    );
}

#[test]
fn unknown_fields_in_defaults_and_tether_are_named() {
    let errors = errors_of(json!({
        "defaults": {"sshUsr": "x", "address": "10.0.0.1"},
        "hosts": {"web1": web1()},
        "host": {},
    }));
    assert_eq!(
        errors,
        [
            "tether: field \"host\": unknown field (did you mean \"hosts\"?)",
            "defaults: field \"address\": only allowed per host, not in defaults",
            "defaults: field \"sshUsr\": unknown field (did you mean \"sshUser\"?)",
        ]
    );
}

#[test]
fn ssh_port_out_of_range_is_rejected() {
    for (port, shown) in [(json!(0), "0"), (json!(65536), "65536"), (json!(-1), "-1")] {
        assert_eq!(
            single_error(with(web1(), "sshPort", port)),
            format!("host \"web1\": field \"sshPort\": {shown} is out of range (1..65535)")
        );
    }
    assert!(single_error(with(web1(), "sshPort", json!("22"))).contains("expected an integer"));
}

#[test]
fn malformed_machine_id_is_rejected() {
    assert_eq!(
        single_error(with(web1(), "machineId", json!("0123456789ABCDEF0123456789ABCDEF"))),
        "host \"web1\": field \"machineId\": \"0123456789ABCDEF0123456789ABCDEF\" is not a valid machine-id (expected 32 lowercase hexadecimal digits, as in /etc/machine-id)"
    );
}

#[test]
fn invalid_tags_are_named_by_index() {
    let errors =
        errors_of(json!({"hosts": {"web1": with(web1(), "tags", json!(["ok", "bad tag", 3]))}}));
    assert_eq!(
        errors,
        [
            "host \"web1\": field \"tags[1]\": \"bad tag\" is not a valid tag (use letters, digits, '.', '_' and '-', starting with a letter or digit)",
            "host \"web1\": field \"tags[2]\": expected a string, found the number 3",
        ]
    );
}

#[test]
fn configuration_naming_a_missing_entry_is_rejected() {
    assert_eq!(
        single_error(with(web1(), "configuration", name_cfg("web3", false))),
        "host \"web1\": field \"configuration\": no nixosConfigurations.web3 (did you mean \"web1\"?)"
    );
    let errors =
        errors_of(json!({"hosts": {"db1": with(web1(), "configuration", name_cfg("db1", true))}}));
    assert_eq!(
        errors,
        ["host \"db1\": field \"configuration\": no nixosConfigurations.db1 (the default for this host; set `configuration` to name another)"]
    );
}

#[test]
fn configuration_of_the_wrong_type_is_rejected() {
    assert_eq!(
        single_error(with(web1(), "configuration", json!({"kind": "invalid", "type": "int"}))),
        "host \"web1\": field \"configuration\": must be the name of a nixosConfigurations entry, a NixOS configuration or a derivation, found an int"
    );
}

#[test]
fn duplicate_address_and_port_names_both_hosts() {
    let tether = json!({"hosts": {
        "web1": web1(),
        "web2": with(web1(), "configuration", name_cfg("web2", true)),
    }});
    assert_eq!(
        errors_of(tether),
        ["host \"web2\": field \"address\": 10.231.1.11 port 22 is also used by host \"web1\""]
    );
    // The same address on another port is a different SSH endpoint (NAT).
    let tether = json!({"hosts": {
        "web1": web1(),
        "web2": with(with(web1(), "configuration", name_cfg("web2", true)), "sshPort", json!(2201)),
    }});
    assert!(Inventory::from_eval(doc(tether)).is_ok());
}

#[test]
fn invalid_host_name_is_rejected() {
    let errors = errors_of(
        json!({"hosts": {"web 1": with(web1(), "configuration", name_cfg("web1", false))}}),
    );
    assert_eq!(
        errors,
        ["host \"web 1\": \"web 1\" is not a valid host name (use letters, digits, '.', '_' and '-', starting with a letter or digit)"]
    );
}

#[test]
fn host_that_is_not_an_attribute_set_is_rejected() {
    let errors = errors_of(json!({"hosts": {"web1": "10.0.0.1"}}));
    assert_eq!(
        errors,
        ["host \"web1\": expected an attribute set, found the string \"10.0.0.1\""]
    );
}

#[test]
fn functions_and_derivations_in_fields_are_described() {
    assert!(
        single_error(with(web1(), "sshUser", json!({"$nix": "lambda"})))
            .ends_with("field \"sshUser\": expected a string, found a function")
    );
}

#[test]
fn all_errors_are_collected_not_just_the_first() {
    let tether = json!({"hosts": {
        "web1": {"hostKey": "nope", "sshPort": 0, "machineId": "x", "configuration": name_cfg("web1", true)},
        "web2": {"address": "10.0.0.2", "hostKey": ed25519(2), "tags": ["-x"], "configuration": name_cfg("web2", true)},
    }});
    let errors = errors_of(tether);
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert!(
        errors
            .iter()
            .filter(|e| e.starts_with("host \"web1\""))
            .count()
            == 4
    );
}

#[test]
fn ssh_options_with_whitespace_are_rejected_by_host_and_field() {
    let e = single_error(with(
        web1(),
        "sshOptions",
        json!(["-o StrictHostKeyChecking=no"]),
    ));
    assert!(e.contains("web1") && e.contains("sshOptions[0]"), "{e}");
}

#[test]
fn ssh_options_list_host_first_then_defaults() {
    let tether = json!({
        "defaults": {"sshOptions": ["-i", "/k/default"]},
        "hosts": {"web1": with(web1(), "sshOptions", json!(["-i", "/k/web1"]))}
    });
    let inv = Inventory::from_eval(doc(tether)).expect("valid");
    assert_eq!(
        inv.get("web1").expect("web1").ssh_options,
        ["-i", "/k/web1", "-i", "/k/default"]
    );
}

#[test]
fn timeouts_merge_per_key_and_bad_keys_are_named() {
    let tether = json!({
        "defaults": {"timeouts": {"lease": 20, "activation": 60}},
        "hosts": {"web1": with(web1(), "timeouts", json!({"lease": 5}))}
    });
    let inv = Inventory::from_eval(doc(tether)).expect("valid");
    let t = inv.get("web1").expect("web1").timeouts;
    assert_eq!(
        (t.lease, t.activation, t.confirm),
        (Some(5), Some(60), None)
    );
    let errors = errors_of(
        json!({"hosts": {"web1": with(web1(), "timeouts", json!({"leese": 5, "lease": 0}))}}),
    );
    let all = errors.join("\n");
    assert!(
        all.contains("web1") && all.contains("timeouts.leese"),
        "{all}"
    );
    assert!(
        all.contains("timeouts.lease") && all.contains("out of range"),
        "{all}"
    );
}

// Health checks (docs/checks.md).

fn check_error(check: Value) -> String {
    single_error(with(web1(), "checks", json!({ "web": check })))
}

#[test]
fn checks_merge_by_name_and_take_documented_defaults() {
    use crate::spec::{CheckKind, FailedUnits};
    let tether = json!({
        "defaults": {
            "checks": {
                "web": {"type": "http"},
                "ssh": {"type": "tcp", "port": 22},
                "gone": {"type": "units", "units": ["a.service"]},
            },
            "failedUnits": "any",
        },
        "hosts": {"web1": with(web1(), "checks", json!({
            "web": {"type": "http", "port": 8080, "path": "/health", "status": [200, 204],
                    "headers": {"Host": "example.org"}, "timeout": 2},
            "gone": null,
            "db": {"type": "command", "on": "target", "command": "pg_isready"},
        }))},
    });
    let inv = Inventory::from_eval(doc(tether)).expect("valid");
    let checks = &inv.get("web1").expect("web1").checks;
    let names: Vec<&str> = checks.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["db", "ssh", "web"]);
    let CheckKind::Http(web) = &checks.checks[2].kind else {
        panic!("web is http")
    };
    assert_eq!(
        web.port,
        Some(8080),
        "the host's web replaced the default's"
    );
    assert_eq!(web.status, [200, 204]);
    assert_eq!(
        web.headers,
        [("Host".to_string(), "example.org".to_string())]
    );
    assert_eq!(checks.checks[2].timeout.as_secs(), 2);
    assert_eq!(
        checks.checks[1].timeout.as_secs(),
        5,
        "default attempt timeout"
    );
    assert_eq!(checks.failed_units, FailedUnits::Any);
    assert!(checks.system_running);
    assert_eq!(checks.timeout.as_secs(), 30);
    assert_eq!(checks.interval.as_secs(), 1);
}

#[test]
fn an_unknown_check_type_is_named_with_a_suggestion() {
    assert_eq!(
        check_error(json!({"type": "htp"})),
        "host \"web1\": field \"checks.web.type\": unknown check type \"htp\" (expected one of: http, tcp, command, units) (did you mean \"http\"?)"
    );
    assert_eq!(
        check_error(json!({"port": 80})),
        "host \"web1\": field \"checks.web.type\": required field is missing"
    );
}

#[test]
fn a_malformed_url_is_rejected() {
    assert!(check_error(json!({"type": "http", "url": "http//x"}))
        .starts_with("host \"web1\": field \"checks.web.url\": \"http//x\" is not a valid URL"));
    assert!(check_error(json!({"type": "http", "url": "ftp://x/"}))
        .contains("the scheme must be http or https"));
    assert!(
        check_error(json!({"type": "http", "url": "http://x/", "port": 80}))
            .contains("field \"checks.web.port\"")
    );
}

#[test]
fn check_ports_out_of_range_are_rejected() {
    assert_eq!(
        check_error(json!({"type": "tcp", "port": 70000})),
        "host \"web1\": field \"checks.web.port\": 70000 is out of range (1..65535)"
    );
    assert_eq!(
        check_error(json!({"type": "tcp"})),
        "host \"web1\": field \"checks.web.port\": required field is missing"
    );
}

#[test]
fn a_regex_that_does_not_compile_is_rejected() {
    assert!(check_error(json!({"type": "http", "bodyRegex": "(open"}))
        .starts_with("host \"web1\": field \"checks.web.bodyRegex\": \"(open\" is not a valid regular expression"));
}

#[test]
fn unknown_and_other_types_fields_in_a_check_are_rejected() {
    assert_eq!(
        check_error(json!({"type": "tcp", "port": 22, "bodyy": "x"})),
        "host \"web1\": field \"checks.web.bodyy\": unknown field"
    );
    assert_eq!(
        check_error(json!({"type": "http", "bdy": "x"})),
        "host \"web1\": field \"checks.web.bdy\": unknown field (did you mean \"body\"?)"
    );
}

#[test]
fn command_and_units_checks_need_their_fields() {
    assert_eq!(
        check_error(json!({"type": "command", "on": "laptop", "command": "true"})),
        "host \"web1\": field \"checks.web.on\": \"laptop\" is not one of: \"deployer\", \"target\""
    );
    assert!(check_error(json!({"type": "command", "on": "target"}))
        .contains("field \"checks.web.command\": required field is missing"));
    assert_eq!(
        check_error(json!({"type": "units", "units": []})),
        "host \"web1\": field \"checks.web.units\": must not be empty"
    );
    assert!(check_error(json!({"type": "http", "status": 42}))
        .contains("field \"checks.web.status\": the number 42 is not an HTTP status code"));
}

#[test]
fn system_check_settings_are_validated() {
    assert_eq!(
        single_error(with(web1(), "failedUnits", json!("some"))),
        "host \"web1\": field \"failedUnits\": \"some\" is not one of: \"new\", \"any\", \"ignore\""
    );
    assert!(
        single_error(with(web1(), "systemRunning", json!("yes"))).contains("expected a boolean")
    );
    assert!(single_error(with(web1(), "checkTimeout", json!(0)))
        .contains("0 seconds is out of range (1..3600)"));
}

#[test]
fn rollout_policy_is_read_and_checked() {
    let tether = json!({
        "hosts": {"web1": web1()},
        "rollout": {"canary": "@canary", "batch": "25%", "parallel": 4, "maxFailures": 0, "revertOnFailure": true}
    });
    let inv = Inventory::from_eval(doc(tether)).expect("valid");
    let r = inv.rollout();
    assert_eq!(r.batch, Some(crate::spec::BatchSize::Percent(25)));
    assert_eq!(
        (r.parallel, r.max_failures, r.revert_on_failure),
        (Some(4), Some(0), Some(true))
    );
    assert!(matches!(
        r.canary,
        Some(crate::spec::CanarySpec::Selector(_))
    ));
    let errors = errors_of(json!({
        "hosts": {"web1": web1()},
        "rollout": {"batch": "0%", "parallel": 0, "revertOnFailure": "yes", "canarys": 1}
    }))
    .join("\n");
    for field in [
        "rollout.batch",
        "rollout.parallel",
        "rollout.revertOnFailure",
        "rollout.canarys",
    ] {
        assert!(errors.contains(field), "{field} not named in: {errors}");
    }
}

#[test]
fn the_trial_is_read_merged_and_checked() {
    assert_eq!(
        single_error(with(web1(), "trial", json!("sometimes"))),
        "host \"web1\": field \"trial\": \"sometimes\" is not one of: \"live\", \"reboot\", \"auto\""
    );
    let tether = json!({
        "defaults": {"trial": "live"},
        "hosts": {"web1": web1(), "web2": with(with(web1(), "address", json!("10.0.0.2")), "trial", json!("reboot"))},
    });
    let inv = Inventory::from_eval(doc(tether)).expect("valid");
    assert_eq!(
        inv.get("web1").expect("web1").trial,
        crate::model::TrialMode::Live
    );
    assert_eq!(
        inv.get("web2").expect("web2").trial,
        crate::model::TrialMode::Reboot
    );
    let inv = Inventory::from_eval(doc(json!({"hosts": {"web1": web1()}}))).expect("valid");
    assert_eq!(
        inv.get("web1").expect("web1").trial,
        crate::model::TrialMode::Auto
    );
}
