//! Identities of one deploy: its id (in unit names, paths and journals) and
//! the secret token that lets only this deploy confirm its trial.

use std::fmt;

/// A deploy's identity: a sortable timestamp and a random suffix,
/// `20261121T084900-1a2b3c`. Only `[0-9A-Za-z-]`, so it is safe in unit
/// names and paths.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct DeployId(String);

impl DeployId {
    /// Builds an id from a UTC timestamp (`YYYYmmddTHHMMSS`) and random hex.
    pub fn new(timestamp: &str, random_hex: &str) -> Option<DeployId> {
        let id = format!("{timestamp}-{random_hex}");
        let ok = !timestamp.is_empty()
            && !random_hex.is_empty()
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        ok.then_some(DeployId(id))
    }
    /// Reads an id as tether prints it (`20261121T084900-1a2b3c`, or a
    /// derived `…-revert`).
    pub fn parse(text: &str) -> Option<DeployId> {
        let (timestamp, rest) = text.split_once('-')?;
        DeployId::new(timestamp, rest)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A related id for a follow-up trial of the same run (`<id>-revert`).
    pub fn derived(&self, suffix: &str) -> Option<DeployId> {
        let id = format!("{}-{suffix}", self.0);
        id.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
            .then_some(DeployId(id))
    }
}

impl fmt::Display for DeployId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The secret that lets exactly one deploy confirm its own trial.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Accepts 32 or more hex digits.
    pub fn new(hex: &str) -> Option<Token> {
        (hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| Token(hex.into()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}
