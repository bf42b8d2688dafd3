//! `tether plan`: what a deploy would change on a host, computed without
//! changing it. Pure pieces (store path names and versions, the closure
//! difference, the unit changes `switch-to-configuration dry-activate`
//! prints or that unit files suggest) and the per-host flow over a
//! [`Target`], which only reads (and, with `--copy`, copies the closure).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::identity::{self, Expected, Seen};
use crate::model::{HostName, StorePath, TrialMode};
use crate::ports::{call, call_streaming, CallError, Conn, RemoteError, Target};
use crate::remote::plan::{CurrentSystem, HostSystem, UnitFiles};
use crate::remote::{CheckState, DryActivate, Preflight, RebootReason, TrialNeeds};
use crate::report::IdentityProblem;
use crate::text::tail;
use crate::trial_choice::{choose_trial, TrialKind};

// ---------------------------------------------------------------------------
// Store path names and versions

/// The name part of a store path (`/nix/store/<hash>-<name>` → `<name>`),
/// or `None` when the path does not look like a store path.
pub fn store_name(path: &str) -> Option<&str> {
    let base = path.rsplit('/').next()?;
    let (hash, name) = base.split_at_checked(32)?;
    let name = name.strip_prefix('-')?;
    let hash_ok = hash.chars().all(|c| c.is_ascii_alphanumeric());
    (hash_ok && !name.is_empty()).then_some(name)
}

/// Splits a store name into package name and version the way Nix's
/// `parseDrvName` (and nvd) do: the version starts after the first `-`
/// that is followed by a digit. `hello-2.12` → (`hello`, `2.12`);
/// `system-path` → (`system-path`, none).
pub fn split_name(name: &str) -> (&str, Option<&str>) {
    let bytes = name.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return (&name[..i], Some(&name[i + 1..]));
        }
    }
    (name, None)
}

/// Next version component as Nix's `nextComponent`: separators `.` and `-`
/// are skipped, then a run of digits or a run of other characters.
fn next_component(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(['.', '-']);
    let digits = s.starts_with(|c: char| c.is_ascii_digit());
    let end = s
        .find(|c: char| {
            if digits {
                !c.is_ascii_digit()
            } else {
                c.is_ascii_digit() || c == '.' || c == '-'
            }
        })
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Nix's `componentsLT`: numbers compare as numbers, `pre` sorts first,
/// a missing component before a number, letters before numbers.
fn component_lt(c1: &str, c2: &str) -> bool {
    let n1: Option<u128> = c1.parse().ok();
    let n2: Option<u128> = c2.parse().ok();
    match (n1, n2) {
        (Some(a), Some(b)) => a < b,
        _ if c1.is_empty() && n2.is_some() => true,
        _ if c1 == "pre" && c2 != "pre" => true,
        _ if c2 == "pre" => false,
        (_, Some(_)) => true,
        (Some(_), _) => false,
        _ => c1 < c2,
    }
}

/// Compares two versions exactly as `builtins.compareVersions` does.
pub fn compare_versions(v1: &str, v2: &str) -> Ordering {
    let (mut p1, mut p2) = (v1, v2);
    while !p1.is_empty() || !p2.is_empty() {
        let (c1, r1) = next_component(p1);
        let (c2, r2) = next_component(p2);
        if component_lt(c1, c2) {
            return Ordering::Less;
        }
        if component_lt(c2, c1) {
            return Ordering::Greater;
        }
        (p1, p2) = (r1, r2);
    }
    Ordering::Equal
}

// ---------------------------------------------------------------------------
// Closures and their difference

/// A closure: every store path in it and its NAR size in bytes.
pub use crate::model::{Closure, ClosureSigners};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected `nix path-info --json` output: {0}")]
pub struct PathInfoError(pub String);

/// Parses `nix path-info -r --json`: a list of `{path, narSize}` objects
/// (Nix up to 2.18) or an object keyed by path (Nix 2.19 and later, where an
/// invalid path maps to `null`).
pub fn parse_path_info_json(json: &str) -> Result<Closure, PathInfoError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| PathInfoError(e.to_string()))?;
    let size = |v: &serde_json::Value| v.get("narSize").and_then(serde_json::Value::as_u64);
    let mut closure = Closure::new();
    match value {
        serde_json::Value::Array(items) => {
            for item in items {
                let path = item
                    .get("path")
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| PathInfoError("an entry has no path".into()))?;
                closure.insert(path.to_string(), size(&item).unwrap_or(0));
            }
        }
        serde_json::Value::Object(map) => {
            for (path, info) in map {
                if !info.is_null() {
                    closure.insert(path, size(&info).unwrap_or(0));
                }
            }
        }
        _ => return Err(PathInfoError("neither a list nor an object".into())),
    }
    Ok(closure)
}

