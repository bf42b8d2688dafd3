#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use super::*;
use crate::model::HostKey;

const ED_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA8IZWhH2o1KHCwjWzLA97IHnuk5FMFXEHyWO+azYrIR";
const ED_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBp+Yl1ht+G0WjN3FeebZlbU9WanlZlUUdfoJy9yrMbv";
const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBAAQ2CsxGrk5xR71XcENujVpnffQhsD4XYMXQwNsHmLiSm78smJe7nH1fKlpi4bTtPSu80XHAMKuxHJQiuN6aw0=";

fn key(s: &str) -> HostKey {
    s.parse().unwrap()
}

fn words(s: &[&str]) -> Vec<String> {
    s.iter().map(|w| w.to_string()).collect()
}

#[test]
fn deploy_rs_ssh_opts_become_port_user_options_and_refusals() {
    let m = map_ssh_opts(&words(&[
        "-p",
        "2222",
        "-o",
        "StrictHostKeyChecking=no",
        "-i",
        "/home/me/.ssh/deploy",
        "-oUser=deploy",
        "-J",
        "bastion",
        "-F",
        "/dev/null",
    ]));
    assert_eq!(m.port, Some(2222));
    assert_eq!(m.user.as_deref(), Some("deploy"));
    assert_eq!(
        m.kept,
        words(&["-i", "/home/me/.ssh/deploy", "-J", "bastion"])
    );
    let refused: Vec<&str> = m.refused.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(refused, ["-o StrictHostKeyChecking=no", "-F /dev/null"]);
    assert!(m.refused[0].1.contains("pinned"), "{:?}", m.refused);
}

#[test]
fn a_port_option_that_is_no_number_is_refused_not_guessed() {
    let m = map_ssh_opts(&words(&["-o", "Port=ssh"]));
    assert_eq!(m.port, None);
    assert_eq!(m.refused.len(), 1);
}

#[test]
fn ssh_keygen_find_output_gives_keys_with_their_line_numbers() {
    let out = format!(
        "# Host [10.0.0.1]:2222 found: line 3 \n[10.0.0.1]:2222 {ED_A}\n\
         # Host [10.0.0.1]:2222 found: line 7 \n|1|abc=|def= {ECDSA}\n\
         # Host x found: line 9\n@revoked x {ED_B}\nx ssh-dss AAAAB3NzaC1kc3M=\n"
    );
    let lines = parse_key_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0].key.clone(), lines[0].line), (key(ED_A), Some(3)));
    assert_eq!((lines[1].key.clone(), lines[1].line), (key(ECDSA), Some(7)));
}

#[test]
fn the_configuration_wins_over_known_hosts_which_wins_over_a_scan() {
    let declared = vec![DeclaredKey {
        names: vec!["web1".into(), "10.0.0.1".into()],
        public_key: Some(ED_A.into()),
        option: "services.openssh.knownHosts.web1".into(),
    }];
    let known = vec![(
        "~/.ssh/known_hosts".to_string(),
        parse_key_lines(&format!(
            "# Host 10.0.0.1 found: line 2\n10.0.0.1 {ECDSA}\n10.0.0.1 {ED_B}\n"
        )),
    )];
    let scanned = parse_key_lines(&format!("10.0.0.1 {ED_B}\n"));
    let scan = Some(("10.0.0.1:22", scanned.as_slice()));
    match choose_key("web1", "10.0.0.1", &declared, &known, scan) {
        FoundKey::Pinned {
            key: k,
            source: KeySource::Configuration { .. },
        } => assert_eq!(k, key(ED_A)),
        other => panic!("{other:?}"),
    }
    // Without the declaration: known_hosts, its ed25519 key preferred.
    match choose_key("web1", "10.0.0.1", &[], &known, scan) {
        FoundKey::Pinned {
            key: k,
            source: KeySource::KnownHosts { line, .. },
        } => assert_eq!((k, line), (key(ED_B), Some(2))),
        other => panic!("{other:?}"),
    }
    // A declaration for another host does not count.
    assert!(matches!(
        choose_key("web2", "10.0.0.2", &declared, &[], scan),
        FoundKey::Scanned { .. }
    ));
    assert!(matches!(
        choose_key("web2", "10.0.0.2", &declared, &[], None),
        FoundKey::Missing { .. }
    ));
}

