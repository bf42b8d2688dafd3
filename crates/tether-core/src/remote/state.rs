//! State snapshots on a host (docs/state.md): checking a host's `state`
//! declaration, taking the pre-deploy snapshots, listing, restoring and
//! pruning tether's own. The shell logic is `state.sh`, shared with the
//! guard (which restores on a rollback); this file gives it its settings,
//! one quoted value each, and parses what it prints.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::boot_trial::{BootTrialState, BOOT_TRIAL_DIR};
use super::journal::JournalEvent;
use super::wire::{all, finished, first, parse_fields, ParseError};
use super::{Op, Operation, ScriptOutput, JOURNAL, LOCK_DIR, RUN_DIR};
use crate::model::DeployId;
use crate::shell::quote;
use crate::spec::StateSpec;
use crate::text::one_line;

/// The state functions (`state.sh`); [`state_settings`] prepends their settings.
pub(crate) const STATE_FUNCTIONS: &str = include_str!("state.sh");

/// How long stopping the declared units may take before a restore.
pub const UNIT_STOP: Duration = Duration::from_secs(90);
/// How long copying one dataset's failed state (ZFS) may take.
pub const FAILED_STATE_COPY: Duration = Duration::from_secs(1800);

/// The most a guard's restore before a rollback adds to it: stopping the
/// units, the snapshots and renames, and for ZFS copying the failed state.
pub fn restore_bound(spec: &StateSpec) -> Duration {
    if !spec.restores() {
        return Duration::ZERO;
    }
    let copy = if spec.zfs.is_empty() {
        Duration::ZERO
    } else {
        FAILED_STATE_COPY
    };
    UNIT_STOP + Duration::from_secs(60) + copy
}

/// The tools a guard's restore calls, for its resolved PATH (each word
/// with a leading space).
pub(crate) fn state_tools(spec: &StateSpec) -> String {
    let mut tools = String::from(" timeout tr sort head date mkdir mv");
    if !spec.btrfs.is_empty() {
        tools.push_str(" btrfs");
    }
    if !spec.zfs.is_empty() {
        tools.push_str(" zfs");
    }
    tools
}

/// The settings `state.sh` reads, as shell assignments (each value quoted).
pub(crate) fn state_settings(spec: &StateSpec) -> Vec<(&'static str, String)> {
    let words = |items: Vec<&str>| items.join(" ");
    vec![
        (
            "STATE_BTRFS",
            words(spec.btrfs.iter().map(|p| p.as_str()).collect()),
        ),
        (
            "STATE_ZFS",
            words(spec.zfs.iter().map(|d| d.as_str()).collect()),
        ),
        (
            "STATE_UNITS",
            words(spec.units.iter().map(|u| u.as_str()).collect()),
        ),
        ("STOP_SECONDS", UNIT_STOP.as_secs().to_string()),
        ("COPY_SECONDS", FAILED_STATE_COPY.as_secs().to_string()),
    ]
}

/// The settings and the functions, ready to prepend to a script.
fn preamble(spec: &StateSpec) -> String {
    let mut s: String = state_settings(spec)
        .into_iter()
        .map(|(name, value)| format!("{name}={}\n", quote(&value)))
        .collect();
    s.push_str(STATE_FUNCTIONS);
    s.push('\n');
    s
}

/// A shell snippet appending a journal line for `id` (no systems: these
/// lines are about data).
fn journal_line(id: &DeployId, event: JournalEvent, detail: &str) -> String {
    format!(
        r#"{{ [ -d /var/lib/tether ] || mkdir -p /var/lib/tether; }} && printf '%s\t%s\t%s\t-\t-\tdeployer\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" {id} {event} "{detail}" >>{journal}
"#,
        id = quote(id.as_str()),
        event = quote(event.wire()),
        // Expanded by the shell: `$snaps` and the like are the script's own
        // one-line summaries; the fixed text is quoted.
        detail = detail,
        journal = quote(JOURNAL),
    )
}

/// Which filesystem a volume is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    Btrfs,
    Zfs,
}

impl Fs {
    fn parse(s: &str) -> Option<Fs> {
        match s {
            "btrfs" => Some(Fs::Btrfs),
            "zfs" => Some(Fs::Zfs),
            _ => None,
        }
    }
}

