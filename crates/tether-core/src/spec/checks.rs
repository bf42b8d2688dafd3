//! Health checks as data: what the inventory validates into, and what the
//! checks runner ([`crate::checks`]) runs (docs/checks.md).

use std::time::Duration;

use crate::model::{Address, HostName, SshUser};

/// What `failedUnits` accepts after a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailedUnits {
    /// Fail when a unit is failed that was not failed before the switch.
    #[default]
    New,
    /// Fail when any unit is failed.
    Any,
    /// Do not look at failed units.
    Ignore,
}

impl FailedUnits {
    pub const NAMES: &'static [&'static str] = &["new", "any", "ignore"];

    pub fn parse(s: &str) -> Option<FailedUnits> {
        match s {
            "new" => Some(FailedUnits::New),
            "any" => Some(FailedUnits::Any),
            "ignore" => Some(FailedUnits::Ignore),
            _ => None,
        }
    }
}

/// Where a `command` check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOn {
    /// On the machine running tether, with the host in the environment.
    Deployer,
    /// On the host, over SSH.
    Target,
}

/// An HTTP check, sent from the deployer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpCheck {
    /// An explicit URL; otherwise `http://<address>[:port]<path>`.
    pub url: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    /// Accepted status codes; empty means any 2xx.
    pub status: Vec<u16>,
    /// A substring the body must contain.
    pub body: Option<String>,
    /// A regular expression the body must match (validated at load time).
    pub body_regex: Option<String>,
    /// Request headers in the inventory's order; `Host` sets the virtual host.
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<String>,
    pub insecure: bool,
}

impl HttpCheck {
    /// The URL to request from a host at `address`.
    pub fn url_for(&self, address: &Address) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let path = self.path.as_deref().unwrap_or("/");
        format!("http://{}{port}{path}", address.for_url())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpCheck {
    pub port: u16,
    /// Another address to connect to than the host's own.
    pub address: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCheck {
    pub on: CommandOn,
    /// Run with `sh -c`.
    pub command: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    Http(HttpCheck),
    Tcp(TcpCheck),
    Command(CommandCheck),
    /// systemd units that must be active on the target.
    Units(Vec<String>),
}

impl CheckKind {
    /// The `type`s a declared check may have.
    pub const TYPES: &'static [&'static str] = &["http", "tcp", "command", "units"];

    pub fn check_type(&self) -> CheckType {
        match self {
            CheckKind::Http(_) => CheckType::Http,
            CheckKind::Tcp(_) => CheckType::Tcp,
            CheckKind::Command(_) => CheckType::Command,
            CheckKind::Units(_) => CheckType::Units,
        }
    }
}

/// A check's type as events and reports name it: a declared check's `type`,
/// or `system` for the built-in `failedUnits` and `systemRunning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Http,
    Tcp,
    Command,
    Units,
    System,
}

impl CheckType {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckType::Http => "http",
            CheckType::Tcp => "tcp",
            CheckType::Command => "command",
            CheckType::Units => "units",
            CheckType::System => "system",
        }
    }
}

impl std::fmt::Display for CheckType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub kind: CheckKind,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// Per-attempt timeout when a check sets none.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// `checkTimeout` when the inventory sets none.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// `checkInterval` when the inventory sets none.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The names under which the built-in system checks are reported.
pub const FAILED_UNITS: &str = "failedUnits";
pub const SYSTEM_RUNNING: &str = "systemRunning";

/// Everything a host's checks need, defaults merged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChecks {
    /// In name order.
    pub checks: Vec<Check>,
    pub failed_units: FailedUnits,
    pub system_running: bool,
    /// The deadline for all checks, from their start.
    pub timeout: Duration,
    pub interval: Duration,
}

impl Default for HostChecks {
    fn default() -> Self {
        HostChecks {
            checks: Vec::new(),
            failed_units: FailedUnits::New,
            system_running: true,
            timeout: DEFAULT_CHECK_TIMEOUT,
            interval: DEFAULT_CHECK_INTERVAL,
        }
    }
}

impl HostChecks {
    /// No checks at all (the built-in ones switched off too).
    pub fn none() -> HostChecks {
        HostChecks {
            failed_units: FailedUnits::Ignore,
            system_running: false,
            ..HostChecks::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty() && self.failed_units == FailedUnits::Ignore && !self.system_running
    }
}

/// The host the checks are about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTarget {
    pub name: HostName,
    pub address: Address,
    pub ssh_user: SshUser,
}
