//! The remote command vocabulary: every shell script tether runs on a target,
//! built in this one place with every value quoted by [`crate::shell::quote`],
//! and the pure parsers of what those scripts print.
//!
//! Scripts need only POSIX sh, coreutils, util-linux's `flock`, systemd and
//! Nix on the target; nothing of tether is installed there. Per-deploy state
//! lives in `/run/tether/deploys/<deploy id>` (gone after a reboot, as the
//! trial it describes is), the deploy lock is the directory `/run/tether/lock`,
//! and an append-only journal is kept in `/var/lib/tether/journal`.

pub mod plan;
pub mod status;

use crate::model::{DeployId, Goal, StorePath, Token};
use crate::shell::quote;
use std::collections::BTreeMap;
use std::time::Duration;

/// The guard's shell script, written to the target at arm time.
pub const GUARD_SCRIPT: &str = include_str!("guard.sh");

pub const RUN_DIR: &str = "/run/tether";
pub const LOCK_DIR: &str = "/run/tether/lock";
pub const JOURNAL: &str = "/var/lib/tether/journal";
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";

/// Everything the target needs to guard one trial.
#[derive(Debug, Clone)]
pub struct GuardSpec {
    pub deploy_id: DeployId,
    pub token: Token,
    pub old_system: StorePath,
    pub new_system: StorePath,
    pub lease: Duration,
    /// `user@machine` of the deployer, recorded in the target's journal.
    pub deployer: String,
}

impl GuardSpec {
    pub fn dir(&self) -> String {
        format!("{RUN_DIR}/deploys/{}", self.deploy_id)
    }
    pub fn guard_unit(&self) -> String {
        format!("tether-guard-{}", self.deploy_id)
    }
    pub fn activation_unit(&self) -> String {
        format!("tether-activate-{}", self.deploy_id)
    }
    fn lease_secs(&self) -> u64 {
        self.lease.as_secs().max(1)
    }
}

/// What NixOS's `switch-to-configuration` exit codes mean.
pub fn activation_exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "error (bad arguments, or switch-to-configuration could not run)",
        2 => "the activation script failed",
        3 => "systemd could not be reloaded",
        4 => "a unit failed to start or is failed after the switch",
        100 => "switch-to-configuration refused to run",
        _ => "unknown failure",
    }
}

/// Lines `key=value` printed by the scripts below; a key may repeat.
pub type Fields = BTreeMap<String, Vec<String>>;

/// Parses `key=value` lines; other lines are ignored (login banners, MOTD).
pub fn parse_fields(stdout: &str) -> Fields {
    let mut map: Fields = BTreeMap::new();
    for line in stdout.lines() {
        if let Some((k, v)) = line.split_once('=') {
            if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                map.entry(k.to_string()).or_default().push(v.to_string());
            }
        }
    }
    map
}

pub(crate) fn first<'a>(f: &'a Fields, key: &str) -> Option<&'a str> {
    f.get(key)
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// Prints the host's identity and systems. Read-only.
pub fn preflight_script() -> String {
    preflight_script_for(None)
}

