//! The reboot trial's operations on a host (docs/deploy.md, "The reboot
//! trial"): preparing it (the new system as a profile generation that is
//! *not* the boot default, its entry as systemd-boot's one-shot choice, and
//! a guard that survives the reboot), looking at it over fresh connections
//! while the host reboots, renewing its lease, confirming it, asking it to
//! roll back, and ending it once persisted.
//!
//! Its state lives in [`BOOT_TRIAL_DIR`] (it must survive the reboot), its
//! guard is `boot_guard.sh` run by [`BOOT_GUARD_UNIT`] from
//! [`BOOT_UNIT_DIR`]: `/etc/systemd/system.control` is in systemd's unit
//! search path on every distribution and NixOS's `/etc` management does not
//! own it (it links `/etc/systemd/system` from the store), so nothing of
//! tether is installed into the system configuration, and the guard removes
//! its two files when the trial ends.

use std::time::Duration;

use super::bootloader::{parse_boot_default, BOOT_DEFAULT_FUNCTION, ONE_SHOT_ENTRY_FUNCTION};
use super::guard::SWITCH_LOCK;
use super::journal::{JournalEntry, JournalEvent};
use super::persist::{Persist, PersistReport};
use super::preflight::{parse_lock_holder, SWITCH_LOCK_PROBE};
use super::state::{state_settings, state_tools, RestoreReport, STATE_FUNCTIONS};
use super::wire::{first, parse_fields, ParseError};
use super::{Op, Operation, ScriptOutput, LOCK_DIR, RESOLVE_FUNCTION, SYSTEM_PROFILE};
use crate::model::{DeployId, StorePath, Token};
use crate::shell::quote;
use crate::spec::StateSpec;
use crate::text::one_line;
use serde::Serialize;

/// Where a reboot trial's state lives on the host (kept across the reboot).
pub const BOOT_TRIAL_DIR: &str = "/var/lib/tether/boot-trial";
/// The guard's unit, started early in every boot while a trial is on.
pub const BOOT_GUARD_UNIT: &str = "tether-boot-trial.service";
/// The unit directory the guard's unit goes into.
pub const BOOT_UNIT_DIR: &str = "/etc/systemd/system.control";
/// The garbage-collector root that keeps the old system for the trial.
const OLD_ROOT: &str = "/nix/var/nix/gcroots/tether/boot-trial-old";

/// The guard's logic; [`guard_preamble`] prepends its settings.
const BOOT_GUARD_LOGIC: &str = include_str!("boot_guard.sh");

/// The guard's unit file and its `sysinit.target.wants` link.
fn unit_files() -> (String, String) {
    (
        format!("{BOOT_UNIT_DIR}/{BOOT_GUARD_UNIT}"),
        format!("{BOOT_UNIT_DIR}/sysinit.target.wants/{BOOT_GUARD_UNIT}"),
    )
}

/// Where a reboot trial is, as `$dir/state` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootTrialState {
    /// The one-shot entry and the guard are in place; the host has not
    /// booted the new system yet.
    Prepared,
    /// The host booted the new system; the guard holds the lease.
    Booted,
    /// Confirmed over a fresh connection; the deployer persists.
    Confirmed,
    /// Not confirmed in time (or asked to): the guard reboots the host into
    /// its default entry.
    RollingBack,
    /// The host booted the old system again; profile and entries restored.
    RolledBack,
    /// The host booted the old system again, but restoring the profile or
    /// the boot entries failed (`$dir/problem` says which).
    RestoreFailed,
    /// Persisted: the new system is the profile and the boot default.
    Finished,
    /// No trial state on the host.
    Missing,
    /// A state this tether does not know.
    Other(String),
}

impl BootTrialState {
    pub const WRITTEN: [BootTrialState; 7] = [
        BootTrialState::Prepared,
        BootTrialState::Booted,
        BootTrialState::Confirmed,
        BootTrialState::RollingBack,
        BootTrialState::RolledBack,
        BootTrialState::RestoreFailed,
        BootTrialState::Finished,
    ];

    pub fn wire(&self) -> &str {
        match self {
            BootTrialState::Prepared => "prepared",
            BootTrialState::Booted => "booted",
            BootTrialState::Confirmed => "confirmed",
            BootTrialState::RollingBack => "rolling-back",
            BootTrialState::RolledBack => "rolled-back",
            BootTrialState::RestoreFailed => "restore-failed",
            BootTrialState::Finished => "finished",
            BootTrialState::Missing => "missing",
            BootTrialState::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> BootTrialState {
        let s = s.trim();
        if s.is_empty() || s == "missing" {
            return BootTrialState::Missing;
        }
        BootTrialState::WRITTEN
            .into_iter()
            .find(|g| g.wire() == s)
            .unwrap_or_else(|| BootTrialState::Other(s.to_string()))
    }

    /// Whether the trial is over (nothing on the host acts any more).
    pub fn is_over(&self) -> bool {
        matches!(
            self,
            BootTrialState::RolledBack
                | BootTrialState::RestoreFailed
                | BootTrialState::Finished
                | BootTrialState::Missing
        )
    }

    /// A `case` pattern matching every state of a trial that is not over
    /// (quoted names joined by `|`).
    pub(crate) fn pending_pattern() -> String {
        BootTrialState::WRITTEN
            .iter()
            .filter(|s| !s.is_over())
            .map(BootTrialState::quoted)
            .collect::<Vec<_>>()
            .join("|")
    }

    fn variable(&self) -> String {
        format!("S_{}", self.wire().to_uppercase().replace('-', "_"))
    }

    fn quoted(&self) -> String {
        quote(self.wire())
    }
}

impl std::fmt::Display for BootTrialState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wire())
    }
}

