//! What health checks report: each attempt as it ends, and the checks that
//! never passed.

use crate::spec::CheckType;

/// The result of one attempt of one check (an event with `--json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckAttempt {
    pub check: String,
    pub kind: CheckType,
    pub attempt: u32,
    pub passed: bool,
    /// What was seen: the failure, or a short note on success.
    pub detail: String,
}

/// A check that had not passed when the deadline came.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckFailure {
    pub check: String,
    pub kind: CheckType,
    pub attempts: u32,
    /// The last attempt's error.
    pub detail: String,
}

impl std::fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "check {:?} ({}), {} attempt{}: {}",
            self.check,
            self.kind,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.detail
        )
    }
}
