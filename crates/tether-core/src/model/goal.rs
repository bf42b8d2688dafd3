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