/// Reads [`ClosureSigners`] from `nix path-info -r --json` (a signature
/// is `NAME:BASE64`; a path with `ca` is content-addressed).
pub fn closure_signers(json: &str) -> Result<ClosureSigners, PathInfoError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| PathInfoError(e.to_string()))?;
    let infos: Vec<&serde_json::Value> = match &value {
        serde_json::Value::Array(items) => items.iter().collect(),
        serde_json::Value::Object(map) => map.values().filter(|v| !v.is_null()).collect(),
        _ => return Err(PathInfoError("neither a list nor an object".into())),
    };
    let mut every: Option<BTreeSet<String>> = None;
    for info in infos {
        if info.get("ca").is_some_and(|ca| !ca.is_null()) {
            continue;
        }
        let names: BTreeSet<String> = info
            .get("signatures")
            .and_then(serde_json::Value::as_array)
            .map(|sigs| {
                sigs.iter()
                    .filter_map(serde_json::Value::as_str)
                    .filter_map(|sig| sig.split_once(':').map(|(name, _)| name.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        every = Some(match every {
            None => names,
            Some(so_far) => so_far.intersection(&names).cloned().collect(),
        });
    }
    Ok(every.map_or(ClosureSigners::NoneNeeded, ClosureSigners::Keys))
}

/// A package and the versions of it in a closure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub versions: Vec<String>,
}

/// A package present before and after, with other versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionChange {
    pub name: String,
    pub old: Vec<String>,
    pub new: Vec<String>,
}

/// What changes between the host's current closure and the new one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosureDiff {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    /// The newest new version is newer than the newest old one.
    pub upgraded: Vec<VersionChange>,
    pub downgraded: Vec<VersionChange>,
    /// Other version sets, same newest version (e.g. an extra old version).
    pub changed: Vec<VersionChange>,
    /// Store paths only in the new closure (versioned or not).
    pub paths_added: usize,
    pub paths_removed: usize,
    /// Of those, paths whose names carry no version (configuration files,
    /// `system-path`, unit files): counted, not listed as packages.
    pub unversioned_added: usize,
    pub unversioned_removed: usize,
    /// Closure sizes (sum of NAR sizes) in bytes.
    pub size_before: u64,
    pub size_after: u64,
    pub size_change: i64,
}

/// Package name → its versions (sorted oldest first, deduplicated).
fn versions_by_name(closure: &Closure) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in closure.keys() {
        if let Some((pname, Some(version))) = store_name(path).map(split_name) {
            map.entry(pname.to_string())
                .or_default()
                .push(version.to_string());
        }
    }
    for versions in map.values_mut() {
        versions.sort_by(|a, b| compare_versions(a, b).then_with(|| a.cmp(b)));
        versions.dedup();
    }
    map
}

fn is_unversioned(path: &str) -> bool {
    store_name(path).is_none_or(|n| split_name(n).1.is_none())
}

