//! A host's `rehearsal` settings (docs/rehearsal.md): whether it is a
//! staging host rehearsals may use, whether its own deploys need a passed
//! rehearsal first, and how many modules its rehearsal variants get (the
//! modules themselves stay in Nix, which applies them).

use serde::Serialize;

/// `rehearsal` as the inventory gives it; the host wins per key over the
/// defaults, and the module lists add up (defaults' first, in Nix too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RehearsalSettings {
    pub staging: Option<bool>,
    pub required: Option<bool>,
    /// How many modules this level declares.
    pub modules: usize,
}

impl RehearsalSettings {
    /// `self` (a host's) over `base` (the defaults').
    pub fn over(self, base: &RehearsalSettings) -> RehearsalSettings {
        RehearsalSettings {
            staging: self.staging.or(base.staging),
            required: self.required.or(base.required),
            modules: base.modules + self.modules,
        }
    }

    pub fn resolve(&self) -> RehearsalSpec {
        RehearsalSpec {
            staging: self.staging.unwrap_or(false),
            required: self.required.unwrap_or(false),
            modules: self.modules,
        }
    }
}

/// One host's rehearsal settings, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RehearsalSpec {
    /// Rehearsals of other hosts may run on this one (and wipe its state).
    pub staging: bool,
    /// `tether deploy` refuses this host's new system until a rehearsal of
    /// it passed.
    pub required: bool,
    pub modules: usize,
}
