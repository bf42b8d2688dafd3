//! Rehearsals (docs/rehearsal.md): production's transition, run first on a
//! staging host with a copy of production's data. The decisions are here,
//! as pure functions with typed results: which hosts may take part, which
//! revision the old system comes from, whether the variants are safe to put
//! on the staging host, how production's checks are aimed at it, and what
//! a stage of the rehearsal showed. The command line runs the stages.

use std::fmt;

use serde::Serialize;

use crate::inventory::{Host, Toplevel};
use crate::model::{Address, HostName, StorePath};
use crate::plan::UnitChanges;
use crate::report::{Event, EventKind, HostReport, Phase};
use crate::shell::quote;
use crate::spec::{Check, CheckKind, CommandCheck, CommandOn, HostChecks};

/// A host's system and its rehearsal variant, as one evaluation gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variants {
    /// The host's own toplevel at that revision.
    pub plain: Toplevel,
    /// `extendModules` with tether's module and `rehearsal.modules`.
    pub variant: Toplevel,
    /// The IP addresses the variant declares, when they could be read.
    pub addresses: Option<Vec<String>>,
}

impl Variants {
    /// Reads the `variants` evaluation's entry for `host`
    /// (nix/eval-inventory.nix): `{ plain; variant; addresses; }` or
    /// `{ error; }`.
    pub fn parse(value: &serde_json::Value, host: &HostName) -> Result<Variants, String> {
        let entry = value
            .get(host.as_str())
            .ok_or_else(|| format!("host {:?}: missing from the evaluation", host.as_str()))?;
        if let Some(error) = entry.get("error").and_then(|e| e.as_str()) {
            return Err(format!("host {:?}: {error}", host.as_str()));
        }
        let one = |key: &str| -> Result<Toplevel, String> {
            let part = entry
                .get(key)
                .cloned()
                .ok_or_else(|| format!("host {:?}: no {key} toplevel", host.as_str()))?;
            let map = serde_json::json!({ host.as_str(): part });
            let mut parsed = crate::inventory::parse_toplevels(map, std::slice::from_ref(host))
                .map_err(|errors| {
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                })?;
            parsed
                .remove(host)
                .ok_or_else(|| format!("host {:?}: no {key} toplevel", host.as_str()))
        };
        let addresses = entry
            .get("addresses")
            .and_then(|a| a.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect()
            });
        Ok(Variants {
            plain: one("plain")?,
            variant: one("variant")?,
            addresses,
        })
    }
}

/// Which of the two rehearsal variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// What production runs now.
    Old,
    /// What production would get.
    New,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Old => "old",
            Side::New => "new",
        })
    }
}

/// Why a rehearsal does not start; nothing has changed on either host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RehearsalRefusal {
    /// HOST and STAGING are the same host.
    SameHost { host: HostName },
    /// STAGING is not marked `rehearsal.staging = true`.
    NotStaging { staging: HostName },
    /// Neither the journal nor `--from` says which revision produced the
    /// host's current system.
    NoOldRevision {
        host: HostName,
        current: Option<String>,
    },
    /// The old revision does not build the system the host runs.
    OldRevisionMismatch {
        host: HostName,
        revision: String,
        builds: String,
        runs: String,
    },
    /// A variant declares production's address.
    CarriesProductionAddress {
        host: HostName,
        address: String,
        side: Side,
    },
    /// The staging host's platform differs from the host's configuration.
    ArchitectureDiffers {
        host: HostName,
        host_system: String,
        staging: HostName,
        staging_system: String,
    },
    /// The staging host's platform could not be read.
    UnknownStagingPlatform { staging: HostName },
    /// The staging host cannot take production's state where it must go.
    StagingStateUnsupported { staging: HostName, path: String },
}

