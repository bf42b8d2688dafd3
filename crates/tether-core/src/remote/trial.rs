//! Operations on a trial in progress: renewing its lease (and learning,
//! in the same look, where the activation and the guard are), asking the
//! guard to roll back, and inspecting how the trial ended.

use super::bootloader::{parse_boot_default, BootDefault, BOOT_DEFAULT_FUNCTION};
use super::guard::{
    lease_bump, GuardCause, GuardSpec, GuardState, ACTIVATION_STATE_FUNCTION, SWITCH_LOCK,
};
use super::preflight::{parse_lock_holder, LockHolder, SWITCH_LOCK_PROBE};
use super::state::RestoreReport;
use super::wire::{finished, first, parse_fields, Fields, ParseError};
use super::{generation_number, Op, Operation, ScriptOutput, RESOLVE_FUNCTION, SYSTEM_PROFILE};
use crate::shell::quote;
use crate::text::one_line;

/// The `state=` line that several trial scripts print.
fn guard_state(f: &Fields) -> Result<GuardState, ParseError> {
    f.get("state")
        .and_then(|v| v.first())
        .map(|s| GuardState::parse(s))
        .ok_or_else(|| ParseError("no guard state printed".into()))
}

/// Where the new system's activation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationState {
    /// Armed, but the activation has not started yet.
    NotStarted,
    Running,
    Exited {
        code: i32,
        /// It failed only because another process holds NixOS's switch
        /// lock: nothing was activated.
        switch_locked: bool,
    },
    /// Its process is gone without an exit code (killed).
    Died,
}

/// Prints `activation=<state>` (`activation_state` must be defined).
const ACTIVATION_REPORT: &str = r#"activation_state
echo "activation=$act"
echo "activation_rc=$rc"
[ -e "$dir/activation.locked" ] && echo "activation_locked=yes"
"#;

fn activation(f: &Fields) -> Option<ActivationState> {
    Some(match first(f, "activation")? {
        "not-started" => ActivationState::NotStarted,
        "running" => ActivationState::Running,
        "exited" => ActivationState::Exited {
            code: first(f, "activation_rc")?.parse().ok()?,
            switch_locked: first(f, "activation_locked") == Some("yes"),
        },
        "died" => ActivationState::Died,
        _ => return None,
    })
}

/// Whether the guard was found running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardLife {
    Alive,
    /// It was gone while the trial is on; it was started again.
    Restarted,
    /// It was gone and could not be started again.
    Dead,
}

/// Extends the lease while the trial (or the persisting after a
/// confirmation) goes on, and reports the guard's state, the activation's
/// and whether the guard runs: a guard that is gone while the trial is on
/// is started again, as nobody would roll back otherwise.
#[derive(Debug, Clone)]
pub struct Renew {
    pub spec: GuardSpec,
}

/// What one renewal saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    pub state: GuardState,
    pub activation: Option<ActivationState>,
    pub guard: GuardLife,
}

impl Operation for Renew {
    type Output = Renewal;
    const OP: Op = Op::Renew;

    fn script(&self) -> String {
        format!(
            r#"set -u
umask 077
dir={dir}
[ -d "$dir" ] && {bump}
st=missing; read -r st 2>/dev/null <"$dir/state"
echo "state=$st"
{activation_state}{activation_report}guard=alive
gpid=; read -r gpid 2>/dev/null <"$dir/guard.pid"
if [ -z "$gpid" ] || ! kill -0 "$gpid" 2>/dev/null; then
    case "$st" in
    {armed} | {confirmed})
        if systemctl is-active --quiet {unit} 2>/dev/null; then
            guard=alive
        else
            . "$dir/params"
            if systemd-run --unit={unit} --description={desc} --quiet --collect \
                --property=Restart=on-failure --property=RestartSec=1 \
                --setenv=PATH="$TOOL_PATH:/usr/bin:/bin" "$SH" "$dir/guard.sh" "$dir" 2>/dev/null; then
                guard=restarted
            else
                guard=dead
            fi
        fi
        ;;
    esac
fi
echo "guard=$guard"
echo "renew=done"
"#,
            dir = quote(&self.spec.dir()),
            bump = lease_bump(&self.spec),
            activation_state = ACTIVATION_STATE_FUNCTION,
            activation_report = ACTIVATION_REPORT,
            armed = GuardState::Armed.quoted(),
            confirmed = GuardState::Confirmed.quoted(),
            unit = quote(&self.spec.guard_unit()),
            desc = quote(&format!("tether guard for deploy {}", self.spec.deploy_id)),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<Renewal, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "renew", "the renewal")?;
        Ok(Renewal {
            state: guard_state(&f)?,
            activation: activation(&f),
            guard: match first(&f, "guard") {
                Some("restarted") => GuardLife::Restarted,
                Some("dead") => GuardLife::Dead,
                _ => GuardLife::Alive,
            },
        })
    }
}

