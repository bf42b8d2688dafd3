//! The inventory: which hosts exist, how to reach them, which key and
//! machine-id they must present, and which NixOS configuration they run.
//!
//! The `tether` crate evaluates the user's flake or file with
//! `nix/eval-inventory.nix` and hands the JSON here as an [`EvalDocument`];
//! [`Inventory::from_eval`] validates it into typed [`Host`]s or returns every
//! problem found. See docs/inventory.md for the user-facing format.

mod checks;
mod error;
mod fields;
mod selector;
mod settings;
mod ssh_options;
mod toplevel;

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::spec::HostChecks;
use crate::spec::{BatchSize, CanarySpec, RolloutSettings};

pub use error::{InventoryError, InventoryErrors, Location, Problem};
pub use selector::select;
pub use settings::Settings;
pub use ssh_options::{validate as validate_ssh_options, SshOptionProblem};

use crate::model::SudoMode;
use crate::spec::{CheckTarget, RehearsalSpec, StateSpec, TimeoutSettings};
pub use toplevel::{parse_toplevels, Toplevel, ToplevelError};

use crate::model::{
    Address, HostKey, HostName, MachineId, Selector, SshUser, Tag, TrialMode, DEFAULT_SSH_PORT,
};
use crate::text::suggest;
use fields::{describe, Fields};

/// What `nix/eval-inventory.nix` returns in `inventory` mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvalDocument {
    /// Whether the flake (or file) has a `tether` output at all.
    pub has_tether: bool,
    /// The `tether` output, with each host's `configuration` replaced by a
    /// descriptor (see [`Configuration`]) and values JSON cannot carry
    /// replaced by `{"$nix": kind}`.
    pub tether: Value,
    /// The names in `nixosConfigurations` (their values are not evaluated).
    pub nixos_configurations: Vec<String>,
}

/// Which system a host runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Configuration {
    /// `nixosConfigurations.<name>`; the default is the host's own name.
    Named(String),
    /// A NixOS configuration given inline (it has `config.system.build.toplevel`).
    Inline,
    /// A derivation that is the system toplevel itself.
    Derivation,
}

/// One validated host, with `defaults` already merged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: HostName,
    pub address: Address,
    pub ssh_user: SshUser,
    pub ssh_port: u16,
    pub host_key: HostKey,
    pub machine_id: Option<MachineId>,
    /// Defaults' tags, then the host's own, without repeats.
    pub tags: Vec<Tag>,
    pub configuration: Configuration,
    /// Extra `ssh` arguments: the host's own, then the defaults'.
    pub ssh_options: Vec<String>,
    pub timeouts: TimeoutSettings,
    /// Health checks, defaults merged in (docs/checks.md).
    pub checks: HostChecks,
    /// How goal-switch deploys try the new system (`trial`, default auto).
    pub trial: TrialMode,
    /// What each deploy snapshots (docs/state.md).
    pub state: StateSpec,
    /// Staging host, rehearsal required (docs/rehearsal.md).
    pub rehearsal: RehearsalSpec,
    /// How scripts become root (docs/sudo.md); resolved from `sshUser`
    /// when not set.
    pub sudo: SudoMode,
}

impl Host {
    pub fn has_tag(&self, tag: &Tag) -> bool {
        self.tags.contains(tag)
    }

    /// Who this host's health checks are about.
    pub fn check_target(&self) -> CheckTarget {
        CheckTarget {
            name: self.name.clone(),
            address: self.address.clone(),
            ssh_user: self.ssh_user.clone(),
        }
    }
}

/// All hosts, in name order (the order Nix gives attribute names).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    hosts: Vec<Host>,
    rollout: RolloutSettings,
}

const TETHER_FIELDS: &[&str] = &["defaults", "hosts", "rollout"];
const ROLLOUT_FIELDS: &[&str] = &[
    "canary",
    "batch",
    "parallel",
    "maxFailures",
    "revertOnFailure",
];
const HOST_ONLY_FIELDS: &[&str] = &["address", "hostKey", "machineId", "configuration"];

/// Every field a host accepts: its own plus the shared [`Settings`]
/// (derived, so a new setting cannot be forgotten here).
static HOST_FIELDS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| [HOST_ONLY_FIELDS, Settings::FIELDS].concat());

impl Inventory {
    /// Builds an inventory directly from validated hosts (for tests and
    /// tools); hosts are sorted by name.
    pub fn new(mut hosts: Vec<Host>) -> Self {
        hosts.sort_by(|a, b| a.name.cmp(&b.name));
        Inventory {
            hosts,
            rollout: RolloutSettings::default(),
        }
    }

    /// The inventory's `rollout` policy (flags override it).
    pub fn rollout(&self) -> &RolloutSettings {
        &self.rollout
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn get(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name.as_str() == name)
    }

