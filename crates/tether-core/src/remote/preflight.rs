//! The preflight: who the host is (machine-id, hostname, architecture),
//! which systems it runs, boots and has in its profile, whether it already
//! has the new system, whether the safe switch's tools are there, and
//! whether another deploy or another activation (NixOS's switch lock) holds
//! it. Read-only; the shared connection's first session.

use super::boot_trial::{BootTrialState, BOOT_TRIAL_DIR};
use super::bootloader::{parse_boot_default, BootDefault, BOOT_DEFAULT_FUNCTION};
use super::guard::SWITCH_LOCK;
use super::wire::Fields;
use super::wire::{all, finished, first, parse_fields, ParseError};
use super::{
    generation_number, Op, Operation, ScriptOutput, LOCK_DIR, RESOLVE_FUNCTION, SYSTEM_PROFILE,
};
use crate::model::StorePath;
use crate::shell::quote;
use crate::text::one_line;

/// A shell function: `switch_lock_probe` prints `switch_lock=held` and
/// what can be read of the holder (`switch_lock_pid`, `_unit`, `_cmd`)
/// when another process holds NixOS's switch lock (`@SWITCH_LOCK@` is
/// replaced by its quoted path). One `flock -n` when it is free; the
/// holder is looked up in `/proc/locks` only when it is held.
pub(crate) const SWITCH_LOCK_PROBE: &str = r#"switch_lock_probe() {
    lock=@SWITCH_LOCK@
    [ -e "$lock" ] || return 0
    flock -n -x "$lock" true 2>/dev/null && return 0
    echo "switch_lock=held"
    ino=$(stat -c %i "$lock" 2>/dev/null)
    while read -r _ kind _ _ pid devino _; do
        [ "$kind" = "->" ] && continue
        [ "${devino##*:}" = "$ino" ] || continue
        echo "switch_lock_pid=$pid"
        unit=
        while IFS= read -r line; do
            case "$line" in 0::*) unit=${line##*/} ;; esac
        done 2>/dev/null </proc/"$pid"/cgroup
        echo "switch_lock_unit=$unit"
        echo "switch_lock_cmd=$(tr '\000' ' ' 2>/dev/null </proc/"$pid"/cmdline)"
        break
    done </proc/locks
}
"#;

/// Who holds NixOS's switch lock, as far as the host could tell.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LockHolder {
    pub pid: Option<u32>,
    /// The systemd unit (or scope) the holder runs in.
    pub unit: Option<String>,
    pub command: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "PID {pid}")?,
            None => f.write_str("a process tether could not name")?,
        }
        if let Some(unit) = &self.unit {
            write!(f, " in {unit}")?;
        }
        if let Some(command) = &self.command {
            write!(f, ": {command}")?;
        }
        Ok(())
    }
}

/// The holder [`SWITCH_LOCK_PROBE`] reported, if the lock is held.
pub(crate) fn parse_lock_holder(f: &Fields) -> Option<LockHolder> {
    (first(f, "switch_lock")? == "held").then(|| LockHolder {
        pid: first(f, "switch_lock_pid").and_then(|p| p.parse().ok()),
        unit: first(f, "switch_lock_unit").map(str::to_string),
        command: first(f, "switch_lock_cmd")
            .map(|c| one_line(c).trim().to_string())
            .filter(|c| !c.is_empty()),
    })
}

/// Reads the host's identity and systems; with `new_system`, also whether
/// the host's store already has it (then nothing needs copying: Nix
/// registers a path valid only once its whole closure is).
#[derive(Debug, Clone, Default)]
pub struct Preflight {
    pub new_system: Option<StorePath>,
}

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
    /// Another process holding NixOS's switch lock (an activation in
    /// progress, or one orphaned).
    pub switch_lock: Option<LockHolder>,
    /// The host's store already holds the new system (and so its closure).
    pub has_new_system: bool,
    /// Units failed before the switch (the `failedUnits = "new"` baseline).
    pub failed_units: Vec<String>,
    /// What the host boots by default, read only when it already runs the
    /// new system (is that persisted too?).
    pub boot_default: Option<BootDefault>,
    /// The session's user id (0 when sudo or the SSH user made it root).
    pub uid: Option<u32>,
    /// The sudo user the host's Nix daemon does not trust, when a closure
    /// would have to be copied as that user.
    pub nix_untrusted: Option<String>,
    /// Then: the names of the keys the daemon accepts signatures of
    /// (`trusted-public-keys`), so a signed closure can still be copied.
    pub trusted_keys: Vec<String>,
}

