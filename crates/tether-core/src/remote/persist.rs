//! Making a system permanent (the profile and the boot default), ending a
//! confirmed trial, and the dry run of an activation.
//!
//! Persisting is verified: it counts only when the system profile and the
//! boot loader's default entry, both read back afterwards, point at the new
//! system. The trial then ends `finished`; otherwise `persist-failed`, and
//! the host's journal says confirmed-not-persisted.

use super::bootloader::{parse_boot_default, BootDefault, BOOT_DEFAULT_FUNCTION};
use super::guard::{GuardSpec, GuardState};
use super::journal::{JournalEntry, JournalEvent};
use super::wire::{first, parse_fields, ParseError};
use super::{Op, Operation, ScriptOutput, LOCK_DIR, RESOLVE_FUNCTION, SYSTEM_PROFILE};
use crate::model::StorePath;
use crate::shell::quote;

/// How the confirmed system becomes the boot default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistMode {
    /// A new profile generation pointing at the system (`nix-env --set`).
    SetProfile,
    /// Back to an existing generation (`nix-env --switch-generation N`), as
    /// `nixos-rebuild --rollback` does: no new generation.
    SwitchGeneration(u32),
}

/// Makes `new_system` permanent: the profile (see [`PersistMode`]) and the
/// boot default (`switch-to-configuration boot`), read back; with `trial`,
/// then ends that trial (`finished`, or `persist-failed`) so the guard
/// releases the deploy lock; with `journal`, records it in the host's
/// journal (as confirmed, or confirmed-not-persisted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    pub new_system: StorePath,
    pub mode: PersistMode,
    pub trial: Option<GuardSpec>,
    pub journal: Option<JournalEntry>,
}

/// What persisting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistReport {
    pub profile_set: bool,
    /// Exit code of `switch-to-configuration boot` (None when not reached).
    pub boot_rc: Option<i32>,
    pub generation: Option<u32>,
    /// What the host boots by default, read back afterwards.
    pub boot_default: Option<BootDefault>,
    /// The host's own verdict: profile and boot default both read back as
    /// the new system.
    pub persisted: bool,
}

impl PersistReport {
    /// Whether the system is persisted: the host says so, and the boot
    /// default it reported is the system.
    pub fn is_persisted(&self, system: &StorePath) -> bool {
        self.persisted
            && self.profile_set
            && self.boot_rc == Some(0)
            && self.boot_default.as_ref().and_then(|d| d.system.as_deref()) == Some(system.as_str())
    }
}

impl Persist {
    /// The script without a preamble: also appended to the confirmation's
    /// session.
    pub(crate) fn snippet(&self) -> String {
        let set_profile = match self.mode {
            PersistMode::SetProfile => "nix-env -p \"$profile\" --set \"$new\"".to_string(),
            PersistMode::SwitchGeneration(n) => {
                format!("nix-env -p \"$profile\" --switch-generation {n}")
            }
        };
        let finish = self
            .trial
            .as_ref()
            .map(|spec| {
                format!(
                    "if [ \"$persisted\" = yes ]; then\n{}else\n{}fi\n",
                    end_trial(spec, &GuardState::Finished),
                    end_trial(spec, &GuardState::PersistFailed)
                )
            })
            .unwrap_or_default();
        let journal = self
            .journal
            .as_ref()
            .map(|entry| {
                let failed = JournalEntry {
                    event: JournalEvent::ConfirmedNotPersisted,
                    detail: format!("{}; persisting failed", entry.detail),
                    ..entry.clone()
                };
                format!(
                    "if [ \"$persisted\" = yes ]; then\n{}else\n{}fi\n",
                    entry.append_script(),
                    failed.append_script()
                )
            })
            .unwrap_or_default();
        format!(
            r#"umask 077
new={new}
profile={profile}
{resolve}
{boot_default}profile_ok=no
boot_rc=
if {set_profile} >/dev/null; then
    resolve "$profile"
    [ "$r" = "$new" ] && profile_ok=yes
fi
if [ "$profile_ok" = yes ]; then
    echo "profile=ok"
    "$new/bin/switch-to-configuration" boot 1>&2
    boot_rc=$?
    echo "boot_rc=$boot_rc"
else
    echo "profile=failed"
fi
link=$(readlink "$profile" 2>/dev/null)
link=${{link#system-}}
echo "generation=${{link%-link}}"
boot_default "$new"
persisted=no
if [ "$profile_ok" = yes ] && [ "$boot_rc" = 0 ] && [ "$boot_ok" = yes ]; then persisted=yes; fi
echo "persisted=$persisted"
{finish}{journal}"#,
            new = quote(self.new_system.as_str()),
            profile = quote(SYSTEM_PROFILE),
            resolve = RESOLVE_FUNCTION,
            boot_default = BOOT_DEFAULT_FUNCTION,
        )
    }

    /// Reads what [`Persist::snippet`] printed, wherever it ran.
    pub(crate) fn parse_stdout(stdout: &str) -> Result<PersistReport, ParseError> {
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
            boot_default: parse_boot_default(&f),
            persisted: first(&f, "persisted") == Some("yes"),
        })
    }
}

