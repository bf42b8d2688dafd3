//! Settings that may be given in `defaults` and in each host, and the one
//! rule that merges them.
//!
//! Merge rule (documented in docs/inventory.md):
//! - a single value (`sshUser`, `sshPort`): the host's value wins;
//! - a list (`tags`): the defaults' entries, then the host's, without repeats;
//! - an attribute set (e.g. a future `timeouts`): merged key by key with
//!   these same rules, the host winning per key.
//!
//! A new setting is added here: a field on [`Settings`], a line in
//! [`Settings::read`] and [`Settings::merge`], and its name in
//! [`Settings::FIELDS`]; both `defaults` and hosts then accept it.

use std::time::Duration;

use super::checks::{read_checks, CheckMap};
use super::error::Problem;
use super::fields::Fields;
use crate::model::{Dataset, SshUser, StatePath, SudoMode, Tag, TrialMode};
use crate::spec::{FailedUnits, HostChecks, RehearsalSettings, StateSettings, TimeoutSettings};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub ssh_user: Option<SshUser>,
    pub ssh_port: Option<u16>,
    pub tags: Vec<Tag>,
    /// Extra arguments for `ssh` (and Nix's SSH), e.g. `["-i" "/path/key"]`.
    pub ssh_options: Vec<String>,
    pub timeouts: TimeoutSettings,
    /// Health checks by name; `None` removes a default's check of that name.
    pub checks: CheckMap,
    pub failed_units: Option<FailedUnits>,
    pub system_running: Option<bool>,
    /// `checkTimeout`, seconds.
    pub check_timeout: Option<u64>,
    /// `checkInterval`, seconds.
    pub check_interval: Option<u64>,
    /// `trial`: how goal-switch deploys try the new system.
    pub trial: Option<TrialMode>,
    /// `state`: subvolumes and datasets snapshotted with each deploy.
    pub state: StateSettings,
    /// `rehearsal`: whether the host is a staging host, whether its deploys
    /// need a rehearsal, and the modules its rehearsal variants get.
    pub rehearsal: RehearsalSettings,
    /// `sudo`: how tether becomes root when the SSH user is not.
    pub sudo: Option<SudoMode>,
}

