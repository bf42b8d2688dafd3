//! Inventory scenarios against the real `tether` binary and real `nix eval`:
//! small flakes and `-f` files written into temporary directories.
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tether::adapters::nix::{Nix, NixSource};
use tether_core::model::HostName;

/// A real ed25519 public key (from `ssh-keygen`).
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA8IZWhH2o1KHCwjWzLA97IHnuk5FMFXEHyWO+azYrIR root@vm";
const FINGERPRINT: &str = "SHA256:2KrqTXNCXDy5HYEH2bQBPJuM9YGa74jk8GQtcADolkY";

/// A trivial "system toplevel": a derivation that builds in no time.
const TOPLEVEL_FN: &str = r#"top = n: derivation { name = "system-${n}"; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; };"#;

/// Outputs with three hosts: web1 and web2 (default configurations), db1
/// with an inline derivation; `hosts_extra` is spliced into `tether.hosts`.
fn outputs(hosts_extra: &str) -> String {
    format!(
        r#"let {TOPLEVEL_FN} in {{
  tether = {{
    defaults = {{ tags = [ "all" ]; }};
    hosts = {{
      web1 = {{ address = "10.231.1.11"; hostKey = "{KEY}"; tags = [ "web" "eu" ]; machineId = "0123456789abcdef0123456789abcdef"; }};
      web2 = {{ address = "10.231.1.12"; hostKey = "{KEY}"; tags = [ "web" ]; sshUser = "deploy"; }};
      db1 = {{ address = "db1.example.com"; sshPort = 2222; hostKey = "{KEY}"; configuration = top "db1"; }};
      {hosts_extra}
    }};
  }};
  nixosConfigurations = {{
    web1.config.system.build.toplevel = top "web1";
    web2.config.system.build.toplevel = top "web2";
    shared.config.system.build.toplevel = top "shared";
  }};
}}"#
    )
}

fn write_flake(dir: &Path, body: &str) {
    std::fs::write(
        dir.join("flake.nix"),
        format!("{{ outputs = {{ self }}: {body}; }}\n"),
    )
    .expect("write flake.nix");
}

fn write_file(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("inventory.nix");
    std::fs::write(&path, format!("{body}\n")).expect("write inventory.nix");
    path
}

