//! Nix store paths as Nix prints them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

/// An absolute Nix store path as Nix printed it (`/nix/store/…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StorePath(String);

impl StorePath {
    /// Accepts an absolute path with no whitespace or control characters,
    /// so it can be passed to `nix` and to a remote shell after quoting.
    pub fn new(s: &str) -> Option<StorePath> {
        let ok = s.starts_with('/')
            && s.len() > 1
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        ok.then(|| StorePath(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A closure: every store path in it, with its NAR size in bytes.
pub type Closure = BTreeMap<String, u64>;

/// Who signed a closure, as far as a Nix daemon that does not trust the
/// copying user cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClosureSigners {
    /// Every path is content-addressed: a daemon verifies them by hash.
    NoneNeeded,
    /// The names of the keys that signed every input-addressed path.
    Keys(BTreeSet<String>),
}

impl ClosureSigners {
    /// Whether a daemon trusting these key names takes the closure.
    pub fn accepted_by(&self, trusted_keys: &[String]) -> bool {
        match self {
            ClosureSigners::NoneNeeded => true,
            ClosureSigners::Keys(keys) => trusted_keys.iter().any(|k| keys.contains(k)),
        }
    }
}