/// The difference from `old` (the host's current closure) to `new`.
pub fn diff_closures(old: &Closure, new: &Closure) -> ClosureDiff {
    let mut diff = ClosureDiff::default();
    let old_pkgs = versions_by_name(old);
    let new_pkgs = versions_by_name(new);
    for (name, versions) in &new_pkgs {
        match old_pkgs.get(name) {
            None => diff.added.push(Package {
                name: name.clone(),
                versions: versions.clone(),
            }),
            Some(before) if before != versions => {
                let change = VersionChange {
                    name: name.clone(),
                    old: before.clone(),
                    new: versions.clone(),
                };
                let newest = |v: &[String]| v.last().cloned().unwrap_or_default();
                match compare_versions(&newest(versions), &newest(before)) {
                    Ordering::Greater => diff.upgraded.push(change),
                    Ordering::Less => diff.downgraded.push(change),
                    Ordering::Equal => diff.changed.push(change),
                }
            }
            Some(_) => {}
        }
    }
    for (name, versions) in &old_pkgs {
        if !new_pkgs.contains_key(name) {
            diff.removed.push(Package {
                name: name.clone(),
                versions: versions.clone(),
            });
        }
    }
    for path in new.keys().filter(|p| !old.contains_key(*p)) {
        diff.paths_added += 1;
        diff.unversioned_added += usize::from(is_unversioned(path));
    }
    for path in old.keys().filter(|p| !new.contains_key(*p)) {
        diff.paths_removed += 1;
        diff.unversioned_removed += usize::from(is_unversioned(path));
    }
    diff.size_before = old.values().sum();
    diff.size_after = new.values().sum();
    diff.size_change = i128::from(diff.size_after)
        .saturating_sub(i128::from(diff.size_before))
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    diff
}

// ---------------------------------------------------------------------------
// Units

/// Where the unit changes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitsSource {
    /// The new system's own `switch-to-configuration dry-activate`, run on
    /// the host after copying the closure (`--copy`).
    DryActivate,
    /// Estimated by tether from the unit files of both systems (nothing copied).
    Estimate,
}

/// Units activation would start, stop, restart or reload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct UnitChanges {
    pub start: Vec<String>,
    pub stop: Vec<String>,
    pub restart: Vec<String>,
    pub reload: Vec<String>,
    /// Other `would …` lines (`would restart systemd`, `would NOT stop …`),
    /// or for an estimate, changed units activation would leave alone.
    pub notes: Vec<String>,
}

impl UnitChanges {
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
            && self.stop.is_empty()
            && self.restart.is_empty()
            && self.reload.is_empty()
    }
}

/// Parses what `switch-to-configuration dry-activate` prints (NixOS's
/// wording, which the lab fixture follows): `would start the following
/// units: a, b` and the same for stop, restart and reload. The Perl and the
/// Rust (`-ng`) implementations print to stderr; pass both streams.
pub fn parse_dry_activate(output: &str) -> UnitChanges {
    let mut units = UnitChanges::default();
    for line in output.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("would ") else {
            continue;
        };
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_string)
                .collect()
        };
        let target = match rest.split_once(" the following units: ") {
            Some(("start", l)) => Some((&mut units.start, l)),
            Some(("stop", l)) => Some((&mut units.stop, l)),
            Some(("restart", l)) => Some((&mut units.restart, l)),
            Some(("reload", l)) => Some((&mut units.reload, l)),
            _ => None,
        };
        match target {
            Some((v, l)) => v.extend(list(l)),
            // "would activate the configuration..." is always printed.
            None if rest.starts_with("activate the configuration") => {}
            None => units.notes.push(line.to_string()),
        }
    }
    units
}

/// The unit (`foo.service`) an entry of `etc/systemd/system` belongs to:
/// drop-ins (`foo.service.d/override.conf`) count as their unit's.
fn unit_of(entry: &str) -> &str {
    match entry.split_once('/') {
        Some((dir, _)) => dir.strip_suffix(".d").unwrap_or(dir),
        None => entry,
    }
}

/// unit → its files' hashes (the unit file and its drop-ins).
fn fingerprints(files: &UnitFiles) -> BTreeMap<&str, Vec<(&str, &str)>> {
    let mut map: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (entry, hash) in &files.hashes {
        map.entry(unit_of(entry))
            .or_default()
            .push((entry.as_str(), hash.as_str()));
    }
    map
}