    /// The files the deployer's checks read (`caFile`), with where each is
    /// named: the caller checks they exist on this machine, as the core
    /// does no I/O.
    pub fn local_files(&self) -> Vec<(Location, String, String)> {
        let mut files = Vec::new();
        for host in &self.hosts {
            for check in &host.checks.checks {
                if let crate::spec::CheckKind::Http(http) = &check.kind {
                    if let Some(ca) = &http.ca_file {
                        files.push((
                            Location::Host(host.name.to_string()),
                            format!("checks.{}.caFile", check.name),
                            ca.clone(),
                        ));
                    }
                }
            }
        }
        files
    }

    /// Validates the evaluated inventory, collecting every problem.
    pub fn from_eval(doc: EvalDocument) -> Result<Inventory, InventoryErrors> {
        let mut errors = InventoryErrors::default();
        if !doc.has_tether {
            errors.push(Location::Tether, None, Problem::NoTetherOutput);
            return Err(errors);
        }
        let Some(mut top) = Fields::new(
            Location::Tether,
            None,
            doc.tether,
            TETHER_FIELDS,
            &mut errors,
        ) else {
            return Err(errors);
        };
        let defaults_value = top.take("defaults");
        let hosts_value = top.take("hosts");
        let rollout = match top.take("rollout") {
            Some(value) => read_rollout(&mut top, value),
            None => RolloutSettings::default(),
        };
        if hosts_value.is_none() {
            top.error("hosts", Problem::Missing);
        }
        top.finish();

        let defaults = match defaults_value {
            None => Settings::default(),
            Some(value) => read_defaults(value, &mut errors),
        };

        let mut hosts = Vec::new();
        if let Some(value) = hosts_value {
            match value {
                Value::Object(map) if !map.contains_key("$nix") => {
                    for (name, value) in map {
                        if let Some(host) = read_host(
                            &name,
                            value,
                            &defaults,
                            &doc.nixos_configurations,
                            &mut errors,
                        ) {
                            hosts.push(host);
                        }
                    }
                }
                other => errors.push(
                    Location::Tether,
                    Some("hosts"),
                    Problem::WrongType {
                        expected: "an attribute set of hosts",
                        found: describe(&other),
                    },
                ),
            }
        }

        check_duplicate_addresses(&hosts, &mut errors);
        if errors.is_empty() {
            let mut inventory = Inventory::new(hosts);
            inventory.rollout = rollout;
            Ok(inventory)
        } else {
            Err(errors)
        }
    }
}

/// `tether.rollout = { canary = 1 | "@canary"; batch = 3 | "25%"; parallel;
/// maxFailures; revertOnFailure; }`.
fn read_rollout(top: &mut Fields<'_>, value: Value) -> RolloutSettings {
    let mut settings = RolloutSettings::default();
    let Some(mut f) = top.nested("rollout", value, ROLLOUT_FIELDS) else {
        return settings;
    };
    let count = |v: &Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
    match f.take("canary") {
        None => {}
        Some(v @ Value::Number(_)) => match count(&v) {
            Some(n) => settings.canary = Some(CanarySpec::Count(n)),
            None => f.error(
                "canary",
                Problem::InvalidRollout(format!("{v} is not a count of hosts")),
            ),
        },
        Some(Value::String(s)) => match s.parse::<Selector>() {
            Ok(sel) => settings.canary = Some(CanarySpec::Selector(sel)),
            Err(e) => f.error(
                "canary",
                Problem::InvalidRollout(format!("{s:?} is not a selector: {e}")),
            ),
        },
        Some(other) => f.error(
            "canary",
            Problem::WrongType {
                expected: "a count or a selector string",
                found: describe(&other),
            },
        ),
    }
    match f.take("batch") {
        None => {}
        Some(Value::Number(n)) => match n.to_string().parse::<BatchSize>() {
            Ok(b) => settings.batch = Some(b),
            Err(e) => f.error("batch", Problem::InvalidRollout(e)),
        },
        Some(Value::String(s)) => match s.parse::<BatchSize>() {
            Ok(b) => settings.batch = Some(b),
            Err(e) => f.error("batch", Problem::InvalidRollout(e)),
        },
        Some(other) => f.error(
            "batch",
            Problem::WrongType {
                expected: "a count or a percentage string",
                found: describe(&other),
            },
        ),
    }
    if let Some(v) = f.take("parallel") {
        match count(&v) {
            Some(n) if n >= 1 => settings.parallel = Some(n),
            _ => f.error(
                "parallel",
                Problem::InvalidRollout(format!("{v} is not a count of at least 1")),
            ),
        }
    }
    if let Some(v) = f.take("maxFailures") {
        match count(&v) {
            Some(n) => settings.max_failures = Some(n),
            None => f.error(
                "maxFailures",
                Problem::InvalidRollout(format!("{v} is not a count")),
            ),
        }
    }
    if let Some(v) = f.take("revertOnFailure") {
        match v {
            Value::Bool(b) => settings.revert_on_failure = Some(b),
            other => f.error(
                "revertOnFailure",
                Problem::WrongType {
                    expected: "a boolean",
                    found: describe(&other),
                },
            ),
        }
    }
    f.finish();
    settings
}

