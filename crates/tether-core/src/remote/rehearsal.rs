//! The state steps of a rehearsal (docs/rehearsal.md), on production and on
//! the staging host, for btrfs subvolumes and ZFS datasets.
//!
//! btrfs paths live next to tether's pre-deploy snapshots, in
//! `<parent>/.tether-snapshots/<name>/`:
//! - `<id>.rehearsal`: on production, a fresh read-only snapshot (instant,
//!   no downtime) that is streamed to the staging host and then deleted;
//!   on the staging host, the received copy.
//! - `<id>.staging-own`: what the staging host held at the path before the
//!   rehearsal, kept, and put back when the rehearsal cleans up.
//!
//! ZFS datasets: on production the recursive snapshot
//! `<dataset>@tether-<id>-rehearsal`, deleted once sent; on the staging host
//! the received tree `<dataset>-tether-<id>-rehearsal` (marked with the
//! user property `tether:rehearsal=<id>`), renamed into place, and the
//! staging host's own `<dataset>-tether-<id>-staging-own`, renamed back
//! when the rehearsal cleans up.
//!
//! The stream itself (`btrfs send` on one host into `btrfs receive` on the
//! other) is two scripts here, [`RehearsalState::send_script`] and
//! [`RehearsalState::receive_script`], relayed by the deployer.

use super::wire::{all, finished, parse_fields, ParseError};
use super::{Op, Operation, ScriptOutput};
use crate::model::{Dataset, DeployId, StatePath, UnitName};
use crate::shell::quote;

/// How long stopping or starting the declared units may take.
pub const UNITS_SECONDS: u64 = 90;

/// One step of a rehearsal's state handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateStep {
    /// Staging: can every path take production's state? Changes nothing.
    CheckStaging,
    /// Production: take the read-only `<id>.rehearsal` snapshots.
    Snapshot,
    /// Production: delete this rehearsal's own `<id>.rehearsal` snapshots.
    DropSource,
    /// Staging: stop the units that run, keep what each path held as
    /// `<id>.staging-own`, put a writable copy of the received state at the
    /// path, start the units that were running.
    Load,
    /// Staging: each volume's size in bytes (`du -sb`, ZFS's `used`).
    Usage,
    /// Staging: stop the units, delete the loaded copy (only if it is the
    /// copy of this rehearsal's received state), put `<id>.staging-own`
    /// back, delete the received state, start the units that were running.
    Unload,
}

/// A rehearsal's state step on one host.
#[derive(Debug, Clone)]
pub struct RehearsalState {
    pub step: StateStep,
    pub rehearsal_id: DeployId,
    pub paths: Vec<StatePath>,
    pub datasets: Vec<Dataset>,
    pub units: Vec<UnitName>,
}

/// One volume of a rehearsal's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volume {
    Btrfs(StatePath),
    Zfs(Dataset),
}

impl Volume {
    /// The path or dataset name, as reports name it.
    pub fn as_str(&self) -> &str {
        match self {
            Volume::Btrfs(p) => p.as_str(),
            Volume::Zfs(d) => d.as_str(),
        }
    }
}

/// What a step reported, per path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateStepReport {
    /// `(path, detail)` for each path the step did.
    pub done: Vec<(String, String)>,
    /// `(path, why)` for each path it could not do.
    pub failed: Vec<(String, String)>,
}

impl StateStepReport {
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty()
    }

    /// `path: why; …`, for messages.
    pub fn failures(&self) -> String {
        self.failed
            .iter()
            .map(|(p, why)| format!("{p}: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The detail reported for `path`.
    pub fn detail(&self, path: &str) -> Option<&str> {
        self.done
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, d)| d.as_str())
    }
}

/// Shell functions shared by the steps. `store P` sets `$store` (the
/// directory of P's snapshots), `$rec` and `$own`.
const FUNCTIONS: &str = r#"store() {
  parent=${1%/*}; [ -n "$parent" ] || parent=/
  store="$parent/.tether-snapshots/${1##*/}"
  rec="$store/$ID.rehearsal"; own="$store/$ID.staging-own"
}
names() { rec_ds="$1-tether-$ID-rehearsal"; own_ds="$1-tether-$ID-staging-own"; }
has_ds() { zfs list -H -o name "$1" >/dev/null 2>&1; }
# Mounts a dataset and its children, parents first (a renamed or received
# dataset is not mounted by itself).
mount_tree() { zfs list -H -o name -r -t filesystem "$1" 2>/dev/null | while IFS= read -r x; do zfs mount "$x" >/dev/null 2>&1; done; }
# Unmounts it, children first: a mounted dataset may be "busy" to rename
# (zfs-fuse) or destroy.
umount_tree() { zfs list -H -o name -r -t filesystem "$1" 2>/dev/null | sort -r | while IFS= read -r x; do zfs umount "$x" >/dev/null 2>&1; done; }
uuid_of() { btrfs subvolume show "$1" 2>/dev/null | sed -n "s/^[[:space:]]*$2:[[:space:]]*//p" | head -n 1; }
stop_units() {
  active=
  for u in $UNITS; do if systemctl is-active -q "$u"; then active="$active $u"; fi; done
  if [ -n "$active" ] && ! timeout "$UNITS_SECONDS" systemctl stop $active; then
    echo "failed=units could not be stopped"; return 1
  fi
}
start_units() {
  for u in $active; do
    timeout "$UNITS_SECONDS" systemctl start "$u" || echo "failed=$u did not start"
  done
}
"#;

