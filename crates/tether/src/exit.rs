//! tether's exit codes, all in one place, and the error type commands
//! return so that `main` can map it to one of them.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | some host failed, refused or was rolled back |
//! | 2 | usage or inventory error: nothing was touched |
//! | 3 | some host ended in an unknown state |

use tether_core::model::SelectorError;

use crate::nix::{LoadError, ToplevelsError};

pub const SUCCESS: u8 = 0;
pub const HOST_FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const HOST_UNKNOWN: u8 = 3;

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
    Build(crate::nix::NixError),
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
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Usage(_)
            | CommandError::Inventory(_)
            | CommandError::Selector(_)
            | CommandError::Toplevels(_) => USAGE,
            CommandError::HostsFailed(_)
            | CommandError::HostsNotOk { .. }
            | CommandError::ChecksFailed(_)
            | CommandError::Output(_)
            | CommandError::Build(_) => HOST_FAILED,
            CommandError::HostsUnknown(_) => HOST_UNKNOWN,
        }
    }

    /// `tether hosts | head` closes our stdout early; that is not an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CommandError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}