impl fmt::Display for Fs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fs::Btrfs => "btrfs",
            Fs::Zfs => "zfs",
        })
    }
}

/// Why tether took a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotKind {
    /// Before a deploy's activation.
    PreDeploy,
    /// What a volume held when it was restored (what the trial wrote).
    FailedState,
}

impl fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SnapshotKind::PreDeploy => "pre-deploy",
            SnapshotKind::FailedState => "failed-state",
        })
    }
}

/// One of tether's snapshots (or, for a ZFS failed state, its copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub fs: Fs,
    /// The declared subvolume or dataset.
    pub volume: String,
    /// The snapshot's name (`<id>.pre-deploy`, `tether-<id>-pre-deploy`, …).
    pub name: String,
    /// Where it is: a path (btrfs), a snapshot or dataset name (ZFS).
    pub location: String,
    pub kind: SnapshotKind,
    pub deploy_id: String,
    /// When it was taken, `YYYYmmddTHHMMSS` UTC (a pre-deploy snapshot's
    /// is its deploy's start).
    pub taken: String,
}

impl Snapshot {
    /// Reads `<fs> <volume> <name> <location>`; the kind, deploy and time
    /// come from the name, which tether gave it.
    fn parse(line: &str) -> Option<Snapshot> {
        let mut words = line.splitn(4, ' ');
        let fs = Fs::parse(words.next()?)?;
        let volume = words.next()?.to_string();
        let name = words.next()?.to_string();
        let location = words.next()?.to_string();
        let (kind, deploy_id, taken) = match fs {
            Fs::Btrfs => {
                if let Some(id) = name.strip_suffix(".pre-deploy") {
                    (SnapshotKind::PreDeploy, id.to_string(), stamp_of(id))
                } else {
                    let (id, time) = name.split_once(".failed-state.")?;
                    (SnapshotKind::FailedState, id.to_string(), time.to_string())
                }
            }
            Fs::Zfs => {
                let rest = name.strip_prefix("tether-")?;
                if let Some(id) = rest.strip_suffix("-pre-deploy") {
                    (SnapshotKind::PreDeploy, id.to_string(), stamp_of(id))
                } else {
                    let (id, time) = rest.rsplit_once("-failed-state-")?;
                    (SnapshotKind::FailedState, id.to_string(), time.to_string())
                }
            }
        };
        Some(Snapshot {
            fs,
            volume,
            name,
            location,
            kind,
            deploy_id,
            taken,
        })
    }
}

/// The timestamp a deploy id starts with.
fn stamp_of(id: &str) -> String {
    id.split('-').next().unwrap_or(id).to_string()
}

fn snapshots(f: &super::wire::Fields) -> Vec<Snapshot> {
    let mut list: Vec<Snapshot> = all(f, "snap")
        .iter()
        .filter_map(|l| Snapshot::parse(l))
        .collect();
    list.sort_by(|a, b| (&a.volume, &a.taken, &a.name).cmp(&(&b.volume, &b.taken, &b.name)));
    list
}

/// A declaration the host cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "what", rename_all = "kebab-case")]
pub enum StateProblem {
    /// `btrfs` or `zfs` is not installed.
    MissingTool(String),
    /// The path does not exist.
    NoPath(String),
    /// The path is not a btrfs subvolume.
    NotSubvolume(String),
    /// The subvolume is a mount point: a restore could not swap it.
    MountPoint(String),
    NoDataset(String),
    /// `<inner> inside <outer>`: one declared volume contains another (the
    /// merge of defaults and host declared both).
    Nested(String),
    /// A problem this tether does not know.
    Other(String),
}

impl StateProblem {
    fn parse(line: &str) -> StateProblem {
        let (code, what) = line.split_once(' ').unwrap_or((line, ""));
        let what = what.to_string();
        match code {
            "missing-tool" => StateProblem::MissingTool(what),
            "no-path" => StateProblem::NoPath(what),
            "not-subvolume" => StateProblem::NotSubvolume(what),
            "mount-point" => StateProblem::MountPoint(what),
            "no-dataset" => StateProblem::NoDataset(what),
            "nested" => StateProblem::Nested(what),
            _ => StateProblem::Other(line.to_string()),
        }
    }
}

