//! Why a host ended as it did: one enum per kind of outcome, each with one
//! `Display` (the sentence people read in the summary, the journals and the
//! event stream) and a serialized form (`cause` in `--json`) that tools and
//! tests match on instead of the sentence.
//!
//! A new reason is a variant here, with its sentence in the `Display` impl
//! below it; the logic only ever builds values.

use std::fmt;

use serde::Serialize;

use super::boot_reason::{reboot_reasons_text, BootTrialProblem};
use super::checks::CheckFailure;
use crate::remote::{
    activation_exit_meaning, BootLoader, BootTrialCause, GuardCause, GuardState, LockHolder,
    PrepareStep, RebootReason, StateProblem, SudoFailure, VolumeFailure,
};

/// The exit code of a `switch-to-configuration` run, said with its meaning.
fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exited {c} ({})", activation_exit_meaning(c)),
        None => "was killed by a signal".to_string(),
    }
}

fn serialize_state<S: serde::Serializer>(state: &GuardState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.wire())
}

/// The host is not who, or not what, the inventory and the build say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum IdentityProblem {
    /// The host presented another SSH host key than the pinned one.
    HostKey { detail: String },
    #[serde(rename_all = "camelCase")]
    MachineId { seen: String, pinned: String },
    /// The host's architecture is not the one the system was built for.
    #[serde(rename_all = "camelCase")]
    Architecture {
        host_system: String,
        arch: String,
        built_for: String,
    },
}

impl fmt::Display for IdentityProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityProblem::HostKey { detail } => write!(
                f,
                "identity: the host did not present the pinned host key ({detail})"
            ),
            IdentityProblem::MachineId { seen, pinned } => write!(
                f,
                "identity: machine-id is {seen:?}, the inventory pins {pinned:?}"
            ),
            IdentityProblem::Architecture {
                host_system,
                arch,
                built_for,
            } => write!(
                f,
                "architecture: the host is {host_system} ({arch}), the system was built for {built_for}"
            ),
        }
    }
}

