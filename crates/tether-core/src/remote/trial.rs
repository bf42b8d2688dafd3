//! Operations on a trial in progress: renewing its lease, asking the guard
//! to roll back, and inspecting how the trial ended.

use super::guard::{lease_bump, GuardCause, GuardSpec, GuardState};
use super::wire::{finished, first, parse_fields, Fields, ParseError};
use super::{generation_number, Op, Operation, ScriptOutput, SYSTEM_PROFILE};
use crate::shell::quote;

/// The `state=` line that several trial scripts print.
fn guard_state(f: &Fields) -> Result<GuardState, ParseError> {
    f.get("state")
        .and_then(|v| v.first())
        .map(|s| GuardState::parse(s))
        .ok_or_else(|| ParseError("no guard state printed".into()))
}

/// Extends the lease while the trial (or the persisting after a
/// confirmation) goes on; prints the guard's state either way.
#[derive(Debug, Clone)]
pub struct Renew {
    pub spec: GuardSpec,
}

impl Operation for Renew {
    type Output = GuardState;
    const OP: Op = Op::Renew;

    fn script(&self) -> String {
        format!(
            r#"set -u
dir={dir}
[ -d "$dir" ] && {bump}
st=missing; read -r st 2>/dev/null <"$dir/state"
echo "state=$st"
"#,
            dir = quote(&self.spec.dir()),
            bump = lease_bump(&self.spec),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<GuardState, ParseError> {
        guard_state(&parse_fields(&out.stdout))
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
dir={dir}
if [ -d "$dir" ]; then printf '%s\n' {reason} >"$dir/rollback-request.new" && mv -f "$dir/rollback-request.new" "$dir/rollback-request"; fi
echo "state=$(cat "$dir/state" 2>/dev/null || echo missing)"
"#,
            dir = quote(&self.spec.dir()),
            reason = quote(&self.reason),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<GuardState, ParseError> {
        guard_state(&parse_fields(&out.stdout))
    }
}

/// Reads the guard's state and the host's systems (after a rollback was
/// requested or the lease lapsed).
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
    pub activation_rc: Option<i32>,
    pub rollback_rc: Option<i32>,
    /// What the system profile points at, and its generation.
    pub profile_system: Option<String>,
    pub profile_generation: Option<u32>,
}

impl Operation for Inspect {
    type Output = Inspection;
    const OP: Op = Op::Inspect;

    fn script(&self) -> String {
        format!(
            r#"set -u
dir={dir}
echo "current=$(readlink -f /run/current-system 2>/dev/null)"
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
echo "state=$(cat "$dir/state" 2>/dev/null || echo missing)"
echo "cause=$(cat "$dir/cause" 2>/dev/null)"
echo "activation_rc=$(cat "$dir/activation.rc" 2>/dev/null)"
echo "rollback_rc=$(cat "$dir/rollback.rc" 2>/dev/null)"
echo "profile=$(readlink -f {profile} 2>/dev/null)"
echo "profile_link=$(readlink {profile} 2>/dev/null)"
echo "inspect=done"
"#,
            dir = quote(&self.spec.dir()),
            profile = quote(SYSTEM_PROFILE),
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
            activation_rc: first(&f, "activation_rc").and_then(|s| s.parse().ok()),
            rollback_rc: first(&f, "rollback_rc").and_then(|s| s.parse().ok()),
            profile_system: first(&f, "profile").map(str::to_string),
            profile_generation: first(&f, "profile_link").and_then(generation_number),
        })
    }
}