impl Operation for Preflight {
    type Output = Facts;
    const OP: Op = Op::Preflight;

    fn script(&self) -> String {
        // A deploy user's copy goes through the Nix daemon, which must
        // trust the user for unsigned paths (checked only when a copy is
        // needed: `nix show-config` is a process).
        let has_new = match &self.new_system {
            Some(p) => format!(
                r#"# A path not on disk is not valid: no nix-store process then.
if [ -e {new} ] && nix-store --check-validity {new} >/dev/null 2>&1; then echo "has_new=yes"
elif [ -n "${{SUDO_USER:-}}" ] && [ "$SUDO_USER" != root ]; then
    set -f; ok=no
    for t in $(nix --extra-experimental-features nix-command show-config 2>/dev/null | sed -n 's/^trusted-users = //p'); do
        case "$t" in
            '*' | "$SUDO_USER") ok=yes ;;
            @*) for g in $(id -nG "$SUDO_USER" 2>/dev/null); do [ "@$g" = "$t" ] && ok=yes; done ;;
        esac
    done
    [ "$ok" = yes ] || {{
        echo "nix_untrusted=$SUDO_USER"
        for k in $(nix --extra-experimental-features nix-command show-config 2>/dev/null | sed -n 's/^trusted-public-keys = //p'); do
            echo "trusted_key=${{k%%:*}}"
        done
    }}
    set +f
fi
"#,
                new = quote(p.as_str())
            ),
            None => String::new(),
        };
        // Already running the new system: does it boot it by default too?
        let boots_new = match &self.new_system {
            Some(p) => format!(
                "if [ \"$cur\" = {new} ]; then\n{BOOT_DEFAULT_FUNCTION}boot_default {new}\nfi\n",
                new = quote(p.as_str())
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
while read -r k v _; do [ "$k" = Uid: ] && {{ echo "uid=$v"; break; }}; done </proc/self/status
{resolve}
{lock_probe}switch_lock_probe
resolve /run/current-system; cur=$r; echo "current=$r"
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
# A reboot trial that is not over holds the host too (it survives reboots).
bst=; read -r bst 2>/dev/null <{boot_trial}/state
case "$bst" in
    {pending})
        holder=; read -r holder 2>/dev/null <{boot_trial}/deploy
        echo "busy=$holder" ;;
esac
profile={profile}
{boots_new}echo "preflight=done"
"#,
            profile = quote(SYSTEM_PROFILE),
            lock = quote(LOCK_DIR),
            resolve = RESOLVE_FUNCTION,
            lock_probe = SWITCH_LOCK_PROBE.replace("@SWITCH_LOCK@", &quote(SWITCH_LOCK)),
            boot_trial = quote(BOOT_TRIAL_DIR),
            pending = BootTrialState::pending_pattern(),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<Facts, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "preflight", "the preflight script")?;
        Ok(Facts {
            machine_id: first(&f, "machine_id").unwrap_or_default().to_string(),
            hostname: first(&f, "hostname").unwrap_or_default().to_string(),
            arch: first(&f, "arch").unwrap_or_default().to_string(),
            current_system: first(&f, "current").map(str::to_string),
            booted_system: first(&f, "booted").map(str::to_string),
            profile_system: first(&f, "profile").map(str::to_string),
            profile_generation: first(&f, "profile_link").and_then(generation_number),
            boot_id: first(&f, "boot_id").unwrap_or_default().to_string(),
            missing_tools: all(&f, "missing"),
            busy_with: first(&f, "busy").map(str::to_string),
            switch_lock: parse_lock_holder(&f),
            has_new_system: first(&f, "has_new") == Some("yes"),
            failed_units: all(&f, "failed_unit"),
            boot_default: parse_boot_default(&f),
            uid: first(&f, "uid").and_then(|u| u.parse().ok()),
            nix_untrusted: first(&f, "nix_untrusted").map(str::to_string),
            trusted_keys: all(&f, "trusted_key"),
        })
    }
}