/// Asks the guard to roll back now (it acts only while the trial is armed).
#[derive(Debug, Clone)]
pub struct RequestRollback {
    pub spec: GuardSpec,
    /// Why, for the host's journal.
    pub reason: String,
}

impl Operation for RequestRollback {
    type Output = GuardState;
    const OP: Op = Op::RequestRollback;

    fn script(&self) -> String {
        format!(
            r#"set -u
umask 077
dir={dir}
if [ -d "$dir" ]; then printf '%s\n' {reason} >"$dir/rollback-request.new" && mv -f "$dir/rollback-request.new" "$dir/rollback-request"; fi
st=missing; read -r st 2>/dev/null <"$dir/state"
echo "state=$st"
"#,
            dir = quote(&self.spec.dir()),
            // One line: it ends up in the host's journal.
            reason = quote(&one_line(&self.reason)),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<GuardState, ParseError> {
        guard_state(&parse_fields(&out.stdout))
    }
}

/// Reads the guard's state and the host's systems (after a rollback was
/// requested, the lease lapsed, or the activation's session was lost).
#[derive(Debug, Clone)]
pub struct Inspect {
    pub spec: GuardSpec,
}

/// The guard's state and the host's systems, as [`Inspect`] found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub current_system: Option<String>,
    pub boot_id: String,
    pub state: GuardState,
    /// Why the guard rolled back, when it did.
    pub cause: Option<GuardCause>,
    pub activation: Option<ActivationState>,
    pub rollback_rc: Option<i32>,
    /// What the system profile points at, and its generation.
    pub profile_system: Option<String>,
    pub profile_generation: Option<u32>,
    /// What the host boots by default, read from its boot loader.
    pub boot_default: Option<BootDefault>,
    /// Who holds NixOS's switch lock now, if anyone.
    pub switch_lock: Option<LockHolder>,
    /// What the guard did with the declared state before rolling back,
    /// when it restores it (`state.restoreOnRollback`).
    pub restore: Option<RestoreReport>,
}

impl Operation for Inspect {
    type Output = Inspection;
    const OP: Op = Op::Inspect;

    fn script(&self) -> String {
        format!(
            r#"set -u
dir={dir}
profile={profile}
{resolve}
{boot_default}{activation_state}{lock_probe}resolve /run/current-system; echo "current=$r"
read -r boot </proc/sys/kernel/random/boot_id
echo "boot_id=$boot"
st=missing; read -r st 2>/dev/null <"$dir/state"
echo "state=$st"
cause=; read -r cause 2>/dev/null <"$dir/cause"
echo "cause=$cause"
{activation_report}rc=; read -r rc 2>/dev/null <"$dir/rollback.rc"
echo "rollback_rc=$rc"
rrc=; read -r rrc 2>/dev/null <"$dir/restore.rc"
echo "restore_rc=$rrc"
[ -e "$dir/restore.out" ] && cat "$dir/restore.out"
resolve "$profile"; echo "profile=$r"
echo "profile_link=$(readlink "$profile" 2>/dev/null)"
boot_default
switch_lock_probe
echo "inspect=done"
"#,
            dir = quote(&self.spec.dir()),
            profile = quote(SYSTEM_PROFILE),
            resolve = RESOLVE_FUNCTION,
            boot_default = BOOT_DEFAULT_FUNCTION,
            activation_state = ACTIVATION_STATE_FUNCTION,
            activation_report = ACTIVATION_REPORT,
            lock_probe = SWITCH_LOCK_PROBE.replace("@SWITCH_LOCK@", &quote(SWITCH_LOCK)),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<Inspection, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "inspect", "the inspection")?;
        Ok(Inspection {
            current_system: first(&f, "current").map(str::to_string),
            boot_id: first(&f, "boot_id").unwrap_or_default().to_string(),
            state: GuardState::parse(first(&f, "state").unwrap_or("missing")),
            cause: first(&f, "cause").and_then(GuardCause::parse),
            activation: activation(&f),
            rollback_rc: first(&f, "rollback_rc").and_then(|s| s.parse().ok()),
            profile_system: first(&f, "profile").map(str::to_string),
            profile_generation: first(&f, "profile_link").and_then(generation_number),
            boot_default: parse_boot_default(&f),
            switch_lock: parse_lock_holder(&f),
            restore: first(&f, "restore_rc").map(|_| RestoreReport::from_fields(&f)),
        })
    }
}