/// [`preflight_script`], also telling whether the host's store already has
/// `new_system` (then nothing needs copying: Nix registers a path valid only
/// once its whole closure is).
pub fn preflight_script_for(new_system: Option<&StorePath>) -> String {
    let has_new = match new_system {
        Some(p) => format!(
            "nix-store --check-validity {} >/dev/null 2>&1 && echo \"has_new=yes\"\n",
            quote(p.as_str())
        ),
        None => String::new(),
    };
    format!(
        r#"set -u
{has_new}
# `read` rather than `cat`: this runs on every host of every deploy.
mid=; read -r mid 2>/dev/null </etc/machine-id
echo "machine_id=$mid"
name=; read -r name </proc/sys/kernel/hostname
echo "hostname=$name"
echo "arch=$(uname -m)"
{resolve}
resolve /run/current-system; echo "current=$r"
resolve /run/booted-system; echo "booted=$r"
resolve {profile}; echo "profile=$r"
echo "profile_link=$(readlink {profile} 2>/dev/null)"
read -r boot </proc/sys/kernel/random/boot_id
echo "boot_id=$boot"
for t in systemd-run systemctl flock nix-env nix-store readlink; do
    command -v "$t" >/dev/null 2>&1 || echo "missing=$t"
done
# The baseline for the failedUnits = "new" health check.
systemctl list-units --state=failed --all --no-legend --plain 2>/dev/null | while read -r unit rest; do
    echo "failed_unit=$unit"
done
if [ -d {lock} ]; then
    unit=; read -r unit 2>/dev/null <{lock}/unit
    if [ -n "$unit" ] && systemctl is-active --quiet "$unit" 2>/dev/null; then
        holder=; read -r holder 2>/dev/null <{lock}/deploy
        echo "busy=$holder"
    fi
fi
echo "preflight=done"
"#,
        profile = quote(SYSTEM_PROFILE),
        lock = quote(LOCK_DIR),
        resolve = RESOLVE_FUNCTION,
    )
}

/// A shell function: `resolve LINK` sets `$r` to the physical path of the
/// directory LINK leads to (as `readlink -f`), or to nothing when it leads
/// nowhere; the shell is left in `/`. Builtins only: `readlink` would cost a process, on every host of
/// every deploy. System toplevels are directories, so this covers them.
const RESOLVE_FUNCTION: &str =
    r#"resolve() { r=; if cd -P "$1" 2>/dev/null; then r=$PWD; cd /; fi; }"#;

/// What the preflight learnt about a host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    pub machine_id: String,
    pub hostname: String,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: String,
    pub current_system: Option<String>,
    pub booted_system: Option<String>,
    pub profile_system: Option<String>,
    /// The system profile's generation number (`system-N-link`).
    pub profile_generation: Option<u32>,
    pub boot_id: String,
    /// Tools the safe switch needs that the host lacks.
    pub missing_tools: Vec<String>,
    /// Another deploy holding the host's deploy lock with a live guard.
    pub busy_with: Option<String>,
    /// The host's store already holds the new system (and so its closure).
    pub has_new_system: bool,
    /// Units failed before the switch (the `failedUnits = "new"` baseline).
    pub failed_units: Vec<String>,
}

