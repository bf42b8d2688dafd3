//! Rollout policy as data: the settings as written (inventory or flags) and
//! the resolved plan of one run. [`crate::rollout`] computes the plan.

use crate::model::{HostName, Selector};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// How many hosts one batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BatchSize {
    Count(usize),
    /// A percentage of the hosts after the canaries, rounded up.
    Percent(u8),
}

impl FromStr for BatchSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            match p.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(BatchSize::Percent(p)),
                _ => Err(format!("{s:?} is not a percentage from 1% to 100%")),
            }
        } else {
            match s.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(BatchSize::Count(n)),
                _ => Err(format!(
                    "{s:?} is not a batch size (a count of at least 1, or a percentage like 25%)"
                )),
            }
        }
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Count(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Which hosts are canaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanarySpec {
    /// The first N selected hosts (in name order).
    Count(usize),
    /// The selected hosts this selector matches.
    Selector(Selector),
}

impl FromStr for CanarySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.trim().parse::<usize>() {
            return Ok(CanarySpec::Count(n));
        }
        s.parse::<Selector>()
            .map(CanarySpec::Selector)
            .map_err(|e| format!("{s:?} is neither a count nor a selector: {e}"))
    }
}

/// The rollout settings as written (inventory or flags); all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutSettings {
    pub canary: Option<CanarySpec>,
    pub batch: Option<BatchSize>,
    pub parallel: Option<usize>,
    pub max_failures: Option<usize>,
    pub revert_on_failure: Option<bool>,
}

impl RolloutSettings {
    /// `self` (flags) over `base` (inventory), field by field.
    pub fn over(self, base: &RolloutSettings) -> RolloutSettings {
        RolloutSettings {
            canary: self.canary.or_else(|| base.canary.clone()),
            batch: self.batch.or(base.batch),
            parallel: self.parallel.or(base.parallel),
            max_failures: self.max_failures.or(base.max_failures),
            revert_on_failure: self.revert_on_failure.or(base.revert_on_failure),
        }
    }
}

/// Default bound on hosts in flight.
pub const DEFAULT_PARALLEL: usize = 10;

/// The resolved policy for one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPlan {
    /// Stages in order: the canaries (if any) first, then the batches.
    pub stages: Vec<Stage>,
    pub parallel: usize,
    /// The rollout stops starting hosts once more than this many failed;
    /// `None`: never stops (a failing canary always stops it).
    pub max_failures: Option<usize>,
    pub revert_on_failure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub canary: bool,
    pub hosts: Vec<HostName>,
}