/// Refused before anything on the host changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Refusal {
    Identity {
        #[serde(flatten)]
        problem: IdentityProblem,
    },
    /// No `/run/current-system`: nothing to roll back to.
    NoCurrentSystem,
    MissingTools {
        tools: Vec<String>,
    },
    /// A tool the guard needs is missing (found while arming).
    GuardTool {
        tool: String,
    },
    #[serde(rename_all = "camelCase")]
    AnotherDeploy {
        deploy_id: String,
    },
    /// The host runs another system than the preflight saw.
    #[serde(rename_all = "camelCase")]
    SystemChanged {
        saw: String,
        now: Option<String>,
    },
    /// Another process holds NixOS's switch lock: an activation is in
    /// progress (or one was orphaned).
    SwitchLockHeld {
        holder: LockHolder,
    },
    /// The host's arm lock stayed taken for the whole bounded wait.
    ArmLockTimeout,
    /// `/run/tether` on the host belongs to someone other than root.
    UntrustedRunDir,
    /// The host already runs the new system (activated by hand) and has no
    /// other system to return to: there is no trial to run.
    NothingToReturnTo {
        current: String,
    },
    /// `tether rollback`: no generation to go back to.
    NoGeneration {
        #[serde(flatten)]
        problem: NoGeneration,
    },
    /// `--trial live` on a change that only a boot can show.
    NeedsReboot {
        reasons: Vec<RebootReason>,
    },
    /// The reboot trial needs a boot loader that boots an entry once.
    #[serde(rename_all = "camelCase")]
    NoOneShotBoot {
        boot_loader: Option<BootLoader>,
        reasons: Vec<RebootReason>,
    },
    /// The reboot trial returns to the boot default: it must be the system
    /// the host runs.
    #[serde(rename_all = "camelCase")]
    BootsOtherSystem {
        runs: String,
        boots: Option<String>,
    },
    /// `--force-live` with `--reboot`: a kernel change would be persisted
    /// before it ever booted.
    ForceLiveWithReboot {
        reasons: Vec<RebootReason>,
    },
    /// The host cannot honour the inventory's `state` declaration.
    State {
        problems: Vec<StateProblem>,
    },
    /// A pre-deploy snapshot failed: nothing was activated.
    SnapshotFailed {
        failure: VolumeFailure,
    },
    /// sudo would not make tether root (inventory `sudo`).
    Sudo {
        failure: SudoFailure,
    },
    /// The session is not root and `sudo = "none"`.
    NotRoot {
        uid: u32,
    },
    /// The SSH user is not trusted by the host's Nix daemon, so it cannot
    /// copy an unsigned closure.
    NixUntrusted {
        user: String,
        /// The key names the daemon trusts (none of which signed every
        /// path of the closure).
        trusted_keys: Vec<String>,
    },
    /// `rehearsal.required`: no rehearsal of this new system passed.
    NotRehearsed {
        host: String,
        system: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Identity { problem } => match problem {
                IdentityProblem::HostKey { .. } => {
                    write!(f, "{problem}; nothing was copied or activated")
                }
                _ => write!(f, "{problem}"),
            },
            Refusal::NoCurrentSystem => f.write_str(
                "identity: /run/current-system is missing; tether only deploys to a running NixOS system it can roll back to",
            ),
            Refusal::MissingTools { tools } => write!(
                f,
                "the host lacks tools the safe switch needs: {}",
                tools.join(", ")
            ),
            Refusal::GuardTool { tool } => write!(f, "the host lacks {tool}, which the guard needs"),
            Refusal::AnotherDeploy { deploy_id } => {
                write!(f, "another deploy ({deploy_id}) is in progress on this host")
            }
            Refusal::SystemChanged { saw, now } => write!(
                f,
                "the host's system changed since the preflight (it saw {saw}, the host now runs {}); nothing was activated",
                now.as_deref().unwrap_or("nothing")
            ),
            Refusal::SwitchLockHeld { holder } => write!(
                f,
                "another activation is in progress: NixOS's switch lock (/run/nixos/switch-to-configuration.lock) is held by {holder}; nothing was copied or activated"
            ),
            Refusal::Sudo { failure } => write!(f, "sudo: {failure}; nothing was changed"),
            Refusal::NotRoot { uid } => write!(
                f,
                "the SSH user is not root (uid {uid}) and the inventory says sudo = \"none\": tether needs root to arm the guard and activate; set sudo = \"passwordless\" or \"password\", or log in as root; nothing was changed"
            ),
            Refusal::NixUntrusted { user, trusted_keys } => {
                let keys = if trusted_keys.is_empty() {
                    "none".to_string()
                } else {
                    trusted_keys.join(", ")
                };
                write!(
                    f,
                    "the host's Nix daemon does not trust {user:?} and the closure is not signed by a key it trusts (trusted-public-keys: {keys}), so the copy would fail; add {user:?} to nix.settings.trusted-users on the host, or sign the closure (`nix store sign -r -k KEY`) with a key in its trusted-public-keys; nothing was copied or changed"
                )
            }
            Refusal::NotRehearsed { host, system } => write!(
                f,
                "rehearsal.required: no rehearsal of {system} passed; run `tether rehearse {host} --on <staging host>` first (docs/rehearsal.md); nothing was copied or activated"
            ),
            Refusal::ArmLockTimeout => f.write_str(
                "the host's arm lock (/run/tether/arm.lock) stayed taken for the whole wait; nothing was activated",
            ),
            Refusal::UntrustedRunDir => f.write_str(
                "/run/tether on the host is not owned by root; tether will not keep its locks there, nothing was activated",
            ),
            Refusal::NothingToReturnTo { current } => write!(
                f,
                "the host already runs the new system ({current}) but has no other system to return to if it is unhealthy; nothing was done"
            ),
            Refusal::NoGeneration { problem } => problem.fmt(f),
            Refusal::NeedsReboot { reasons } => write!(
                f,
                "--trial live refused: {}; a live trial cannot show this change (deploy with --trial reboot or auto, or accept the risk with --force-live); nothing was activated",
                reboot_reasons_text(reasons)
            ),
            Refusal::NoOneShotBoot {
                boot_loader,
                reasons,
            } => write!(
                f,
                "this change needs a reboot trial ({}), but the host's boot loader ({}) cannot boot an entry once: the reboot trial needs systemd-boot (bootctl set-oneshot); nothing was activated",
                reboot_reasons_text(reasons),
                match boot_loader {
                    Some(BootLoader::Grub) => "GRUB",
                    Some(BootLoader::SystemdBoot) => "systemd-boot, not installed",
                    Some(BootLoader::None) | None => "none found",
                }
            ),
            Refusal::BootsOtherSystem { runs, boots } => write!(
                f,
                "the reboot trial returns to the host's boot default, but the host runs {runs} and boots {}; switch it to the system it boots first; nothing was activated",
                boots.as_deref().unwrap_or("a system tether could not read")
            ),
            Refusal::ForceLiveWithReboot { reasons } => write!(
                f,
                "--force-live with --reboot would persist a change nobody booted ({}); drop --force-live to use the reboot trial",
                reboot_reasons_text(reasons)
            ),
            Refusal::State { problems } => write!(
                f,
                "{}; nothing was copied or activated",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Refusal::SnapshotFailed { failure } => write!(
                f,
                "the pre-deploy snapshot failed ({failure}); snapshots taken before it were kept, nothing was activated"
            ),
        }
    }
}

