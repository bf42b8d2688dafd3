//! The target's own journal (`/var/lib/tether/journal`): one tab-separated
//! line per event of a deploy, written by the guard and by the deployer's
//! scripts, read back by `tether status`. The event names are defined here
//! once ([`JournalEvent`]) for the guard, the deployer's scripts and the
//! parser alike.

use super::JOURNAL;
use crate::model::{DeployId, StorePath};
use crate::shell::quote;
use crate::text::one_line;

/// What a journal line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalEvent {
    /// The guard started: the trial began.
    Armed,
    RollingBack,
    RolledBack,
    RollbackFailed,
    /// Confirmed over a fresh connection (and persisted, for goal switch).
    Confirmed,
    /// Confirmed, but the deployer never reported persisting.
    ConfirmedUnfinished,
    /// Confirmed, but persisting failed: the host boots the old system.
    ConfirmedNotPersisted,
    /// The activation could not take NixOS's switch lock; nothing changed.
    NotActivated,
    /// The reboot trial's guard saw the host boot the new system.
    Booted,
    /// The pre-deploy snapshots of the declared state were taken.
    Snapshotted,
    /// Taking them failed: the deploy was refused before activation.
    SnapshotFailed,
    /// The declared state was restored to a pre-deploy snapshot.
    DataRestored,
    /// Restoring it failed (or stopped part way).
    DataRestoreFailed,
}

impl JournalEvent {
    pub const ALL: [JournalEvent; 13] = [
        JournalEvent::Armed,
        JournalEvent::RollingBack,
        JournalEvent::RolledBack,
        JournalEvent::RollbackFailed,
        JournalEvent::Confirmed,
        JournalEvent::ConfirmedUnfinished,
        JournalEvent::ConfirmedNotPersisted,
        JournalEvent::NotActivated,
        JournalEvent::Booted,
        JournalEvent::Snapshotted,
        JournalEvent::SnapshotFailed,
        JournalEvent::DataRestored,
        JournalEvent::DataRestoreFailed,
    ];

    pub fn wire(self) -> &'static str {
        match self {
            JournalEvent::Armed => "armed",
            JournalEvent::RollingBack => "rolling-back",
            JournalEvent::RolledBack => "rolled-back",
            JournalEvent::RollbackFailed => "rollback-failed",
            JournalEvent::Confirmed => "confirmed",
            JournalEvent::ConfirmedUnfinished => "confirmed-unfinished",
            JournalEvent::ConfirmedNotPersisted => "confirmed-not-persisted",
            JournalEvent::NotActivated => "not-activated",
            JournalEvent::Booted => "booted",
            JournalEvent::Snapshotted => "snapshotted",
            JournalEvent::SnapshotFailed => "snapshot-failed",
            JournalEvent::DataRestored => "data-restored",
            JournalEvent::DataRestoreFailed => "data-restore-failed",
        }
    }

    pub fn parse(s: &str) -> Option<JournalEvent> {
        JournalEvent::ALL.into_iter().find(|e| e.wire() == s)
    }

    /// Whether this event ends a deploy (no later line of it is expected).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JournalEvent::Confirmed
                | JournalEvent::RolledBack
                | JournalEvent::RollbackFailed
                | JournalEvent::ConfirmedUnfinished
                | JournalEvent::ConfirmedNotPersisted
                | JournalEvent::NotActivated
        )
    }

    /// The shell variable `guard.sh` knows this event by.
    pub(crate) fn variable(self) -> String {
        format!("E_{}", self.wire().to_uppercase().replace('-', "_"))
    }
}

/// A line the deployer appends to the target's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub deploy_id: DeployId,
    pub event: JournalEvent,
    pub old: Option<StorePath>,
    pub new: StorePath,
    /// `user@machine` of the deployer.
    pub deployer: String,
    pub detail: String,
}

impl JournalEntry {
    /// A shell snippet appending the line. Tabs and newlines in the detail
    /// or the deployer's name become spaces: they would forge lines or
    /// fields that `status` reads back.
    pub(crate) fn append_script(&self) -> String {
        format!(
            r#"{{ [ -d /var/lib/tether ] || mkdir -p /var/lib/tether; }} && printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" {id} {event} {old} {new} deployer {detail} >>{journal}
"#,
            id = quote(self.deploy_id.as_str()),
            event = quote(self.event.wire()),
            old = quote(self.old.as_ref().map(StorePath::as_str).unwrap_or("-")),
            new = quote(self.new.as_str()),
            detail = quote(&one_line(&format!(
                "{}; deployer {}",
                self.detail, self.deployer
            ))),
            journal = quote(JOURNAL),
        )
    }
}
