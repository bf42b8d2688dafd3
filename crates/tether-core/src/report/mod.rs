//! What the logic reports, as typed data: each host's outcome, the events of
//! a run, and health-check attempts and failures. Reporters (the terminal
//! view, NDJSON, the journal) turn these into text; the logic never does.

mod boot_reason;
mod checks;
mod events;
mod outcome;
mod reason;
mod state;

pub use boot_reason::{reboot_reasons_text, BootTrialProblem};
pub use checks::{CheckAttempt, CheckFailure};
pub use events::{Event, EventKind, Phase, StateAction};
pub use outcome::{Cause, HostReport, Outcome, RunResult};
pub use reason::{
    ConfirmAttempt, Failure, IdentityProblem, NoGeneration, NotPersisted, PersistProblem, Refusal,
    RollbackReason, SkipReason, TrialProblem, Trouble, Unhealthy, UnknownReason,
};
pub use state::{restore_command, DataAfterRollback, StateReport};