impl fmt::Display for StateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateProblem::MissingTool(t) => write!(f, "state.{t}: the host has no `{t}` command"),
            StateProblem::NoPath(p) => write!(f, "state.btrfs: {p} does not exist on the host"),
            StateProblem::NotSubvolume(p) => {
                write!(f, "state.btrfs: {p} is not a btrfs subvolume")
            }
            StateProblem::MountPoint(p) => write!(
                f,
                "state.btrfs: {p} is a mount point; declare the subvolume's path inside its filesystem's mounted top level, so that a restore can swap it"
            ),
            StateProblem::NoDataset(d) => write!(f, "state.zfs: no dataset {d} on the host"),
            StateProblem::Nested(what) => write!(
                f,
                "state: {what}; declare volumes that do not contain each other"
            ),
            StateProblem::Other(s) => write!(f, "state: {s}"),
        }
    }
}

/// Checks the host's `state` declaration, changing nothing.
#[derive(Debug, Clone)]
pub struct CheckState {
    pub spec: StateSpec,
}

impl Operation for CheckState {
    type Output = Vec<StateProblem>;
    const OP: Op = Op::CheckState;

    fn script(&self) -> String {
        format!(
            "set -u\n{}state_check\necho check=done\n",
            preamble(&self.spec)
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<Vec<StateProblem>, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "check", "checking the state declaration")?;
        Ok(all(&f, "problem")
            .iter()
            .map(|l| StateProblem::parse(l))
            .collect())
    }
}

/// A volume an operation failed on, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFailure {
    pub fs: Fs,
    pub volume: String,
    pub why: String,
}

impl VolumeFailure {
    fn parse(line: &str) -> Option<VolumeFailure> {
        let mut words = line.splitn(3, ' ');
        Some(VolumeFailure {
            fs: Fs::parse(words.next()?)?,
            volume: words.next()?.to_string(),
            why: words.next().unwrap_or("failed").to_string(),
        })
    }
}

impl fmt::Display for VolumeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.fs, self.volume, self.why)
    }
}

/// Takes a deploy's pre-deploy snapshots and records them in the host's
/// journal.
#[derive(Debug, Clone)]
pub struct TakeSnapshots {
    pub spec: StateSpec,
    pub deploy_id: DeployId,
}

impl Operation for TakeSnapshots {
    type Output = Result<Vec<Snapshot>, VolumeFailure>;
    const OP: Op = Op::TakeSnapshots;

    fn script(&self) -> String {
        let id = &self.deploy_id;
        format!(
            r#"set -u
umask 077
{preamble}out=$(state_take {qid})
rc=$?
printf '%s\n' "$out"
snaps=
while IFS= read -r l; do case "$l" in snap=*) w=${{l#snap=}}; w=${{w#* }}; snaps="$snaps ${{w%% *}}" ;; esac; done <<EOT
$out
EOT
if [ "$rc" = 0 ]; then
{ok}else
{failed}fi
echo take=done
"#,
            preamble = preamble(&self.spec),
            qid = quote(id.as_str()),
            ok = journal_line(
                id,
                JournalEvent::Snapshotted,
                "pre-deploy snapshots of$snaps"
            ),
            failed = journal_line(
                id,
                JournalEvent::SnapshotFailed,
                "pre-deploy snapshots failed after$snaps; the deploy was refused before activation"
            ),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<Self::Output, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "take", "taking the snapshots")?;
        if let Some(failure) = all(&f, "take_failed")
            .first()
            .and_then(|l| VolumeFailure::parse(l))
        {
            return Ok(Err(failure));
        }
        Ok(Ok(snapshots(&f)))
    }
}

/// Lists tether's snapshots of the declared volumes.
#[derive(Debug, Clone)]
pub struct ListSnapshots {
    pub spec: StateSpec,
}

impl Operation for ListSnapshots {
    type Output = Vec<Snapshot>;
    const OP: Op = Op::ListSnapshots;

