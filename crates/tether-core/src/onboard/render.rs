//! The inventory file `tether init` writes: a Nix attribute set in the
//! shape of the flake's `tether` output (docs/inventory.md), every value
//! quoted with [`nix_string`], every setting that is not carried over
//! written as a comment, and every host key with where it came from.

use std::fmt::Write as _;

use super::{FoundKey, HostDraft, ImportSource, KeySource};
use crate::model::KeyType;
use crate::nix_text::nix_string;

/// A comment line's text: one line, whatever the value held.
fn one_line(s: &str) -> String {
    s.replace('\r', "\\r").replace('\n', "\\n")
}

/// The file holding a key of this type on a host (OpenSSH's defaults, also
/// NixOS's).
fn host_key_file(t: KeyType) -> &'static str {
    match t {
        KeyType::Ed25519 | KeyType::SkEd25519 => "/etc/ssh/ssh_host_ed25519_key.pub",
        KeyType::Rsa => "/etc/ssh/ssh_host_rsa_key.pub",
        _ => "/etc/ssh/ssh_host_ecdsa_key.pub",
    }
}

fn nix_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| nix_string(s)).collect();
    format!("[ {} ]", quoted.join(" "))
}

/// Writes the inventory for `drafts`, read by `tether init --from SOURCE`
/// from `flake`; `notes` are fleet-wide settings not carried over.
pub fn render_inventory(
    source: ImportSource,
    flake: &str,
    drafts: &[HostDraft],
    notes: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# tether inventory, written by `tether init --from {}` from {}.",
        source.as_str(),
        one_line(flake)
    );
    out.push_str(
        "# Use it as the flake's `tether` output:  tether = import ./tether.nix;\n\
         # (docs/inventory.md). Every pinned hostKey says where it came from; a\n\
         # key only scanned from the network is commented out until you have\n\
         # checked it on the host's console. tether refuses to deploy a host\n\
         # without a hostKey.\n",
    );
    if !notes.is_empty() {
        out.push_str("#\n# Not carried over (whole fleet):\n");
        for n in notes {
            let _ = writeln!(out, "#   {}", one_line(n));
        }
    }
    out.push_str("{\n  hosts = {\n");
    for d in drafts {
        render_host(&mut out, source, d);
    }
    out.push_str("  };\n}\n");
    out
}

fn render_host(out: &mut String, source: ImportSource, d: &HostDraft) {
    let h = &d.imported;
    let _ = writeln!(out, "    {} = {{", nix_string(&d.name));
    match &h.address {
        Some(a) => {
            let _ = writeln!(out, "      address = {};", nix_string(a));
        }
        None => out.push_str(
            "      # No address known: give it with --address NAME=ADDRESS, or here.\n      address = null;\n",
        ),
    }
    if let Some(user) = h.ssh_user.as_ref().or(d.ssh.user.as_ref()) {
        let _ = writeln!(out, "      sshUser = {};", nix_string(user));
    }
    if let Some(port) = h.ssh_port.or(d.ssh.port) {
        let _ = writeln!(out, "      sshPort = {port};");
    }
    if !d.ssh.kept.is_empty() {
        let _ = writeln!(out, "      sshOptions = {};", nix_list(&d.ssh.kept));
    }
    if !h.tags.is_empty() {
        let _ = writeln!(out, "      tags = {};", nix_list(&h.tags));
    }
    match &h.configuration {
        Some(c) => {
            let _ = writeln!(out, "      configuration = {};", nix_string(c));
        }
        None => out
            .push_str("      # No nixosConfigurations entry of this name: set `configuration`.\n"),
    }
    render_key(out, &d.key);
    if !h.other.is_empty() || !d.ssh.refused.is_empty() {
        let _ = writeln!(out, "      # Not carried over from {}:", source.as_str());
        for (name, value) in &h.other {
            let _ = writeln!(out, "      #   {} = {}", one_line(name), one_line(value));
        }
        for (option, why) in &d.ssh.refused {
            let _ = writeln!(
                out,
                "      #   ssh option {}: {}",
                one_line(option),
                one_line(why)
            );
        }
    }
    out.push_str("    };\n");
}

fn render_key(out: &mut String, key: &FoundKey) {
    match key {
        FoundKey::Pinned { key, source } => {
            let from = match source {
                KeySource::Configuration { option } => format!("declared in {option}"),
                KeySource::KnownHosts { file, line } => match line {
                    Some(n) => format!("from {file}, line {n}"),
                    None => format!("from {file}"),
                },
            };
            let _ = writeln!(
                out,
                "      # hostKey {} ({}).",
                one_line(&from),
                key.fingerprint()
            );
            let _ = writeln!(out, "      hostKey = {};", nix_string(&key.openssh()));
        }
        FoundKey::Scanned { key, from } => {
            let _ = writeln!(
                out,
                "      # hostKey NOT VERIFIED: offered at {} to ssh-keyscan, which cannot\n\
                 \x20     # tell the host from anything answering in its place. Fingerprint\n\
                 \x20     # {} ({}). Check it on the host's console:\n\
                 \x20     #   ssh-keygen -lf {}\n\
                 \x20     # and uncomment the next line only if they are the same.\n\
                 \x20     # hostKey = {};",
                one_line(from),
                key.fingerprint(),
                key.key_type().short_name(),
                host_key_file(key.key_type()),
                nix_string(&key.openssh())
            );
        }
        FoundKey::Missing { tried } => {
            let _ = writeln!(
                out,
                "      # hostKey: none found (tried {}). Copy the host's\n\
                 \x20     # /etc/ssh/ssh_host_ed25519_key.pub from its console here:\n\
                 \x20     # hostKey = \"\";",
                one_line(&tried.join(", "))
            );
        }
    }
}
