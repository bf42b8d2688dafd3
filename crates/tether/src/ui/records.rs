//! The NDJSON records `--json` prints, one per line (docs/events.md): every
//! event as it happens, then one summary. One enum, so every line of every
//! command's stream has one shape to document and to parse.

use serde::Serialize;
use tether_core::report::{Event, HostReport};

/// One line of a `--json` stream.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Record<'a, C: Serialize = ()> {
    /// Something happened on a host (`event`: phase, output, check,
    /// warning, outcome).
    Event(&'a Event),
    /// The end of a deploy or rollback (`event`: summary).
    RunSummary(RunSummary<'a>),
    /// The end of `tether check` (`event`: summary).
    CheckSummary(CheckSummary<'a, C>),
}

/// `{"event": "summary", "deployId", "exitCode", "hosts"}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary<'a> {
    event: &'static str,
    pub deploy_id: &'a str,
    pub exit_code: u8,
    pub hosts: &'a [HostReport],
}

impl<'a> RunSummary<'a> {
    pub fn new(deploy_id: &'a str, exit_code: u8, hosts: &'a [HostReport]) -> RunSummary<'a> {
        RunSummary {
            event: "summary",
            deploy_id,
            exit_code,
            hosts,
        }
    }
}

/// `{"event": "summary", "exitCode", "hosts"}` of `tether check`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckSummary<'a, C: Serialize> {
    event: &'static str,
    pub exit_code: u8,
    pub hosts: &'a [C],
}

impl<'a, C: Serialize> CheckSummary<'a, C> {
    pub fn new(exit_code: u8, hosts: &'a [C]) -> CheckSummary<'a, C> {
        CheckSummary {
            event: "summary",
            exit_code,
            hosts,
        }
    }
}
