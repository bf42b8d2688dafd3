//! The remote vocabulary: every operation tether runs on a target, each one
//! a type that owns its script (every value quoted by
//! [`crate::shell::quote`]) and the parser of what that script prints, side
//! by side in one file. [`Op`] names them all; the [`crate::ports::Target`]
//! port receives a [`Script`] labelled with its `Op`, so fakes match on the
//! operation, never on script text.
//!
//! Scripts need only POSIX sh, coreutils, util-linux's `flock`, systemd and
//! Nix on the target; nothing of tether is installed there. Per-deploy state
//! lives in `/run/tether/deploys/<deploy id>` (gone after a reboot, as the
//! trial it describes is), the deploy lock is the directory `/run/tether/lock`,
//! and an append-only journal is kept in `/var/lib/tether/journal`.
//!
//! The wire format: scripts print `key=value` lines on stdout (`wire.rs`);
//! anything else a target prints (login banners, activation output) is
//! ignored by the parsers.

mod arm;
mod boot_trial;
mod bootloader;
mod checks;
mod confirm;
mod guard;
mod journal;
mod persist;
pub mod plan;
mod preflight;
mod reboot;
mod rehearsal;
mod state;
pub mod status;
mod sudo;
mod trial;
mod wire;

pub use arm::{ArmAndActivate, ArmReport, ArmResult, ARM_DEADLINE, ARM_WAIT};
pub use boot_trial::{
    AskBootTrial, BootTrialAnswer, BootTrialCause, BootTrialReply, BootTrialRequest, BootTrialSeen,
    BootTrialSpec, BootTrialState, LookAtBootTrial, PrepareBootTrial, PrepareReport, PrepareResult,
    PrepareStep, RebootReason, TrialNeeds, TrialNeedsReport, BOOT_GUARD_UNIT, BOOT_TRIAL_DIR,
    BOOT_UNIT_DIR,
};
pub use bootloader::{BootDefault, BootLoader};
pub use checks::{CheckCommand, CommandResult, SystemState, SystemStateLook, Units};
pub use confirm::{Confirm, ConfirmReport, ConfirmResult};
pub use guard::{
    activation_exit_meaning, GuardCause, GuardSpec, GuardState, GC_ROOTS, SWITCH_LOCK,
};
pub use journal::{JournalEntry, JournalEvent};
pub use persist::{DryActivate, FinishTrial, Persist, PersistMode, PersistReport};
pub use preflight::{Facts, LockHolder, Preflight};
pub use reboot::{BootState, BootStateReport, Reboot};
pub use rehearsal::{RehearsalState, StateStep, StateStepReport, Volume};
pub use state::{
    restore_bound, CheckState, Fs, ListSnapshots, PruneReport, PruneSnapshots, RestoreRefusal,
    RestoreReport, RestoreSnapshots, Restored, Snapshot, SnapshotKind, StateProblem, TakeSnapshots,
    VolumeFailure, FAILED_STATE_COPY, UNIT_STOP,
};
pub use sudo::{Elevation, SudoFailure, SCRIPT_MARK};
pub use trial::{ActivationState, GuardLife, Inspect, Inspection, Renew, Renewal, RequestRollback};
pub use wire::{generation_number, ParseError};

/// Where tether keeps a target's per-deploy state (gone after a reboot).
pub const RUN_DIR: &str = "/run/tether";
/// The deploy lock: a directory, taken by arming, released when a trial ends.
pub const LOCK_DIR: &str = "/run/tether/lock";
/// The target's own append-only journal of deploys.
pub const JOURNAL: &str = "/var/lib/tether/journal";
/// NixOS's system profile.
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";

/// Every operation tether runs on a target (or, for [`Op::UnitFiles`], in
/// the deployer's own store). One variant per type implementing
/// [`Operation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Identity, systems and readiness, read-only ([`Preflight`]).
    Preflight,
    /// Take the deploy lock, start the guard, activate on trial ([`ArmAndActivate`]).
    ArmAndActivate,
    /// Extend the trial's lease ([`Renew`]).
    Renew,
    /// Confirm the trial over a fresh connection ([`Confirm`]).
    Confirm,
    /// Confirm, then persist in the same session ([`Confirm`] with a [`Persist`]).
    ConfirmAndPersist,
    /// Make a system the profile generation and boot default ([`Persist`]).
    Persist,
    /// End a confirmed trial that is not persisted (goal test) ([`FinishTrial`]).
    FinishTrial,
    /// Ask the guard to roll back now ([`RequestRollback`]).
    RequestRollback,
    /// Read how a trial ended ([`Inspect`]).
    Inspect,
    /// `switch-to-configuration dry-activate` ([`DryActivate`]).
    DryActivate,
    /// Schedule a reboot ([`Reboot`]).
    Reboot,
    /// Which boot and systems the host runs ([`BootState`]).
    BootState,
    /// A `command` health check on the target ([`CheckCommand`]).
    CheckCommand,
    /// The `units` health check ([`Units`]).
    Units,
    /// The system state behind `failedUnits` and `systemRunning` ([`SystemState`]).
    SystemState,
    /// Everything `tether status` shows ([`status::Status`]).
    Status,
    /// The current system's closure and units, for `tether plan` ([`plan::CurrentSystem`]).
    PlanCurrentSystem,
    /// A system's unit files, in the deployer's store ([`plan::ListUnitFiles`]).
    UnitFiles,
    /// Whether a change needs a reboot trial, and whether the host can do one ([`TrialNeeds`]).
    TrialNeeds,
    /// Set up a reboot trial: generation, entries, one-shot, guard ([`PrepareBootTrial`]).
    PrepareBootTrial,
    /// Read a reboot trial's boot, systems and state ([`LookAtBootTrial`]).
    LookAtBootTrial,
    /// Extend a reboot trial's lease ([`AskBootTrial`]).
    RenewBootTrial,
    /// Confirm a reboot trial over a fresh connection ([`AskBootTrial`]).
    ConfirmBootTrial,
    /// Ask a reboot trial's guard to reboot into the old system ([`AskBootTrial`]).
    RollBackBootTrial,
    /// Persist a confirmed reboot trial, then end it and remove its guard ([`AskBootTrial`]).
    FinishBootTrial,
    /// Undo a reboot trial whose reboot never came ([`AskBootTrial`]).
    AbandonBootTrial,
    /// Check the host's state declaration ([`CheckState`]).
    CheckState,
    /// Take a deploy's pre-deploy snapshots ([`TakeSnapshots`]).
    TakeSnapshots,
    /// List tether's snapshots ([`ListSnapshots`]).
    ListSnapshots,
    /// Restore a deploy's pre-deploy snapshots on request ([`RestoreSnapshots`]).
    RestoreSnapshots,
    /// Remove snapshots beyond `keep` ([`PruneSnapshots`]).
    PruneSnapshots,
    /// A rehearsal's state step, on production or staging ([`RehearsalState`]).
    RehearsalState,
}