/// Why `tether rollback` has no generation to return a host to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum NoGeneration {
    /// `--to N` names a generation the host does not have.
    Missing { wanted: u32, existing: Vec<u32> },
    /// The profile's current generation is the oldest.
    NoneBefore { current: u32, existing: Vec<u32> },
    /// The system profile has no current generation.
    NoProfile,
    /// The generation's link does not lead to a store path.
    #[serde(rename_all = "camelCase")]
    NotAStorePath { generation: u32, target: String },
}

impl fmt::Display for NoGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listed = |existing: &[u32]| {
            if existing.is_empty() {
                "none".to_string()
            } else {
                let all: Vec<String> = existing.iter().map(u32::to_string).collect();
                all.join(", ")
            }
        };
        match self {
            NoGeneration::Missing { wanted, existing } => write!(
                f,
                "generation {wanted} does not exist (or was garbage-collected); the host has generations {}",
                listed(existing)
            ),
            NoGeneration::NoneBefore { current, existing } => write!(
                f,
                "there is no generation before {current}; the host has generations {}",
                listed(existing)
            ),
            NoGeneration::NoProfile => f.write_str(
                "the host's system profile has no generation to roll back from",
            ),
            NoGeneration::NotAStorePath { generation, target } => write!(
                f,
                "generation {generation} points at {target:?}, not a store path"
            ),
        }
    }
}

/// Failed before anything was activated; the host's system was not touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Failure {
    /// Preparing the reboot trial failed; what it changed was undone.
    PrepareBootTrial {
        step: PrepareStep,
        detail: String,
    },
    /// The preflight got no usable answer.
    Preflight {
        error: String,
    },
    Copy {
        error: String,
    },
    /// Checking the state declaration or taking the snapshots got no
    /// usable answer; nothing was activated.
    Snapshot {
        error: String,
    },
    /// The guard could not be started (what failed).
    GuardNotStarted {
        detail: String,
    },
    /// The guard did not stay up once started.
    GuardDied,
    /// Arming took past its deadline on the host; nothing was armed.
    ArmExpired,
    /// The activation could not take NixOS's switch lock (another process
    /// took it after the preflight): nothing was activated.
    #[serde(rename_all = "camelCase")]
    SwitchLockTaken {
        exit_code: Option<i32>,
        holder: Option<LockHolder>,
    },
    /// The activation was still waiting for NixOS's switch lock (the older
    /// `switch-to-configuration` waits for it) when the trial ended; the
    /// guard stopped it before it took the lock: nothing was activated.
    SwitchLockWaited {
        holder: Option<LockHolder>,
    },
    /// Arming printed nothing tether could read.
    Arming {
        error: String,
    },
    /// The session was lost while arming and no trial is armed on the host.
    #[serde(rename_all = "camelCase")]
    NotArmed {
        why: TrialProblem,
    },
    #[serde(rename_all = "camelCase")]
    DryActivate {
        exit_code: Option<i32>,
        stderr_tail: String,
    },
    DryActivateCall {
        error: String,
    },
    /// Goal boot: the profile or the boot loader could not be set.
    BootDefault {
        problem: PersistProblem,
    },
    /// `tether rollback`: the host's generations could not be read.
    ReadGenerations {
        error: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Preflight { error } => write!(f, "preflight: {error}"),
            Failure::PrepareBootTrial { step, detail } => write!(
                f,
                "preparing the reboot trial failed {step}: {detail}; the profile and boot entries were put back, nothing was activated"
            ),
            Failure::Copy { error } => write!(f, "copy: {error}; nothing was activated"),
            Failure::Snapshot { error } => {
                write!(f, "pre-deploy snapshots: {error}; nothing was activated")
            }
            Failure::GuardNotStarted { detail } => write!(
                f,
                "could not start the guard ({detail}); nothing was activated"
            ),
            Failure::GuardDied => f.write_str(
                "the guard stopped right after it was started; nothing was activated",
            ),
            Failure::ArmExpired => f.write_str(
                "arming took longer than tether waits for it, so the host gave it up; nothing was activated",
            ),
            Failure::SwitchLockTaken { exit_code, holder } => {
                write!(
                    f,
                    "switch-to-configuration {} because another process holds NixOS's switch lock",
                    exit_text(*exit_code)
                )?;
                if let Some(holder) = holder {
                    write!(f, " ({holder})")?;
                }
                f.write_str("; nothing was activated")
            }
            Failure::SwitchLockWaited { holder } => {
                f.write_str(
                    "switch-to-configuration was still waiting for NixOS's switch lock, held by another process",
                )?;
                if let Some(holder) = holder {
                    write!(f, " ({holder})")?;
                }
                f.write_str(", when the trial ended; the guard stopped it before it took the lock and nothing was activated")
            }
            Failure::Arming { error } => write!(f, "arming the guard: {error}"),
            Failure::NotArmed { why } => write!(
                f,
                "{why}; no trial is armed on the host and it runs its previous system"
            ),
            Failure::DryActivate {
                exit_code,
                stderr_tail,
            } => write!(
                f,
                "switch-to-configuration dry-activate {}: {stderr_tail}",
                exit_text(*exit_code)
            ),
            Failure::DryActivateCall { error } => write!(f, "dry-activate: {error}"),
            Failure::BootDefault { problem } => write!(f, "setting the boot default: {problem}"),
            Failure::ReadGenerations { error } => {
                write!(f, "could not read the host's generations: {error}")
            }
        }
    }
}

