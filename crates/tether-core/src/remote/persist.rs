//! Making a system permanent (the profile and the boot default), ending a
//! confirmed trial, and the dry run of an activation.

use super::guard::{GuardSpec, GuardState};
use super::journal::JournalEntry;
use super::wire::{first, parse_fields, ParseError};
use super::{Op, Operation, ScriptOutput, LOCK_DIR, RUN_DIR, SYSTEM_PROFILE};
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
/// boot default (`switch-to-configuration boot`); with `trial`, then ends
/// that trial so the guard releases the deploy lock; with `journal`,
/// records it in the host's journal.
#[derive(Debug, Clone)]
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
}

impl Persist {
    /// The script without its own `set -u` preamble's guarantees: also
    /// appended to the confirmation's session.
    pub(crate) fn snippet(&self) -> String {
        let finish = self.trial.as_ref().map(finish_snippet).unwrap_or_default();
        let journal = self
            .journal
            .as_ref()
            .map(JournalEntry::append_script)
            .unwrap_or_default();
        let set_profile = match self.mode {
            PersistMode::SetProfile => {
                format!("nix-env -p {} --set \"$new\"", quote(SYSTEM_PROFILE))
            }
            PersistMode::SwitchGeneration(n) => {
                format!(
                    "nix-env -p {} --switch-generation {n}",
                    quote(SYSTEM_PROFILE)
                )
            }
        };
        format!(
            r#"new={new}
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
{finish}{journal}"#,
            new = quote(self.new_system.as_str()),
            profile = quote(SYSTEM_PROFILE),
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

/// Ends a confirmed trial and releases the deploy lock at once (the guard
/// would too, but only at its next poll: a deploy right after this one must
/// not find the host busy).
fn finish_snippet(spec: &GuardSpec) -> String {
    format!(
        r#"dir={dir}
exec 8>>"$dir/state.lock"
flock 8
printf '%s\n' {finished} >"$dir/state.new" && mv -f "$dir/state.new" "$dir/state"
exec 8>&-
exec 9>{run}/lock.flock
flock 9
holder=; read -r holder 2>/dev/null <{lock}/deploy
if [ "$holder" = {id} ]; then rm -rf {lock}; fi
exec 9>&-
"#,
        dir = quote(&spec.dir()),
        finished = GuardState::Finished.quoted(),
        run = quote(RUN_DIR),
        lock = quote(LOCK_DIR),
        id = quote(spec.deploy_id.as_str()),
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
            "{}{}",
            finish_snippet(&self.spec),
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
