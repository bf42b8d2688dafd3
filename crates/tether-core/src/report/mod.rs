//! What the logic reports, as typed data: each host's outcome, the events of
//! a run, and health-check attempts and failures. Reporters (the terminal
//! view, NDJSON, the journal) turn these into text; the logic never does.

mod checks;
mod events;
mod outcome;

pub use checks::{CheckAttempt, CheckFailure};
pub use events::{Event, EventKind, Phase};
pub use outcome::{exit_code, HostReport, Outcome};
