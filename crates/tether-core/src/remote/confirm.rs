//! The confirmation, run over a brand-new SSH connection: it checks that
//! the host runs the new system and is the pinned machine, then confirms
//! with the deploy's token. It proves the trial: it succeeds only while the
//! trial is still armed (never after the guard fired) and only once the
//! activation has ended with exit code 0 — the deployer runs its health
//! checks after that end, and confirms after them. For goal switch,
//! persisting rides along in the same session, once the confirmation
//! succeeded there.

use super::guard::{lease_bump, GuardSpec, GuardState, ACTIVATION_STATE_FUNCTION};
use super::persist::{Persist, PersistReport};
use super::wire::{first, parse_fields, ParseError};
use super::{Op, Operation, ScriptOutput, RESOLVE_FUNCTION};
use crate::shell::quote;

/// Confirms the trial of `spec`; then `persist`, when given and confirmed.
#[derive(Debug, Clone)]
pub struct Confirm {
    pub spec: GuardSpec,
    pub persist: Option<Persist>,
}

/// What a confirmation attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmReport {
    pub result: ConfirmResult,
    pub machine_id: String,
    pub current_system: Option<String>,
    pub boot_id: String,
    pub state: GuardState,
    /// What persisting printed, when it rode along (`None` otherwise).
    pub persist: Option<Result<PersistReport, ParseError>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmResult {
    Confirmed,
    /// The guard already left the trial (it rolled back, or ended otherwise).
    TooLate,
    NotRunningNew,
    NoTrial,
    BadToken,
    /// The activation has not ended yet: nothing to confirm.
    ActivationRunning,
    /// The activation ended without success (its exit code, when it had
    /// one): the guard rolls back.
    ActivationFailed(Option<i32>),
    /// The trial's state lock stayed taken for the whole bounded wait.
    LockTimeout,
}

impl Confirm {
    fn confirm_script(&self) -> String {
        let spec = &self.spec;
        // Builtins where possible: this runs on every host at the end of
        // every deploy, often on many at once.
        format!(
            r#"set -u
umask 077
dir={dir}
{activation_state}mid=; read -r mid 2>/dev/null </etc/machine-id
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
    if ! flock -w 10 8; then
        echo "confirm=lock-timeout"
    else
        st=; read -r st 2>/dev/null <"$dir/state"
        activation_state
        if [ "$st" != {armed} ]; then
            echo "confirm=too-late"
        elif [ "$act" = exited ] && [ "$rc" = 0 ]; then
            {bump}
            printf '%s\n' {confirmed} >"$dir/state.new" && mv -f "$dir/state.new" "$dir/state"
            echo "confirm=confirmed"
        elif [ "$act" = running ] || [ "$act" = not-started ]; then
            echo "confirm=activation-running"
        else
            echo "confirm=activation-failed"
            echo "activation_rc=$rc"
        fi
    fi
    exec 8>&-
fi
st=missing; read -r st 2>/dev/null <"$dir/state"
echo "state=$st"
"#,
            dir = quote(&spec.dir()),
            token = quote(spec.token.as_str()),
            new = quote(spec.new_system.as_str()),
            bump = lease_bump(spec),
            activation_state = ACTIVATION_STATE_FUNCTION,
            armed = GuardState::Armed.quoted(),
            confirmed = GuardState::Confirmed.quoted(),
            resolve = RESOLVE_FUNCTION,
        )
    }
}

impl Operation for Confirm {
    type Output = ConfirmReport;
    const OP: Op = Op::Confirm;

    fn op(&self) -> Op {
        match self.persist {
            Some(_) => Op::ConfirmAndPersist,
            None => Op::Confirm,
        }
    }

    fn script(&self) -> String {
        let confirm = self.confirm_script();
        match &self.persist {
            // `$st` is the state the confirmation read last.
            Some(persist) => format!(
                "{confirm}if [ \"$st\" = {} ]; then\n{}\nfi\n",
                GuardState::Confirmed.quoted(),
                persist.snippet()
            ),
            None => confirm,
        }
    }

    fn parse(&self, out: &ScriptOutput) -> Result<ConfirmReport, ParseError> {
        let f = parse_fields(&out.stdout);
        let result = match first(&f, "confirm") {
            Some("confirmed") => ConfirmResult::Confirmed,
            Some("too-late") => ConfirmResult::TooLate,
            Some("not-running-new") => ConfirmResult::NotRunningNew,
            Some("no-trial") => ConfirmResult::NoTrial,
            Some("bad-token") => ConfirmResult::BadToken,
            Some("activation-running") => ConfirmResult::ActivationRunning,
            Some("activation-failed") => ConfirmResult::ActivationFailed(
                first(&f, "activation_rc").and_then(|c| c.parse().ok()),
            ),
            Some("lock-timeout") => ConfirmResult::LockTimeout,
            _ => return Err(ParseError("the confirmation printed no result".into())),
        };
        Ok(ConfirmReport {
            result,
            machine_id: first(&f, "machine_id").unwrap_or_default().to_string(),
            current_system: first(&f, "current").map(str::to_string),
            boot_id: first(&f, "boot_id").unwrap_or_default().to_string(),
            state: GuardState::parse(first(&f, "state").unwrap_or("missing")),
            persist: self
                .persist
                .as_ref()
                .map(|_| Persist::parse_stdout(&out.stdout)),
        })
    }
}
