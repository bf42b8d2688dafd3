//! A host's state declaration (`state = { btrfs; zfs; units;
//! restoreOnRollback; keep; }`, docs/state.md): what tether snapshots with
//! every deploy and may restore when the deploy rolls back.

use serde::Serialize;

use crate::model::{Dataset, StatePath, UnitName};

/// Snapshots kept per subvolume or dataset when `keep` is not set.
pub const DEFAULT_KEEP: u32 = 5;

/// The `state` settings as the inventory gives them, every key optional;
/// defaults and hosts merge key by key (lists add up, the host wins for
/// single values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateSettings {
    pub btrfs: Vec<StatePath>,
    pub zfs: Vec<Dataset>,
    pub units: Vec<UnitName>,
    pub restore_on_rollback: Option<bool>,
    pub keep: Option<u32>,
}

impl StateSettings {
    /// `self` (a host's) over `base` (the defaults').
    pub fn over(self, base: &StateSettings) -> StateSettings {
        fn union<T: Clone + PartialEq>(base: &[T], more: Vec<T>) -> Vec<T> {
            let mut all = base.to_vec();
            for item in more {
                if !all.contains(&item) {
                    all.push(item);
                }
            }
            all
        }
        StateSettings {
            btrfs: union(&base.btrfs, self.btrfs),
            zfs: union(&base.zfs, self.zfs),
            units: union(&base.units, self.units),
            restore_on_rollback: self.restore_on_rollback.or(base.restore_on_rollback),
            keep: self.keep.or(base.keep),
        }
    }

    pub fn resolve(&self) -> StateSpec {
        StateSpec {
            btrfs: self.btrfs.clone(),
            zfs: self.zfs.clone(),
            units: self.units.clone(),
            restore_on_rollback: self.restore_on_rollback.unwrap_or(false),
            keep: self.keep.unwrap_or(DEFAULT_KEEP),
        }
    }
}

/// What one host's deploys snapshot and restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateSpec {
    /// btrfs subvolumes, by path.
    pub btrfs: Vec<StatePath>,
    /// ZFS datasets; their children are snapshotted with them.
    pub zfs: Vec<Dataset>,
    /// Stopped before a restore; the old system's activation starts them.
    pub units: Vec<UnitName>,
    /// Whether a rolled-back deploy also restores the data.
    pub restore_on_rollback: bool,
    /// tether's pre-deploy snapshots kept per subvolume or dataset.
    pub keep: u32,
}

impl Default for StateSpec {
    fn default() -> Self {
        StateSettings::default().resolve()
    }
}

impl StateSpec {
    /// Whether anything is declared to snapshot.
    pub fn is_declared(&self) -> bool {
        !self.btrfs.is_empty() || !self.zfs.is_empty()
    }

    /// Whether a rollback of this host's deploys restores data.
    pub fn restores(&self) -> bool {
        self.is_declared() && self.restore_on_rollback
    }
}