/// Why a reboot trial ended back on the old system, as the guard records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootTrialCause {
    /// Nobody renewed or confirmed within the lease: the guard rebooted.
    LeaseLapsed,
    /// The deployer asked the guard to reboot (a failed health check).
    Requested,
    /// The host booted the old system without the guard rebooting it: the
    /// trial boot crashed, hung and was power-cycled, or never started the
    /// guard.
    BootedOther,
    /// The host booted the old system again before the guard ever saw the
    /// trial boot (it hung or failed early, then a power cycle).
    NeverBooted,
    /// Confirmed, but the host booted the old system before it was persisted.
    ConfirmedNotPersisted,
    /// The reboot never came; tether undid the prepared trial.
    Abandoned,
}

impl BootTrialCause {
    const ALL: [BootTrialCause; 6] = [
        BootTrialCause::LeaseLapsed,
        BootTrialCause::Requested,
        BootTrialCause::BootedOther,
        BootTrialCause::NeverBooted,
        BootTrialCause::ConfirmedNotPersisted,
        BootTrialCause::Abandoned,
    ];

    pub fn wire(self) -> &'static str {
        match self {
            BootTrialCause::LeaseLapsed => "lease-lapsed",
            BootTrialCause::Requested => "requested",
            BootTrialCause::BootedOther => "booted-other",
            BootTrialCause::NeverBooted => "never-booted",
            BootTrialCause::ConfirmedNotPersisted => "confirmed-not-persisted",
            BootTrialCause::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<BootTrialCause> {
        BootTrialCause::ALL
            .into_iter()
            .find(|c| c.wire() == s.trim())
    }
}

impl std::fmt::Display for BootTrialCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BootTrialCause::LeaseLapsed => {
                "the lease lapsed on the trial boot and the guard rebooted the host"
            }
            BootTrialCause::Requested => "the guard rebooted the host as asked",
            BootTrialCause::BootedOther => {
                "the trial boot never reached the guard's verdict (it crashed or hung and the host was reset)"
            }
            BootTrialCause::NeverBooted => {
                "the trial boot never reached the guard (it hung or failed early) and the host was booted into its default entry"
            }
            BootTrialCause::ConfirmedNotPersisted => {
                "the host rebooted after the confirmation, before the new system was persisted"
            }
            BootTrialCause::Abandoned => "the reboot never came and the prepared trial was undone",
        })
    }
}

/// Everything the host needs for one reboot trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTrialSpec {
    pub deploy_id: DeployId,
    pub token: Token,
    /// What the host runs and boots now: what a failed trial returns to.
    pub old_system: StorePath,
    pub new_system: StorePath,
    /// The new system is this existing profile generation (`tether
    /// rollback`): the trial boots it and a failed trial keeps it; otherwise
    /// a new generation is made, and a failed trial deletes it.
    pub generation: Option<u32>,
    /// The lease once the deployer renews it.
    pub lease: Duration,
    /// The lease the guard starts with on the trial boot: the deployer must
    /// first see the host back.
    pub first_lease: Duration,
    pub deployer: String,
    /// The data to restore when the trial rolls back (`restoreOnRollback`).
    pub state: Option<StateSpec>,
}

/// The state names, the settings the guard reads from its directory, and
/// its journal function; with `state`, the data restore's settings and
/// functions (`state.sh`).
fn guard_preamble(state: Option<&StateSpec>) -> String {
    let mut s = format!(
        "dir={dir}\nunit_files={units}\nold_root={root}\n",
        dir = quote(BOOT_TRIAL_DIR),
        units = quote(&format!("{} {}", unit_files().0, unit_files().1)),
        root = quote(OLD_ROOT),
    );
    for state in BootTrialState::WRITTEN {
        s.push_str(&format!("{}={}\n", state.variable(), state.quoted()));
    }
    for event in JournalEvent::ALL {
        s.push_str(&format!("{}={}\n", event.variable(), quote(event.wire())));
    }
    match state {
        Some(spec) => {
            s.push_str("STATE_RESTORE=yes\n");
            for (name, value) in state_settings(spec) {
                s.push_str(&format!("{name}={}\n", quote(&value)));
            }
            s.push_str(STATE_FUNCTIONS);
            s.push('\n');
        }
        None => s.push_str("STATE_RESTORE=no\n"),
    }
    s.push_str(
        r#"for v in deploy new old old_gen new_gen created entry first_lease; do
    eval "$v=" && read -r "$v" 2>/dev/null <"$dir/$v"
done
journal() {
    [ -d /var/lib/tether ] || mkdir -p /var/lib/tether
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$deploy" "$1" \
        "$old" "$new" "guard" "$2" >>/var/lib/tether/journal
}
"#,
    );
    s
}

/// The guard script as the host keeps it.
pub(crate) fn boot_guard_script(state: Option<&StateSpec>) -> String {
    format!("{}{BOOT_GUARD_LOGIC}", guard_preamble(state))
}

/// A here-document delimiter no script of tether's contains.
const EOF_MARK: &str = "TETHER_BOOT_GUARD_EOF";

/// Prepares a reboot trial: checks the host still runs and boots the old
/// system and has a one-shot-capable boot loader, adds the new system as a
/// profile generation, lets the *old* system's boot loader installer write
/// the entries (so the old generation stays the default), finds the new
/// generation's entry, installs the guard and sets the entry as the boot
/// loader's one-shot choice. Anything failing after the profile changed is
/// undone before it answers.
#[derive(Debug, Clone)]
pub struct PrepareBootTrial {
    pub spec: BootTrialSpec,
}

