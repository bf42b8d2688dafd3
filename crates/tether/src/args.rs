//! Flags that several commands share (`deploy` and `rollback`): the
//! rollout policy and the time limits, parsed by clap and handed to the
//! core as settings, which resolves them over the inventory's.

use tether_core::deploy::{HostJob, SystemSource};
use tether_core::inventory::{Host, Inventory};
use tether_core::model::{DeployId, Goal, StorePath, TrialMode};
use tether_core::remote::PersistMode;
use tether_core::rollout;
use tether_core::spec::{
    BatchSize, CanarySpec, RolloutPlan, RolloutSettings, TimeoutSettings, Timeouts,
};

use crate::exit::CommandError;
use crate::runner;

/// Rollout policy flags; they override the inventory's `rollout`.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutArgs {
    /// Hosts deployed and confirmed first: a count or a selector (`@canary`)
    #[arg(long, value_name = "N|SELECTOR")]
    pub canary: Option<String>,
    /// Hosts per batch after the canaries: a count or a percentage (`25%`)
    #[arg(long, value_name = "N|P%")]
    pub batch: Option<String>,
    /// Most hosts in flight at once [default: 10]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,
    /// Stop starting hosts once more than N failed (0: at the first failure)
    #[arg(long, value_name = "N")]
    pub max_failures: Option<usize>,
    /// On failure, switch hosts this run confirmed back to their old system
    #[arg(long)]
    pub revert_on_failure: bool,
}

/// Time limits; they override the inventory's `timeouts`.
#[derive(Debug, Clone, clap::Args)]
pub struct TimeoutArgs {
    /// Seconds switch-to-configuration may run [default: 300]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub activation_timeout: Option<u64>,
    /// Seconds the target waits for the deployer before rolling back by itself [default: 15]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(3..=3_600))]
    pub lease: Option<u64>,
    /// Seconds to keep trying to confirm over fresh connections [default: 20]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub confirm_timeout: Option<u64>,
    /// Seconds, beyond the lease, to wait to hear a host rolled back before
    /// calling it unknown [default: 90]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub rollback_timeout: Option<u64>,
    /// Seconds a closure copy may take [default: 1800]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub copy_timeout: Option<u64>,
    /// Seconds a host may take to come back from a reboot (the reboot
    /// trial's boot, --reboot) [default: 300]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub reboot_timeout: Option<u64>,
}

/// How goal-switch deploys try the new system; they override the
/// inventory's `trial`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrialArgs {
    /// live: switch-to-configuration test under the guard; reboot: boot the
    /// new system once (systemd-boot one-shot) under a guard that survives
    /// the reboot; auto: reboot when the kernel, initrd, modules or init
    /// interface change or the pre-switch checks refuse a live switch
    /// [default: the inventory's trial, else auto]
    #[arg(long, value_name = "live|reboot|auto", value_parser = parse_trial)]
    pub trial: Option<TrialMode>,
    /// With --trial live: try a change that needs a reboot live anyway
    /// (its next boot runs something nobody booted)
    #[arg(long)]
    pub force_live: bool,
}

fn parse_trial(s: &str) -> Result<TrialMode, String> {
    s.parse()
}

impl TimeoutArgs {
    /// The flags as settings, to lay over the inventory's.
    pub fn settings(&self) -> TimeoutSettings {
        TimeoutSettings {
            activation: self.activation_timeout,
            lease: self.lease,
            confirm: self.confirm_timeout,
            rollback: self.rollback_timeout,
            copy: self.copy_timeout,
            reboot: self.reboot_timeout,
        }
    }

    /// A host's limits: these flags over its inventory settings over
    /// tether's defaults.
    pub fn for_host(&self, host: &Host) -> Timeouts {
        Timeouts::resolve(&self.settings().over(&host.timeouts))
    }
}

impl RolloutArgs {
    /// The rollout plan for the selected hosts: flags over the inventory.
    pub fn plan(&self, inventory: &Inventory, hosts: &[Host]) -> Result<RolloutPlan, CommandError> {
        let usage = |flag: &str, e: String| CommandError::Usage(format!("--{flag}: {e}"));
        let flags = RolloutSettings {
            canary: self
                .canary
                .as_deref()
                .map(str::parse::<CanarySpec>)
                .transpose()
                .map_err(|e| usage("canary", e))?,
            batch: self
                .batch
                .as_deref()
                .map(str::parse::<BatchSize>)
                .transpose()
                .map_err(|e| usage("batch", e))?,
            parallel: self.parallel.map(usize::from),
            max_failures: self.max_failures,
            revert_on_failure: self.revert_on_failure.then_some(true),
        };
        rollout::plan_for(flags, inventory, hosts).map_err(|e| CommandError::Usage(e.to_string()))
    }
}

/// A host's job with everything but its system decided by the inventory
/// and flags.
pub fn host_job(
    host: &Host,
    new_system: StorePath,
    goal: Goal,
    timeouts: &TimeoutArgs,
    trial: &TrialArgs,
    deploy_id: &DeployId,
) -> Result<HostJob, CommandError> {
    Ok(HostJob {
        host: host.name.clone(),
        new_system,
        platform: None,
        machine_id: host.machine_id.as_ref().map(|m| m.as_str().to_string()),
        goal,
        trial: trial.trial.unwrap_or(host.trial),
        force_live: trial.force_live,
        timeouts: timeouts.for_host(host),
        deploy_id: deploy_id.clone(),
        token: runner::new_token()?,
        check_target: host.check_target(),
        checks: host.checks.clone(),
        state: host.state.clone(),
        deployer: crate::adapters::journal::deployer_identity(),
        source: SystemSource::Copy,
        persist: PersistMode::SetProfile,
        reboot: None,
        early_preflight: None,
        closure_signers: None,
    })
}
