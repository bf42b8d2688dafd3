//! Inventory errors: each one names where it is (a host, `defaults`, the
//! `tether` output) and the field, so a user can fix it without guessing.

use std::fmt;

use crate::model::{HostKeyError, ValueError};

/// Where in the inventory a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The `tether` output itself (e.g. `hosts` missing, unknown top-level field).
    Tether,
    /// `tether.defaults`.
    Defaults,
    /// `tether.hosts.<name>`. The name is kept as written, even when it is
    /// not a valid host name, so the message can quote it.
    Host(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Tether => f.write_str("tether"),
            Location::Defaults => f.write_str("defaults"),
            Location::Host(name) => write!(f, "host {name:?}"),
        }
    }
}

/// What is wrong. Messages are phrased to follow `field "x": `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the flake or file has no `tether` output")]
    NoTetherOutput,
    #[error("required field is missing")]
    Missing,
    /// A host name, tag, address, user or machine-id that is not one.
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("only allowed per host, not in defaults")]
    HostOnlyField,
    #[error("unknown field{}", suggestion_suffix(.suggestion))]
    UnknownField { suggestion: Option<String> },
    #[error("{0} is out of range (1..65535)")]
    PortOutOfRange(String),
    #[error("not a valid OpenSSH public key ({0})")]
    InvalidHostKey(HostKeyError),
    #[error("no nixosConfigurations.{name}{}{}", if *.implicit { " (the default for this host; set `configuration` to name another)" } else { "" }, suggestion_suffix(.suggestion))]
    MissingConfiguration {
        name: String,
        implicit: bool,
        suggestion: Option<String>,
    },
    #[error("must be the name of a nixosConfigurations entry, a NixOS configuration or a derivation, found {0}")]
    InvalidConfiguration(String),
    #[error("{0:?} cannot be passed to ssh through Nix (entries must be non-empty and without whitespace; split \"-o Foo=bar\" into \"-o\" \"Foo=bar\")")]
    InvalidSshOption(String),
    #[error("{0}")]
    SshOption(super::ssh_options::SshOptionProblem),
    #[error("{0:?} is not a readable file on this machine (the check reads it on every attempt)")]
    FileNotFound(String),
    #[error("{secs} seconds is out of range ({min}..{max})")]
    DurationOutOfRange { secs: u64, min: u64, max: u64 },
    #[error("unknown check type {found:?} (expected one of: http, tcp, command, units){}", suggestion_suffix(.suggestion))]
    UnknownCheckType {
        found: String,
        suggestion: Option<String>,
    },
    #[error("{value:?} is not one of: {expected}")]
    InvalidChoice {
        value: String,
        expected: &'static str,
    },
    #[error("{value:?} is not a valid URL: {reason}")]
    InvalidUrl { value: String, reason: String },
    #[error("{value:?} is not a valid regular expression: {reason}")]
    InvalidRegex { value: String, reason: String },
    #[error("{0} is not an HTTP status code (100..599)")]
    InvalidStatus(String),
    #[error("{0:?} is not valid here: {1}")]
    InvalidValue(String, &'static str),
    #[error("must not be empty")]
    Empty,
    #[error("{n} is out of range ({min}..{max})")]
    CountOutOfRange { n: u64, min: u64, max: u64 },
    /// Two declared state volumes where one contains the other: restoring
    /// the outer one would move the inner one's live data away.
    #[error("{inner} lies inside {outer}: declare volumes that do not contain each other")]
    NestedState { outer: String, inner: String },
    #[error("not allowed in a {kind} check (it takes: {fields})")]
    FieldOfOtherType {
        kind: &'static str,
        fields: &'static str,
    },
    #[error("{0}")]
    InvalidRollout(String),
    #[error("{address} port {port} is also used by host {other:?}")]
    DuplicateAddress {
        address: String,
        port: u16,
        other: String,
    },
}

fn suggestion_suffix(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None => String::new(),
    }
}

/// One problem in the inventory, with its location and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryError {
    pub location: Location,
    /// The field as the user spells it (`hostKey`, `tags[2]`), if the
    /// problem is about one field.
    pub field: Option<String>,
    pub problem: Problem,
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(field) = &self.field {
            write!(f, ": field {field:?}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for InventoryError {}

/// Every problem found in one inventory: validation goes on after the first
/// so a user fixes them all in one round.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InventoryErrors(pub Vec<InventoryError>);

impl InventoryErrors {
    pub fn iter(&self) -> impl Iterator<Item = &InventoryError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn push(&mut self, location: Location, field: Option<&str>, problem: Problem) {
        self.0.push(InventoryError {
            location,
            field: field.map(str::to_owned),
            problem,
        });
    }
}

impl fmt::Display for InventoryErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid inventory ({n} error{})",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InventoryErrors {}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn error_names_host_and_field() {
        let e = InventoryError {
            location: Location::Host("web1".into()),
            field: Some("sshPort".into()),
            problem: Problem::PortOutOfRange("70000".into()),
        };
        assert_eq!(
            e.to_string(),
            "host \"web1\": field \"sshPort\": 70000 is out of range (1..65535)"
        );
    }
}