fn tether(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run tether")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn valid_flake_inventory_is_listed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_flake(tmp.path(), &outputs(""));
    let out = tether(tmp.path(), &["hosts"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("HOST"), "{stdout}");
    assert!(
        lines[1].starts_with("db1 ")
            && lines[1].contains("2222")
            && lines[1].contains("(derivation)")
    );
    assert!(lines[2].starts_with("web1 ") && lines[2].contains("all,web,eu"));
    assert!(lines[2].contains("nixosConfigurations.web1") && lines[2].contains(FINGERPRINT));
    assert!(lines[3].contains("deploy"));
}

#[test]
fn json_output_has_stable_fields() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_flake(tmp.path(), &outputs(""));
    let flake = format!("path:{}", tmp.path().display());
    let out = tether(
        Path::new("/"),
        &["--flake", &flake, "hosts", "--json", "--on", "web*"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let hosts = hosts.as_array().expect("array");
    assert_eq!(hosts.len(), 2);
    assert_eq!(
        hosts[0],
        serde_json::json!({
            "name": "web1",
            "address": "10.231.1.11",
            "sshPort": 22,
            "sshUser": "root",
            "sudo": "none",
            "tags": ["all", "web", "eu"],
            "hostKey": {
                "type": "ssh-ed25519",
                "fingerprint": FINGERPRINT,
                "publicKey": KEY.trim_end_matches(" root@vm"),
            },
            "machineId": "0123456789abcdef0123456789abcdef",
            "configuration": {"kind": "name", "name": "web1"},
        })
    );
    assert_eq!(hosts[1]["machineId"], serde_json::Value::Null);
    // A user that is not root defaults to passwordless sudo.
    assert_eq!(hosts[1]["sshUser"], "deploy");
    assert_eq!(hosts[1]["sudo"], "passwordless");
}

#[test]
fn plain_file_inventory_and_selectors_work() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_file(tmp.path(), &outputs(""));
    let out = tether(
        tmp.path(),
        &["-f", "inventory.nix", "hosts", "--json", "--on", "@eu,db1"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = hosts
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert_eq!(names, ["db1", "web1"]);
}

#[test]
fn unknown_tag_or_host_in_selector_exits_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_file(tmp.path(), &outputs(""));
    let out = tether(
        tmp.path(),
        &["-f", "inventory.nix", "--on", "@nope,wbe1", "hosts"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown tag \"@nope\""), "{stderr}");
    assert!(
        stderr.contains("unknown host \"wbe1\" (did you mean \"web1\"?)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// Each broken host (spliced into a valid inventory) must exit 2 and name
/// the host and the field.
#[test]
fn each_validation_error_exits_2_naming_host_and_field() {
    let cases: &[(&str, &str)] = &[
        (
            &format!(r#"bad = {{ hostKey = "{KEY}"; configuration = "shared"; }};"#),
            r#"host "bad": field "address": required field is missing"#,
        ),
        (
            &format!(
                r#"bad = {{ address = "10.0.0.300"; hostKey = "{KEY}"; configuration = "shared"; }};"#
            ),
            r#"host "bad": field "address": "10.0.0.300" is not a valid address"#,
        ),
        (
            r#"bad = { address = "10.0.0.9"; hostKey = "ssh-ed25519 AAAA!!!"; configuration = "shared"; };"#,
            r#"host "bad": field "hostKey": not a valid OpenSSH public key (base64 does not decode)"#,
        ),
        (
            r#"bad = { address = "10.0.0.9"; hostKey = "ssh-foo AAAA"; configuration = "shared"; };"#,
            r#"host "bad": field "hostKey": not a valid OpenSSH public key (unknown key type "ssh-foo""#,
        ),
        (
            // The base64 of KEY says ssh-ed25519; written as ssh-rsa it must be refused.
            &format!(
                r#"bad = {{ address = "10.0.0.9"; hostKey = "{}"; configuration = "shared"; }};"#,
                KEY.replace("ssh-ed25519 ", "ssh-rsa ")
            ),
            r#"host "bad": field "hostKey": not a valid OpenSSH public key (key data says "ssh-ed25519" but the key is written as "ssh-rsa")"#,
        ),
        (
            &format!(
                r#"bad = {{ address = "10.0.0.9"; hostKey = "{KEY}"; configuration = "shared"; adress = "x"; }};"#
            ),
            r#"host "bad": field "adress": unknown field (did you mean "address"?)"#,
        ),
        (
            &format!(
                r#"bad = {{ address = "10.0.0.9"; hostKey = "{KEY}"; configuration = "shared"; sshPort = 70000; }};"#
            ),
            r#"host "bad": field "sshPort": 70000 is out of range (1..65535)"#,
        ),
        (
            &format!(
                r#"bad = {{ address = "10.0.0.9"; hostKey = "{KEY}"; configuration = "shared"; machineId = "abc"; }};"#
            ),
            r#"host "bad": field "machineId": "abc" is not a valid machine-id"#,
        ),
        (
            &format!(
                r#"bad = {{ address = "10.0.0.9"; hostKey = "{KEY}"; configuration = "shared"; tags = [ "a,b" ]; }};"#
            ),
            r#"host "bad": field "tags[0]": "a,b" is not a valid tag"#,
        ),
        (
            &format!(r#"bad = {{ address = "10.0.0.9"; hostKey = "{KEY}"; }};"#),
            r#"host "bad": field "configuration": no nixosConfigurations.bad (the default for this host"#,
        ),
        (
            &format!(
                r#"bad = {{ address = "10.0.0.9"; hostKey = "{KEY}"; configuration = "web3"; }};"#
            ),
            r#"host "bad": field "configuration": no nixosConfigurations.web3"#,
        ),
        (
            &format!(
                r#"bad = {{ address = "10.231.1.11"; hostKey = "{KEY}"; configuration = "shared"; }};"#
            ),
            r#"host "web1": field "address": 10.231.1.11 port 22 is also used by host "bad""#,
        ),
        (
            &format!(
                r#""-bad" = {{ address = "10.0.0.9"; hostKey = "{KEY}"; configuration = "shared"; }};"#
            ),
            r#"host "-bad": "-bad" is not a valid host name"#,
        ),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    for (host, expected) in cases {
        write_file(tmp.path(), &outputs(host));
        let out = tether(tmp.path(), &["-f", "inventory.nix", "hosts"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {host}: {stderr}");
        assert!(
            stderr.contains(expected),
            "case {host}\nexpected: {expected}\nstderr: {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn all_errors_are_printed_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_file(
        tmp.path(),
        &outputs(
            r#"bad = { hostKey = "x"; sshPort = 0; }; worse = { address = "10.0.0.8"; hostKey = "y"; configuration = 42; };"#,
        ),
    );
    let out = tether(tmp.path(), &["-f", "inventory.nix", "hosts"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: invalid inventory (6 errors)"),
        "{stderr}"
    );
    assert!(stderr.contains(r#"host "worse": field "configuration": must be the name of a nixosConfigurations entry, a NixOS configuration or a derivation, found an int"#), "{stderr}");
}

#[test]
fn missing_tether_output_and_nix_errors_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    write_file(tmp.path(), "{ nixosConfigurations = { }; }");
    let out = tether(tmp.path(), &["-f", "inventory.nix", "hosts"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("has no `tether` output"));

    write_file(tmp.path(), r#"{ tether = throw "inventory is broken"; }"#);
    let out = tether(tmp.path(), &["-f", "inventory.nix", "hosts"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("inventory is broken"),
        "Nix's stderr is shown: {stderr}"
    );
}

#[test]
fn help_lists_only_implemented_commands() {
    let out = tether(Path::new("/"), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    // The "Commands:" section lists exactly the commands tether implements.
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let implemented = [
        "hosts",
        "init",
        "deploy",
        "check",
        "status",
        "rollback",
        "history",
        "plan",
        "rehearse",
        "snapshots",
        "completions",
        "man",
        "help",
    ];
    assert_eq!(listed, implemented, "{help}");
    // Each of them runs: its own help answers.
    for command in &implemented[..implemented.len() - 1] {
        let out = tether(Path::new("/"), &[command, "--help"]);
        assert_eq!(out.status.code(), Some(0), "tether {command} --help");
        assert!(text(&out.stdout).contains("Usage: tether"), "{command}");
    }
    // The version names the git revision the binary was built from.
    let revision = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .unwrap();
    let revision = text(&revision.stdout).trim().to_string();
    assert_eq!(revision.len(), 12);
    let out = tether(Path::new("/"), &["--version"]);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("tether {} (git {revision})", env!("CARGO_PKG_VERSION"))
    );
    let out = tether(Path::new("/"), &["--flake", ".", "-f", "x.nix", "hosts"]);
    assert_eq!(out.status.code(), Some(2));
}

/// A `nix` that records each invocation, then runs the real one.
fn counting_nix(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("nix-calls.log");
    let script = dir.join("nix-wrapper");
    let real = which_nix();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho call >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real.display()
        ),
    )
    .expect("write wrapper");
    let status = Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .expect("chmod");
    assert!(status.success());
    (script, log)
}

fn which_nix() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v nix"])
        .output()
        .expect("sh");
    PathBuf::from(text(&out.stdout).trim())
}

#[tokio::test]
async fn toplevels_of_all_selected_hosts_come_from_one_nix_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let flake_dir = tmp.path().join("flake");
    std::fs::create_dir(&flake_dir).expect("mkdir");
    write_flake(
        &flake_dir,
        &outputs(&format!(
            r#"app = {{ address = "10.0.0.5"; hostKey = "{KEY}"; configuration = "shared"; }};"#
        )),
    );
    let (wrapper, log) = counting_nix(tmp.path());
    let nix = Nix::with_program(&wrapper);
    let source = NixSource::Flake(flake_dir.display().to_string());

    let inventory = nix.load_inventory(&source).await.expect("inventory");
    assert_eq!(inventory.hosts().len(), 4);
    std::fs::remove_file(&log).expect("reset log");

    let names: Vec<HostName> = ["app", "db1", "web1", "web2"]
        .iter()
        .map(|n| n.parse().expect("name"))
        .collect();
    let toplevels = nix
        .eval_toplevels(&source, &names)
        .await
        .expect("toplevels");
    let calls = std::fs::read_to_string(&log).expect("log");
    assert_eq!(calls.lines().count(), 1, "one nix process for all hosts");

    assert_eq!(toplevels.len(), 4);
    for (name, expected) in [
        ("app", "shared"),
        ("db1", "db1"),
        ("web1", "web1"),
        ("web2", "web2"),
    ] {
        let t = &toplevels[&name.parse::<HostName>().expect("name")];
        assert!(t.drv_path.as_str().starts_with("/nix/store/"));
        assert!(
            t.drv_path
                .as_str()
                .ends_with(&format!("-system-{expected}.drv")),
            "{name}: {t:?}"
        );
        assert!(t
            .out_path
            .as_str()
            .ends_with(&format!("-system-{expected}")));
        assert_eq!(t.system.as_deref(), Some("x86_64-linux"));
        assert!(
            Path::new(t.drv_path.as_str()).exists(),
            "the .drv was instantiated"
        );
    }
}

#[tokio::test]
async fn toplevels_of_a_file_inventory_and_missing_hosts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write_file(tmp.path(), &outputs(""));
    let nix = Nix::from_env();
    let source = NixSource::File(file);
    let web1: HostName = "web1".parse().expect("name");
    let got = nix
        .eval_toplevels(&source, std::slice::from_ref(&web1))
        .await
        .expect("toplevels");
    assert!(got[&web1].out_path.as_str().ends_with("-system-web1"));

    let ghost: HostName = "ghost".parse().expect("name");
    let err = nix
        .eval_toplevels(&source, &[ghost])
        .await
        .expect_err("unknown host");
    assert!(
        err.to_string().contains("host \"ghost\": no such host"),
        "{err}"
    );
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_cli_and_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = tether(Path::new("/"), &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        for word in ["deploy", "init", "--check-keys", "--trial"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
        if shell == "bash" {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("tether.bash");
            std::fs::write(&file, &script).unwrap();
            let check = std::process::Command::new("bash")
                .arg("-n")
                .arg(&file)
                .output()
                .unwrap();
            assert!(check.status.success(), "{}", text(&check.stderr));
        }
    }
    let out = tether(Path::new("/"), &["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(page.contains(".TH tether 1"), "{page}");
    for command in ["init", "deploy", "rollback"] {
        assert!(page.contains(command), "the man page lacks {command}");
    }
    let out = tether(Path::new("/"), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}