/// How preparing ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareResult {
    /// Ready to reboot into `entry` once.
    Ready {
        entry: String,
        old_generation: Option<u32>,
        new_generation: Option<u32>,
    },
    /// Another trial (live or reboot) is on.
    Busy {
        deploy: String,
    },
    /// The host runs another system than the preflight saw.
    SystemChanged {
        now: Option<String>,
    },
    /// The host does not boot the system it runs by default.
    OldNotDefault {
        boots: Option<String>,
    },
    /// No systemd-boot (`bootctl is-installed` fails): no one-shot boot.
    NoOneShot,
    MissingTool {
        tool: String,
    },
    /// A step failed (and what preparing changed was undone, unless
    /// `undone` is false).
    Failed {
        step: PrepareStep,
        detail: String,
        undone: bool,
    },
}

/// The steps of preparing that can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrepareStep {
    StateDir,
    Profile,
    BootLoader,
    NoEntry,
    DefaultMoved,
    Guard,
    OneShot,
    /// Scheduling the reboot (the deployer's step after preparing).
    Reboot,
}

impl PrepareStep {
    const ALL: [PrepareStep; 8] = [
        PrepareStep::StateDir,
        PrepareStep::Profile,
        PrepareStep::BootLoader,
        PrepareStep::NoEntry,
        PrepareStep::DefaultMoved,
        PrepareStep::Guard,
        PrepareStep::OneShot,
        PrepareStep::Reboot,
    ];

    fn wire(self) -> &'static str {
        match self {
            PrepareStep::StateDir => "state-dir",
            PrepareStep::Profile => "profile",
            PrepareStep::BootLoader => "boot-loader",
            PrepareStep::NoEntry => "no-entry",
            PrepareStep::DefaultMoved => "default-moved",
            PrepareStep::Guard => "guard",
            PrepareStep::OneShot => "one-shot",
            PrepareStep::Reboot => "reboot",
        }
    }
}

impl std::fmt::Display for PrepareStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrepareStep::StateDir => "creating the trial's state directory",
            PrepareStep::Profile => "adding the new system as a profile generation",
            PrepareStep::BootLoader => "writing the boot entries with the old system's installer",
            PrepareStep::NoEntry => "finding the new generation's boot entry",
            PrepareStep::DefaultMoved => "keeping the old system the boot default",
            PrepareStep::Guard => "installing the boot-trial guard",
            PrepareStep::OneShot => "setting the one-shot boot entry (bootctl set-oneshot)",
            PrepareStep::Reboot => "rebooting into the trial",
        })
    }
}

/// What preparing printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareReport {
    pub result: PrepareResult,
    /// The boot the host was on when it answered.
    pub boot_id: String,
}

impl Operation for PrepareBootTrial {
    type Output = PrepareReport;
    const OP: Op = Op::PrepareBootTrial;

