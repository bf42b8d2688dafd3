//! Onboarding an existing fleet on lab hosts (docs/migrating.md): `tether
//! init` from deploy-rs nodes and from a colmena hive, with host keys taken
//! from a prepared known_hosts or scanned and left commented out, and
//! `tether hosts --check-keys` against a host whose key was regenerated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Fleet;
use serde_json::Value;
use std::path::Path;

/// A fleet flake the way a deploy-rs or colmena user has it: the lab's
/// nixosConfigurations, `extra` outputs, and `tether` only once
/// `tether.nix` exists.
fn write_flake(f: &Fleet, extra: &str) {
    let flake = format!(
        r#"{{
  outputs = {{ self }}:
    let
      lab = builtins.fromJSON (builtins.readFile ./lab.json);
      base = import ./lib/fleet.nix {{ inherit lab; hosts = import ./hosts.nix; }};
      byName = f: builtins.listToAttrs (map (h: {{ name = h.name; value = f h; }}) lab.hosts);
    in
    {{ inherit (base) nixosConfigurations; }}
    // ({extra})
    // (if builtins.pathExists ./tether.nix then {{ tether = import ./tether.nix; }} else {{ }});
}}
"#
    );
    std::fs::write(f.dir.join("flake.nix"), flake).unwrap();
}

