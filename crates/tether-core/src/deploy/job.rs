//! What one host's deploy is asked to do: its [`HostJob`].

use std::time::Duration;

use crate::model::{ClosureSigners, DeployId, Goal, HostName, StorePath, Token, TrialMode};
use crate::remote::{PersistMode, ScriptOutput};
use crate::spec::{CheckTarget, HostChecks, StateSpec, Timeouts};

/// Everything needed to deploy one host.
#[derive(Debug, Clone)]
pub struct HostJob {
    pub host: HostName,
    pub new_system: StorePath,
    /// The Nix system the closure was built for (`x86_64-linux`).
    pub platform: Option<String>,
    /// The pinned machine-id, when the inventory has one.
    pub machine_id: Option<String>,
    pub goal: Goal,
    /// How a goal-switch deploy tries the new system (live or by booting it).
    pub trial: TrialMode,
    /// `--force-live`: a live trial even for a change that needs a boot.
    pub force_live: bool,
    pub timeouts: Timeouts,
    pub deploy_id: DeployId,
    pub token: Token,
    /// Who the health checks are about (address, SSH user).
    pub check_target: CheckTarget,
    /// Run after activation, before the confirmation.
    pub checks: HostChecks,
    /// The data snapshotted before activation (and restored on rollback
    /// when the inventory opts in); empty when none is declared.
    pub state: StateSpec,
    /// `user@machine` of the deployer, for the target's journal.
    pub deployer: String,
    /// Where the new system comes from.
    pub source: SystemSource,
    /// How a confirmed system becomes the boot default.
    pub persist: PersistMode,
    /// Reboot after persisting and wait this long for the host to come back
    /// on the new system (`deploy --reboot`).
    pub reboot: Option<Duration>,
    /// The preflight's output when the caller already ran
    /// [`Preflight`](crate::remote::Preflight) with this job's new system (as the
    /// shared connection's first session, while the system was being
    /// built); the deploy then uses it instead of asking again. Arming
    /// re-checks that the host still runs the system it saw.
    pub early_preflight: Option<ScriptOutput>,
    /// Who signed the new system's closure, when the caller looked (it
    /// does for hosts whose SSH user is not root: their Nix daemon may only
    /// take signed paths from that user).
    pub closure_signers: Option<ClosureSigners>,
}

/// Where a host's new system comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemSource {
    /// Built here; copied to the host.
    Copy,
    /// Already in the host's store (a generation to roll back to, or the
    /// system a revert returns to); nothing is copied.
    OnTarget,
}