impl RehearsalState {
    fn preamble(&self) -> String {
        let words = |v: Vec<&str>| quote(&v.join(" "));
        format!(
            "set -u\numask 077\nID={}\nPATHS={}\nDATASETS={}\nUNITS={}\nUNITS_SECONDS={}\n{FUNCTIONS}",
            quote(self.rehearsal_id.as_str()),
            words(self.paths.iter().map(StatePath::as_str).collect()),
            words(self.datasets.iter().map(Dataset::as_str).collect()),
            words(self.units.iter().map(UnitName::as_str).collect()),
            UNITS_SECONDS,
        )
    }

    fn body(&self) -> &'static str {
        match self.step {
            StateStep::CheckStaging => {
                r#"if [ -n "$PATHS" ]; then command -v btrfs >/dev/null || echo "failed=- the staging host has no btrfs command"; fi
if [ -n "$DATASETS" ]; then command -v zfs >/dev/null || echo "failed=- the staging host has no zfs command"; fi
for p in $PATHS; do
  store "$p"
  if [ "$(stat -f -c %T "$parent" 2>/dev/null)" != btrfs ]; then echo "failed=$p $parent is not on btrfs"; continue; fi
  if [ -e "$p" ] && ! btrfs subvolume show "$p" >/dev/null 2>&1; then echo "failed=$p exists and is not a btrfs subvolume"; continue; fi
  if [ -e "$rec" ] || [ -e "$own" ]; then echo "failed=$p this rehearsal's paths already exist"; continue; fi
  echo "done=$p ok"
done
for d in $DATASETS; do
  names "$d"
  case "$d" in */*) ;; *) echo "failed=$d is a pool; declare a dataset inside it"; continue ;; esac
  has_ds "${d%/*}" || { echo "failed=$d its parent ${d%/*} does not exist"; continue; }
  if has_ds "$rec_ds" || has_ds "$own_ds"; then echo "failed=$d this rehearsal's datasets already exist"; continue; fi
  if has_ds "$d" && zfs get -H -o source -r mountpoint "$d" 2>/dev/null | grep -q '^local'; then
    echo "failed=$d has a local mountpoint on the staging host; the rehearsal swaps datasets by renaming, which needs inherited mountpoints"; continue
  fi
  echo "done=$d ok"
done
echo step=done"#
            }
            StateStep::Snapshot => {
                r#"for p in $PATHS; do
  store "$p"
  if ! btrfs subvolume show "$p" >/dev/null 2>&1; then echo "failed=$p is not a btrfs subvolume"; continue; fi
  mkdir -p "$store" || { echo "failed=$p cannot create $store"; continue; }
  if btrfs subvolume snapshot -r "$p" "$rec" >/dev/null 2>&1; then echo "done=$p $rec"; else echo "failed=$p snapshot failed"; fi
done
for d in $DATASETS; do
  if zfs snapshot -r "$d@tether-$ID-rehearsal" >/dev/null 2>&1; then echo "done=$d $d@tether-$ID-rehearsal"; else echo "failed=$d snapshot failed"; fi
done
echo step=done"#
            }
            StateStep::DropSource => {
                r#"for p in $PATHS; do
  store "$p"
  [ -e "$rec" ] || continue
  if btrfs subvolume delete "$rec" >/dev/null 2>&1; then echo "done=$p deleted"; else echo "failed=$p $rec could not be deleted"; fi
done
for d in $DATASETS; do
  has_ds "$d@tether-$ID-rehearsal" || continue
  if zfs destroy -r "$d@tether-$ID-rehearsal" >/dev/null 2>&1; then echo "done=$d deleted"; else echo "failed=$d $d@tether-$ID-rehearsal could not be deleted"; fi
done
echo step=done"#
            }
            StateStep::Load => {
                r#"if stop_units; then
for p in $PATHS; do
  store "$p"
  if [ ! -d "$rec" ]; then echo "failed=$p nothing was received"; continue; fi
  if [ -e "$p" ]; then
    mv "$p" "$own" || { echo "failed=$p could not keep the staging host's own state"; continue; }
  fi
  if btrfs subvolume snapshot "$rec" "$p" >/dev/null 2>&1; then
    echo "done=$p loaded"
  else
    [ -e "$own" ] && mv "$own" "$p"
    echo "failed=$p the received state could not be put in place"
  fi
done
for d in $DATASETS; do
  names "$d"
  has_ds "$rec_ds" || { echo "failed=$d nothing was received"; continue; }
  zfs set "tether:rehearsal=$ID" "$rec_ds" >/dev/null 2>&1 || { echo "failed=$d the received dataset cannot be marked"; continue; }
  if has_ds "$d"; then
    umount_tree "$d"
    zfs rename "$d" "$own_ds" >/dev/null 2>&1 || { mount_tree "$d"; echo "failed=$d could not keep the staging host's own state"; continue; }
  fi
  if zfs rename "$rec_ds" "$d" >/dev/null 2>&1; then
    mount_tree "$d"
    echo "done=$d loaded"
  else
    has_ds "$own_ds" && zfs rename "$own_ds" "$d" >/dev/null 2>&1 && mount_tree "$d"
    echo "failed=$d the received state could not be put in place"
  fi
done
start_units
fi
echo step=done"#
            }
            StateStep::Usage => {
                r#"for p in $PATHS; do
  n=$(du -sb "$p" 2>/dev/null | cut -f1)
  if [ -n "$n" ]; then echo "done=$p $n"; else echo "failed=$p cannot be measured"; fi
done
for d in $DATASETS; do
  n=$(zfs get -Hp -o value used "$d" 2>/dev/null)
  if [ -n "$n" ]; then echo "done=$d $n"; else echo "failed=$d cannot be measured"; fi
done
echo step=done"#
            }
            StateStep::Unload => {
                r#"if stop_units; then
for p in $PATHS; do
  store "$p"
  if [ -e "$p" ] && [ -d "$rec" ]; then
    if [ "$(uuid_of "$p" 'Parent UUID')" = "$(uuid_of "$rec" UUID)" ]; then
      btrfs subvolume delete "$p" >/dev/null 2>&1 || { echo "failed=$p the loaded copy could not be deleted"; continue; }
    elif [ -e "$own" ]; then
      echo "failed=$p holds something other than the loaded copy; left as it is, the staging host's own state is at $own"; continue
    fi
  fi
  if [ -e "$own" ]; then mv "$own" "$p" || { echo "failed=$p could not put back $own"; continue; }; fi
  if [ -d "$rec" ]; then btrfs subvolume delete "$rec" >/dev/null 2>&1 || echo "failed=$p $rec could not be deleted"; fi
  echo "done=$p unloaded"
done
for d in $DATASETS; do
  names "$d"
  if has_ds "$d" && [ "$(zfs get -H -o value tether:rehearsal "$d" 2>/dev/null)" = "$ID" ]; then
    umount_tree "$d"
    zfs destroy -r "$d" >/dev/null 2>&1 || { mount_tree "$d"; echo "failed=$d the loaded copy could not be deleted"; continue; }
  elif has_ds "$d" && has_ds "$own_ds"; then
    echo "failed=$d holds something other than the loaded copy; left as it is, the staging host's own state is $own_ds"; continue
  fi
  if has_ds "$own_ds"; then
    zfs rename "$own_ds" "$d" >/dev/null 2>&1 || { echo "failed=$d could not put back $own_ds"; continue; }
    mount_tree "$d"
  fi
  if has_ds "$rec_ds"; then zfs destroy -r "$rec_ds" >/dev/null 2>&1 || echo "failed=$d $rec_ds could not be deleted"; fi
  echo "done=$d unloaded"
done
start_units
fi
echo step=done"#
            }
        }
    }

    /// Production: streams this rehearsal's snapshot of `volume` to stdout
    /// (a ZFS dataset with its children, `zfs send -R`).
    pub fn send_script(&self, volume: &Volume) -> String {
        let body = match volume {
            Volume::Btrfs(p) => {
                format!("store {}\nexec btrfs send -q \"$rec\"\n", quote(p.as_str()))
            }
            Volume::Zfs(d) => format!(
                "exec zfs send -R {}\n",
                quote(&format!(
                    "{}@tether-{}-rehearsal",
                    d.as_str(),
                    self.rehearsal_id.as_str()
                ))
            ),
        };
        format!("{}{body}", self.preamble())
    }

    /// Staging: receives a stream on stdin next to `volume` (for ZFS, as
    /// the dataset `<volume>-tether-<id>-rehearsal`, not mounted).
    pub fn receive_script(&self, volume: &Volume) -> String {
        let body = match volume {
            Volume::Btrfs(p) => format!(
                "store {}\nmkdir -p \"$store\" && exec btrfs receive -q \"$store\"\n",
                quote(p.as_str())
            ),
            Volume::Zfs(d) => format!(
                "names {}\nexec zfs receive -u \"$rec_ds\"\n",
                quote(d.as_str())
            ),
        };
        format!("{}{body}", self.preamble())
    }
}

impl Operation for RehearsalState {
    type Output = StateStepReport;
    const OP: Op = Op::RehearsalState;

    fn script(&self) -> String {
        format!("{}{}\n", self.preamble(), self.body())
    }

    fn parse(&self, out: &ScriptOutput) -> Result<StateStepReport, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "step", "a rehearsal's state step")?;
        let split = |l: &String| {
            let (p, d) = l.split_once(' ').unwrap_or((l.as_str(), ""));
            (p.to_string(), d.to_string())
        };
        Ok(StateStepReport {
            done: all(&f, "done").iter().map(split).collect(),
            failed: all(&f, "failed").iter().map(split).collect(),
        })
    }
}