impl Op {
    /// Every operation, for tests that must cover them all.
    pub const ALL: [Op; 32] = [
        Op::Preflight,
        Op::ArmAndActivate,
        Op::Renew,
        Op::Confirm,
        Op::ConfirmAndPersist,
        Op::Persist,
        Op::FinishTrial,
        Op::RequestRollback,
        Op::Inspect,
        Op::DryActivate,
        Op::Reboot,
        Op::BootState,
        Op::CheckCommand,
        Op::Units,
        Op::SystemState,
        Op::Status,
        Op::PlanCurrentSystem,
        Op::UnitFiles,
        Op::TrialNeeds,
        Op::PrepareBootTrial,
        Op::LookAtBootTrial,
        Op::RenewBootTrial,
        Op::ConfirmBootTrial,
        Op::RollBackBootTrial,
        Op::FinishBootTrial,
        Op::AbandonBootTrial,
        Op::CheckState,
        Op::TakeSnapshots,
        Op::ListSnapshots,
        Op::RestoreSnapshots,
        Op::PruneSnapshots,
        Op::RehearsalState,
    ];

    /// The operation's name in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Op::Preflight => "preflight",
            Op::ArmAndActivate => "arm and activate",
            Op::Renew => "renew the lease",
            Op::Confirm => "confirm",
            Op::ConfirmAndPersist => "confirm and persist",
            Op::Persist => "persist",
            Op::FinishTrial => "finish the trial",
            Op::RequestRollback => "ask for a rollback",
            Op::Inspect => "inspect the trial",
            Op::DryActivate => "dry-activate",
            Op::Reboot => "reboot",
            Op::BootState => "read the boot state",
            Op::CheckCommand => "health check command",
            Op::Units => "read unit states",
            Op::SystemState => "read the system state",
            Op::Status => "status",
            Op::PlanCurrentSystem => "read the current system",
            Op::UnitFiles => "list unit files",
            Op::TrialNeeds => "read what the change needs",
            Op::PrepareBootTrial => "prepare the reboot trial",
            Op::LookAtBootTrial => "look at the reboot trial",
            Op::RenewBootTrial => "renew the reboot trial's lease",
            Op::ConfirmBootTrial => "confirm the reboot trial",
            Op::RollBackBootTrial => "ask the boot-trial guard to roll back",
            Op::FinishBootTrial => "persist and finish the reboot trial",
            Op::AbandonBootTrial => "abandon the reboot trial",
            Op::CheckState => "check the state declaration",
            Op::TakeSnapshots => "take the pre-deploy snapshots",
            Op::ListSnapshots => "list snapshots",
            Op::RestoreSnapshots => "restore snapshots",
            Op::PruneSnapshots => "prune snapshots",
            Op::RehearsalState => "rehearsal state step",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A script ready to send, labelled with the operation it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub op: Op,
    pub text: String,
}

/// What a script printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScriptOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
}

/// One operation: its script and the parser of its output.
pub trait Operation {
    /// What a run of the operation found out.
    type Output;
    /// Which operation this type is.
    const OP: Op;
    /// Which operation this value is (a type may cover two, as confirming
    /// with and without persisting).
    fn op(&self) -> Op {
        Self::OP
    }
    /// The POSIX sh script, every value quoted.
    fn script(&self) -> String;
    /// Reads what the script printed (stdout's fields; some operations also
    /// need the exit code or stderr).
    fn parse(&self, out: &ScriptOutput) -> Result<Self::Output, ParseError>;
    /// The script labelled with its operation, as the target port takes it.
    fn request(&self) -> Script {
        Script {
            op: self.op(),
            text: self.script(),
        }
    }
}

/// A shell function: `resolve LINK` sets `$r` to the physical path of the
/// directory LINK leads to (as `readlink -f`), or to nothing when it leads
/// nowhere; the shell is left in `/`. Builtins only: `readlink` would cost a
/// process, on every host of every deploy. System toplevels are directories,
/// so this covers them.
const RESOLVE_FUNCTION: &str =
    r#"resolve() { r=; if cd -P "$1" 2>/dev/null; then r=$PWD; cd /; fi; }"#;

#[cfg(test)]
mod tests;