/// Estimates activation's unit changes from the unit files of the current
/// system (with the units active on the host) and of the new system, with
/// NixOS's main rules: a unit gone from the new system is stopped if active;
/// a new unit is started; a changed unit that is active is restarted, or
/// reloaded when the new unit says `X-ReloadIfChanged=true`, or left alone
/// with `X-RestartIfChanged=false`. (Not modelled: targets, sockets, mounts
/// and units started only through dependencies.)
pub fn estimate_units(old: &UnitFiles, new: &UnitFiles, active: &BTreeSet<String>) -> UnitChanges {
    let mut units = UnitChanges::default();
    let before = fingerprints(old);
    let after = fingerprints(new);
    for (unit, files) in &after {
        match before.get(unit) {
            None => units.start.push(unit.to_string()),
            Some(old_files) if old_files != files => {
                if !active.contains(*unit) {
                    continue;
                }
                if new.no_restart.contains(*unit) {
                    units
                        .notes
                        .push(format!("{unit} changed but has X-RestartIfChanged=false"));
                } else if new.reload.contains(*unit) {
                    units.reload.push(unit.to_string());
                } else {
                    units.restart.push(unit.to_string());
                }
            }
            Some(_) => {}
        }
    }
    for unit in before.keys() {
        if !after.contains_key(unit) && active.contains(*unit) {
            units.stop.push(unit.to_string());
        }
    }
    units
}

// ---------------------------------------------------------------------------
// One host

/// How a host's planning ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanStatus {
    /// Planned (whether or not anything would change).
    Planned,
    /// The host presented another key, machine-id or architecture.
    Refused,
    /// The host could not be read (unreachable, a command failed).
    Failed,
}

/// The units part of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitPlan {
    pub source: UnitsSource,
    #[serde(flatten)]
    pub changes: UnitChanges,
}

/// What a deploy would do to one host.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPlan {
    pub host: HostName,
    pub status: PlanStatus,
    /// Why a host is not planned, as a sentence.
    pub reason: Option<String>,
    /// Why a host is not planned, typed.
    pub cause: Option<PlanProblem>,
    /// The host already runs the new system.
    pub unchanged: bool,
    pub current_system: Option<String>,
    pub new_system: StorePath,
    /// Whether the closure was copied to the host (`--copy`).
    pub copied: bool,
    pub closure: Option<ClosureDiff>,
    pub units: Option<UnitPlan>,
    /// Which trial a deploy would give the change (known once the closure
    /// is on the host: `--copy`).
    pub trial: Option<TrialPlan>,
    /// The pre-deploy snapshots a deploy would take (`<fs> <volume>`; a
    /// ZFS dataset's children with it).
    pub snapshots: Vec<String>,
    pub duration_ms: u64,
}

/// The trial a deploy would give a host's change, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TrialPlan {
    Live,
    /// `--force-live` on a change that needs a boot.
    #[serde(rename_all = "camelCase")]
    LiveForced {
        reasons: Vec<RebootReason>,
    },
    Reboot {
        reasons: Vec<RebootReason>,
    },
    /// The deploy would refuse the host (the sentence).
    Refused {
        reason: String,
    },
}

/// Everything needed to plan one host. The new system's closure and unit
/// files are read on the deployer (where it was built) by the caller.
#[derive(Debug, Clone)]
pub struct PlanJob {
    pub host: HostName,
    pub new_system: StorePath,
    pub platform: Option<String>,
    pub machine_id: Option<String>,
    pub new_closure: Closure,
    pub new_units: UnitFiles,
    /// Copy the closure and run the real `dry-activate`.
    pub copy: bool,
    /// The deploy's trial choice (goal switch).
    pub trial: TrialMode,
    pub force_live: bool,
    pub command_timeout: Duration,
    pub copy_timeout: Duration,
    /// The host's declared state, snapshotted by a deploy.
    pub state: crate::spec::StateSpec,
}