impl fmt::Display for RehearsalRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RehearsalRefusal::SameHost { host } => write!(
                f,
                "host {host:?} cannot rehearse on itself: name another host with `--on`"
            ),
            RehearsalRefusal::NotStaging { staging } => write!(
                f,
                "host {staging:?} is not a staging host: a rehearsal replaces its system and its state, so only a host with `rehearsal.staging = true` in the inventory may be used"
            ),
            RehearsalRefusal::NoOldRevision { host, current } => write!(
                f,
                "host {host:?}: tether's journal knows no clean revision of this flake that produced the system it runs ({}); pass `--from REF` with the flake revision it was deployed from, or deploy it once with tether from a committed tree",
                current.as_deref().unwrap_or("unknown")
            ),
            RehearsalRefusal::OldRevisionMismatch {
                host,
                revision,
                builds,
                runs,
            } => write!(
                f,
                "host {host:?}: revision {revision} builds {builds}, but the host runs {runs}; pass `--from REF` with the revision it was deployed from"
            ),
            RehearsalRefusal::CarriesProductionAddress { host, address, side } => write!(
                f,
                "the {side} rehearsal variant of {host:?} declares production's address {address}; add a rehearsal module that gives it the staging host's address (config.tether.rehearsal.address)"
            ),
            RehearsalRefusal::ArchitectureDiffers {
                host,
                host_system,
                staging,
                staging_system,
            } => write!(
                f,
                "host {host:?} is configured for {host_system}, staging host {staging:?} is {staging_system}: rehearse on a staging host of the same architecture, or pass `--allow-arch-change` with a rehearsal module that builds the variant for {staging_system} (architecture-specific problems are then not covered)"
            ),
            RehearsalRefusal::UnknownStagingPlatform { staging } => write!(
                f,
                "staging host {staging:?}: its architecture could not be read"
            ),
            RehearsalRefusal::StagingStateUnsupported { staging, path } => write!(
                f,
                "staging host {staging:?}: {path} cannot take production's state (a btrfs path's parent must be on btrfs and the path a subvolume or absent; a ZFS dataset's parent must exist)"
            ),
        }
    }
}

/// Checks that `staging` may rehearse `production`.
pub fn check_hosts(production: &Host, staging: &Host) -> Result<(), RehearsalRefusal> {
    if production.name == staging.name {
        return Err(RehearsalRefusal::SameHost {
            host: production.name.clone(),
        });
    }
    if !staging.rehearsal.staging {
        return Err(RehearsalRefusal::NotStaging {
            staging: staging.name.clone(),
        });
    }
    Ok(())
}

/// Where the old system's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "from",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum OldSource {
    /// The revision tether's journal recorded for the deploy that put the
    /// host's current system on it.
    Journal { revision: String, deploy_id: String },
    /// `--from REF`.
    Given { reference: String },
}

impl OldSource {
    /// The revision or reference, for messages.
    pub fn describe(&self) -> String {
        match self {
            OldSource::Journal {
                revision,
                deploy_id,
            } => format!("{revision} (deploy {deploy_id})"),
            OldSource::Given { reference } => reference.clone(),
        }
    }
}

/// `--from` wins; otherwise the journal's clean revision; otherwise refused.
/// `journal` is the (revision, deploy id) of the latest confirmed deploy of
/// the host's current system; a dirty tree's revision does not count.
pub fn old_source(
    host: &HostName,
    current: Option<&StorePath>,
    from: Option<&str>,
    journal: Option<(String, String)>,
) -> Result<OldSource, RehearsalRefusal> {
    if let Some(reference) = from {
        return Ok(OldSource::Given {
            reference: reference.to_string(),
        });
    }
    match journal {
        Some((revision, deploy_id)) if !revision.ends_with("-dirty") && !revision.is_empty() => {
            Ok(OldSource::Journal {
                revision,
                deploy_id,
            })
        }
        _ => Err(RehearsalRefusal::NoOldRevision {
            host: host.clone(),
            current: current.map(|p| p.to_string()),
        }),
    }
}

/// What [`check_variants`] lets through, with the warnings to show.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct VariantsAccepted {
    pub warnings: Vec<String>,
}

/// What [`check_variants`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Evaluated<'a> {
    pub production: &'a Host,
    /// The system production runs now.
    pub runs: &'a StorePath,
    pub old_source: &'a OldSource,
    pub old: &'a Variants,
    pub new: &'a Variants,
    pub staging: &'a HostName,
    /// The staging host's Nix platform (`x86_64-linux`), from its preflight.
    pub staging_system: Option<&'a str>,
    pub allow_arch_change: bool,
}

