//! Planning a rollout: which hosts go first (canaries), in which batches the
//! rest follow, how many run at once, and when the rollout stops. The
//! inventory's `rollout` attribute and the deploy flags give the settings
//! ([`crate::spec::RolloutSettings`]); [`plan_stages`] turns them into an
//! ordered list of stages.

use crate::inventory::{Host, Inventory};
use crate::model::{HostName, Selector};
use crate::spec::{BatchSize, CanarySpec, RolloutPlan, RolloutSettings, Stage, DEFAULT_PARALLEL};

/// Splits the selected hosts (in order) into stages. `canaries` are the
/// hosts the canary setting resolved to (already restricted to `hosts`).
pub fn plan_stages(
    hosts: &[HostName],
    canaries: &[HostName],
    settings: &RolloutSettings,
) -> RolloutPlan {
    let mut stages = Vec::new();
    if !canaries.is_empty() {
        stages.push(Stage {
            canary: true,
            hosts: hosts
                .iter()
                .filter(|h| canaries.contains(h))
                .cloned()
                .collect(),
        });
    }
    let rest: Vec<HostName> = hosts
        .iter()
        .filter(|h| !canaries.contains(h))
        .cloned()
        .collect();
    let size = match settings.batch {
        None => rest.len(),
        Some(BatchSize::Count(n)) => n,
        Some(BatchSize::Percent(p)) => (rest.len() * usize::from(p)).div_ceil(100),
    }
    .max(1);
    for chunk in rest.chunks(size) {
        stages.push(Stage {
            canary: false,
            hosts: chunk.to_vec(),
        });
    }
    RolloutPlan {
        stages,
        parallel: settings.parallel.unwrap_or(DEFAULT_PARALLEL).max(1),
        max_failures: settings.max_failures,
        revert_on_failure: settings.revert_on_failure.unwrap_or(false),
    }
}

/// Resolves the canary setting against the selected hosts (in order).
pub fn resolve_canaries(
    hosts: &[HostName],
    spec: Option<&CanarySpec>,
    matches: impl Fn(&Selector, &HostName) -> bool,
) -> Vec<HostName> {
    match spec {
        None => Vec::new(),
        Some(CanarySpec::Count(n)) => hosts.iter().take(*n).cloned().collect(),
        Some(CanarySpec::Selector(sel)) => {
            hosts.iter().filter(|h| matches(sel, h)).cloned().collect()
        }
    }
}

/// A canary selector that matches none of the hosts a run selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the canary selector matches none of the selected hosts")]
pub struct NoCanary;

/// The rollout plan of a run over `hosts` (in order): `flags` over the
/// inventory's `rollout` settings over tether's defaults.
pub fn plan_for(
    flags: RolloutSettings,
    inventory: &Inventory,
    hosts: &[Host],
) -> Result<RolloutPlan, NoCanary> {
    let settings = flags.over(inventory.rollout());
    let names: Vec<HostName> = hosts.iter().map(|h| h.name.clone()).collect();
    let canaries = resolve_canaries(&names, settings.canary.as_ref(), |sel, name| {
        inventory
            .get(name.as_str())
            .is_some_and(|h| sel.matches_host(h))
    });
    if matches!(settings.canary, Some(CanarySpec::Selector(_))) && canaries.is_empty() {
        return Err(NoCanary);
    }
    Ok(plan_stages(&names, &canaries, &settings))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<HostName> {
        (1..=n)
            .map(|i| format!("host{i}").parse().unwrap())
            .collect()
    }

    fn sizes(plan: &RolloutPlan) -> Vec<(bool, usize)> {
        plan.stages
            .iter()
            .map(|s| (s.canary, s.hosts.len()))
            .collect()
    }

    #[test]
    fn one_canary_then_batches_of_three() {
        let hosts = names(8);
        let canaries = resolve_canaries(&hosts, Some(&CanarySpec::Count(1)), |_, _| false);
        let plan = plan_stages(
            &hosts,
            &canaries,
            &RolloutSettings {
                batch: Some(BatchSize::Count(3)),
                ..Default::default()
            },
        );
        assert_eq!(
            sizes(&plan),
            [(true, 1), (false, 3), (false, 3), (false, 1)]
        );
        assert_eq!(plan.stages[0].hosts[0].as_str(), "host1");
        assert_eq!(plan.stages[1].hosts[0].as_str(), "host2");
    }

    #[test]
    fn percentages_round_up_and_default_is_one_batch() {
        let hosts = names(10);
        let plan = plan_stages(
            &hosts,
            &[],
            &RolloutSettings {
                batch: Some("25%".parse().unwrap()),
                ..Default::default()
            },
        );
        assert_eq!(
            sizes(&plan),
            [(false, 3), (false, 3), (false, 3), (false, 1)]
        );
        let plan = plan_stages(&hosts, &[], &RolloutSettings::default());
        assert_eq!(sizes(&plan), [(false, 10)]);
        assert_eq!(plan.parallel, DEFAULT_PARALLEL);
        assert!(!plan.revert_on_failure);
    }

    #[test]
    fn canaries_by_selector_keep_host_order() {
        let hosts = names(4);
        let picked = ["host3", "host1"];
        let canaries = resolve_canaries(&hosts, Some(&"host3,host1".parse().unwrap()), |_, h| {
            picked.contains(&h.as_str())
        });
        assert_eq!(canaries, [hosts[0].clone(), hosts[2].clone()]);
    }

    #[test]
    fn flags_override_the_inventory_field_by_field() {
        let inventory = RolloutSettings {
            batch: Some(BatchSize::Count(2)),
            parallel: Some(4),
            ..Default::default()
        };
        let flags = RolloutSettings {
            parallel: Some(8),
            ..Default::default()
        };
        let merged = flags.over(&inventory);
        assert_eq!(merged.batch, Some(BatchSize::Count(2)));
        assert_eq!(merged.parallel, Some(8));
    }

    #[test]
    fn bad_batch_sizes_are_errors() {
        assert!("0".parse::<BatchSize>().is_err());
        assert!("150%".parse::<BatchSize>().is_err());
        assert!("x".parse::<BatchSize>().is_err());
        assert_eq!("3".parse::<BatchSize>().unwrap(), BatchSize::Count(3));
    }
}