/// Why a host could not be planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PlanProblem {
    /// Not the machine the inventory and the build mean.
    Identity {
        #[serde(flatten)]
        problem: IdentityProblem,
    },
    /// A step got no usable answer.
    Step { step: PlanStep, error: String },
    /// The host cannot honour the inventory's `state`: a deploy is refused.
    State {
        problems: Vec<crate::remote::StateProblem>,
    },
}

/// The steps of planning a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanStep {
    Preflight,
    ReadCurrentSystem,
    Copy,
    DryActivate,
    TrialNeeds,
    CheckState,
}

impl fmt::Display for PlanStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlanStep::Preflight => "preflight",
            PlanStep::ReadCurrentSystem => "reading the current system",
            PlanStep::Copy => "copying the closure",
            PlanStep::DryActivate => "dry-activate",
            PlanStep::TrialNeeds => "reading which trial the change needs",
            PlanStep::CheckState => "checking the state declaration",
        })
    }
}

impl fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanProblem::Identity { problem } => problem.fmt(f),
            PlanProblem::Step { step, error } => write!(f, "{step}: {error}"),
            PlanProblem::State { problems } => write!(
                f,
                "{}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// Plans one host: identity check (pinned key, machine-id, architecture),
/// then its current system's closure and unit files, then the unit
/// changes (the real `dry-activate` after copying, or an estimate). Only
/// the copy, with `--copy`, changes anything on the host: its store.
pub async fn plan_host<T: Target>(target: &T, job: &PlanJob) -> HostPlan {
    let mut plan = HostPlan {
        host: job.host.clone(),
        status: PlanStatus::Planned,
        reason: None,
        cause: None,
        unchanged: false,
        current_system: None,
        new_system: job.new_system.clone(),
        copied: false,
        closure: None,
        units: None,
        trial: None,
        snapshots: Vec::new(),
        duration_ms: 0,
    };
    if let Err(problem) = plan_steps(target, job, &mut plan).await {
        plan.status = match problem {
            PlanProblem::Identity { .. } | PlanProblem::State { .. } => PlanStatus::Refused,
            PlanProblem::Step { .. } => PlanStatus::Failed,
        };
        plan.reason = Some(problem.to_string());
        plan.cause = Some(problem);
    }
    plan
}

async fn plan_steps<T: Target>(
    target: &T,
    job: &PlanJob,
    plan: &mut HostPlan,
) -> Result<(), PlanProblem> {
    let failed = |step: PlanStep| {
        move |e: CallError| PlanProblem::Step {
            step,
            error: e.to_string(),
        }
    };
    let facts = match call(
        target,
        &Preflight::default(),
        Conn::Shared,
        job.command_timeout,
    )
    .await
    {
        Ok(facts) => facts,
        Err(CallError::Remote(RemoteError::HostKey(detail))) => {
            return Err(PlanProblem::Identity {
                problem: IdentityProblem::HostKey { detail },
            })
        }
        Err(e) => return Err(failed(PlanStep::Preflight)(e)),
    };
    let expected = Expected {
        machine_id: job.machine_id.as_deref(),
        platform: job.platform.as_deref(),
    };
    let seen = Seen {
        machine_id: &facts.machine_id,
        arch: &facts.arch,
    };
    identity::check(&expected, &seen).map_err(|problem| PlanProblem::Identity { problem })?;
    plan.current_system = facts.current_system.clone();
    if facts.current_system.as_deref() == Some(job.new_system.as_str()) {
        plan.unchanged = true;
        plan.closure = Some(diff_closures(&job.new_closure, &job.new_closure));
        plan.units = Some(UnitPlan {
            source: if job.copy {
                UnitsSource::DryActivate
            } else {
                UnitsSource::Estimate
            },
            changes: UnitChanges::default(),
        });
        return Ok(());
    }

    if job.state.is_declared() {
        let op = CheckState {
            spec: job.state.clone(),
        };
        let problems = call(target, &op, Conn::Shared, job.command_timeout)
            .await
            .map_err(failed(PlanStep::CheckState))?;
        if !problems.is_empty() {
            return Err(PlanProblem::State { problems });
        }
        plan.snapshots = job
            .state
            .btrfs
            .iter()
            .map(|p| format!("btrfs {p}"))
            .chain(job.state.zfs.iter().map(|d| format!("zfs {d}")))
            .collect();
    }

    let current: HostSystem = call(target, &CurrentSystem, Conn::Shared, job.command_timeout)
        .await
        .map_err(failed(PlanStep::ReadCurrentSystem))?;
    plan.closure = Some(diff_closures(&current.closure, &job.new_closure));

    let changes = if job.copy {
        target
            .copy(&job.new_system, job.copy_timeout)
            .await
            .map_err(|e| failed(PlanStep::Copy)(e.into()))?;
        plan.copied = true;
        let op = DryActivate {
            new_system: job.new_system.clone(),
        };
        let (result, out) = call_streaming(target, &op, Conn::Shared, job.command_timeout, None)
            .await
            .map_err(failed(PlanStep::DryActivate))?;
        if result.exit_code != Some(0) {
            return Err(PlanProblem::Step {
                step: PlanStep::DryActivate,
                error: format!(
                    "switch-to-configuration dry-activate exited {}: {}",
                    result
                        .exit_code
                        .map_or_else(|| "by a signal".to_string(), |c| c.to_string()),
                    tail(&out.stderr, 4)
                ),
            });
        }
        let needs = TrialNeeds {
            new_system: job.new_system.clone(),
            reboot_asked: job.trial == TrialMode::Reboot,
        };
        let needs = call(target, &needs, Conn::Shared, job.command_timeout)
            .await
            .map_err(failed(PlanStep::TrialNeeds))?;
        plan.trial = Some(
            match choose_trial(job.trial, job.force_live, false, &needs) {
                Ok(TrialKind::Live) => TrialPlan::Live,
                Ok(TrialKind::LiveForced { reasons }) => TrialPlan::LiveForced { reasons },
                Ok(TrialKind::Reboot { reasons }) => TrialPlan::Reboot { reasons },
                Err(refusal) => TrialPlan::Refused {
                    reason: refusal.to_string(),
                },
            },
        );
        UnitPlan {
            source: UnitsSource::DryActivate,
            changes: parse_dry_activate(&format!("{}\n{}", out.stdout, out.stderr)),
        }
    } else {
        UnitPlan {
            source: UnitsSource::Estimate,
            changes: estimate_units(&current.units, &job.new_units, &current.active_units),
        }
    };
    plan.units = Some(changes);
    Ok(())
}

/// Whether every host of a plan was planned (else the command fails).
pub fn all_planned(plans: &[HostPlan]) -> bool {
    plans.iter().all(|p| p.status == PlanStatus::Planned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz";

    fn closure(entries: &[(&str, u64)]) -> Closure {
        entries
            .iter()
            .map(|(name, size)| (format!("{H}-{name}"), *size))
            .collect()
    }

    #[test]
    fn names_split_at_the_first_dash_before_a_digit() {
        assert_eq!(split_name("hello-2.12"), ("hello", Some("2.12")));
        assert_eq!(split_name("curl-8.0"), ("curl", Some("8.0")));
        assert_eq!(
            split_name("nixos-system-host1-24.05.19700101.fixture"),
            ("nixos-system-host1", Some("24.05.19700101.fixture"))
        );
        assert_eq!(
            split_name("initrd-linux-6.1.0-fixture"),
            ("initrd-linux", Some("6.1.0-fixture"))
        );
        assert_eq!(split_name("system-path"), ("system-path", None));
        assert_eq!(split_name("etc-x11-2"), ("etc-x11", Some("2")));
        assert_eq!(
            split_name("python3.11-foo-1.0"),
            ("python3.11-foo", Some("1.0"))
        );
    }

    #[test]
    fn store_names_need_a_hash() {
        assert_eq!(store_name(&format!("{H}-hello-2.12")), Some("hello-2.12"));
        assert_eq!(store_name("/nix/store/short-hello"), None);
        assert_eq!(store_name(&format!("{H}hello")), None);
    }

    #[test]
    fn versions_compare_like_nix() {
        use Ordering::*;
        assert_eq!(compare_versions("2.10", "2.12"), Less);
        assert_eq!(compare_versions("2.12", "2.9"), Greater);
        assert_eq!(compare_versions("1.0", "1.0"), Equal);
        assert_eq!(compare_versions("1.0", "1.0.1"), Less);
        assert_eq!(compare_versions("2.3a", "2.3.1"), Less);
        assert_eq!(compare_versions("1.0pre1", "1.0"), Less);
        assert_eq!(compare_versions("1.0-rc1", "1.0.1"), Less);
        assert_eq!(compare_versions("1.0.", "1.0"), Equal);
    }

    #[test]
    fn the_diff_lists_added_removed_upgraded_and_downgraded_packages() {
        let old = closure(&[
            ("hello-2.10", 100),
            ("openssl-3.0", 1000),
            ("zlib-1.3", 50),
            ("system-path", 10),
            ("gone-1", 5),
        ]);
        let new = closure(&[
            ("hello-2.12", 120),
            ("curl-8.0", 300),
            ("openssl-1.1", 900),
            ("zlib-1.3", 50),
            ("system-path", 10),
        ]);
        // Same name, other hash: a rebuilt system-path is an unversioned change.
        let mut new = new;
        new.insert(
            "/nix/store/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-system-path".into(),
            11,
        );
        let d = diff_closures(&old, &new);
        assert_eq!(
            d.added,
            [Package {
                name: "curl".into(),
                versions: vec!["8.0".into()]
            }]
        );
        assert_eq!(
            d.removed,
            [Package {
                name: "gone".into(),
                versions: vec!["1".into()]
            }]
        );
        assert_eq!(
            d.upgraded,
            [VersionChange {
                name: "hello".into(),
                old: vec!["2.10".into()],
                new: vec!["2.12".into()]
            }]
        );
        assert_eq!(d.downgraded.len(), 1);
        assert_eq!(d.downgraded[0].name, "openssl");
        assert!(d.changed.is_empty());
        assert_eq!(d.paths_added, 4);
        assert_eq!(d.unversioned_added, 1);
        assert_eq!(d.paths_removed, 3);
        assert_eq!(d.size_before, 1165);
        assert_eq!(d.size_after, 1391);
        assert_eq!(d.size_change, 226);
    }

    #[test]
    fn an_identical_closure_has_an_empty_diff() {
        let c = closure(&[("hello-2.12", 1), ("system-path", 2)]);
        let d = diff_closures(&c, &c);
        assert!(d.added.is_empty() && d.removed.is_empty() && d.upgraded.is_empty());
        assert_eq!((d.paths_added, d.paths_removed, d.size_change), (0, 0, 0));
    }

    #[test]
    fn several_versions_of_one_package_are_grouped() {
        let old = closure(&[("python3-3.10.1", 1), ("python3-3.11.2", 1)]);
        let new = closure(&[("python3-3.11.2", 1)]);
        let d = diff_closures(&old, &new);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.changed[0].old, ["3.10.1", "3.11.2"]);
        assert_eq!(d.changed[0].new, ["3.11.2"]);
    }

    #[test]
    fn only_keys_that_signed_every_input_addressed_path_count_as_signers() {
        let old = r#"[{"path":"/nix/store/a-x","signatures":["k1:AAA=","k2:BBB="]},
            {"path":"/nix/store/b-y","signatures":["k2:CCC="]},
            {"path":"/nix/store/c-z","ca":"fixed:r:sha256:abc"}]"#;
        let signers = closure_signers(old).unwrap();
        assert_eq!(
            signers,
            ClosureSigners::Keys(BTreeSet::from(["k2".to_string()]))
        );
        assert!(signers.accepted_by(&["k0".into(), "k2".into()]));
        assert!(!signers.accepted_by(&["k1".into()]));
        let new = r#"{"/nix/store/a-x":{"signatures":["k1:AAA="]},"/nix/store/b-y":{},"/nix/store/gone":null}"#;
        assert!(!closure_signers(new).unwrap().accepted_by(&["k1".into()]));
        let only_ca = r#"[{"path":"/nix/store/c-z","ca":"fixed:r:sha256:abc"}]"#;
        assert!(closure_signers(only_ca).unwrap().accepted_by(&[]));
        assert!(closure_signers("3").is_err());
    }

    #[test]
    fn path_info_json_of_old_and_new_nix() {
        let old = format!(
            r#"[{{"path":"{H}-a-1","narSize":10,"narHash":"x"}},{{"path":"{H}-b","narSize":5}}]"#
        );
        let c = parse_path_info_json(&old).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[&format!("{H}-a-1")], 10);
        let new = format!(r#"{{"{H}-a-1":{{"narSize":10}},"{H}-c":null}}"#);
        let c = parse_path_info_json(&new).unwrap();
        assert_eq!(c.len(), 1);
        assert!(parse_path_info_json("3").is_err());
        assert!(parse_path_info_json("not json").is_err());
    }

    #[test]
    fn dry_activate_lines_are_parsed_like_nixos_prints_them() {
        let out = "\
would stop the following units: fixture-old.service
would NOT stop the following changed units: dbus.service
would activate the configuration...
would restart systemd
would reload the following units: nginx.service
would restart the following units: fixture-web.service, fixture-api.service
would start the following units: fixture-new.service, ssh.service
";
        let u = parse_dry_activate(out);
        assert_eq!(u.stop, ["fixture-old.service"]);
        assert_eq!(u.reload, ["nginx.service"]);
        assert_eq!(u.restart, ["fixture-web.service", "fixture-api.service"]);
        assert_eq!(u.start, ["fixture-new.service", "ssh.service"]);
        assert_eq!(
            u.notes,
            [
                "would NOT stop the following changed units: dbus.service",
                "would restart systemd"
            ]
        );
        assert!(parse_dry_activate("activating...\n").is_empty());
    }

    fn units(entries: &[(&str, &str)]) -> UnitFiles {
        UnitFiles {
            hashes: entries
                .iter()
                .map(|(n, h)| (n.to_string(), h.to_string()))
                .collect(),
            ..UnitFiles::default()
        }
    }

    #[test]
    fn the_estimate_compares_unit_files() {
        let old = units(&[
            ("web.service", "a"),
            ("db.service", "b"),
            ("old.service", "c"),
            ("idle.service", "d"),
            ("dropin.service", "e"),
            ("dropin.service.d/override.conf", "f"),
            ("stopped-old.service", "g"),
        ]);
        let mut new = units(&[
            ("web.service", "A"),
            ("db.service", "b"),
            ("new.service", "n"),
            ("idle.service", "D"),
            ("dropin.service", "e"),
            ("dropin.service.d/override.conf", "F"),
            ("reloaded.service", "r2"),
            ("keep.service", "k2"),
        ]);
        let mut old = old;
        old.hashes.insert("reloaded.service".into(), "r1".into());
        old.hashes.insert("keep.service".into(), "k1".into());
        new.reload.insert("reloaded.service".into());
        new.no_restart.insert("keep.service".into());
        let active: BTreeSet<String> = [
            "web.service",
            "db.service",
            "old.service",
            "dropin.service",
            "reloaded.service",
            "keep.service",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let u = estimate_units(&old, &new, &active);
        assert_eq!(u.restart, ["dropin.service", "web.service"]);
        assert_eq!(u.start, ["new.service"]);
        assert_eq!(u.stop, ["old.service"]);
        assert_eq!(u.reload, ["reloaded.service"]);
        assert_eq!(u.notes.len(), 1, "{:?}", u.notes);
    }
}