/// What went wrong while making a system the profile and boot default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistProblem {
    pub profile_set: bool,
    /// `switch-to-configuration boot`'s exit code; `None` when not reached
    /// or killed.
    pub boot_exit_code: Option<i32>,
    /// What the boot loader's default entry boots, read back.
    pub boot_default: Option<String>,
    pub stderr_tail: String,
}

impl fmt::Display for PersistProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "profile {}, switch-to-configuration boot {}, the boot default is {}",
            if self.profile_set { "set" } else { "not set" },
            exit_text(self.boot_exit_code),
            self.boot_default.as_deref().unwrap_or("unknown")
        )?;
        if !self.stderr_tail.is_empty() {
            write!(f, ": {}", self.stderr_tail)?;
        }
        Ok(())
    }
}

/// What went wrong in the trial before tether gave up on it (or lost it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Trouble {
    /// The activation's SSH session broke; the activation ran on.
    SessionLostDuringActivation,
    /// Confirmation attempts over fresh connections failed so far.
    CouldNotConfirm { last: ConfirmAttempt },
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trouble::SessionLostDuringActivation => {
                f.write_str("the SSH session was lost during activation")
            }
            Trouble::CouldNotConfirm { last } => {
                write!(f, "could not confirm over a fresh SSH connection ({last})")
            }
        }
    }
}

/// Why one confirmation attempt did not confirm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ConfirmAttempt {
    /// The host answered, but does not run the new system.
    NotRunningNew { current: Option<String> },
    /// No usable answer over a fresh connection.
    Unanswered { error: String },
    /// The host says the activation has not ended yet.
    ActivationRunning,
}

impl fmt::Display for ConfirmAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfirmAttempt::NotRunningNew { current } => write!(
                f,
                "the host runs {}, not the new system",
                current.as_deref().unwrap_or("nothing")
            ),
            ConfirmAttempt::Unanswered { error } => f.write_str(error),
            ConfirmAttempt::ActivationRunning => {
                f.write_str("the host says the activation has not ended yet")
            }
        }
    }
}

