//! The preflight: who the host is (machine-id, hostname, architecture),
//! which systems it runs, boots and has in its profile, whether it already
//! has the new system, whether the safe switch's tools are there and
//! whether another deploy holds it. Read-only; the shared connection's
//! first session.

use super::wire::{all, finished, first, parse_fields, ParseError};
use super::{
    generation_number, Op, Operation, ScriptOutput, LOCK_DIR, RESOLVE_FUNCTION, SYSTEM_PROFILE,
};
use crate::model::StorePath;
use crate::shell::quote;

/// Reads the host's identity and systems; with `new_system`, also whether
/// the host's store already has it (then nothing needs copying: Nix
/// registers a path valid only once its whole closure is).
#[derive(Debug, Clone, Default)]
pub struct Preflight {
    pub new_system: Option<StorePath>,
}

/// What the preflight learnt about a host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Facts {
    pub machine_id: String,
    pub hostname: String,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: String,
    pub current_system: Option<String>,
    pub booted_system: Option<String>,
    pub profile_system: Option<String>,
    /// The system profile's generation number (`system-N-link`).
    pub profile_generation: Option<u32>,
    pub boot_id: String,
    /// Tools the safe switch needs that the host lacks.
    pub missing_tools: Vec<String>,
    /// Another deploy holding the host's deploy lock with a live guard.
    pub busy_with: Option<String>,
    /// The host's store already holds the new system (and so its closure).
    pub has_new_system: bool,
    /// Units failed before the switch (the `failedUnits = "new"` baseline).
    pub failed_units: Vec<String>,
}

impl Operation for Preflight {
    type Output = Facts;
    const OP: Op = Op::Preflight;

    fn script(&self) -> String {
        let has_new = match &self.new_system {
            Some(p) => format!(
                "nix-store --check-validity {} >/dev/null 2>&1 && echo \"has_new=yes\"\n",
                quote(p.as_str())
            ),
            None => String::new(),
        };
        format!(
            r#"set -u
{has_new}
# `read` rather than `cat`: this runs on every host of every deploy.
mid=; read -r mid 2>/dev/null </etc/machine-id
echo "machine_id=$mid"
name=; read -r name </proc/sys/kernel/hostname
echo "hostname=$name"
echo "arch=$(uname -m)"
{resolve}
resolve /run/current-system; echo "current=$r"
resolve /run/booted-system; echo "booted=$r"
resolve {profile}; echo "profile=$r"
echo "profile_link=$(readlink {profile} 2>/dev/null)"
read -r boot </proc/sys/kernel/random/boot_id
echo "boot_id=$boot"
for t in systemd-run systemctl flock nix-env nix-store readlink; do
    command -v "$t" >/dev/null 2>&1 || echo "missing=$t"
done
# The baseline for the failedUnits = "new" health check.
systemctl list-units --state=failed --all --no-legend --plain 2>/dev/null | while read -r unit rest; do
    echo "failed_unit=$unit"
done
if [ -d {lock} ]; then
    unit=; read -r unit 2>/dev/null <{lock}/unit
    if [ -n "$unit" ] && systemctl is-active --quiet "$unit" 2>/dev/null; then
        holder=; read -r holder 2>/dev/null <{lock}/deploy
        echo "busy=$holder"
    fi
fi
echo "preflight=done"
"#,
            profile = quote(SYSTEM_PROFILE),
            lock = quote(LOCK_DIR),
            resolve = RESOLVE_FUNCTION,
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<Facts, ParseError> {
        let f = parse_fields(&out.stdout);
        finished(&f, "preflight", "the preflight script")?;
        Ok(Facts {
            machine_id: first(&f, "machine_id").unwrap_or_default().to_string(),
            hostname: first(&f, "hostname").unwrap_or_default().to_string(),
            arch: first(&f, "arch").unwrap_or_default().to_string(),
            current_system: first(&f, "current").map(str::to_string),
            booted_system: first(&f, "booted").map(str::to_string),
            profile_system: first(&f, "profile").map(str::to_string),
            profile_generation: first(&f, "profile_link").and_then(generation_number),
            boot_id: first(&f, "boot_id").unwrap_or_default().to_string(),
            missing_tools: all(&f, "missing"),
            busy_with: first(&f, "busy").map(str::to_string),
            has_new_system: first(&f, "has_new") == Some("yes"),
            failed_units: all(&f, "failed_unit"),
        })
    }
}