impl Facts {
    /// The Nix system string of the host's architecture (`x86_64-linux`).
    pub fn nix_system(&self) -> String {
        let arch = match self.arch.as_str() {
            "arm64" => "aarch64",
            "i386" | "i586" | "i686" => "i686",
            other => other,
        };
        format!("{arch}-linux")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected output from the target ({0})")]
pub struct ParseError(pub String);

/// `system-42-link` → 42.
pub fn generation_number(link: &str) -> Option<u32> {
    link.strip_prefix("system-")?
        .strip_suffix("-link")?
        .parse()
        .ok()
}

pub fn parse_preflight(stdout: &str) -> Result<Facts, ParseError> {
    let f = parse_fields(stdout);
    if first(&f, "preflight") != Some("done") {
        return Err(ParseError("the preflight script did not finish".into()));
    }
    Ok(Facts {
        machine_id: first(&f, "machine_id").unwrap_or_default().to_string(),
        hostname: first(&f, "hostname").unwrap_or_default().to_string(),
        arch: first(&f, "arch").unwrap_or_default().to_string(),
        current_system: first(&f, "current").map(str::to_string),
        booted_system: first(&f, "booted").map(str::to_string),
        profile_system: first(&f, "profile").map(str::to_string),
        profile_generation: first(&f, "profile_link").and_then(generation_number),
        boot_id: first(&f, "boot_id").unwrap_or_default().to_string(),
        missing_tools: f.get("missing").cloned().unwrap_or_default(),
        busy_with: first(&f, "busy").map(str::to_string),
        has_new_system: first(&f, "has_new") == Some("yes"),
        failed_units: f.get("failed_unit").cloned().unwrap_or_default(),
    })
}

/// Takes the host's deploy lock, writes the deploy's state directory and
/// starts the guard (`systemd-run`, owned by PID 1). Prints `arm=armed`, or
/// `arm=busy` with `busy=<deploy id>` when another deploy's guard is alive,
/// or `arm=changed` with `current=<system>` when the host no longer runs
/// the system the guard would return to (it changed since the preflight:
/// the copy and the build can take minutes). A lock whose guard is gone (a
/// deployer killed earlier, a reboot) is stale and taken over.
pub fn arm_script(spec: &GuardSpec) -> String {
    let dir = spec.dir();
    format!(
        r#"set -u
dir={dir}
lockdir={lock}
[ -d {run}/deploys ] || mkdir -p {run}/deploys
# Resolve the guard's tools now, to store paths on NixOS: the guard must keep
# working while /run/current-system changes under it.
paths=
for t in sh flock systemctl sleep readlink date mv cat rm mkdir; do
    p=$(command -v "$t") || {{ echo "arm=missing-tool"; echo "missing=$t"; exit 0; }}
    paths="$paths $p"
done
# One readlink for all (this runs on every deploy; spawns cost CPU).
tool_path=
sh_path=
for p in $(readlink -f $paths); do
    [ -n "$sh_path" ] || sh_path=$p
    d=${{p%/*}}
    case ":$tool_path:" in *":$d:"*) ;; *) tool_path="$tool_path${{tool_path:+:}}$d" ;; esac
done
exec 9>{run}/lock.flock
flock 9
if [ -d "$lockdir" ]; then
    unit=; read -r unit 2>/dev/null <"$lockdir/unit"
    if [ -n "$unit" ] && systemctl is-active --quiet "$unit"; then
        holder=; read -r holder 2>/dev/null <"$lockdir/deploy"
        echo "arm=busy"
        echo "busy=$holder"
        exit 0
    fi
    rm -rf "$lockdir"
fi
{resolve}
resolve /run/current-system
if [ "$r" != {old} ]; then
    echo "arm=changed"
    echo "current=$r"
    exit 0
fi
mkdir "$lockdir" "$dir"
printf '%s\n' {id} >"$lockdir/deploy"
printf '%s\n' {unit} >"$lockdir/unit"
umask 077
{{
    printf 'DEPLOY_ID=%s\n' {id_q}
    printf 'OLD=%s\n' {old_q}
    printf 'NEW=%s\n' {new_q}
    printf 'ACTIVATION_UNIT=%s\n' {act_q}
    printf 'LOCK_DIR=%s\n' {lock_q}
    printf 'LEASE_SECONDS=%s\n' {lease}
    printf 'DEPLOYER=%s\n' {deployer_q}
    printf 'TOOL_PATH=%s\n' "'$tool_path'"
    printf 'SH=%s\n' "'$sh_path'"
}} >"$dir/params"
printf '%s\n' {token} >"$dir/token"
printf 'armed\n' >"$dir/state"
read -r up _ </proc/uptime
echo $(( ${{up%%.*}} + {lease} )) >"$dir/lease"
printf '%s' {guard} >"$dir/guard.sh"
armed=no
if systemd-run --unit={unit} --description={desc} --quiet --collect \
    --setenv=PATH="$tool_path:/usr/bin:/bin" "$sh_path" "$dir/guard.sh" "$dir"; then
    armed=yes
    echo "arm=armed"
else
    rm -rf "$lockdir"
    echo "arm=failed"
fi
# Other deploys may check the lock from now on.
exec 9>&-
"#,
        dir = quote(&dir),
        lock = quote(LOCK_DIR),
        run = quote(RUN_DIR),
        id = quote(spec.deploy_id.as_str()),
        unit = quote(&spec.guard_unit()),
        // The params file is sourced by the guard: quote once for this
        // script and once more for that file.
        id_q = quote(&quote(spec.deploy_id.as_str())),
        old_q = quote(&quote(spec.old_system.as_str())),
        new_q = quote(&quote(spec.new_system.as_str())),
        act_q = quote(&quote(&spec.activation_unit())),
        lock_q = quote(&quote(LOCK_DIR)),
        lease = spec.lease_secs(),
        deployer_q = quote(&quote(&spec.deployer)),
        token = quote(spec.token.as_str()),
        guard = quote(GUARD_SCRIPT),
        desc = quote(&format!("tether guard for deploy {}", spec.deploy_id)),
        old = quote(spec.old_system.as_str()),
        resolve = RESOLVE_FUNCTION,
    )
}

/// The outcome of arming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmResult {
    Armed,
    Busy(String),
    /// The host runs another system than the one the guard would return to.
    Changed(String),
    MissingTool(String),
    Failed,
}

pub fn parse_arm(stdout: &str) -> Result<ArmResult, ParseError> {
    let f = parse_fields(stdout);
    match first(&f, "arm") {
        Some("armed") => Ok(ArmResult::Armed),
        Some("busy") => Ok(ArmResult::Busy(
            first(&f, "busy").unwrap_or("another deploy").to_string(),
        )),
        Some("changed") => Ok(ArmResult::Changed(
            first(&f, "current").unwrap_or_default().to_string(),
        )),
        Some("missing-tool") => Ok(ArmResult::MissingTool(
            first(&f, "missing").unwrap_or("?").to_string(),
        )),
        Some("failed") => Ok(ArmResult::Failed),
        _ => Err(ParseError("arming the guard printed no result".into())),
    }
}

/// The `systemd-run` that runs the new system's activation (needs `$dir`
/// and the deploy's params sourced), then the system's state as
/// [`system_state_script`] prints it: the health checks' first look, without
/// a session of its own. Exits with the activation's exit code.
fn activation_command(spec: &GuardSpec, goal: Goal) -> String {
    format!(
        r#"systemd-run --unit={unit} --description={desc} --quiet --collect --pipe --wait \
    --service-type=exec --setenv=PATH="$TOOL_PATH:/usr/bin:/bin" \
    "$SH" -c '"$1/bin/switch-to-configuration" "$2"; rc=$?; printf "%s\n" "$rc" >"$3/activation.rc.new"; mv -f "$3/activation.rc.new" "$3/activation.rc"; exit $rc' \
    sh {new} {goal} "$dir" </dev/null
rc=$?
# A successful activation renews the lease on its way out: the lease keeper
# then needs no session of its own for a short trial.
if [ "$rc" = 0 ] && {bump}; then echo "lease_renewed=yes"; fi
{state}exit $rc
"#,
        bump = lease_bump(spec),
        state = system_state_script(),
        unit = quote(&spec.activation_unit()),
        desc = quote(&format!("tether activation for deploy {}", spec.deploy_id)),
        new = quote(spec.new_system.as_str()),
        goal = quote(goal.as_str()),
    )
}

/// Whether the activation's session renewed the lease on its way out.
pub fn lease_renewed(stdout: &str) -> bool {
    first(&parse_fields(stdout), "lease_renewed") == Some("yes")
}

/// [`arm_script`] and, once the guard is armed, the activation (the new
/// system's `switch-to-configuration GOAL` in its own transient unit, so
/// losing SSH or restarting sshd cannot kill it half-way) in the same session (one SSH session per host less on every deploy). Prints the
/// arm result first (`arm=…`); when armed, the exit code is the
/// activation's.
pub fn arm_and_activate_script(spec: &GuardSpec, goal: Goal) -> String {
    format!(
        "{}if [ \"$armed\" = yes ]; then\n. \"$dir/params\"\n{}fi\n",
        arm_script(spec),
        activation_command(spec, goal)
    )
}

/// A shell command (needs `$dir`) that pushes the trial's lease to a full
/// lease from now on the host's clock. No lock: the lease is only a
/// deadline, and a bump that lands after the guard decided to roll back
/// changes nothing. Written whole and renamed, as the guard reads it
/// without a lock and must never see it empty.
fn lease_bump(spec: &GuardSpec) -> String {
    format!(
        r#"{{ read -r up _ </proc/uptime && echo $(( ${{up%%.*}} + {lease} )) >"$dir/lease.new" && mv -f "$dir/lease.new" "$dir/lease"; }} 2>/dev/null"#,
        lease = spec.lease_secs(),
    )
}

/// Extends the lease while the trial (or the persisting after a
/// confirmation) goes on; prints the guard's state either way.
pub fn renew_script(spec: &GuardSpec) -> String {
    format!(
        r#"set -u
dir={dir}
[ -d "$dir" ] && {bump}
st=missing; read -r st 2>/dev/null <"$dir/state"
echo "state=$st"
"#,
        dir = quote(&spec.dir()),
        bump = lease_bump(spec),
    )
}

/// Asks the guard to roll back now (it acts only while the trial is armed).
pub fn request_rollback_script(spec: &GuardSpec, reason: &str) -> String {
    format!(
        r#"set -u
dir={dir}
if [ -d "$dir" ]; then printf '%s\n' {reason} >"$dir/rollback-request.new" && mv -f "$dir/rollback-request.new" "$dir/rollback-request"; fi
echo "state=$(cat "$dir/state" 2>/dev/null || echo missing)"
"#,
        dir = quote(&spec.dir()),
        reason = quote(reason),
    )
}

/// Run over a brand-new SSH connection: checks the host runs the new system
/// and is the pinned machine, then confirms with the deploy's token, which
/// only succeeds while the trial is still armed (never after the guard fired).
pub fn confirm_script(spec: &GuardSpec) -> String {
    // Builtins where possible: this runs on every host at the end of every
    // deploy, often on many at once.
    format!(
        r#"set -u
dir={dir}
mid=; read -r mid 2>/dev/null </etc/machine-id
echo "machine_id=$mid"
{resolve}
resolve /run/current-system; cur=$r
echo "current=$cur"
read -r boot </proc/sys/kernel/random/boot_id
echo "boot_id=$boot"
tok=; [ -d "$dir" ] && read -r tok 2>/dev/null <"$dir/token"
if [ ! -d "$dir" ]; then
    echo "confirm=no-trial"
elif [ "$tok" != {token} ]; then
    echo "confirm=bad-token"
elif [ "$cur" != {new} ]; then
    echo "confirm=not-running-new"
else
    # The guard's rollback takes the same lock: one of the two wins.
    exec 8>>"$dir/state.lock"
    flock 8
    st=; read -r st 2>/dev/null <"$dir/state"
    if [ "$st" = armed ]; then
        read -r up _ </proc/uptime
        echo $(( ${{up%%.*}} + {lease} )) >"$dir/lease"
        printf 'confirmed\n' >"$dir/state.new" && mv -f "$dir/state.new" "$dir/state"
        echo "confirm=confirmed"
    else
        echo "confirm=too-late"
    fi
    exec 8>&-
fi
st=missing; read -r st 2>/dev/null <"$dir/state"
echo "state=$st"
reason=; read -r reason 2>/dev/null <"$dir/reason"
echo "reason=$reason"
"#,
        dir = quote(&spec.dir()),
        token = quote(spec.token.as_str()),
        new = quote(spec.new_system.as_str()),
        lease = spec.lease_secs(),
        resolve = RESOLVE_FUNCTION,
    )
}

/// [`confirm_script`], then, only when the confirmation succeeded, `then`
/// (persisting) in the same session: one fresh connection does both.
pub fn confirm_then(spec: &GuardSpec, then: &str) -> String {
    // `$st` is the state the confirmation script read last.
    format!(
        "{}if [ \"$st\" = confirmed ]; then\n{then}\nfi\n",
        confirm_script(spec),
    )
}

/// The guard's state as a deploy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardState {
    Armed,
    Confirmed,
    RollingBack,
    RolledBack,
    RollbackFailed,
    Finished,
    /// No state directory: the host rebooted (or someone removed it).
    Missing,
    Other(String),
}

impl GuardState {
    pub fn parse(s: &str) -> GuardState {
        match s.trim() {
            "armed" => GuardState::Armed,
            "confirmed" => GuardState::Confirmed,
            "rolling-back" => GuardState::RollingBack,
            "rolled-back" => GuardState::RolledBack,
            "rollback-failed" => GuardState::RollbackFailed,
            "finished" => GuardState::Finished,
            "missing" | "" => GuardState::Missing,
            other => GuardState::Other(other.to_string()),
        }
    }
}

/// Parses the `state=` line that renew, rollback-request and confirm print.
pub fn parse_state(stdout: &str) -> Result<GuardState, ParseError> {
    let f = parse_fields(stdout);
    f.get("state")
        .and_then(|v| v.first())
        .map(|s| GuardState::parse(s))
        .ok_or_else(|| ParseError("no guard state printed".into()))
}

/// What a confirmation attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmReport {
    pub result: ConfirmResult,
    pub machine_id: String,
    pub current_system: Option<String>,
    pub boot_id: String,
    pub state: GuardState,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmResult {
    Confirmed,
    /// The guard already fired (or the trial ended otherwise).
    TooLate,
    NotRunningNew,
    NoTrial,
    BadToken,
}

pub fn parse_confirm(stdout: &str) -> Result<ConfirmReport, ParseError> {
    let f = parse_fields(stdout);
    let result = match first(&f, "confirm") {
        Some("confirmed") => ConfirmResult::Confirmed,
        Some("too-late") => ConfirmResult::TooLate,
        Some("not-running-new") => ConfirmResult::NotRunningNew,
        Some("no-trial") => ConfirmResult::NoTrial,
        Some("bad-token") => ConfirmResult::BadToken,
        _ => return Err(ParseError("the confirmation printed no result".into())),
    };
    Ok(ConfirmReport {
        result,
        machine_id: first(&f, "machine_id").unwrap_or_default().to_string(),
        current_system: first(&f, "current").map(str::to_string),
        boot_id: first(&f, "boot_id").unwrap_or_default().to_string(),
        state: GuardState::parse(first(&f, "state").unwrap_or("missing")),
        reason: first(&f, "reason").map(str::to_string),
    })
}

/// Reads the guard's state and the host's systems (after a rollback was
/// requested or the lease lapsed).
pub fn inspect_script(spec: &GuardSpec) -> String {
    format!(
        r#"set -u
dir={dir}
echo "current=$(readlink -f /run/current-system 2>/dev/null)"
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
echo "state=$(cat "$dir/state" 2>/dev/null || echo missing)"
echo "reason=$(cat "$dir/reason" 2>/dev/null)"
echo "activation_rc=$(cat "$dir/activation.rc" 2>/dev/null)"
echo "rollback_rc=$(cat "$dir/rollback.rc" 2>/dev/null)"
echo "profile=$(readlink -f {profile} 2>/dev/null)"
echo "profile_link=$(readlink {profile} 2>/dev/null)"
echo "inspect=done"
"#,
        dir = quote(&spec.dir()),
        profile = quote(SYSTEM_PROFILE),
    )
}

/// The guard's state and the host's systems, as [`inspect_script`] prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub current_system: Option<String>,
    pub boot_id: String,
    pub state: GuardState,
    pub reason: Option<String>,
    pub activation_rc: Option<i32>,
    pub rollback_rc: Option<i32>,
    /// What the system profile points at, and its generation.
    pub profile_system: Option<String>,
    pub profile_generation: Option<u32>,
}

pub fn parse_inspect(stdout: &str) -> Result<Inspection, ParseError> {
    let f = parse_fields(stdout);
    if first(&f, "inspect") != Some("done") {
        return Err(ParseError("the inspection did not finish".into()));
    }
    Ok(Inspection {
        current_system: first(&f, "current").map(str::to_string),
        boot_id: first(&f, "boot_id").unwrap_or_default().to_string(),
        state: GuardState::parse(first(&f, "state").unwrap_or("missing")),
        reason: first(&f, "reason").map(str::to_string),
        activation_rc: first(&f, "activation_rc").and_then(|s| s.parse().ok()),
        rollback_rc: first(&f, "rollback_rc").and_then(|s| s.parse().ok()),
        profile_system: first(&f, "profile").map(str::to_string),
        profile_generation: first(&f, "profile_link").and_then(generation_number),
    })
}

/// How the confirmed system becomes the boot default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistMode {
    /// A new profile generation pointing at the system (`nix-env --set`).
    SetProfile,
    /// Back to an existing generation (`nix-env --switch-generation N`), as
    /// `nixos-rebuild --rollback` does: no new generation.
    SwitchGeneration(u32),
}

/// Makes the confirmed system permanent: the profile (see [`PersistMode`])
/// and the boot default (`switch-to-configuration boot`), then ends the trial
/// so the guard releases the deploy lock. With no guard (goal `boot`) only
/// persists.
pub fn persist_script(
    new_system: &StorePath,
    mode: PersistMode,
    spec: Option<&GuardSpec>,
) -> String {
    let finish = spec.map(finish_script).unwrap_or_default();
    let set_profile = match mode {
        PersistMode::SetProfile => format!("nix-env -p {} --set \"$new\"", quote(SYSTEM_PROFILE)),
        PersistMode::SwitchGeneration(n) => {
            format!(
                "nix-env -p {} --switch-generation {n}",
                quote(SYSTEM_PROFILE)
            )
        }
    };
    format!(
        r#"set -u
new={new}
if {set_profile} >/dev/null && [ "$(readlink -f {profile})" = "$new" ]; then
    echo "profile=ok"
    "$new/bin/switch-to-configuration" boot
    echo "boot_rc=$?"
else
    echo "profile=failed"
fi
link=$(readlink {profile} 2>/dev/null)
link=${{link#system-}}
echo "generation=${{link%-link}}"
{finish}"#,
        new = quote(new_system.as_str()),
        profile = quote(SYSTEM_PROFILE),
    )
}

/// Ends a confirmed trial and releases the deploy lock at once (the guard
/// would too, but only at its next poll: a deploy right after this one must
/// not find the host busy).
pub fn finish_script(spec: &GuardSpec) -> String {
    format!(
        r#"dir={dir}
exec 8>>"$dir/state.lock"
flock 8
printf 'finished\n' >"$dir/state.new" && mv -f "$dir/state.new" "$dir/state"
exec 8>&-
exec 9>{run}/lock.flock
flock 9
holder=; read -r holder 2>/dev/null <{lock}/deploy
if [ "$holder" = {id} ]; then rm -rf {lock}; fi
exec 9>&-
"#,
        dir = quote(&spec.dir()),
        run = quote(RUN_DIR),
        lock = quote(LOCK_DIR),
        id = quote(spec.deploy_id.as_str()),
    )
}

/// What persisting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistReport {
    pub profile_set: bool,
    /// Exit code of `switch-to-configuration boot` (None when not reached).
    pub boot_rc: Option<i32>,
    pub generation: Option<u32>,
}

pub fn parse_persist(stdout: &str) -> Result<PersistReport, ParseError> {
    let f = parse_fields(stdout);
    let profile_set = match first(&f, "profile") {
        Some("ok") => true,
        Some("failed") => false,
        _ => return Err(ParseError("persisting printed no result".into())),
    };
    Ok(PersistReport {
        profile_set,
        boot_rc: first(&f, "boot_rc").and_then(|s| s.parse().ok()),
        generation: first(&f, "generation").and_then(|s| s.parse().ok()),
    })
}

/// Runs `switch-to-configuration dry-activate` of a copied system.
pub fn dry_activate_script(new_system: &StorePath) -> String {
    format!(
        "set -u\n{}/bin/switch-to-configuration dry-activate\n",
        quote(new_system.as_str())
    )
}

/// Appends a line to the target's journal (the deployer's view of a deploy).
pub fn journal_script(
    deploy_id: &DeployId,
    event: &str,
    old: Option<&StorePath>,
    new: &StorePath,
    deployer: &str,
    detail: &str,
) -> String {
    format!(
        r#"{{ [ -d /var/lib/tether ] || mkdir -p /var/lib/tether; }} && printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" {id} {event} {old} {new} deployer {detail} >>{journal}
"#,
        id = quote(deploy_id.as_str()),
        event = quote(event),
        old = quote(old.map(StorePath::as_str).unwrap_or("-")),
        new = quote(new.as_str()),
        detail = quote(&format!("{detail}; deployer {deployer}").replace(['\t', '\n'], " ")),
        journal = quote(JOURNAL),
    )
}

/// Reboots the host a second from now, so the command that asks returns
/// cleanly first; prints the boot id it reboots from.
pub fn reboot_script(deploy_id: &DeployId) -> String {
    format!(
        r#"echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
systemd-run --unit={unit} --quiet --collect --on-active=1 --timer-property=AccuracySec=100ms systemctl reboot && echo "reboot=scheduled"
"#,
        unit = quote(&format!("tether-reboot-{deploy_id}")),
    )
}

/// Read after a reboot: which boot and which systems the host runs.
pub fn boot_state_script() -> String {
    r#"echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
echo "booted=$(readlink -f /run/booted-system 2>/dev/null)"
echo "current=$(readlink -f /run/current-system 2>/dev/null)"
echo "system_state=$(systemctl is-system-running 2>/dev/null)"
"#
    .to_string()
}

#[cfg(test)]
mod tests;

/// A `command` health check on the target: the user's command, run by `sh -c`
/// so its exit status and stderr are its own.
pub fn check_command_script(command: &str) -> String {
    format!("exec sh -c {}\n", quote(command))
}

/// Prints `unit_state=<unit> <state>` for each unit (`systemctl is-active`).
pub fn units_script(units: &[String]) -> String {
    let list: Vec<String> = units.iter().map(|u| quote(u)).collect();
    format!(
        r#"for u in {list}; do
    printf 'unit_state=%s %s\n' "$u" "$(systemctl is-active -- "$u" 2>/dev/null)"
done
"#,
        list = list.join(" ")
    )
}

/// `(unit, state)` pairs from [`units_script`]'s output.
pub fn parse_units(stdout: &str) -> Vec<(String, String)> {
    parse_fields(stdout)
        .get("unit_state")
        .map(|lines| {
            lines
                .iter()
                .map(|l| match l.rsplit_once(' ') {
                    Some((u, s)) => (u.to_string(), s.to_string()),
                    None => (l.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Prints the manager's state (what `systemctl is-system-running` prints)
/// and the failed units, for the `systemRunning` and `failedUnits` health
/// checks. One `systemctl` call when no unit failed (this runs on every
/// host of every deploy); the failed units' names only when there are some.
pub fn system_state_script() -> String {
    r#"state=; failed=
for kv in $(systemctl show --property=SystemState --property=NFailedUnits 2>/dev/null); do
    case "$kv" in
    SystemState=*) state=${kv#*=} ;;
    NFailedUnits=*) failed=${kv#*=} ;;
    esac
done
echo "system_state=$state"
echo "failed_count=$failed"
if [ "$failed" != 0 ]; then
    systemctl list-units --state=failed --all --no-legend --plain 2>/dev/null | while read -r unit rest; do
        echo "failed_unit=$unit"
    done
fi
echo "system=done"
"#
    .to_string()
}

/// What [`system_state_script`] saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemState {
    /// `running`, `degraded`, `starting`, …
    pub state: String,
    pub failed_units: Vec<String>,
    /// How many units systemd counted as failed in the same look as
    /// `state` (the names are listed a moment later; a unit can leave the
    /// failed state in between).
    pub failed_count: Option<u32>,
}

pub fn parse_system_state(stdout: &str) -> Result<SystemState, ParseError> {
    let f = parse_fields(stdout);
    if first(&f, "system") != Some("done") {
        return Err(ParseError("the system state script did not finish".into()));
    }
    Ok(SystemState {
        state: f
            .get("system_state")
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default(),
        failed_units: f.get("failed_unit").cloned().unwrap_or_default(),
        failed_count: first(&f, "failed_count").and_then(|n| n.parse().ok()),
    })
}
