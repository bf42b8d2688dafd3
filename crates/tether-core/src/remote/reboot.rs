//! `deploy --reboot`: scheduling the reboot, and reading which boot and
//! systems the host runs afterwards.

use super::wire::{first, parse_fields, ParseError};
use super::{Op, Operation, ScriptOutput, RESOLVE_FUNCTION};
use crate::model::DeployId;
use crate::shell::quote;

/// Reboots the host a second from now, so the command that asks returns
/// cleanly first; prints the boot id it reboots from.
#[derive(Debug, Clone)]
pub struct Reboot {
    pub deploy_id: DeployId,
}

impl Operation for Reboot {
    /// The boot id the host reboots from, when the reboot was scheduled.
    type Output = Option<String>;
    const OP: Op = Op::Reboot;

    fn script(&self) -> String {
        format!(
            r#"echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
systemd-run --unit={unit} --quiet --collect --on-active=1 --timer-property=AccuracySec=100ms systemctl reboot && echo "reboot=scheduled"
"#,
            unit = quote(&format!("tether-reboot-{}", self.deploy_id)),
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<Option<String>, ParseError> {
        let f = parse_fields(&out.stdout);
        Ok((first(&f, "reboot") == Some("scheduled"))
            .then(|| first(&f, "boot_id").unwrap_or_default().to_string()))
    }
}

/// Which boot and which systems the host runs (after a reboot).
#[derive(Debug, Clone, Copy, Default)]
pub struct BootState;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootStateReport {
    pub boot_id: String,
    pub booted_system: String,
    pub current_system: String,
    pub system_state: String,
}

impl Operation for BootState {
    type Output = BootStateReport;
    const OP: Op = Op::BootState;

    fn script(&self) -> String {
        format!(
            r#"echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
{RESOLVE_FUNCTION}
resolve /run/booted-system; echo "booted=$r"
resolve /run/current-system; echo "current=$r"
echo "system_state=$(systemctl is-system-running 2>/dev/null)"
"#
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<BootStateReport, ParseError> {
        let f = parse_fields(&out.stdout);
        let get = |k: &str| first(&f, k).unwrap_or_default().to_string();
        Ok(BootStateReport {
            boot_id: get("boot_id"),
            booted_system: get("booted"),
            current_system: get("current"),
            system_state: get("system_state"),
        })
    }
}