fn read_defaults(value: Value, errors: &mut InventoryErrors) -> Settings {
    let Some(mut fields) = Fields::new(Location::Defaults, None, value, Settings::FIELDS, errors)
    else {
        return Settings::default();
    };
    let settings = Settings::read(&mut fields);
    // Host-only fields get a precise message rather than "unknown field".
    for field in HOST_ONLY_FIELDS {
        if fields.take(field).is_some() {
            fields.error(field, Problem::HostOnlyField);
        }
    }
    fields.finish();
    settings
}

fn read_host(
    raw_name: &str,
    value: Value,
    defaults: &Settings,
    configurations: &[String],
    errors: &mut InventoryErrors,
) -> Option<Host> {
    let location = Location::Host(raw_name.to_owned());
    let name = match raw_name.parse::<HostName>() {
        Ok(name) => Some(name),
        Err(problem) => {
            errors.push(location.clone(), None, problem.into());
            None
        }
    };
    let mut fields = Fields::new(location, None, value, &HOST_FIELDS, errors)?;
    let address = fields.required::<Address, _>("address");
    let host_key = read_host_key(&mut fields);
    let machine_id = fields.parse::<MachineId, _>("machineId");
    let configuration = read_configuration(&mut fields, raw_name, configurations);
    let settings = Settings::merge(defaults, Settings::read(&mut fields));
    fields.finish();
    let checks = settings.host_checks();
    let ssh_user: SshUser = settings.ssh_user.clone().unwrap_or_default();
    let sudo = settings
        .sudo
        .unwrap_or_else(|| SudoMode::default_for(ssh_user.as_str()));
    Some(Host {
        name: name?,
        address: address?,
        ssh_user,
        ssh_port: settings.ssh_port.unwrap_or(DEFAULT_SSH_PORT),
        host_key: host_key?,
        machine_id,
        tags: settings.tags,
        configuration: configuration?,
        checks,
        ssh_options: settings.ssh_options,
        timeouts: settings.timeouts,
        trial: settings.trial.unwrap_or_default(),
        state: settings.state.resolve(),
        rehearsal: settings.rehearsal.resolve(),
        sudo,
    })
}

fn read_host_key(fields: &mut Fields<'_>) -> Option<HostKey> {
    if !fields.has("hostKey") {
        fields.error("hostKey", Problem::Missing);
        return None;
    }
    let s = fields.string("hostKey")?;
    match s.parse::<HostKey>() {
        Ok(key) => Some(key),
        Err(e) => {
            fields.error("hostKey", Problem::InvalidHostKey(e));
            None
        }
    }
}

/// Reads the descriptor eval-inventory.nix put in place of `configuration`.
fn read_configuration(
    fields: &mut Fields<'_>,
    host: &str,
    configurations: &[String],
) -> Option<Configuration> {
    let field = "configuration";
    let Some(value) = fields.take(field) else {
        // Not produced by eval-inventory.nix; only reachable from hand-made
        // documents, where the default applies.
        return check_named(fields, host.to_owned(), true, configurations);
    };
    let kind = value.get("kind").and_then(Value::as_str);
    match kind {
        Some("name") => {
            let name = value.get("name").and_then(Value::as_str).unwrap_or(host);
            let implicit = value
                .get("implicit")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            check_named(fields, name.to_owned(), implicit, configurations)
        }
        Some("configuration") => Some(Configuration::Inline),
        Some("derivation") => Some(Configuration::Derivation),
        _ => {
            let found = match value.get("type").and_then(Value::as_str) {
                Some("lambda") => "a function".to_owned(),
                Some(t @ ("int" | "float")) => format!("an {t}"),
                Some(t) => format!("a {t}"),
                None => describe(&value),
            };
            fields.error(field, Problem::InvalidConfiguration(found));
            None
        }
    }
}

fn check_named(
    fields: &mut Fields<'_>,
    name: String,
    implicit: bool,
    configurations: &[String],
) -> Option<Configuration> {
    if configurations.contains(&name) {
        return Some(Configuration::Named(name));
    }
    let suggestion = suggest(&name, configurations.iter().map(String::as_str));
    fields.error(
        "configuration",
        Problem::MissingConfiguration {
            name,
            implicit,
            suggestion,
        },
    );
    None
}

fn check_duplicate_addresses(hosts: &[Host], errors: &mut InventoryErrors) {
    let mut seen: HashMap<(&Address, u16), &HostName> = HashMap::new();
    for host in hosts {
        if let Some(other) = seen.get(&(&host.address, host.ssh_port)) {
            errors.push(
                Location::Host(host.name.to_string()),
                Some("address"),
                Problem::DuplicateAddress {
                    address: host.address.to_string(),
                    port: host.ssh_port,
                    other: other.to_string(),
                },
            );
        } else {
            seen.insert((&host.address, host.ssh_port), &host.name);
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests;