/// Why a trial did not end confirmed: what tether saw that made it give up
/// on the trial, or learn that the guard left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TrialProblem {
    /// `switch-to-configuration test` exited non-zero.
    #[serde(rename_all = "camelCase")]
    ActivationFailed {
        exit_code: Option<i32>,
    },
    ActivationTimedOut {
        seconds: u64,
    },
    /// The activation's process is gone without an exit code.
    ActivationDied,
    /// The arm result did not come back in time.
    ArmTimedOut {
        seconds: u64,
    },
    /// The guard is gone and could not be started again.
    GuardDead,
    /// The session broke before the arm result came back.
    SessionLostArming {
        error: String,
    },
    ChecksFailed {
        seconds: u64,
        failures: Vec<CheckFailure>,
    },
    ConfirmFailed {
        seconds: u64,
        last: ConfirmAttempt,
    },
    /// The guard had left the trial when the confirmation arrived.
    ConfirmTooLate,
    /// The lease keeper saw the guard roll the host back.
    GuardRolledBack {
        after: Option<Trouble>,
    },
    /// The lease keeper saw the guard leave the trial otherwise.
    GuardLeft {
        #[serde(serialize_with = "serialize_state")]
        state: GuardState,
        after: Option<Trouble>,
    },
    /// No renewal got through for a whole lease.
    #[serde(rename_all = "camelCase")]
    LostContact {
        lease_seconds: u64,
        after: Option<Trouble>,
    },
}

impl fmt::Display for TrialProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Say first what went wrong in the trial, then what the guard did.
        let after = |f: &mut fmt::Formatter<'_>, t: &Option<Trouble>| match t {
            Some(t) => write!(f, "{t}; "),
            None => Ok(()),
        };
        match self {
            TrialProblem::ActivationFailed { exit_code } => write!(
                f,
                "activation failed: switch-to-configuration test {}",
                exit_text(*exit_code)
            ),
            TrialProblem::ActivationTimedOut { seconds } => {
                write!(f, "activation did not finish within {seconds}s")
            }
            TrialProblem::ActivationDied => {
                f.write_str("the activation ended without an exit code (it was killed)")
            }
            TrialProblem::ArmTimedOut { seconds } => {
                write!(f, "arming the guard did not answer within {seconds}s")
            }
            TrialProblem::GuardDead => {
                f.write_str("the host's guard is gone and could not be started again")
            }
            TrialProblem::SessionLostArming { error } => {
                write!(
                    f,
                    "the SSH session was lost while arming the guard: {error}"
                )
            }
            TrialProblem::ChecksFailed { seconds, failures } => {
                let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "health check{} failed within {seconds}s: {}",
                    if failures.len() == 1 { "" } else { "s" },
                    all.join("; ")
                )
            }
            TrialProblem::ConfirmFailed { seconds, last } => write!(
                f,
                "could not confirm over a fresh SSH connection within {seconds}s: {last}"
            ),
            TrialProblem::ConfirmTooLate => {
                f.write_str("the confirmation came too late: the guard had already left the trial")
            }
            TrialProblem::GuardRolledBack { after: t } => {
                after(f, t)?;
                f.write_str("the host's guard rolled it back")
            }
            TrialProblem::GuardLeft { state, after: t } => {
                after(f, t)?;
                write!(f, "the host's guard left the trial (state {state})")
            }
            TrialProblem::LostContact {
                lease_seconds,
                after: t,
            } => {
                after(f, t)?;
                write!(
                    f,
                    "lost contact with the host for the whole lease ({lease_seconds}s); its guard rolls it back"
                )
            }
        }
    }
}

/// The new system was tried and the host is back on the old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RollbackReason {
    /// The guard rolled the trial back; `guard` is why it did, when that
    /// adds to `why` (it was not simply asked to).
    ByGuard {
        why: TrialProblem,
        guard: Option<GuardCause>,
    },
    /// The host rebooted during the trial and booted the previous system.
    Rebooted { why: TrialProblem },
    /// `revertOnFailure`: this run confirmed the host, then switched it back.
    #[serde(rename_all = "camelCase")]
    Reverted { failed_hosts: usize },
    /// The reboot trial ended with the host booted on the old system again
    /// (profile and boot entries restored, unless `restore_problem` says
    /// what could not be).
    #[serde(rename_all = "camelCase")]
    BootTrial {
        why: BootTrialProblem,
        guard: Option<BootTrialCause>,
        restore_problem: Option<String>,
    },
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackReason::ByGuard { why, guard: None } => write!(f, "{why}"),
            RollbackReason::ByGuard {
                why,
                guard: Some(guard),
            } => write!(f, "{why} (guard: {guard})"),
            RollbackReason::Rebooted { why } => write!(
                f,
                "{why}; the host rebooted during the trial and came back on the previous system"
            ),
            RollbackReason::BootTrial {
                why,
                guard,
                restore_problem,
            } => {
                write!(f, "{why}; the host is back on its previous system")?;
                if let Some(cause) = guard {
                    write!(f, " ({cause})")?;
                }
                match restore_problem {
                    Some(p) => write!(
                        f,
                        "; restoring the profile and boot entries failed ({p}): check them with tether status"
                    ),
                    None => Ok(()),
                }
            }
            RollbackReason::Reverted { failed_hosts } => write!(
                f,
                "reverted to its previous system because {failed_hosts} host(s) failed in this rollout (revertOnFailure)"
            ),
        }
    }
}