impl Operation for Persist {
    type Output = PersistReport;
    const OP: Op = Op::Persist;

    fn script(&self) -> String {
        format!("set -u\n{}", self.snippet())
    }

    fn parse(&self, out: &ScriptOutput) -> Result<PersistReport, ParseError> {
        Persist::parse_stdout(&out.stdout)
    }
}

/// Ends a confirmed trial in `state` and releases the deploy lock and the
/// trial's garbage-collector roots at once (the guard would too, but only
/// at its next poll: a deploy right after this one must not find the host
/// busy). The state lock's wait is bounded; the state is written even if
/// it could not be taken, as the trial is over either way.
fn end_trial(spec: &GuardSpec, state: &GuardState) -> String {
    let (root_old, root_new) = spec.gc_roots();
    format!(
        r#"dir={dir}
exec 8>>"$dir/state.lock"
flock -w 10 8
printf '%s\n' {state} >"$dir/state.new" && mv -f "$dir/state.new" "$dir/state"
exec 8>&-
holder=; read -r holder 2>/dev/null <{lock}/deploy
if [ "$holder" = {id} ]; then rm -rf {lock}; fi
rm -f {root_old} {root_new}
"#,
        dir = quote(&spec.dir()),
        state = state.quoted(),
        lock = quote(LOCK_DIR),
        id = quote(spec.deploy_id.as_str()),
        root_old = quote(&root_old),
        root_new = quote(&root_new),
    )
}

/// Ends a confirmed trial that is not persisted (goal test), recording it
/// in the host's journal.
#[derive(Debug, Clone)]
pub struct FinishTrial {
    pub spec: GuardSpec,
    pub journal: JournalEntry,
}

impl Operation for FinishTrial {
    type Output = ();
    const OP: Op = Op::FinishTrial;

    fn script(&self) -> String {
        format!(
            "set -u\numask 077\n{}{}",
            end_trial(&self.spec, &GuardState::Finished),
            self.journal.append_script()
        )
    }

    fn parse(&self, _out: &ScriptOutput) -> Result<(), ParseError> {
        Ok(())
    }
}

/// Runs `switch-to-configuration dry-activate` of a copied system; its
/// report is its output, its result its exit code.
#[derive(Debug, Clone)]
pub struct DryActivate {
    pub new_system: StorePath,
}

impl Operation for DryActivate {
    /// The exit code and stderr of `dry-activate`.
    type Output = super::CommandResult;
    const OP: Op = Op::DryActivate;

    fn script(&self) -> String {
        format!(
            "set -u\n{}/bin/switch-to-configuration dry-activate\n",
            quote(self.new_system.as_str())
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<super::CommandResult, ParseError> {
        Ok(super::CommandResult {
            exit_code: out.exit_code,
            stderr: out.stderr.clone(),
        })
    }
}
