//! The health checks' operations on the target: a user's command, the
//! state of named units, and the system state behind the built-in
//! `failedUnits` and `systemRunning` checks.

use super::wire::{all, finished, first, parse_fields, ParseError};
use super::{Op, Operation, ScriptOutput};
use crate::shell::quote;

/// A `command` health check on the target: the user's command, run by
/// `sh -c` so its exit status and stderr are its own.
#[derive(Debug, Clone)]
pub struct CheckCommand {
    pub command: String,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// `None` when killed by a signal.
    pub exit_code: Option<i32>,
    pub stderr: String,
}

impl Operation for CheckCommand {
    type Output = CommandResult;
    const OP: Op = Op::CheckCommand;

    fn script(&self) -> String {
        format!("exec sh -c {}\n", quote(&self.command))
    }

    fn parse(&self, out: &ScriptOutput) -> Result<CommandResult, ParseError> {
        Ok(CommandResult {
            exit_code: out.exit_code,
            stderr: out.stderr.clone(),
        })
    }
}

/// The `systemctl is-active` state of each of `units`.
#[derive(Debug, Clone)]
pub struct Units {
    pub units: Vec<String>,
}

impl Operation for Units {
    /// `(unit, state)` pairs, in the order printed.
    type Output = Vec<(String, String)>;
    const OP: Op = Op::Units;

    fn script(&self) -> String {
        let list: Vec<String> = self.units.iter().map(|u| quote(u)).collect();
        format!(
            r#"for u in {list}; do
    printf 'unit_state=%s %s\n' "$u" "$(systemctl is-active -- "$u" 2>/dev/null)"
done
"#,
            list = list.join(" ")
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<Vec<(String, String)>, ParseError> {
        Ok(all(&parse_fields(&out.stdout), "unit_state")
            .iter()
            .map(|l| match l.rsplit_once(' ') {
                Some((u, s)) => (u.to_string(), s.to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect())
    }
}

/// The manager's state (what `systemctl is-system-running` prints) and the
/// failed units.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemState;

/// What one look at the system state saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemStateLook {
    /// `running`, `degraded`, `starting`, …
    pub state: String,
    pub failed_units: Vec<String>,
    /// How many units systemd counted as failed in the same look as
    /// `state` (the names are listed a moment later; a unit can leave the
    /// failed state in between).
    pub failed_count: Option<u32>,
}

/// One `systemctl` call when no unit failed (this runs on every host of
/// every deploy); the failed units' names only when there are some. Also
/// appended to the activation's session, as the checks' first look.
pub(crate) fn system_state_script() -> String {
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

impl Operation for SystemState {
    type Output = SystemStateLook;
    const OP: Op = Op::SystemState;

    fn script(&self) -> String {
        system_state_script()
    }

    fn parse(&self, out: &ScriptOutput) -> Result<SystemStateLook, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "system", "the system state script")?;
        Ok(SystemStateLook {
            state: f
                .get("system_state")
                .and_then(|v| v.first())
                .cloned()
                .unwrap_or_default(),
            failed_units: all(&f, "failed_unit"),
            failed_count: first(&f, "failed_count").and_then(|n| n.parse().ok()),
        })
    }
}