    fn script(&self) -> String {
        format!(
            "set -u\n{}state_list\necho list=done\n",
            preamble(&self.spec)
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<Vec<Snapshot>, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "list", "listing the snapshots")?;
        Ok(snapshots(&f))
    }
}

/// One volume put back to a pre-deploy snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub fs: Fs,
    pub volume: String,
    /// Where what it held before the restore is kept.
    pub failed_state: String,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub restored: Vec<Restored>,
    /// The volume the restore stopped at; volumes after it were not touched.
    pub failure: Option<VolumeFailure>,
    pub warnings: Vec<String>,
}

impl RestoreReport {
    /// Reads `restored=`, `restore_failed=` and `warning=` lines.
    pub(crate) fn from_fields(f: &super::wire::Fields) -> RestoreReport {
        RestoreReport {
            restored: all(f, "restored")
                .iter()
                .filter_map(|l| {
                    let mut w = l.splitn(3, ' ');
                    Some(Restored {
                        fs: Fs::parse(w.next()?)?,
                        volume: w.next()?.to_string(),
                        failed_state: w.next()?.to_string(),
                    })
                })
                .collect(),
            failure: all(f, "restore_failed")
                .first()
                .and_then(|l| VolumeFailure::parse(l)),
            warnings: all(f, "warning"),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }

    /// One line for journals and reports.
    pub fn summary(&self) -> String {
        let kept: Vec<String> = self
            .restored
            .iter()
            .map(|r| format!("{} (failed state kept at {})", r.volume, r.failed_state))
            .collect();
        match &self.failure {
            None => format!("data restored: {}", kept.join(", ")),
            Some(f) if kept.is_empty() => format!("data not restored: {f}"),
            Some(f) => format!("data restored only in part: {}; then {f}", kept.join(", ")),
        }
    }
}

/// Why a restore on request did not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RestoreRefusal {
    /// A deploy is on trial (its id).
    TrialInProgress { deploy: String },
    /// A deploy is arming right now (the host's arm lock stayed taken).
    DeployArming,
}

/// `tether snapshots restore`: stops the units, keeps the failed state,
/// restores deploy `deploy_id`'s pre-deploy snapshots and starts the units
/// again. Refused while a deploy is on trial.
#[derive(Debug, Clone)]
pub struct RestoreSnapshots {
    pub spec: StateSpec,
    pub deploy_id: DeployId,
}

impl Operation for RestoreSnapshots {
    type Output = Result<RestoreReport, RestoreRefusal>;
    const OP: Op = Op::RestoreSnapshots;

    fn script(&self) -> String {
        let id = &self.deploy_id;
        format!(
            r#"set -u
umask 077
# Held for the whole restore: a deploy arming meanwhile waits, then is
# refused before it activates anything.
[ -d {run} ] || mkdir -p {run}
exec 9>>{run}/arm.lock || {{ echo arming=yes; echo restore=done; exit 0; }}
flock -w 10 9 || {{ echo arming=yes; echo restore=done; exit 0; }}
holder=; read -r holder 2>/dev/null <{lock}/deploy
unit=; read -r unit 2>/dev/null <{lock}/unit
if [ -n "$holder" ] && [ -n "$unit" ] && systemctl is-active --quiet "$unit"; then
    echo "busy=$holder"; echo restore=done; exit 0
fi
bst=; read -r bst 2>/dev/null <{boot_trial}/state
case "$bst" in
    {boot_pending})
        holder=; read -r holder 2>/dev/null <{boot_trial}/deploy
        echo "busy=$holder"; echo restore=done; exit 0 ;;
esac
{preamble}out=$(state_restore {qid})
rc=$?
printf '%s\n' "$out"
summary=$(printf '%s\n' "$out" | while IFS= read -r l; do case "$l" in restored=* | restore_failed=*) printf '%s; ' "$l" ;; esac; done | tr '\t' ' ')
if [ -n "$STATE_UNITS" ]; then
    systemctl start $STATE_UNITS >/dev/null 2>&1 || echo "warning=starting $STATE_UNITS failed"
fi
if [ "$rc" = 0 ]; then
{ok}else
{failed}fi
echo restore=done
"#,
            lock = quote(LOCK_DIR),
            run = quote(RUN_DIR),
            boot_trial = quote(BOOT_TRIAL_DIR),
            boot_pending = BootTrialState::pending_pattern(),
            preamble = preamble(&self.spec),
            qid = quote(id.as_str()),
            ok = journal_line(
                id,
                JournalEvent::DataRestored,
                "restored on request: $summary"
            ),
            failed = journal_line(
                id,
                JournalEvent::DataRestoreFailed,
                "restore on request failed: $summary"
            ),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<Self::Output, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "restore", "the restore")?;
        if first(&f, "arming").is_some() {
            return Ok(Err(RestoreRefusal::DeployArming));
        }
        if let Some(deploy) = all(&f, "busy").first() {
            return Ok(Err(RestoreRefusal::TrialInProgress {
                deploy: one_line(deploy),
            }));
        }
        Ok(Ok(RestoreReport::from_fields(&f)))
    }
}

