//! tether's exit codes, all in one place ([`ExitStatus`]), and the error
//! type commands return so that `main` can map it to one of them.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | some host failed, refused or was rolled back (or tether itself failed) |
//! | 2 | usage or inventory error: nothing was touched |
//! | 3 | some host ended in an unknown state |
//! | 130 | interrupted twice: hosts in flight were left to their guards |

use tether_core::model::SelectorError;
use tether_core::report::RunResult;

use crate::adapters::nix::{LoadError, ToplevelsError};

/// How tether exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    HostFailed,
    Usage,
    HostUnknown,
    /// The second Ctrl-C: tether left at once.
    Interrupted,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::HostFailed => 1,
            ExitStatus::Usage => 2,
            ExitStatus::HostUnknown => 3,
            ExitStatus::Interrupted => 130,
        }
    }
}

impl From<RunResult> for ExitStatus {
    fn from(result: RunResult) -> ExitStatus {
        match result {
            RunResult::AllSucceeded => ExitStatus::Success,
            RunResult::SomeFailed => ExitStatus::HostFailed,
            RunResult::SomeUnknown => ExitStatus::HostUnknown,
        }
    }
}

/// Everything a command can end with other than success.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad arguments (clap handles most of these itself).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Inventory(#[from] LoadError),
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error(transparent)]
    Toplevels(#[from] ToplevelsError),
    /// Building the systems failed; no host was touched.
    #[error("building the systems failed: {0}")]
    Build(crate::adapters::nix::NixError),
    /// Something on this machine failed before any host was touched (no
    /// randomness for a token, no temporary directory).
    #[error("{0}")]
    Local(String),
    /// Some hosts failed, refused, or were rolled back; already reported.
    #[error("{0} host(s) failed or were rolled back")]
    HostsFailed(usize),
    /// Some hosts could not be read or planned (`status`, `plan`); already
    /// reported.
    #[error("{count} host(s) {what}")]
    HostsNotOk { count: usize, what: &'static str },
    /// `tether check`: some hosts failed a health check; already reported.
    #[error("{0} host(s) failed a health check")]
    ChecksFailed(usize),
    /// Some hosts ended in an unknown state; already reported.
    #[error("{0} host(s) ended in an unknown state")]
    HostsUnknown(usize),
    /// Writing our own output failed (a closed pipe is handled in `main`).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CommandError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            CommandError::Usage(_)
            | CommandError::Inventory(_)
            | CommandError::Selector(_)
            | CommandError::Toplevels(_) => ExitStatus::Usage,
            CommandError::HostsFailed(_)
            | CommandError::HostsNotOk { .. }
            | CommandError::ChecksFailed(_)
            | CommandError::Output(_)
            | CommandError::Local(_)
            | CommandError::Build(_) => ExitStatus::HostFailed,
            CommandError::HostsUnknown(_) => ExitStatus::HostUnknown,
        }
    }

    /// `tether hosts | head` closes our stdout early; that is not an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CommandError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}
