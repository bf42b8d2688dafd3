//! Onboarding an existing fleet (`tether init`, docs/migrating.md): what
//! deploy-rs, colmena or plain `nixosConfigurations` say about each host,
//! the host key found for it and where it came from, and the inventory file
//! written from both. Host keys are never trusted blindly: a key from the
//! configuration or the user's known_hosts is pinned and attributed; a
//! scanned one is written commented out, with its fingerprint and how to
//! check it on the host's console, so pinning it is the user's decision.
//!
//! Pure: the evaluation (`nix/eval-import.nix`), `ssh-keygen -F` and
//! `ssh-keyscan` run in the tether crate, which hands their output here.

mod keys;
mod render;
mod ssh_opts;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use keys::{
    check_keys, choose_key, parse_key_lines, FoundKey, KeyCheck, KeyLine, KeySource, PresentedKey,
};
pub use render::render_inventory;
pub use ssh_opts::{map_ssh_opts, MappedSshOpts};

/// Which tool's description of the fleet `tether init` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportSource {
    /// The flake's `deploy.nodes`.
    DeployRs,
    /// The flake's `colmenaHive` (or raw `colmena` hive).
    Colmena,
    /// The flake's `nixosConfigurations`: names only; addresses are given.
    Nixos,
}

impl ImportSource {
    /// The name used on the command line and in `nix/eval-import.nix`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportSource::DeployRs => "deploy-rs",
            ImportSource::Colmena => "colmena",
            ImportSource::Nixos => "nixos",
        }
    }
}

/// What `nix/eval-import.nix` answers: every host the old tool knows.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ImportDocument {
    #[serde(default)]
    pub hosts: BTreeMap<String, ImportedHost>,
    /// Things about the whole fleet that are not carried over.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One host as the old tool describes it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ImportedHost {
    pub address: Option<String>,
    pub ssh_user: Option<String>,
    pub ssh_port: Option<u16>,
    pub ssh_opts: Vec<String>,
    pub tags: Vec<String>,
    /// The `nixosConfigurations` entry the host runs, when one is known.
    pub configuration: Option<String>,
    /// Settings of the old tool with no tether field, by name, with their
    /// value as Nix would print it (never silently dropped: written as
    /// comments).
    pub other: BTreeMap<String, String>,
    /// Public host keys the host's own NixOS configuration declares
    /// (`services.openssh.knownHosts`), with the names they are declared
    /// for.
    pub declared_keys: Vec<DeclaredKey>,
}

/// A `services.openssh.knownHosts.<name>` entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DeclaredKey {
    /// The entry's attribute name and its `hostNames`.
    pub names: Vec<String>,
    pub public_key: Option<String>,
    /// Where in the configuration it is, for the attribution comment.
    pub option: String,
}

/// A host ready to be written: the imported description, its SSH options
/// sorted into what tether takes and what it refuses, and its key.
#[derive(Debug, Clone, PartialEq)]
pub struct HostDraft {
    pub name: String,
    pub imported: ImportedHost,
    pub ssh: MappedSshOpts,
    pub key: FoundKey,
}
