//! What a deploy is asked to do, as plain data: health checks, rollout
//! policy, time limits and the state snapshotted with each deploy. The inventory and the flags produce these; the
//! logic consumes them.

mod checks;
mod rehearsal;
mod rollout;
mod state;
mod timeouts;

pub use checks::{
    Check, CheckKind, CheckTarget, CheckType, CommandCheck, CommandOn, FailedUnits, HostChecks,
    HttpCheck, TcpCheck, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT,
    FAILED_UNITS, SYSTEM_RUNNING,
};
pub use rehearsal::{RehearsalSettings, RehearsalSpec};
pub use rollout::{BatchSize, CanarySpec, RolloutPlan, RolloutSettings, Stage, DEFAULT_PARALLEL};
pub use state::{StateSettings, StateSpec, DEFAULT_KEEP};
pub use timeouts::{
    TimeoutSettings, Timeouts, ACTIVATION_STOP, LOOK_CALL, PERSIST_AT_MOST, POLL_INTERVAL,
    QUICK_CALL, RETRY_PAUSE, ROLLBACK_MARGIN,
};
