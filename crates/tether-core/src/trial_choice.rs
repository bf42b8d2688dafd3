//! Which trial a host's change gets (docs/deploy.md, "The reboot trial"):
//! a pure decision from what the host said about the change
//! ([`TrialNeedsReport`]), shared by the deploy and `tether plan`.

use crate::model::TrialMode;
use crate::remote::{RebootReason, TrialNeedsReport};
use crate::report::Refusal;

/// Which trial a host's change gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialKind {
    /// The live trial: nothing needs a boot.
    Live,
    /// The live trial although the change needs a boot (`--force-live`):
    /// the operator accepted the risk.
    LiveForced { reasons: Vec<RebootReason> },
    /// The reboot trial, for these reasons (empty: `--trial reboot` asked).
    Reboot { reasons: Vec<RebootReason> },
}

/// Chooses the trial from what the host said about the change. `reboot`:
/// the deploy reboots the host afterwards (`--reboot`), so a change that
/// needs a boot must have been booted before it is persisted.
// An outcome-sized error is made once per host.
#[allow(clippy::result_large_err)]
pub fn choose_trial(
    mode: TrialMode,
    force_live: bool,
    reboot: bool,
    needs: &TrialNeedsReport,
) -> Result<TrialKind, Refusal> {
    if let Some(holder) = &needs.switch_lock {
        return Err(Refusal::SwitchLockHeld {
            holder: holder.clone(),
        });
    }
    let reasons = needs.reasons.clone();
    let reboot_trial = |reasons: Vec<RebootReason>| {
        if !needs.one_shot {
            return Err(Refusal::NoOneShotBoot {
                boot_loader: needs.boot_default.as_ref().map(|d| d.loader),
                reasons,
            });
        }
        if !needs.boots_current {
            return Err(Refusal::BootsOtherSystem {
                runs: needs.current_system.clone().unwrap_or_default(),
                boots: needs.boot_default.as_ref().and_then(|d| d.system.clone()),
            });
        }
        Ok(TrialKind::Reboot { reasons })
    };
    match mode {
        TrialMode::Reboot => reboot_trial(reasons),
        _ if reasons.is_empty() => Ok(TrialKind::Live),
        TrialMode::Auto => reboot_trial(reasons),
        TrialMode::Live if force_live && reboot => Err(Refusal::ForceLiveWithReboot { reasons }),
        TrialMode::Live if force_live => Ok(TrialKind::LiveForced { reasons }),
        TrialMode::Live => Err(Refusal::NeedsReboot { reasons }),
    }
}