/// Checks the evaluated variants before anything is built or changed: the
/// old revision builds what production runs, no variant declares
/// production's address, and the platforms match (or `--allow-arch-change`).
pub fn check_variants(e: Evaluated<'_>) -> Result<VariantsAccepted, RehearsalRefusal> {
    let Evaluated {
        production,
        runs,
        old_source: old_revision,
        old,
        new,
        staging,
        staging_system,
        allow_arch_change,
    } = e;
    let mut accepted = VariantsAccepted::default();
    if &old.plain.out_path != runs {
        return Err(RehearsalRefusal::OldRevisionMismatch {
            host: production.name.clone(),
            revision: old_revision.describe(),
            builds: old.plain.out_path.to_string(),
            runs: runs.to_string(),
        });
    }
    let production_address = production.address.to_string();
    for (side, v) in [(Side::Old, old), (Side::New, new)] {
        match &v.addresses {
            Some(list) if list.iter().any(|a| a == &production_address) => {
                return Err(RehearsalRefusal::CarriesProductionAddress {
                    host: production.name.clone(),
                    address: production_address,
                    side,
                });
            }
            Some(_) => {}
            None => accepted.warnings.push(format!(
                "the {side} variant's addresses could not be read from its configuration; the staging host is checked at run time instead"
            )),
        }
    }
    let Some(staging_system) = staging_system else {
        return Err(RehearsalRefusal::UnknownStagingPlatform {
            staging: staging.clone(),
        });
    };
    for v in [old, new] {
        let Some(host_system) = v.plain.system.as_deref() else {
            continue;
        };
        let variant_system = v.variant.system.as_deref().unwrap_or(host_system);
        if host_system == staging_system && variant_system == staging_system {
            continue;
        }
        if !allow_arch_change {
            return Err(RehearsalRefusal::ArchitectureDiffers {
                host: production.name.clone(),
                host_system: host_system.to_string(),
                staging: staging.clone(),
                staging_system: staging_system.to_string(),
            });
        }
        if variant_system != staging_system {
            return Err(RehearsalRefusal::ArchitectureDiffers {
                host: production.name.clone(),
                host_system: variant_system.to_string(),
                staging: staging.clone(),
                staging_system: staging_system.to_string(),
            });
        }
        let warning = format!(
            "host {:?} is configured for {host_system}; its rehearsal variants were built for {staging_system} (--allow-arch-change): architecture-specific problems are not covered by this rehearsal",
            production.name.as_str()
        );
        if !accepted.warnings.contains(&warning) {
            accepted.warnings.push(warning);
        }
    }
    Ok(accepted)
}

/// The name of the check tether adds to a rehearsal's checks.
pub const ISOLATION_CHECK: &str = "rehearsal-isolation";

/// Production's checks, aimed at the staging host: every address of
/// production in a URL or a TCP check becomes the staging host's (commands
/// get the staging host's address in `TETHER_ADDRESS`, as the check target
/// is the staging host), plus a check that the staging host does not carry
/// production's address.
pub fn retarget_checks(checks: &HostChecks, production: &Address, staging: &Address) -> HostChecks {
    let swap = |text: &str| {
        text.replace(&production.for_url(), &staging.for_url())
            .replace(&production.to_string(), &staging.to_string())
    };
    let mut out = checks.clone();
    for check in &mut out.checks {
        match &mut check.kind {
            CheckKind::Http(http) => {
                if let Some(url) = &mut http.url {
                    *url = swap(url);
                }
                for (_, value) in &mut http.headers {
                    *value = swap(value);
                }
            }
            CheckKind::Tcp(tcp) => {
                if tcp.address.as_ref() == Some(production) {
                    tcp.address = Some(staging.clone());
                }
            }
            CheckKind::Command(_) | CheckKind::Units(_) => {}
        }
    }
    out.checks.push(isolation_check(production));
    out
}

/// A command check on the target that fails while any of its interfaces
/// carries `production`'s address.
pub fn isolation_check(production: &Address) -> Check {
    let family = match production {
        Address::Ipv6(_) => "inet6",
        _ => "inet",
    };
    let command = format!(
        "if ip -o addr show | grep -F -e {}; then echo 'this staging host carries production'\"'\"'s address' >&2; exit 1; fi",
        quote(&format!("{family} {production}/"))
    );
    Check {
        name: ISOLATION_CHECK.to_string(),
        kind: CheckKind::Command(CommandCheck {
            on: CommandOn::Target,
            command,
        }),
        timeout: crate::spec::DEFAULT_ATTEMPT_TIMEOUT,
    }
}

/// One check's end in a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckEnd {
    pub check: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub passed: bool,
    pub attempts: u32,
    pub detail: String,
}

/// What one stage (a safe switch on the staging host) showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub system: String,
    #[serde(flatten)]
    pub report: HostReport,
    pub activation_ms: Option<u64>,
    pub checks_ms: Option<u64>,
    pub reboot_trial: bool,
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    pub reloaded: Vec<String>,
    pub checks: Vec<CheckEnd>,
}