/// Running the new system (confirmed), but not booting it by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NotPersisted {
    /// The profile or the boot loader could not be set.
    Failed { problem: PersistProblem },
    /// Persisting printed nothing tether could read.
    NoReport { error: String },
    /// Persisting could not be run at all.
    Unreachable { error: String },
    /// Found after the fact: the guard says confirmed, the profile disagrees.
    #[serde(rename_all = "camelCase")]
    ProfileElsewhere {
        why: TrialProblem,
        current: String,
        profile: Option<String>,
        boot_default: Option<String>,
    },
}

impl fmt::Display for NotPersisted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotPersisted::Failed { problem } => write!(
                f,
                "the host runs the new system but will boot the old one: {problem}"
            ),
            NotPersisted::NoReport { error } => write!(
                f,
                "the host runs the new system, but persisting it did not report back ({error}); it may boot the old one"
            ),
            NotPersisted::Unreachable { error } => write!(
                f,
                "the host runs the new system but persisting failed ({error}); it will boot the old one"
            ),
            NotPersisted::ProfileElsewhere {
                why,
                current,
                profile,
                boot_default,
            } => write!(
                f,
                "{why}; the host confirmed the trial and runs {current}, but its profile points at {} and its boot default at {}",
                profile.as_deref().unwrap_or("nothing"),
                boot_default.as_deref().unwrap_or("nothing it reported")
            ),
        }
    }
}

/// Runs the new system (persisted), but something after that failed;
/// nothing was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Unhealthy {
    #[serde(rename_all = "camelCase")]
    RebootNotScheduled {
        stderr_tail: String,
    },
    #[serde(rename_all = "camelCase")]
    BootedOther {
        booted: String,
        current: String,
    },
    ChecksFailedAfterReboot {
        failures: Vec<CheckFailure>,
    },
    /// `revertOnFailure` could not switch the host back.
    #[serde(rename_all = "camelCase")]
    NotReverted {
        failed_hosts: usize,
        detail: String,
    },
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unhealthy::RebootNotScheduled { stderr_tail } => write!(
                f,
                "confirmed and persisted, but the reboot could not be scheduled: {stderr_tail}"
            ),
            Unhealthy::BootedOther { booted, current } => write!(
                f,
                "after the reboot the host booted {booted} and runs {current}, not the new system"
            ),
            Unhealthy::ChecksFailedAfterReboot { failures } => {
                let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "booted the new system, but health checks failed after the reboot: {}",
                    all.join("; ")
                )
            }
            Unhealthy::NotReverted {
                failed_hosts,
                detail,
            } => write!(
                f,
                "confirmed, but could not be reverted after {failed_hosts} host(s) failed in this rollout: {detail}"
            ),
        }
    }
}

/// Not started; untouched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SkipReason {
    Interrupted,
    #[serde(rename_all = "camelCase")]
    CanaryFailed {
        canary: String,
        outcome: String,
    },
    #[serde(rename_all = "camelCase")]
    TooManyFailures {
        failed: usize,
        max_failures: usize,
    },
    NoStage,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Interrupted => f.write_str("not started: the rollout was interrupted"),
            SkipReason::CanaryFailed { canary, outcome } => write!(
                f,
                "not started: canary {canary} did not succeed ({outcome})"
            ),
            SkipReason::TooManyFailures {
                failed,
                max_failures,
            } => write!(
                f,
                "not started: {failed} host(s) failed, more than maxFailures = {max_failures}"
            ),
            SkipReason::NoStage => f.write_str("not started: in no rollout stage"),
        }
    }
}