#[test]
fn a_rotated_key_is_a_mismatch_naming_both_fingerprints() {
    let pinned = key(ED_A);
    let presented = parse_key_lines(&format!("h {ED_B}\nh {ECDSA}\n"));
    let known = vec![("kh".to_string(), parse_key_lines(&format!("h {ED_A}\n")))];
    let check = check_keys(&pinned, Ok(&presented), &known);
    assert_eq!(
        check.host,
        PresentedKey::Different {
            presented: key(ED_B).fingerprint()
        }
    );
    assert!(check.known_hosts_disagree.is_empty());
    assert!(!check.agrees());

    let same = parse_key_lines(&format!("h {ED_A}\n"));
    let stale = vec![("kh".to_string(), parse_key_lines(&format!("h {ED_B}\n")))];
    let check = check_keys(&pinned, Ok(&same), &stale);
    assert_eq!(check.host, PresentedKey::Same);
    assert_eq!(check.known_hosts_disagree.len(), 1);
    assert!(!check.agrees());
    assert!(check_keys(&pinned, Ok(&same), &[]).agrees());
    assert!(!check_keys(&pinned, Err("timed out"), &[]).agrees());
}

fn draft(name: &str, key: FoundKey) -> HostDraft {
    HostDraft {
        name: name.into(),
        imported: ImportedHost {
            address: Some("10.0.0.1".into()),
            ssh_user: Some("deploy".into()),
            configuration: Some(name.into()),
            other: [("magicRollback".to_string(), "true".to_string())].into(),
            ..Default::default()
        },
        ssh: map_ssh_opts(&words(&[
            "-p",
            "2222",
            "-o",
            "ControlMaster=auto",
            "-i",
            "/k$x",
        ])),
        key,
    }
}

#[test]
fn the_inventory_pins_trusted_keys_and_comments_out_scanned_ones() {
    let pinned = draft(
        "web1",
        FoundKey::Pinned {
            key: key(ED_A),
            source: KeySource::KnownHosts {
                file: "/root/.ssh/known_hosts".into(),
                line: Some(4),
            },
        },
    );
    let scanned = draft(
        "web2",
        FoundKey::Scanned {
            key: key(ED_B),
            from: "10.0.0.2:22".into(),
        },
    );
    let text = render_inventory(
        ImportSource::DeployRs,
        "path:/fleet",
        &[pinned, scanned],
        &["deploy.remoteBuild = true".into()],
    );
    assert!(
        text.contains(&format!("      hostKey = \"{ED_A}\";")),
        "{text}"
    );
    assert!(
        text.contains("from /root/.ssh/known_hosts, line 4"),
        "{text}"
    );
    assert!(
        text.contains(&format!("      # hostKey = \"{ED_B}\";")),
        "{text}"
    );
    assert!(
        !text.contains(&format!("      hostKey = \"{ED_B}\";")),
        "{text}"
    );
    assert!(text.contains(&key(ED_B).fingerprint()), "{text}");
    assert!(text.contains("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"));
    assert!(text.contains("sshPort = 2222;"));
    assert!(text.contains(r#"sshOptions = [ "-i" "/k\$x" ];"#), "{text}");
    assert!(text.contains("#   magicRollback = true"));
    assert!(
        text.contains("#   ssh option -o ControlMaster=auto: "),
        "{text}"
    );
    assert!(text.contains("#   deploy.remoteBuild = true"));
    // Every line outside comments is balanced Nix: braces open and close.
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert_eq!(code.matches('{').count(), code.matches('}').count());
}
