//! The guard: its parameters ([`GuardSpec`]), the states a trial goes
//! through ([`GuardState`], whose wire names are defined here once and
//! handed to `guard.sh` and every script that reads or writes the state),
//! and the guard script itself.

use std::time::Duration;

use super::journal::JournalEvent;
use super::{RESOLVE_FUNCTION, RUN_DIR};
use crate::model::{DeployId, StorePath, Token};
use crate::shell::quote;
use crate::spec::StateSpec;

/// The guard's own logic (`guard.sh`); [`guard_script`] prepends the state
/// and event names it uses.
const GUARD_LOGIC: &str = include_str!("guard.sh");

/// Where garbage-collector roots for a trial's two systems live: the
/// system a rollback returns to must survive a `nix-collect-garbage`
/// during the trial (after a `--goal test` deploy it is rooted by nothing
/// else), and so must the new system before it is activated.
pub const GC_ROOTS: &str = "/nix/var/nix/gcroots/tether";

/// NixOS's switch lock, taken by every `switch-to-configuration` run.
pub const SWITCH_LOCK: &str = "/run/nixos/switch-to-configuration.lock";

/// Everything the target needs to guard one trial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardSpec {
    pub deploy_id: DeployId,
    pub token: Token,
    /// The system the host runs when the trial is armed (what the
    /// preflight saw); arming refuses a host that runs another.
    pub current_system: StorePath,
    /// The system a rollback returns to: the current one, or, when the
    /// host already runs the new system, the one it boots.
    pub old_system: StorePath,
    pub new_system: StorePath,
    pub lease: Duration,
    /// How long the guard's rollback (`switch-to-configuration test` of
    /// the old system) may take.
    pub rollback_limit: Duration,
    /// `user@machine` of the deployer, recorded in the target's journal.
    pub deployer: String,
    /// The declared state the guard restores before it rolls back, when
    /// the host's `state.restoreOnRollback` is on (docs/state.md).
    pub state: Option<StateSpec>,
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
    pub(crate) fn lease_secs(&self) -> u64 {
        self.lease.as_secs().max(1)
    }
    /// This trial's garbage-collector roots (old, new).
    pub(crate) fn gc_roots(&self) -> (String, String) {
        (
            format!("{GC_ROOTS}/{}-old", self.deploy_id),
            format!("{GC_ROOTS}/{}-new", self.deploy_id),
        )
    }
}

/// Where a trial is, as the guard keeps it in `$dir/state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardState {
    /// On trial: the guard rolls back when the lease lapses.
    Armed,
    /// Confirmed over a fresh connection; waiting for the deployer to persist.
    Confirmed,
    RollingBack,
    RolledBack,
    RollbackFailed,
    /// Confirmed and persisted (profile and boot default read back): the
    /// trial ended and the deploy lock is released.
    Finished,
    /// Confirmed, but persisting failed: the host runs the new system and
    /// boots the old one. The trial ended.
    PersistFailed,
    /// The activation could not take NixOS's switch lock: nothing was
    /// activated, nothing rolled back. The trial ended.
    NotActivated,
    /// No state directory: the host rebooted (or someone removed it).
    Missing,
    /// A state this tether does not know (a newer tether's guard).
    Other(String),
}

impl GuardState {
    /// The states a guard writes, with their names on the wire.
    pub const WRITTEN: [GuardState; 8] = [
        GuardState::Armed,
        GuardState::Confirmed,
        GuardState::RollingBack,
        GuardState::RolledBack,
        GuardState::RollbackFailed,
        GuardState::Finished,
        GuardState::PersistFailed,
        GuardState::NotActivated,
    ];

    /// The state's name in `$dir/state` and in script output.
    pub fn wire(&self) -> &str {
        match self {
            GuardState::Armed => "armed",
            GuardState::Confirmed => "confirmed",
            GuardState::RollingBack => "rolling-back",
            GuardState::RolledBack => "rolled-back",
            GuardState::RollbackFailed => "rollback-failed",
            GuardState::Finished => "finished",
            GuardState::PersistFailed => "persist-failed",
            GuardState::NotActivated => "not-activated",
            GuardState::Missing => "missing",
            GuardState::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> GuardState {
        let s = s.trim();
        if s.is_empty() || s == GuardState::Missing.wire() {
            return GuardState::Missing;
        }
        GuardState::WRITTEN
            .into_iter()
            .find(|g| g.wire() == s)
            .unwrap_or_else(|| GuardState::Other(s.to_string()))
    }

    /// The name quoted for a script.
    pub(crate) fn quoted(&self) -> String {
        quote(self.wire())
    }

    /// The shell variable `guard.sh` knows this state by.
    fn variable(&self) -> String {
        format!("S_{}", self.wire().to_uppercase().replace('-', "_"))
    }
}

impl std::fmt::Display for GuardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wire())
    }
}

/// Why the guard rolled a trial back, as it records it in `$dir/cause`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GuardCause {
    /// The deployer asked for it.
    Requested,
    /// The lease lapsed: nobody confirmed in time.
    LeaseExpired,
    /// The new system's activation exited non-zero.
    #[serde(rename_all = "camelCase")]
    ActivationFailed { exit_code: i32 },
    /// The activation's process is gone without an exit code (killed).
    ActivationDied,
}