fn known_hosts(f: &Fleet, hosts: &[&str]) -> std::path::PathBuf {
    let path = f.dir.join("known_hosts");
    let lines: Vec<String> = hosts
        .iter()
        .map(|h| format!("{} {}", f.address(h), f.host_key(h)))
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn init(f: &Fleet, from: &str, known: &Path) -> (i32, String, String) {
    let out = f.tether(&[
        "init",
        "--from",
        from,
        "--out",
        f.dir.join("tether.nix").to_str().unwrap(),
        "--known-hosts",
        known.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(f.dir.join("tether.nix")).unwrap_or_default();
    (
        out.status.code().unwrap_or(-1),
        text,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn hosts_json(f: &Fleet) -> Vec<Value> {
    let out = f.tether(&["hosts", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn fingerprint(f: &Fleet, host: &str) -> String {
    f.host_key(host)
        .parse::<tether_core::model::HostKey>()
        .unwrap()
        .fingerprint()
}

#[test]
fn deploy_rs_nodes_become_an_inventory_and_a_scanned_key_is_pinned_only_by_the_user() {
    let f = Fleet::up("ob01", 3);
    write_flake(
        &f,
        r#"{
      deploy = {
        confirmTimeout = 60;
        nodes = byName (h: {
          hostname = h.address;
          sshUser = "root";
          sshOpts = [ "-p" "22" "-i" lab.sshKey "-o" "IdentitiesOnly=yes" "-o" "StrictHostKeyChecking=no" ];
          magicRollback = true;
          profiles.system = { user = "root"; path = throw "the activation wrapper is never evaluated"; };
        });
      };
    }"#,
    );
    let known = known_hosts(&f, &["host1", "host2"]);
    let (code, text, stderr) = init(&f, "deploy-rs", &known);
    assert_eq!(code, 0, "{stderr}\n{text}");
    let kh = known.display().to_string();
    for h in ["host1", "host2"] {
        assert!(
            text.contains(&format!("hostKey = \"{}\";", f.host_key(h))),
            "{h}: {text}"
        );
    }
    assert_eq!(
        text.matches(&format!("# hostKey from {kh}")).count(),
        2,
        "{text}"
    );
    // host3 is not in known_hosts: scanned, commented out, fingerprinted.
    assert!(
        text.contains(&format!("# hostKey = \"{}\";", f.host_key("host3"))),
        "{text}"
    );
    assert!(text.contains(&fingerprint(&f, "host3")), "{text}");
    assert!(text.contains("NOT VERIFIED"), "{text}");
    // Settings with no tether field are comments, never dropped.
    assert!(text.contains("#   magicRollback = true"), "{text}");
    assert!(text.contains("#   confirmTimeout = 60"), "{text}");
    assert!(text.contains("#   user = \"root\""), "{text}");
    assert!(
        text.contains("#   ssh option -o StrictHostKeyChecking=no:"),
        "{text}"
    );
    // The file exists now: init never overwrites it.
    let (again, _, stderr) = init(&f, "deploy-rs", &known);
    assert_eq!(again, 2, "{stderr}");

    // Until the user pins host3's key, the inventory is refused whole,
    // naming the host and the field; nothing is deployed.
    let out = f.tether(&["deploy", "--on", "host3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("host3") && stderr.contains("hostKey"),
        "{stderr}"
    );

    // The user checked the fingerprint and uncomments the key.
    let pinned = text.replace(
        &format!("# hostKey = \"{}\";", f.host_key("host3")),
        &format!("hostKey = \"{}\";", f.host_key("host3")),
    );
    std::fs::write(f.dir.join("tether.nix"), pinned).unwrap();
    let hosts = hosts_json(&f);
    assert_eq!(hosts.len(), 3);
    for (i, h) in hosts.iter().enumerate() {
        let name = format!("host{}", i + 1);
        assert_eq!(h["name"], name.as_str());
        assert_eq!(h["address"], f.address(&name).as_str());
        assert_eq!(h["sshUser"], "root");
        assert_eq!(h["sshPort"], 22);
        assert_eq!(h["hostKey"]["fingerprint"], fingerprint(&f, &name).as_str());
        assert_eq!(h["configuration"]["name"], name.as_str());
    }
    f.set_hosts(r#"{ host3 = { label = "v2"; }; }"#);
    let run = f.deploy(&["--on", "host3"]);
    assert_eq!(run.outcome("host3"), "confirmed", "{run}");
}

#[test]
fn a_colmena_hive_carries_target_user_port_and_tags() {
    let f = Fleet::up("ob02", 2);
    write_flake(
        &f,
        r#"{
      colmenaHive.deploymentConfig = byName (h: {
        targetHost = h.address;
        targetPort = 22;
        targetUser = "root";
        tags = [ "web" h.name ];
        buildOnTarget = false;
        keys = { };
      });
    }"#,
    );
    // host1's configuration declares its own key, as NixOS fleets often
    // do (services.openssh.knownHosts); only host2 is in known_hosts.
    std::fs::write(
        f.dir.join("flake.nix"),
        std::fs::read_to_string(f.dir.join("flake.nix"))
            .unwrap()
            .replace(
                "{ inherit (base) nixosConfigurations; }",
                &format!(
                    r#"{{ nixosConfigurations = base.nixosConfigurations // {{
        host1.config = base.nixosConfigurations.host1.config // {{
          services.openssh.knownHosts.host1 = {{ hostNames = [ "{}" ]; publicKey = "{}"; }};
        }};
      }}; }}"#,
                    f.address("host1"),
                    f.host_key("host1")
                ),
            ),
    )
    .unwrap();
    let known = known_hosts(&f, &["host2"]);
    let (code, text, stderr) = init(&f, "colmena", &known);
    assert_eq!(code, 0, "{stderr}\n{text}");
    assert!(text.contains("#   buildOnTarget = false"), "{text}");
    assert!(
        text.contains(
            "# hostKey declared in nixosConfigurations.host1.config.services.openssh.knownHosts.host1"
        ),
        "{text}"
    );
    assert!(!text.contains("NOT VERIFIED"), "{text}");
    let hosts = hosts_json(&f);
    assert_eq!(hosts.len(), 2);
    for (i, h) in hosts.iter().enumerate() {
        let name = format!("host{}", i + 1);
        assert_eq!(h["address"], f.address(&name).as_str());
        assert_eq!(h["sshUser"], "root");
        assert_eq!(h["sshPort"], 22);
        assert_eq!(h["tags"], serde_json::json!(["web", name]));
        assert_eq!(h["hostKey"]["fingerprint"], fingerprint(&f, &name).as_str());
    }

    // A raw hive (no colmenaHive): node modules read as written, defaults
    // merged, tags concatenated.
    std::fs::remove_file(f.dir.join("tether.nix")).unwrap();
    let known = known_hosts(&f, &["host1", "host2"]);
    write_flake(
        &f,
        r#"{
      colmena = {
        meta.nixpkgs = throw "nixpkgs is never evaluated";
        defaults = { pkgs, ... }: { deployment.tags = [ "lab" ]; deployment.targetUser = "root"; };
      } // byName (h: { name, nodes, ... }: {
        deployment.targetHost = h.address;
        deployment.tags = [ name ];
        environment.systemPackages = [ nodes.x.y ];
      });
    }"#,
    );
    let (code, text, stderr) = init(&f, "colmena", &known);
    assert_eq!(code, 0, "{stderr}\n{text}");
    let hosts = hosts_json(&f);
    assert_eq!(hosts[1]["tags"], serde_json::json!(["lab", "host2"]));
    assert_eq!(hosts[1]["address"], f.address("host2").as_str());
}

#[test]
fn check_keys_reports_a_regenerated_host_key_and_changes_nothing() {
    let f = Fleet::up("ob03", 1);
    let known = known_hosts(&f, &["host1"]);
    let check = || {
        let out = f.tether(&[
            "hosts",
            "--check-keys",
            "--known-hosts",
            known.to_str().unwrap(),
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = check();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("host1: ok"), "{out}");

    let old = fingerprint(&f, "host1");
    f.console(
        "host1",
        "rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && systemctl restart ssh",
    );
    let new = f.console("host1", "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub");
    let new = new.split_whitespace().nth(1).unwrap().to_string();
    assert_ne!(new, old);
    let flake_before = std::fs::read(f.dir.join("flake.nix")).unwrap();
    let known_before = std::fs::read(&known).unwrap();
    let (code, out) = check();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("host1: MISMATCH"), "{out}");
    assert!(out.contains(&old) && out.contains(&new), "{out}");
    assert_eq!(
        std::fs::read(f.dir.join("flake.nix")).unwrap(),
        flake_before
    );
    assert_eq!(std::fs::read(&known).unwrap(), known_before);
}