/// tether cannot tell what the host runs, or vouch for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum UnknownReason {
    /// Goal boot: no usable answer from persisting.
    BootDefault {
        error: String,
    },
    #[serde(rename_all = "camelCase")]
    RollbackFailed {
        why: TrialProblem,
        exit_code: Option<i32>,
        current: String,
        /// Who holds NixOS's switch lock, when someone does.
        switch_lock: Option<LockHolder>,
    },
    RebootedOnOther {
        why: TrialProblem,
        current: String,
    },
    StateVanished {
        why: TrialProblem,
        current: String,
    },
    NoVerdict {
        why: TrialProblem,
        seconds: u64,
        last: String,
    },
    /// The trial on the host is not this deploy's.
    BadToken,
    RebootRequestFailed {
        error: String,
    },
    #[serde(rename_all = "camelCase")]
    NotBackFromReboot {
        seconds: u64,
        last_seen: String,
    },
    /// The host did not come back from its trial boot in time.
    #[serde(rename_all = "camelCase")]
    NotBackFromTrialBoot {
        seconds: u64,
        last_seen: String,
    },
    /// The reboot trial ended and tether could not learn how.
    #[serde(rename_all = "camelCase")]
    BootTrialNoVerdict {
        why: BootTrialProblem,
        seconds: u64,
        last_seen: String,
    },
    /// The host no longer holds this deploy's reboot trial.
    #[serde(rename_all = "camelCase")]
    BootTrialGone {
        why: BootTrialProblem,
        last_seen: String,
    },
    /// Preparing the reboot trial stopped half-way (its session was lost,
    /// or undoing a failed step failed).
    #[serde(rename_all = "camelCase")]
    BootTrialPrepare {
        step: Option<PrepareStep>,
        detail: String,
    },
    /// `revertOnFailure`: the revert itself ended unknown.
    #[serde(rename_all = "camelCase")]
    Reverting {
        failed_hosts: usize,
        reason: Box<UnknownReason>,
    },
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownReason::BootDefault { error } => {
                write!(f, "setting the boot default: {error}")
            }
            UnknownReason::RollbackFailed {
                why,
                exit_code,
                current,
                switch_lock,
            } => {
                write!(
                    f,
                    "{why}; the guard's rollback failed (switch-to-configuration test of the previous system exited {}); the host runs {current}",
                    exit_code.map(|c| c.to_string()).unwrap_or_else(|| "?".into())
                )?;
                if let Some(holder) = switch_lock {
                    write!(f, "; NixOS's switch lock is held by {holder}")?;
                }
                Ok(())
            }
            UnknownReason::RebootedOnOther { why, current } => write!(
                f,
                "{why}; the host rebooted during the trial and now runs {current}"
            ),
            UnknownReason::StateVanished { why, current } => write!(
                f,
                "{why}; the trial's state vanished from the host, which runs {current}"
            ),
            UnknownReason::NoVerdict {
                why,
                seconds,
                last,
            } => write!(
                f,
                "{why}; the host did not report a rollback within {seconds}s (last: {last})"
            ),
            UnknownReason::BadToken => {
                f.write_str("the trial on the host does not carry this deploy's token")
            }
            UnknownReason::RebootRequestFailed { error } => write!(
                f,
                "confirmed and persisted; asking for the reboot failed: {error}"
            ),
            UnknownReason::NotBackFromReboot { seconds, last_seen } => write!(
                f,
                "confirmed and persisted, then rebooted: the host did not come back within {seconds}s (last seen: {last_seen})"
            ),
            UnknownReason::NotBackFromTrialBoot { seconds, last_seen } => write!(
                f,
                "rebooted into the new system on trial: the host did not come back within {seconds}s (last seen: {last_seen}); the boot loader consumed the one-shot entry, so its next power cycle (or a hardware watchdog) boots the old system, and the guard then restores the profile and boot entries"
            ),
            UnknownReason::BootTrialNoVerdict {
                why,
                seconds,
                last_seen,
            } => write!(
                f,
                "{why}; the host did not show how its reboot trial ended within {seconds}s (last seen: {last_seen}); its guard reboots it into the old system when the lease lapses"
            ),
            UnknownReason::BootTrialGone { why, last_seen } => write!(
                f,
                "{why}; tether cannot tell how the reboot trial ended: {last_seen}"
            ),
            UnknownReason::BootTrialPrepare { step, detail } => {
                f.write_str("preparing the reboot trial stopped half-way")?;
                if let Some(step) = step {
                    write!(f, " {step}")?;
                }
                write!(
                    f,
                    ": {detail}; the host may boot the new system on trial at its next reboot (its guard then returns it to the old one)"
                )
            }
            UnknownReason::Reverting {
                failed_hosts,
                reason,
            } => write!(
                f,
                "reverting after {failed_hosts} host(s) failed in this rollout: {reason}"
            ),
        }
    }
}