impl Settings {
    /// The field names shared by `defaults` and hosts.
    pub const FIELDS: &'static [&'static str] = &[
        "sshUser",
        "sshPort",
        "tags",
        "sshOptions",
        "timeouts",
        "checks",
        "failedUnits",
        "systemRunning",
        "checkTimeout",
        "checkInterval",
        "trial",
        "state",
        "rehearsal",
        "sudo",
    ];

    /// The keys of `rehearsal`.
    const REHEARSAL_FIELDS: &'static [&'static str] = &["staging", "required", "modules"];

    fn read_rehearsal(fields: &mut Fields<'_>) -> RehearsalSettings {
        let Some(value) = fields.take("rehearsal") else {
            return RehearsalSettings::default();
        };
        let Some(mut inner) = fields.nested("rehearsal", value, Self::REHEARSAL_FIELDS) else {
            return RehearsalSettings::default();
        };
        let staging = inner.bool("staging");
        let required = inner.bool("required");
        // The modules stay in Nix (the evaluation applies them); here they
        // are only checked to be modules: functions, attribute sets or paths.
        let modules = match inner.take("modules") {
            None => 0,
            Some(serde_json::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let is_module = match item {
                        serde_json::Value::Object(m) => m.get("$nix").is_none_or(|k| k == "lambda"),
                        serde_json::Value::String(p) => p.starts_with('/'),
                        _ => false,
                    };
                    if !is_module {
                        inner.wrong_type(
                            &format!("modules[{i}]"),
                            "a NixOS module (a function, an attribute set or a path)",
                            item,
                        );
                    }
                }
                items.len()
            }
            Some(other) => {
                inner.wrong_type("modules", "a list of NixOS modules", &other);
                0
            }
        };
        inner.finish();
        RehearsalSettings {
            staging,
            required,
            modules,
        }
    }

    /// The keys of `state`.
    const STATE_FIELDS: &'static [&'static str] =
        &["btrfs", "zfs", "units", "restoreOnRollback", "keep"];

    fn read_state(fields: &mut Fields<'_>) -> StateSettings {
        let Some(value) = fields.take("state") else {
            return StateSettings::default();
        };
        let Some(mut inner) = fields.nested("state", value, Self::STATE_FIELDS) else {
            return StateSettings::default();
        };
        let btrfs: Vec<StatePath> = inner.parsed_list("btrfs").unwrap_or_default();
        let zfs: Vec<Dataset> = inner.parsed_list("zfs").unwrap_or_default();
        let btrfs_names: Vec<&str> = btrfs.iter().map(StatePath::as_str).collect();
        if let Some((outer, inner_one)) = nested_pair(&btrfs_names) {
            inner.error(
                "btrfs",
                Problem::NestedState {
                    outer,
                    inner: inner_one,
                },
            );
        }
        let zfs_names: Vec<&str> = zfs.iter().map(Dataset::as_str).collect();
        if let Some((outer, inner_one)) = nested_pair(&zfs_names) {
            inner.error(
                "zfs",
                Problem::NestedState {
                    outer,
                    inner: inner_one,
                },
            );
        }
        let state = StateSettings {
            btrfs,
            zfs,
            units: inner.parsed_list("units").unwrap_or_default(),
            restore_on_rollback: inner.bool("restoreOnRollback"),
            keep: inner
                .count("keep", 1, 1000)
                .and_then(|n| u32::try_from(n).ok()),
        };
        inner.finish();
        state
    }

    /// The health checks these (merged) settings describe.
    pub fn host_checks(&self) -> HostChecks {
        let d = HostChecks::default();
        HostChecks {
            checks: self.checks.values().flatten().cloned().collect(),
            failed_units: self.failed_units.unwrap_or(d.failed_units),
            system_running: self.system_running.unwrap_or(d.system_running),
            timeout: self
                .check_timeout
                .map(Duration::from_secs)
                .unwrap_or(d.timeout),
            interval: self
                .check_interval
                .map(Duration::from_secs)
                .unwrap_or(d.interval),
        }
    }

    fn read_failed_units(fields: &mut Fields<'_>) -> Option<FailedUnits> {
        let s = fields.string("failedUnits")?;
        let parsed = FailedUnits::parse(&s);
        if parsed.is_none() {
            fields.error(
                "failedUnits",
                super::Problem::InvalidChoice {
                    value: s,
                    expected: "\"new\", \"any\", \"ignore\"",
                },
            );
        }
        parsed
    }

    fn read_sudo(fields: &mut Fields<'_>) -> Option<SudoMode> {
        let s = fields.string("sudo")?;
        let parsed = s.parse().ok();
        if parsed.is_none() {
            fields.error(
                "sudo",
                super::Problem::InvalidChoice {
                    value: s,
                    expected: SudoMode::NAMES,
                },
            );
        }
        parsed
    }

    fn read_trial(fields: &mut Fields<'_>) -> Option<TrialMode> {
        let s = fields.string("trial")?;
        let parsed = s.parse().ok();
        if parsed.is_none() {
            fields.error(
                "trial",
                super::Problem::InvalidChoice {
                    value: s,
                    expected: "\"live\", \"reboot\", \"auto\"",
                },
            );
        }
        parsed
    }

    pub(crate) fn read(fields: &mut Fields<'_>) -> Settings {
        Settings {
            ssh_user: fields.parse("sshUser"),
            ssh_port: fields.port("sshPort"),
            tags: fields.tags("tags").unwrap_or_default(),
            ssh_options: fields.ssh_options("sshOptions").unwrap_or_default(),
            timeouts: fields.timeouts("timeouts").unwrap_or_default(),
            checks: read_checks(fields, "checks").unwrap_or_default(),
            failed_units: Self::read_failed_units(fields),
            system_running: fields.bool("systemRunning"),
            check_timeout: fields.seconds("checkTimeout", 1, 3_600),
            check_interval: fields.seconds("checkInterval", 1, 300),
            trial: Self::read_trial(fields),
            state: Self::read_state(fields),
            rehearsal: Self::read_rehearsal(fields),
            sudo: Self::read_sudo(fields),
        }
    }

    /// Applies the merge rule: `host` on top of `defaults`.
    pub fn merge(defaults: &Settings, host: Settings) -> Settings {
        let mut tags = defaults.tags.clone();
        for tag in host.tags {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        Settings {
            ssh_user: host.ssh_user.or_else(|| defaults.ssh_user.clone()),
            ssh_port: host.ssh_port.or(defaults.ssh_port),
            tags,
            // The host's own options first: ssh keeps the first value it
            // sees for an option, so the host's win over the defaults'.
            ssh_options: host
                .ssh_options
                .iter()
                .chain(defaults.ssh_options.iter())
                .cloned()
                .collect(),
            timeouts: host.timeouts.over(&defaults.timeouts),
            // A host's check replaces the default's of the same name.
            checks: {
                let mut checks = defaults.checks.clone();
                checks.extend(host.checks);
                checks
            },
            failed_units: host.failed_units.or(defaults.failed_units),
            system_running: host.system_running.or(defaults.system_running),
            check_timeout: host.check_timeout.or(defaults.check_timeout),
            check_interval: host.check_interval.or(defaults.check_interval),
            trial: host.trial.or(defaults.trial),
            state: host.state.over(&defaults.state),
            rehearsal: host.rehearsal.over(&defaults.rehearsal),
            sudo: host.sudo.or(defaults.sudo),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<Tag> {
        names.iter().map(|n| n.parse().expect("tag")).collect()
    }

    #[test]
    fn host_values_override_defaults_and_tags_add_up() {
        let defaults = Settings {
            ssh_user: Some("deploy".parse().expect("user")),
            ssh_port: Some(2222),
            tags: tags(&["all", "eu"]),
            ..Settings::default()
        };
        let host = Settings {
            ssh_user: None,
            ssh_port: Some(22),
            tags: tags(&["eu", "web"]),
            ..Settings::default()
        };
        let merged = Settings::merge(&defaults, host);
        assert_eq!(merged.ssh_user, Some("deploy".parse().expect("user")));
        assert_eq!(merged.ssh_port, Some(22));
        assert_eq!(merged.tags, tags(&["all", "eu", "web"]));
    }
}

/// Two of `names` (paths or datasets, `/`-separated) where the second lies
/// inside the first (or both are the same).
fn nested_pair(names: &[&str]) -> Option<(String, String)> {
    names.iter().enumerate().find_map(|(i, a)| {
        names.iter().enumerate().find_map(|(j, b)| {
            let inside = b
                .strip_prefix(a)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            (i != j && inside).then(|| (a.to_string(), b.to_string()))
        })
    })
}

#[cfg(test)]
mod nesting_tests {
    use super::nested_pair;

    #[test]
    fn a_volume_inside_another_is_found_and_a_sibling_is_not() {
        assert_eq!(
            nested_pair(&["/srv/db", "/srv/db/wal"]),
            Some(("/srv/db".into(), "/srv/db/wal".into()))
        );
        assert_eq!(
            nested_pair(&["tank/db/log", "tank/db"]),
            Some(("tank/db".into(), "tank/db/log".into()))
        );
        assert_eq!(nested_pair(&["/srv/db", "/srv/db2", "tank/dbx"]), None);
    }
}
