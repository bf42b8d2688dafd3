//! Inventory errors: each one names where it is (a host, `defaults`, the
//! `tether` output) and the field, so a user can fix it without guessing.

use std::fmt;

use super::host_key::HostKeyError;

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
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("only allowed per host, not in defaults")]
    HostOnlyField,
    #[error("unknown field{}", suggestion_suffix(.suggestion))]
    UnknownField { suggestion: Option<String> },
    #[error("{0:?} is not a valid host name (use letters, digits, '.', '_' and '-', starting with a letter or digit)")]
    InvalidHostName(String),
    #[error("{value:?} is not a valid address: {reason}")]
    InvalidAddress { value: String, reason: &'static str },
    #[error("{0} is out of range (1..65535)")]
    PortOutOfRange(String),
    #[error("{value:?} is not a valid SSH user: {reason}")]
    InvalidUser { value: String, reason: &'static str },
    #[error("not a valid OpenSSH public key ({0})")]
    InvalidHostKey(HostKeyError),
    #[error("{0:?} is not a valid machine-id (expected 32 lowercase hexadecimal digits, as in /etc/machine-id)")]
    InvalidMachineId(String),
    #[error("{0:?} is not a valid tag (use letters, digits, '.', '_' and '-', starting with a letter or digit)")]
    InvalidTag(String),
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

    pub(crate) fn push(&mut self, location: Location, field: Option<&str>, problem: Problem) {
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

/// Closest candidate to `word`, if it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let word_lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (levenshtein(&word_lower, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

/// Optimal-string-alignment distance: Levenshtein plus swapping two
/// neighbouring characters as one edit, the most common typo (`wbe2`).
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn suggests_close_field_names_only() {
        let known = ["address", "sshUser", "sshPort", "hostKey", "tags"];
        assert_eq!(suggest("adress", known), Some("address".into()));
        assert_eq!(suggest("sshuser", known), Some("sshUser".into()));
        assert_eq!(suggest("hostkey", known), Some("hostKey".into()));
        assert_eq!(suggest("colour", known), None);
    }

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