/// What pruning removed, and what it could not.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// `<fs> <volume> <name>` of each snapshot removed.
    pub pruned: Vec<String>,
    pub failed: Vec<String>,
}

/// Removes tether's snapshots beyond `keep` per volume: never one of a
/// deploy on trial (or `protect`), never a failed state younger than the
/// newest confirmed deploy in the host's journal.
#[derive(Debug, Clone)]
pub struct PruneSnapshots {
    pub spec: StateSpec,
    pub keep: u32,
    pub protect: Option<DeployId>,
}

impl Operation for PruneSnapshots {
    type Output = PruneReport;
    const OP: Op = Op::PruneSnapshots;

    fn script(&self) -> String {
        format!(
            r#"set -u
protected={protect}
holder=; read -r holder 2>/dev/null <{lock}/deploy
bholder=; read -r bholder 2>/dev/null <{boot_trial}/deploy
confirmed=
if [ -r {journal} ]; then
    while IFS='	' read -r _ id event _; do
        [ "$event" = {confirmed_event} ] && confirmed=$id
    done <{journal}
fi
{preamble}state_prune {keep} "$protected $holder $bholder" "$confirmed"
echo prune=done
"#,
            protect = quote(self.protect.as_ref().map(DeployId::as_str).unwrap_or("")),
            lock = quote(LOCK_DIR),
            boot_trial = quote(BOOT_TRIAL_DIR),
            journal = quote(JOURNAL),
            confirmed_event = quote(JournalEvent::Confirmed.wire()),
            preamble = preamble(&self.spec),
            keep = self.keep.max(1),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<PruneReport, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "prune", "pruning the snapshots")?;
        Ok(PruneReport {
            pruned: all(&f, "pruned"),
            failed: all(&f, "prune_failed"),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_give_kind_deploy_and_time() {
        let s = Snapshot::parse("btrfs /srv/db 20261203T101010-ab12cd.pre-deploy /srv/.tether-snapshots/db/20261203T101010-ab12cd.pre-deploy").unwrap();
        assert_eq!(
            (s.kind, s.deploy_id.as_str(), s.taken.as_str()),
            (
                SnapshotKind::PreDeploy,
                "20261203T101010-ab12cd",
                "20261203T101010"
            )
        );
        let s = Snapshot::parse("zfs tank/db tether-20261203T101010-ab12cd-revert-failed-state-20261203T101500 tank/tether-failed/x/db").unwrap();
        assert_eq!(
            (s.kind, s.deploy_id.as_str(), s.taken.as_str()),
            (
                SnapshotKind::FailedState,
                "20261203T101010-ab12cd-revert",
                "20261203T101500"
            )
        );
        assert!(Snapshot::parse("zfs tank/db usersnap tank/db@usersnap").is_none());
    }

    #[test]
    fn a_restore_report_says_what_was_kept_and_where_it_stopped() {
        let f = parse_fields("restored=btrfs /srv/db /srv/.tether-snapshots/db/x.failed-state.1\nrestore_failed=zfs tank/db rolling tank/db back would destroy the newer snapshots tank/db@mine\n");
        let r = RestoreReport::from_fields(&f);
        assert!(!r.succeeded());
        assert!(r.summary().contains("in part"), "{}", r.summary());
        assert!(r.summary().contains("tank/db@mine"), "{}", r.summary());
    }
}