    fn script(&self) -> String {
        let spec = &self.spec;
        let (unit, wants) = unit_files();
        let journal = JournalEntry {
            deploy_id: spec.deploy_id.clone(),
            event: JournalEvent::Armed,
            old: Some(spec.old_system.clone()),
            new: spec.new_system.clone(),
            deployer: spec.deployer.clone(),
            detail: format!(
                "reboot trial prepared: one-shot boot of the new system, lease {}s",
                spec.first_lease.as_secs()
            ),
        }
        .append_script();
        format!(
            r#"set -u
umask 077
dir={dir}
new={new}
old={old}
profile={profile}
unit={unit}
wants={wants}
old_root={old_root}
{resolve}
{boot_default}{one_shot_entry}read -r boot </proc/sys/kernel/random/boot_id
echo "boot_id=$boot"
answer() {{ echo "prepare=$1"; echo "prepare_end=done"; exit 0; }}
paths=
for t in sh flock systemctl systemd-run bootctl nix-env readlink cat mv rm sleep date mkdir {state_tools}; do
    p=$(command -v "$t") || {{ echo "missing=$t"; answer missing-tool; }}
    paths="$paths $p"
done
# The guard runs early in boot with a bare PATH: the directories of the
# tools as they resolve now (store paths on NixOS).
tool_path=
for p in $(readlink -f $paths); do
    d=${{p%/*}}
    case ":$tool_path:" in *":$d:"*) ;; *) tool_path="$tool_path${{tool_path:+:}}$d" ;; esac
done
# One preparation at a time, and none while a trial is on.
nothing_done() {{ printf 'step=%s\ndetail=%s\nundone=yes\n' {s_state_dir} "$1"; answer failed; }}
mkdir -p "${{dir%/*}}" || nothing_done "mkdir ${{dir%/*}}"
exec 7>>"$dir.lock" || nothing_done "open $dir.lock"
flock -w 10 7 || {{ echo "busy=another preparation"; answer busy; }}
st=; [ -r "$dir/state" ] && read -r st <"$dir/state"
case "$st" in
    {prepared}|{booted}|{confirmed}|{rolling_back})
        d=; read -r d 2>/dev/null <"$dir/deploy"; echo "busy=$d"; answer busy ;;
esac
if [ -d {lock} ]; then
    lu=; read -r lu 2>/dev/null <{lock}/unit
    if [ -n "$lu" ] && systemctl is-active --quiet "$lu" 2>/dev/null; then
        d=; read -r d 2>/dev/null <{lock}/deploy; echo "busy=$d"; answer busy
    fi
fi
resolve /run/current-system
[ "$r" = "$old" ] || {{ echo "now=$r"; answer system-changed; }}
sd_boot || answer no-one-shot
boot_default "$old"
[ "$boot_ok" = yes ] || answer old-not-default
fail() {{ printf 'step=%s\n' "$1"; printf 'detail=%s\n' "$(printf '%s' "$2" | tr '\n\t' '  ' | cut -c1-400)"; echo "undone=${{3:-yes}}"; answer failed; }}
old_link=$(readlink "$profile" 2>/dev/null); old_gen=${{old_link#system-}}; old_gen=${{old_gen%-link}}
rm -rf "$dir" && mkdir -p "$dir" || fail {s_state_dir} "mkdir $dir"
put() {{ printf '%s\n' "$2" >"$dir/$1" || fail {s_state_dir} "writing $dir/$1"; }}
put deploy {deploy}
put token {token}
put new "$new"
put old "$old"
put old_gen "$old_gen"
put first_lease {first_lease}
existing_gen={existing_gen}
if [ -n "$existing_gen" ]; then
    created=no
    out=$(nix-env -p "$profile" --switch-generation "$existing_gen" 2>&1) || fail {s_profile} "$out"
    resolve "$profile"; [ "$r" = "$new" ] || {{ nix-env -p "$profile" --switch-generation "$old_gen" >/dev/null 2>&1; fail {s_profile} "generation $existing_gen is not $new"; }}
else
    # Nix reuses the newest generation when it already is this system: a
    # failed trial deletes only a generation it made.
    newest=0
    for l in "$profile"-*-link; do
        [ -e "$l" ] || continue
        n=${{l##*/system-}}; n=${{n%-link}}
        [ "$n" -gt "$newest" ] 2>/dev/null && newest=$n
    done
    out=$(nix-env -p "$profile" --set "$new" 2>&1) || fail {s_profile} "$out"
    new_link=$(readlink "$profile" 2>/dev/null); n=${{new_link#system-}}; n=${{n%-link}}
    created=no
    [ "$n" -gt "$newest" ] 2>/dev/null && created=yes
fi
printf '%s\n' "$created" >"$dir/created"
new_link=$(readlink "$profile" 2>/dev/null); new_gen=${{new_link#system-}}; new_gen=${{new_gen%-link}}
printf '%s\n' "$new_gen" >"$dir/new_gen"
undo() {{
    nix-env -p "$profile" --switch-generation "$old_gen" >/dev/null 2>&1 \
        && {{ [ "$created" = no ] || nix-env -p "$profile" --delete-generations "$new_gen" >/dev/null 2>&1; }} \
        && "$old/bin/switch-to-configuration" boot >/dev/null 2>&1
    u=$?
    rm -f "$unit" "$wants" "$old_root"
    bootctl set-oneshot "" >/dev/null 2>&1
    rm -rf "$dir"
    [ "$u" = 0 ] && undone=yes || undone=no
}}
# The old system's own installer writes an entry for every generation and
# keeps its own generation the default.
out=$("$old/bin/switch-to-configuration" boot 2>&1)
rc=$?
if [ "$rc" != 0 ]; then undo; fail {s_boot_loader} "exit $rc: $(printf '%s' "$out" | tail -n 3)" "$undone"; fi
one_shot_entry "$new"
[ -n "$entry" ] || {{ undo; fail {s_no_entry} "no boot entry has init=$new/init" "$undone"; }}
printf '%s\n' "$entry" >"$dir/entry"
boot_default "$old"
[ "$boot_ok" = yes ] || {{ undo; fail {s_default_moved} "the default entry is no longer the old system" "$undone"; }}
mkdir -p "${{old_root%/*}}" && ln -sfn "$old" "$old_root" || {{ undo; fail {s_guard} "gc root $old_root" "$undone"; }}
cat >"$dir/guard" <<'{eof}' || {{ undo; fail {s_guard} "writing $dir/guard" "$undone"; }}
{guard}
{eof}
mkdir -p "${{wants%/*}}" || {{ undo; fail {s_guard} "mkdir ${{wants%/*}}" "$undone"; }}
{{
    echo "[Unit]"
    echo "Description=tether reboot trial guard (deploy {deploy})"
    echo "DefaultDependencies=no"
    echo "After=local-fs.target"
    echo "RequiresMountsFor=$dir /boot"{state_mounts}
    echo "Before=shutdown.target"
    echo "Conflicts=shutdown.target"
    echo "IgnoreOnIsolate=yes"
    echo "[Service]"
    echo "Type=simple"
    echo "Restart=on-failure"
    echo "Environment=PATH=$tool_path"
    echo "ExecStart=$(readlink -f "$(command -v sh)") $dir/guard"
}} >"$unit.new" && mv -f "$unit.new" "$unit" && chmod 0644 "$unit" \
    && ln -sfn "../{unit_name}" "$wants" || {{ undo; fail {s_guard} "writing $unit" "$undone"; }}
printf '%s\n' "$boot" >"$dir/prepared_boot_id" && printf '%s\n' {prepared} >"$dir/state" \
    || {{ undo; fail {s_state_dir} "writing $dir/state" "$undone"; }}
out=$(bootctl set-oneshot "$entry" 2>&1) || {{ undo; fail {s_one_shot} "$out" "$undone"; }}
{journal}echo "entry=$entry"
echo "old_gen=$old_gen"
echo "new_gen=$new_gen"
answer ready
"#,
            dir = quote(BOOT_TRIAL_DIR),
            new = quote(spec.new_system.as_str()),
            old = quote(spec.old_system.as_str()),
            profile = quote(SYSTEM_PROFILE),
            unit = quote(&unit),
            wants = quote(&wants),
            unit_name = BOOT_GUARD_UNIT,
            old_root = quote(OLD_ROOT),
            lock = quote(LOCK_DIR),
            resolve = RESOLVE_FUNCTION,
            boot_default = BOOT_DEFAULT_FUNCTION,
            one_shot_entry = ONE_SHOT_ENTRY_FUNCTION,
            prepared = BootTrialState::Prepared.quoted(),
            booted = BootTrialState::Booted.quoted(),
            confirmed = BootTrialState::Confirmed.quoted(),
            rolling_back = BootTrialState::RollingBack.quoted(),
            deploy = quote(spec.deploy_id.as_str()),
            token = quote(spec.token.as_str()),
            first_lease = spec.first_lease.as_secs().max(1),
            s_state_dir = PrepareStep::StateDir.wire(),
            s_profile = PrepareStep::Profile.wire(),
            s_boot_loader = PrepareStep::BootLoader.wire(),
            s_no_entry = PrepareStep::NoEntry.wire(),
            s_default_moved = PrepareStep::DefaultMoved.wire(),
            s_guard = PrepareStep::Guard.wire(),
            s_one_shot = PrepareStep::OneShot.wire(),
            eof = EOF_MARK,
            existing_gen = spec.generation.map(|g| g.to_string()).unwrap_or_default(),
            state_tools = spec.state.as_ref().map(state_tools).unwrap_or_default(),
            // A restore as the old system boots needs the subvolumes mounted
            // (validated paths: no whitespace, nothing a shell expands).
            state_mounts = spec
                .state
                .as_ref()
                .map(|s| s
                    .btrfs
                    .iter()
                    .map(|p| quote(&format!(" {p}")))
                    .collect::<String>())
                .unwrap_or_default(),
            guard = boot_guard_script(spec.state.as_ref()),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<PrepareReport, ParseError> {
        let f = parse_fields(&out.stdout);
        if first(&f, "prepare_end") != Some("done") {
            return Err(ParseError(
                "preparing the reboot trial did not finish".into(),
            ));
        }
        let get = |k: &str| first(&f, k).map(str::to_string);
        let generation = |k: &str| first(&f, k).and_then(|g| g.parse().ok());
        let result = match first(&f, "prepare") {
            Some("ready") => PrepareResult::Ready {
                entry: get("entry").unwrap_or_default(),
                old_generation: generation("old_gen"),
                new_generation: generation("new_gen"),
            },
            Some("busy") => PrepareResult::Busy {
                deploy: get("busy").unwrap_or_default(),
            },
            Some("system-changed") => PrepareResult::SystemChanged { now: get("now") },
            Some("old-not-default") => PrepareResult::OldNotDefault {
                boots: parse_boot_default(&f).and_then(|d| d.system),
            },
            Some("no-one-shot") => PrepareResult::NoOneShot,
            Some("missing-tool") => PrepareResult::MissingTool {
                tool: get("missing").unwrap_or_default(),
            },
            Some("failed") => PrepareResult::Failed {
                step: first(&f, "step")
                    .and_then(|s| PrepareStep::ALL.into_iter().find(|p| p.wire() == s))
                    .ok_or_else(|| ParseError("preparing failed at an unknown step".into()))?,
                detail: get("detail").unwrap_or_default(),
                undone: first(&f, "undone") != Some("no"),
            },
            _ => {
                return Err(ParseError(
                    "preparing the reboot trial printed no result".into(),
                ))
            }
        };
        Ok(PrepareReport {
            result,
            boot_id: get("boot_id").unwrap_or_default(),
        })
    }
}

/// One look at a reboot trial over a fresh connection: which boot and
/// systems the host runs, and where its trial is.
#[derive(Debug, Clone)]
pub struct LookAtBootTrial {
    pub deploy_id: DeployId,
}

/// What a look at a reboot trial found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootTrialSeen {
    pub boot_id: String,
    pub machine_id: String,
    pub booted_system: Option<String>,
    pub current_system: Option<String>,
    pub state: Option<BootTrialState>,
    pub cause: Option<BootTrialCause>,
    /// What restoring the profile or entries could not do.
    pub problem: Option<String>,
    /// The trial on the host is this deploy's.
    pub ours: bool,
    /// The guard's restore of the data, once it ran.
    pub restore: Option<RestoreReport>,
}

impl Operation for LookAtBootTrial {
    type Output = BootTrialSeen;
    const OP: Op = Op::LookAtBootTrial;

    fn script(&self) -> String {
        format!(
            r#"dir={dir}
{resolve}
read -r boot </proc/sys/kernel/random/boot_id
echo "boot_id=$boot"
mid=; read -r mid 2>/dev/null </etc/machine-id
echo "machine_id=$mid"
resolve /run/booted-system; echo "booted=$r"
resolve /run/current-system; echo "current=$r"
d=; read -r d 2>/dev/null <"$dir/deploy"
[ "$d" = {deploy} ] && echo "ours=yes"
st=missing; read -r st 2>/dev/null <"$dir/state"
echo "state=$st"
c=; read -r c 2>/dev/null <"$dir/cause"; echo "cause=$c"
p=; read -r p 2>/dev/null <"$dir/problem"; echo "problem=$p"
rrc=; read -r rrc 2>/dev/null <"$dir/restore.rc"; echo "restore_rc=$rrc"
[ -n "$rrc" ] && cat "$dir/restore.out" 2>/dev/null
echo "look=done"
"#,
            dir = quote(BOOT_TRIAL_DIR),
            deploy = quote(self.deploy_id.as_str()),
            resolve = RESOLVE_FUNCTION,
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<BootTrialSeen, ParseError> {
        let f = parse_fields(&out.stdout);
        if first(&f, "look") != Some("done") {
            return Err(ParseError(
                "the look at the reboot trial did not finish".into(),
            ));
        }
        let ours = first(&f, "ours") == Some("yes");
        let restore = (ours && first(&f, "restore_rc").is_some_and(|rc| !rc.is_empty()))
            .then(|| RestoreReport::from_fields(&f));
        Ok(BootTrialSeen {
            boot_id: first(&f, "boot_id").unwrap_or_default().to_string(),
            machine_id: first(&f, "machine_id").unwrap_or_default().to_string(),
            booted_system: first(&f, "booted").map(str::to_string),
            current_system: first(&f, "current").map(str::to_string),
            state: ours.then(|| BootTrialState::parse(first(&f, "state").unwrap_or("missing"))),
            cause: first(&f, "cause").and_then(BootTrialCause::parse),
            problem: first(&f, "problem").map(|p| one_line(p).to_string()),
            ours,
            restore,
        })
    }
}

/// What a request to a reboot trial's guard (renew, confirm, roll back,
/// end) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTrialAnswer {
    pub result: BootTrialReply,
    /// The state after the request.
    pub state: BootTrialState,
    pub machine_id: String,
    pub booted_system: Option<String>,
    /// What persisting printed ([`BootTrialRequest::Finish`] only).
    pub persist: Option<Result<PersistReport, ParseError>>,
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootTrialReply {
    /// Done as asked.
    Done,
    /// The trial is not in the state the request needs.
    WrongState,
    /// Not this deploy's trial, or the token does not match.
    NotOurs,
    /// The host did not boot the new system.
    NotBootedNew,
    /// The lease had already lapsed (confirm only).
    Lapsed,
    /// The trial's state lock stayed taken for the whole bounded wait.
    LockTimeout,
}

/// What a request does, under the trial's state lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootTrialRequest {
    /// Push the lease to a full lease from now (state `booted`, the lease
    /// not lapsed).
    Renew,
    /// Confirm with the token (state `booted` on the trial boot, the new
    /// system booted, the lease not lapsed): the guard stands down. A
    /// repeated confirmation of a confirmed trial answers done again.
    Confirm,
    /// Ask the guard to reboot into the old system now (state `booted`).
    RollBack,
    /// Persist (the new system's `switch-to-configuration boot`, read
    /// back), and when persisted end the trial and remove the guard, in one
    /// session under the lock: state `confirmed`, on the trial boot.
    Finish(Box<Persist>),
    /// A trial whose reboot never came (state `prepared`, still on the
    /// boot it was prepared on): undo it all, as the guard would.
    Abandon,
}

/// One request to a reboot trial's guard.
#[derive(Debug, Clone)]
pub struct AskBootTrial {
    pub spec: BootTrialSpec,
    pub request: BootTrialRequest,
}

impl Operation for AskBootTrial {
    type Output = BootTrialAnswer;
    const OP: Op = Op::RenewBootTrial;

    fn op(&self) -> Op {
        match self.request {
            BootTrialRequest::Renew => Op::RenewBootTrial,
            BootTrialRequest::Confirm => Op::ConfirmBootTrial,
            BootTrialRequest::RollBack => Op::RollBackBootTrial,
            BootTrialRequest::Finish(_) => Op::FinishBootTrial,
            BootTrialRequest::Abandon => Op::AbandonBootTrial,
        }
    }

    fn script(&self) -> String {
        let spec = &self.spec;
        let booted = BootTrialState::Booted.quoted();
        let confirmed = BootTrialState::Confirmed.quoted();
        let bump = r#"echo $(( ${up%%.*} + lease )) >"$dir/lease.new" && mv -f "$dir/lease.new" "$dir/lease""#
            .replace("lease ))", &format!("{} ))", spec.lease.as_secs().max(1)));
        let set = |s: &BootTrialState| {
            format!(
                r#"printf '%s\n' {} >"$dir/state.new" && mv -f "$dir/state.new" "$dir/state""#,
                s.quoted()
            )
        };
        let (unit, wants) = unit_files();
        let new = quote(spec.new_system.as_str());
        let action = match &self.request {
            BootTrialRequest::Renew => format!(
                r#"if [ "$st" != {booted} ]; then echo "reply=wrong-state"
elif [ "$boot" != "$trial_boot" ] || [ "${{up%%.*}}" -ge "$lease" ]; then echo "reply=lapsed"
else {bump} && echo "reply=done"
fi"#
            ),
            BootTrialRequest::Confirm => format!(
                r#"if [ "$tok" != {token} ]; then echo "reply=not-ours"
elif [ "$bsys" != {new} ] || [ "$boot" != "$trial_boot" ]; then echo "reply=not-booted-new"
elif [ "$st" = {confirmed} ]; then echo "reply=done"
elif [ "$st" != {booted} ]; then echo "reply=wrong-state"
elif [ "${{up%%.*}}" -ge "$lease" ]; then echo "reply=lapsed"
else {bump} && {set_confirmed} && echo "reply=done"
fi"#,
                token = quote(spec.token.as_str()),
                set_confirmed = set(&BootTrialState::Confirmed),
            ),
            BootTrialRequest::RollBack => format!(
                "if [ \"$st\" = {booted} ]; then printf '%s\\n' {cause} >\"$dir/cause\" && {rolling} && echo \"reply=done\"; else echo \"reply=wrong-state\"; fi",
                cause = quote(BootTrialCause::Requested.wire()),
                rolling = set(&BootTrialState::RollingBack),
            ),
            BootTrialRequest::Finish(persist) => format!(
                r#"if [ "$st" != {confirmed} ]; then echo "reply=wrong-state"
elif [ "$bsys" != {new} ] || [ "$boot" != "$trial_boot" ]; then echo "reply=not-booted-new"
else
{persist}
    if [ "$persisted" = yes ]; then
        {finished} && rm -f {unit} {wants} {old_root} "$dir/token"
    fi
    echo "reply=done"
fi"#,
                persist = persist.snippet(),
                finished = set(&BootTrialState::Finished),
                unit = quote(&unit),
                wants = quote(&wants),
                old_root = quote(OLD_ROOT),
            ),
            BootTrialRequest::Abandon => format!(
                r#"prep_boot=; read -r prep_boot 2>/dev/null <"$dir/prepared_boot_id"
if [ "$st" != {prepared} ] || [ "$boot" != "$prep_boot" ]; then echo "reply=wrong-state"
else
    abandon=yes
    echo "reply=done"
fi"#,
                prepared = BootTrialState::Prepared.quoted(),
            ),
        };
        format!(
            r#"set -u
umask 077
dir={dir}
{resolve}
mid=; read -r mid 2>/dev/null </etc/machine-id
echo "machine_id=$mid"
resolve /run/booted-system; bsys=$r; echo "booted=$r"
read -r boot </proc/sys/kernel/random/boot_id
trial_boot=; read -r trial_boot 2>/dev/null <"$dir/trial_boot_id"
d=; read -r d 2>/dev/null <"$dir/deploy"
tok=; read -r tok 2>/dev/null <"$dir/token"
abandon=
if [ "$d" != {deploy} ]; then
    echo "reply=not-ours"
else
    exec 8>>"$dir/state.lock"
    if flock -w 10 8; then
        st=; read -r st 2>/dev/null <"$dir/state"
        lease=0; read -r lease 2>/dev/null <"$dir/lease"; read -r up _ </proc/uptime
        {action}
    else
        echo "reply=lock-timeout"
    fi
    exec 8>&-
fi
# The guard's own restore, which takes the lock itself.
if [ "$abandon" = yes ]; then
    sh "$dir/guard" abandon >/dev/null 2>&1 || echo "abandon=failed"
fi
st=missing; read -r st 2>/dev/null <"$dir/state"
echo "state=$st"
"#,
            dir = quote(BOOT_TRIAL_DIR),
            deploy = quote(spec.deploy_id.as_str()),
            resolve = RESOLVE_FUNCTION,
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<BootTrialAnswer, ParseError> {
        let f = parse_fields(&out.stdout);
        let result = match first(&f, "reply") {
            Some("done") => BootTrialReply::Done,
            Some("wrong-state") => BootTrialReply::WrongState,
            Some("not-ours") => BootTrialReply::NotOurs,
            Some("not-booted-new") => BootTrialReply::NotBootedNew,
            Some("lapsed") => BootTrialReply::Lapsed,
            Some("lock-timeout") => BootTrialReply::LockTimeout,
            _ => return Err(ParseError("the reboot trial's guard gave no answer".into())),
        };
        Ok(BootTrialAnswer {
            result,
            state: BootTrialState::parse(first(&f, "state").unwrap_or("missing")),
            machine_id: first(&f, "machine_id").unwrap_or_default().to_string(),
            booted_system: first(&f, "booted").map(str::to_string),
            persist: match self.request {
                BootTrialRequest::Finish(_) if result == BootTrialReply::Done => {
                    Some(Persist::parse_stdout(&out.stdout))
                }
                _ => None,
            },
        })
    }
}

/// Why a change can only be tried by booting it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RebootReason {
    /// The new system's kernel differs from the booted one's.
    Kernel,
    Initrd,
    KernelModules,
    /// `init-interface-version` differs: NixOS's `switch-to-configuration`
    /// refuses to switch live.
    InitInterface,
    /// The host has no `/run/booted-system` to compare with.
    NoBootedSystem,
    /// The new system's pre-switch checks (or switch inhibitors) refuse a
    /// live switch.
    #[serde(rename_all = "camelCase")]
    PreSwitchCheck {
        exit_code: Option<i32>,
        output: String,
    },
}

impl std::fmt::Display for RebootReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RebootReason::Kernel => f.write_str("the kernel changes"),
            RebootReason::Initrd => f.write_str("the initrd changes"),
            RebootReason::KernelModules => f.write_str("the kernel modules change"),
            RebootReason::InitInterface => {
                f.write_str("the init interface version changes (NixOS will not switch it live)")
            }
            RebootReason::NoBootedSystem => {
                f.write_str("the host has no /run/booted-system to compare the boot files with")
            }
            RebootReason::PreSwitchCheck { exit_code, output } => {
                write!(f, "the new system's pre-switch checks refuse a live switch")?;
                if let Some(code) = exit_code {
                    write!(f, " (exit {code})")?;
                }
                if !output.is_empty() {
                    write!(f, ": {output}")?;
                }
                Ok(())
            }
        }
    }
}

/// Whether the new system needs a boot to be tried, and whether the host
/// can do a reboot trial: the booted system's kernel, initrd and modules
/// against the new system's (as NixOS's `system.autoUpgrade` decides a
/// reboot), the init interface versions (which `switch-to-configuration`
/// refuses to switch live), the new system's pre-switch checks for the
/// live action, and the boot loader.
#[derive(Debug, Clone)]
pub struct TrialNeeds {
    pub new_system: StorePath,
    /// A reboot trial was asked for (`--trial reboot`): look at the boot
    /// loader whatever the change. Otherwise it is looked at only when the
    /// change needs a boot (a live trial needs nothing from it, and
    /// `bootctl` looks for the ESP each time).
    pub reboot_asked: bool,
}

/// What [`TrialNeeds`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialNeedsReport {
    /// Why only a boot can show the change; empty when a live trial can.
    pub reasons: Vec<RebootReason>,
    /// systemd-boot is installed: `bootctl set-oneshot` works.
    pub one_shot: bool,
    /// What the host boots by default, and whether it is what it runs.
    pub boot_default: Option<super::BootDefault>,
    pub boots_current: bool,
    pub current_system: Option<String>,
    /// Running the checks found NixOS's switch lock held by another
    /// activation (who, as far as the host could tell).
    pub switch_lock: Option<super::LockHolder>,
}

impl Operation for TrialNeeds {
    type Output = TrialNeedsReport;
    const OP: Op = Op::TrialNeeds;

    fn script(&self) -> String {
        format!(
            r#"set -u
new={new}
profile={profile}
boot_look={boot_look}
reason() {{ echo "reason=$1"; boot_look=yes; }}
{resolve}
{boot_default}{lock_probe}resolve /run/current-system; cur=$r; echo "current=$cur"
resolve /run/booted-system; booted=$r
if [ -z "$booted" ]; then
    reason no-booted-system
else
    for f in kernel initrd kernel-modules; do
        # `readlink -f` names a missing file too: a system without one
        # (a container's) has nothing to compare.
        a=; [ -e "$booted/$f" ] && a=$(readlink -f "$booted/$f")
        b=; [ -e "$new/$f" ] && b=$(readlink -f "$new/$f")
        [ "$a" = "$b" ] || reason "$f"
    done
fi
# switch-to-configuration compares the running system's init interface
# with the new one's and refuses a live switch when they differ.
ia=; [ -n "$cur" ] && read -r ia 2>/dev/null <"$cur/init-interface-version"
ib=; read -r ib 2>/dev/null <"$new/init-interface-version"
[ "$ia" = "$ib" ] || reason init-interface
{pre_switch}# The boot loader matters only to a reboot trial.
if [ "$boot_look" = yes ]; then
    if sd_boot; then echo "one_shot=yes"; fi
    boot_default "$cur"
    echo "boots_current=$boot_ok"
fi
echo "needs=done"
"#,
            new = quote(self.new_system.as_str()),
            boot_look = if self.reboot_asked { "yes" } else { "no" },
            profile = quote(SYSTEM_PROFILE),
            resolve = RESOLVE_FUNCTION,
            boot_default = BOOT_DEFAULT_FUNCTION,
            pre_switch = PRE_SWITCH_CHECK,
            lock_probe = SWITCH_LOCK_PROBE.replace("@SWITCH_LOCK@", &quote(SWITCH_LOCK)),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<TrialNeedsReport, ParseError> {
        let f = parse_fields(&out.stdout);
        if first(&f, "needs") != Some("done") {
            return Err(ParseError(
                "reading what the change needs did not finish".into(),
            ));
        }
        let mut reasons = Vec::new();
        for r in f.get("reason").into_iter().flatten() {
            reasons.push(match r.as_str() {
                "kernel" => RebootReason::Kernel,
                "initrd" => RebootReason::Initrd,
                "kernel-modules" => RebootReason::KernelModules,
                "init-interface" => RebootReason::InitInterface,
                "no-booted-system" => RebootReason::NoBootedSystem,
                other => return Err(ParseError(format!("unknown reboot reason {other:?}"))),
            });
        }
        if let Some(rc) = first(&f, "pre_switch_rc") {
            if rc != "0" {
                let output: Vec<&str> = f
                    .get("pre_switch_out")
                    .into_iter()
                    .flatten()
                    .map(String::as_str)
                    .filter(|l| !l.trim().is_empty())
                    .collect();
                reasons.push(RebootReason::PreSwitchCheck {
                    exit_code: rc.parse().ok(),
                    output: one_line(&output.join(" / ")).chars().take(700).collect(),
                });
            }
        }
        Ok(TrialNeedsReport {
            reasons,
            one_shot: first(&f, "one_shot") == Some("yes"),
            boot_default: parse_boot_default(&f),
            boots_current: first(&f, "boots_current") == Some("yes"),
            current_system: first(&f, "current").map(str::to_string),
            switch_lock: parse_lock_holder(&f),
        })
    }
}

/// The new system's pre-switch checks, where its `switch-to-configuration`
/// has the `check` action (`switch-to-configuration-ng`): they run as for a
/// live switch, switch inhibitors included (those skip only `boot` and
/// `dry-activate`), and fail with exit 1 ("Pre-switch checks failed").
/// Prints `pre_switch_rc` and the output's first lines (what changed comes
/// first) as `pre_switch_out`;
/// exit 11 is NixOS's switch lock held by another activation; a system
/// without `check` prints its usage, and nothing is concluded.
const PRE_SWITCH_CHECK: &str = r#"out=$("$new/bin/switch-to-configuration" check 2>&1 </dev/null)
rc=$?
case "$out" in
    *"Usage:"*|*"usage:"*) ;;
    *"Could not acquire lock"*) switch_lock_probe ;;
    *)
        [ "$rc" = 0 ] || boot_look=yes
        echo "pre_switch_rc=$rc"
        printf '%s\n' "$out" | head -n 12 | while IFS= read -r l; do printf 'pre_switch_out=%s\n' "$l"; done
        ;;
esac
"#;
