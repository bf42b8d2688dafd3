//! What people and tools see: the live per-host view on a terminal
//! ([`live`]), plain progress lines and summary tables ([`report`]), and
//! the NDJSON records of `--json` ([`records`]). Everything here renders
//! the core's typed events; nothing here decides.

pub mod live;
pub mod records;
pub mod report;