impl GuardCause {
    /// Parses the guard's `cause` file (`requested`, `lease-expired`,
    /// `activation-failed N`).
    pub fn parse(s: &str) -> Option<GuardCause> {
        let mut words = s.split_whitespace();
        match (words.next()?, words.next()) {
            ("requested", None) => Some(GuardCause::Requested),
            ("lease-expired", None) => Some(GuardCause::LeaseExpired),
            ("activation-died", None) => Some(GuardCause::ActivationDied),
            ("activation-failed", Some(code)) => Some(GuardCause::ActivationFailed {
                exit_code: code.parse().ok()?,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for GuardCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuardCause::Requested => f.write_str("the deployer asked for it"),
            GuardCause::LeaseExpired => {
                f.write_str("lease expired: the deployer did not confirm in time")
            }
            GuardCause::ActivationFailed { exit_code } => {
                write!(f, "activation exited {exit_code}")
            }
            GuardCause::ActivationDied => f.write_str("the activation ended without an exit code"),
        }
    }
}

/// A shell function: `activation_state` sets `$act` to `not-started`,
/// `running`, `exited` (with `$rc`) or `died` (its process is gone without
/// an exit code), from the files the activation wrapper writes. Builtins
/// only: the guard runs it twice a second.
pub(crate) const ACTIVATION_STATE_FUNCTION: &str = r#"activation_state() {
    act=not-started; rc=
    if [ -e "$dir/activation.rc" ]; then
        act=exited; read -r rc 2>/dev/null <"$dir/activation.rc"
    elif [ -e "$dir/activation.pid" ]; then
        apid=; read -r apid 2>/dev/null <"$dir/activation.pid"
        if [ -n "$apid" ] && kill -0 "$apid" 2>/dev/null; then
            act=running
        elif [ -e "$dir/activation.rc" ]; then
            # It ended between the two looks.
            act=exited; read -r rc 2>/dev/null <"$dir/activation.rc"
        else
            act=died
        fi
    fi
}
"#;

/// A shell function: `switch_lock_use` looks up NixOS's switch lock in
/// `/proc/locks` and sets `$lock_ours` (a process of the activation unit
/// holds it), `$lock_waits` (one waits for it: the older
/// `switch-to-configuration` blocks on the lock) and `$lock_other` with
/// `$lock_holder` (a process outside the unit holds it, and its PID). Only
/// at the trial's end, never in the polling path.
pub(crate) const SWITCH_LOCK_USE_FUNCTION: &str = r#"switch_lock_use() {
    lock_ours=; lock_waits=; lock_other=; lock_holder=
    [ -e "$SWITCH_LOCK" ] || return 0
    ino=$(stat -c %i "$SWITCH_LOCK" 2>/dev/null) || return 0
    while read -r _ f1 _ _ f4 f5 f6 _; do
        if [ "$f1" = "->" ]; then waiter=yes; pid=$f5; devino=$f6; else waiter=; pid=$f4; devino=$f5; fi
        [ "${devino##*:}" = "$ino" ] || continue
        ours=
        while IFS= read -r line; do
            case "$line" in "0::"*"/$ACTIVATION_UNIT.service") ours=yes ;; esac
        done 2>/dev/null </proc/"$pid"/cgroup
        if [ -n "$ours" ] && [ -n "$waiter" ]; then lock_waits=yes
        elif [ -n "$ours" ]; then lock_ours=yes
        elif [ -z "$waiter" ]; then lock_other=yes; lock_holder=$pid
        fi
    done </proc/locks
}
"#;

/// The state and journal event names as shell variables (`S_ARMED=…`,
/// `E_ROLLED_BACK=…`), for the guard and the scripts that share its logic.
pub(crate) fn names() -> String {
    let mut s = String::from(
        "# State and journal event names, from tether's GuardState and JournalEvent.\n",
    );
    for state in GuardState::WRITTEN {
        s.push_str(&format!("{}={}\n", state.variable(), state.quoted()));
    }
    for event in JournalEvent::ALL {
        s.push_str(&format!("{}={}\n", event.variable(), quote(event.wire())));
    }
    s
}

/// The guard script as written to the target: the names and shared
/// functions, then `guard.sh`.
pub(crate) fn guard_script() -> String {
    format!(
        "{}{RESOLVE_FUNCTION}\n{ACTIVATION_STATE_FUNCTION}{SWITCH_LOCK_USE_FUNCTION}{}\n{GUARD_LOGIC}",
        names(),
        super::state::STATE_FUNCTIONS
    )
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

/// A shell command (needs `$dir`) that pushes the trial's lease to a full
/// lease from now on the host's clock. No lock: the lease is only a
/// deadline, and a bump that lands after the guard decided to roll back
/// changes nothing. Written whole and renamed, as the guard reads it
/// without a lock and must never see it empty.
pub(crate) fn lease_bump(spec: &GuardSpec) -> String {
    format!(
        r#"{{ read -r up _ </proc/uptime && echo $(( ${{up%%.*}} + {lease} )) >"$dir/lease.new" && mv -f "$dir/lease.new" "$dir/lease"; }} 2>/dev/null"#,
        lease = spec.lease_secs(),
    )
}
