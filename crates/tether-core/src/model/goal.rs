//! The goals of NixOS's `switch-to-configuration`, and what each implies
//! for a deploy.

/// Goals of `switch-to-configuration`, with what each implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Goal {
    Switch,
    Boot,
    Test,
    DryActivate,
}

impl Goal {
    pub fn as_str(self) -> &'static str {
        match self {
            Goal::Switch => "switch",
            Goal::Boot => "boot",
            Goal::Test => "test",
            Goal::DryActivate => "dry-activate",
        }
    }
    /// Whether the new system is activated now (and so needs a guard).
    pub fn activates(self) -> bool {
        matches!(self, Goal::Switch | Goal::Test)
    }
    /// Whether the profile and boot default move to the new system.
    pub fn persists(self) -> bool {
        matches!(self, Goal::Switch | Goal::Boot)
    }
}

impl std::str::FromStr for Goal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "switch" => Ok(Goal::Switch),
            "boot" => Ok(Goal::Boot),
            "test" => Ok(Goal::Test),
            "dry-activate" => Ok(Goal::DryActivate),
            _ => Err(format!(
                "unknown goal {s:?} (expected switch, boot, test or dry-activate)"
            )),
        }
    }
}

/// How a goal-switch deploy tries the new system before confirming it
/// (`--trial`, inventory `trial`; docs/deploy.md, "The reboot trial").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialMode {
    /// `switch-to-configuration test` under the live guard.
    Live,
    /// Boot the new system once (systemd-boot's one-shot entry) under a
    /// guard that survives the reboot.
    Reboot,
    /// `reboot` when the change needs a boot to show (kernel, initrd,
    /// modules, init interface, a pre-switch check refusing the live
    /// switch), else `live`.
    #[default]
    Auto,
}

impl TrialMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialMode::Live => "live",
            TrialMode::Reboot => "reboot",
            TrialMode::Auto => "auto",
        }
    }
}

impl std::str::FromStr for TrialMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "live" => Ok(TrialMode::Live),
            "reboot" => Ok(TrialMode::Reboot),
            "auto" => Ok(TrialMode::Auto),
            _ => Err(format!(
                "unknown trial {s:?} (expected live, reboot or auto)"
            )),
        }
    }
}