impl Stage {
    /// Reads a stage's events (of the staging host) and its report.
    pub fn of(events: &[Event], report: HostReport) -> Stage {
        let first = |want: &dyn Fn(&EventKind) -> bool| {
            events.iter().find(|e| want(&e.kind)).map(|e| e.elapsed_ms)
        };
        let phase = |p: Phase| first(&|k| matches!(k, EventKind::Phase { phase } if *phase == p));
        let activating = phase(Phase::Activating);
        let ended = first(&|k| matches!(k, EventKind::ActivationEnded { .. }));
        let checking = phase(Phase::Checking);
        let checks_over = phase(Phase::Confirming).or(phase(Phase::RollingBack));
        let mut units = UnitChanges::default();
        let mut checks: Vec<CheckEnd> = Vec::new();
        for e in events {
            match &e.kind {
                EventKind::Output { line } => add_units(&mut units, line),
                EventKind::Check {
                    check,
                    kind,
                    attempt,
                    passed,
                    detail,
                } => {
                    let end = CheckEnd {
                        check: check.clone(),
                        kind: kind.as_str().to_string(),
                        passed: *passed,
                        attempts: *attempt,
                        detail: detail.clone(),
                    };
                    match checks.iter_mut().find(|c| &c.check == check) {
                        Some(c) => *c = end,
                        None => checks.push(end),
                    }
                }
                _ => {}
            }
        }
        Stage {
            system: report.new_system.clone(),
            activation_ms: activating.zip(ended).map(|(a, b)| b.saturating_sub(a)),
            checks_ms: checking.zip(checks_over).map(|(a, b)| b.saturating_sub(a)),
            reboot_trial: phase(Phase::Rebooting).is_some() || phase(Phase::Booted).is_some(),
            started: units.start,
            stopped: units.stop,
            restarted: units.restart,
            reloaded: units.reload,
            checks,
            report,
        }
    }

    pub fn passed(&self) -> bool {
        self.report.outcome.is_success()
    }

    /// The first check that failed, by name.
    pub fn failed_check(&self) -> Option<&CheckEnd> {
        self.checks.iter().find(|c| !c.passed)
    }
}

/// Adds the units of an activation line (`starting the following units:
/// a, b`, as switch-to-configuration prints them).
fn add_units(units: &mut UnitChanges, line: &str) {
    let Some((verb, list)) = line.trim().split_once(" the following units: ") else {
        return;
    };
    let target = match verb {
        "starting" => &mut units.start,
        "stopping" => &mut units.stop,
        "restarting" => &mut units.restart,
        "reloading" => &mut units.reload,
        _ => return,
    };
    target.extend(
        list.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string),
    );
}

/// How a rehearsal ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Verdict {
    /// The new variant was confirmed on the staging host after the old one
    /// ran with production's data.
    Passed,
    /// A stage did not end confirmed; production would likely fail too.
    Failed { side: Side, reason: String },
    /// Something outside the transition went wrong (loading the state).
    Error { step: String, reason: String },
}

impl Verdict {
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Passed)
    }

    /// The verdict of the two stages (the new one only runs after the old
    /// one passed).
    pub fn of(old: &Stage, new: Option<&Stage>) -> Verdict {
        let failed = |side: Side, stage: &Stage| {
            let reason = match stage.failed_check() {
                Some(c) => format!(
                    "{} ({}): check {} failed: {}",
                    stage.report.outcome.name(),
                    stage.report.outcome.reason().unwrap_or_default(),
                    c.check,
                    c.detail
                ),
                None => format!(
                    "{}: {}",
                    stage.report.outcome.name(),
                    stage.report.outcome.reason().unwrap_or_default()
                ),
            };
            Verdict::Failed { side, reason }
        };
        if !old.passed() {
            return failed(Side::Old, old);
        }
        match new {
            Some(n) if n.passed() => Verdict::Passed,
            Some(n) => failed(Side::New, n),
            None => Verdict::Error {
                step: "new variant".into(),
                reason: "the new variant did not run".into(),
            },
        }
    }
}

/// The size of one state volume on the staging host, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateSize {
    pub path: String,
    /// Production's snapshot it was loaded from.
    pub source: String,
    /// Bytes streamed from production to the staging host.
    pub streamed: u64,
    /// `du` of the loaded copy before the transition and after it.
    pub before: Option<u64>,
    pub after: Option<u64>,
}

/// Everything a rehearsal found, as shown and as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RehearsalReport {
    pub id: String,
    pub production: HostName,
    pub staging: HostName,
    /// Production's current system and the one a deploy would give it.
    pub production_old: String,
    pub production_new: String,
    pub old_source: OldSource,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub old_stage: Option<Stage>,
    pub new_stage: Option<Stage>,
    pub state: Vec<StateSize>,
    pub warnings: Vec<String>,
    /// Whether the staging host was returned to its own system and state.
    pub cleaned_up: bool,
}

#[cfg(test)]
mod tests;
