//! `tether status`: what every selected host runs, boots and went through,
//! read in one SSH round trip per host, in parallel; and the hosts' own deploy
//! journals reconciled into the deployer's (so a trial a guard rolled back
//! while the deployer was gone reads as rolled back in `tether history`).
//! docs/status.md describes the columns, the JSON fields and the exit codes.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tether_core::identity::{self, Expected, Seen};
use tether_core::inventory::Host;
use tether_core::model::HostName;
use tether_core::ports::{call, CallError, Conn, RemoteError};
use tether_core::remote::status::{Generation, HostStatus, LastDeploy, Status};

use tether_core::report::restore_command;
use tether_core::text::short_store_path;

use crate::adapters::journal::{Journal, RehearsalRecord};
use crate::adapters::ssh::SshTarget;
use crate::cli::Context;
use crate::exit::CommandError;

/// Show the selected hosts' state
///
/// Reachable and who they are (pinned host key, machine-id), current system
/// and generation, boot default, booted system, whether a reboot is needed,
/// failed units, the last tether deploy from the host's own journal, and
/// guards still armed or left over. Exits 0 when every host answered and is
/// who the inventory says, 1 when any host could not be reached or failed the
/// identity check.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array, one object per host, on stdout (docs/status.md)
    #[arg(long)]
    json: bool,
    /// Seconds to wait for each host's answer
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
    /// Most hosts asked at once
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
}

/// Why a host gave no usable answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Failure {
    /// `timeout`, `refused`, `host-key`, `unreachable`, `bad-answer`, `error`.
    kind: &'static str,
    message: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct LeftoverGuard {
    deploy_id: String,
    state: String,
}

/// One host's row: the table and `--json` are both printed from this.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    host: HostName,
    address: String,
    reachable: bool,
    error: Option<Failure>,
    /// `ok`, `mismatch` (wrong host key or machine-id) or `unverified`.
    identity: &'static str,
    identity_detail: Option<String>,
    hostname: Option<String>,
    machine_id: Option<String>,
    boot_id: Option<String>,
    current_system: Option<String>,
    current_generation: Option<u32>,
    boot_default_system: Option<String>,
    boot_default_generation: Option<u32>,
    booted_system: Option<String>,
    reboot_needed: Option<bool>,
    system_state: Option<String>,
    failed_units: Vec<String>,
    generations: Vec<Generation>,
    last_deploy: Option<LastDeploy>,
    armed_guards: Vec<String>,
    leftover_guards: Vec<LeftoverGuard>,
    stale_lock: Option<String>,
    /// A reboot trial that is not over (or whose restore failed).
    boot_trial: Option<tether_core::remote::status::BootTrialInfo>,
    /// Runs of the deployer's journal whose outcome this status learnt.
    journal_reconciled: usize,
    /// The last deploy rolled the system back but left the declared state
    /// as the trial left it (`restoreOnRollback` off): how to restore it.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_kept: Option<String>,
    /// The newest rehearsal of this host (`tether rehearse`), from the
    /// deployer's journal.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_rehearsal: Option<RehearsalRecord>,
}

impl Row {
    fn empty(host: &Host) -> Row {
        Row {
            host: host.name.clone(),
            address: host.address.to_string(),
            reachable: false,
            error: None,
            identity: "unverified",
            identity_detail: None,
            hostname: None,
            machine_id: None,
            boot_id: None,
            current_system: None,
            current_generation: None,
            boot_default_system: None,
            boot_default_generation: None,
            booted_system: None,
            reboot_needed: None,
            system_state: None,
            failed_units: Vec::new(),
            generations: Vec::new(),
            last_deploy: None,
            armed_guards: Vec::new(),
            leftover_guards: Vec::new(),
            stale_lock: None,
            boot_trial: None,
            journal_reconciled: 0,
            data_kept: None,
            last_rehearsal: None,
        }
    }

    /// Counts against the exit code: not reached, or not who we think.
    fn is_failure(&self) -> bool {
        !self.reachable || self.identity != "ok"
    }
}

fn classify(e: &RemoteError) -> Failure {
    let (kind, message) = match e {
        RemoteError::HostKey(m) => ("host-key", format!("host key verification failed: {m}")),
        RemoteError::Timeout(d) => ("timeout", format!("no answer within {}s", d.as_secs())),
        RemoteError::Refused(m) => ("refused", m.clone()),
        RemoteError::ConnectTimedOut(m) => ("timeout", m.clone()),
        RemoteError::Unreachable(m) => ("unreachable", m.clone()),
        RemoteError::Other(m) => ("error", m.clone()),
        RemoteError::Sudo(f) => ("sudo", f.to_string()),
    };
    Failure { kind, message }
}

/// Fills `row` from a host's answer, checking the pinned machine-id.
fn fill(row: &mut Row, host: &Host, s: &HostStatus) {
    row.reachable = true;
    let expected = Expected {
        machine_id: host.machine_id.as_ref().map(|m| m.as_str()),
        platform: None,
    };
    let seen = Seen {
        machine_id: &s.machine_id,
        arch: "",
    };
    match identity::check(&expected, &seen) {
        Err(problem) => {
            row.identity = "mismatch";
            row.identity_detail = Some(problem.to_string());
        }
        Ok(()) => row.identity = "ok",
    }
    let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
    row.hostname = some(&s.hostname);
    row.machine_id = some(&s.machine_id);
    row.boot_id = some(&s.boot_id);
    row.current_system = s.current_system.clone();
    row.current_generation = s.current_generation;
    row.boot_default_system = s.profile_system.clone();
    row.boot_default_generation = s.profile_generation;
    row.booted_system = s.booted_system.clone();
    row.reboot_needed = Some(s.reboot_needed);
    row.system_state = some(&s.system_state);
    row.failed_units = s.failed_units.clone();
    row.generations = s.generations.clone();
    row.last_deploy = s.last_deploy();
    row.armed_guards = s.armed_guards().map(|g| g.deploy_id.clone()).collect();
    row.leftover_guards = s
        .leftover_guards()
        .map(|g| LeftoverGuard {
            deploy_id: g.deploy_id.clone(),
            state: g.state.wire().to_string(),
        })
        .collect();
    row.stale_lock = s.stale_lock().map(str::to_string);
    row.boot_trial = s
        .boot_trial
        .clone()
        .filter(|t| t.pending || t.state == "restore-failed");
    row.data_kept = row
        .last_deploy
        .as_ref()
        .filter(|d| {
            host.state.is_declared() && !host.state.restores() && d.outcome == "rolled-back"
        })
        .map(|d| {
            format!(
                "the data is as deploy {} left it; its pre-deploy snapshot restores it: {}",
                d.deploy_id,
                restore_command(host.name.as_str(), &d.deploy_id)
            )
        });
}

async fn status_of(
    host: &Host,
    target: &SshTarget,
    timeout: Duration,
    journal: Option<&Journal>,
) -> Row {
    let mut row = Row::empty(host);
    // A fresh connection: one round trip, and no ControlMaster left behind.
    let status = match call(target, &Status, Conn::Fresh, timeout).await {
        Ok(status) => status,
        Err(CallError::Remote(e)) => {
            if matches!(e, RemoteError::HostKey(_)) {
                row.identity = "mismatch";
                row.identity_detail = Some("the host key is not the pinned one".into());
            }
            row.error = Some(classify(&e));
            return row;
        }
        Err(e @ CallError::Parse { .. }) => {
            row.error = Some(Failure {
                kind: "bad-answer",
                message: e.to_string(),
            });
            return row;
        }
    };
    fill(&mut row, host, &status);
    if let Some(j) = journal {
        row.last_rehearsal = j
            .rehearsals(1, Some(&[host.name.to_string()]))
            .ok()
            .and_then(|mut r| r.pop());
    }
    // Another machine's journal must never settle this host's runs.
    if let (Some(j), "ok") = (journal, row.identity) {
        match j.reconcile(host.name.as_str(), &status.journal) {
            Ok(n) => row.journal_reconciled = n,
            Err(e) => tracing::warn!("{}: could not reconcile the journal: {e}", host.name),
        }
    }
    row
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let (_inventory, hosts) = ctx.selected_hosts().await?;
    let (_run_dir, targets) =
        SshTarget::for_hosts(&hosts, ctx.nix.program(), ctx.sudo_password.as_ref(), false)
            .map_err(CommandError::Output)?;
    // Status is still worth showing without the deployer's journal.
    let journal = match Journal::open_default() {
        Ok(j) => Some(j),
        Err(e) => {
            eprintln!("warning: not reconciling host journals: {e}");
            None
        }
    };
    let timeout = Duration::from_secs(args.timeout);
    let rows: Vec<Row> = stream::iter(hosts.iter().zip(targets.iter()))
        .map(|(host, target)| status_of(host, target, timeout, journal.as_ref()))
        .buffered(usize::from(args.parallel))
        .collect()
        .await;
    if args.json {
        let text = serde_json::to_string_pretty(&rows).map_err(std::io::Error::other)?;
        println!("{text}");
    } else {
        print!("{}", table(&rows));
    }
    let failed = rows.iter().filter(|r| r.is_failure()).count();
    if failed > 0 {
        Err(CommandError::HostsNotOk {
            count: failed,
            what: "unreachable or not who the inventory says",
        })
    } else {
        Ok(())
    }
}

fn or_dash(v: Option<String>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}

fn last_deploy_cell(d: &LastDeploy) -> String {
    let mut s = format!("{} {}", d.outcome, d.deploy_id);
    if let Some(by) = &d.by {
        s.push_str(&format!(" by {by}"));
    }
    s.push_str(&format!(" at {}", d.ended.as_deref().unwrap_or(&d.started)));
    s
}

fn guard_cell(r: &Row) -> String {
    let mut parts: Vec<String> = r
        .armed_guards
        .iter()
        .map(|g| format!("armed {g}"))
        .collect();
    parts.extend(
        r.leftover_guards
            .iter()
            .map(|g| format!("leftover {} ({})", g.deploy_id, g.state)),
    );
    if let Some(l) = &r.stale_lock {
        parts.push(format!("stale-lock {l}"));
    }
    if let Some(t) = &r.boot_trial {
        parts.push(format!("boot-trial {} ({})", t.deploy_id, t.state));
    }
    or_dash(Some(parts.join(", ")))
}

/// The human view: one aligned line per host, then one note per problem.
fn table(rows: &[Row]) -> String {
    let header = [
        "HOST",
        "REACHABLE",
        "IDENTITY",
        "CURRENT",
        "GEN",
        "BOOT-GEN",
        "BOOTED",
        "REBOOT",
        "FAILED-UNITS",
        "GUARDS",
        "LAST-DEPLOY",
    ];
    let short = |p: &Option<String>| or_dash(p.as_deref().map(short_store_path));
    let num = |n: Option<u32>| or_dash(n.map(|n| n.to_string()));
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        lines.push(vec![
            r.host.to_string(),
            match &r.error {
                None => "yes".into(),
                Some(f) => format!("no ({})", f.kind),
            },
            r.identity.to_string(),
            short(&r.current_system),
            num(r.current_generation),
            num(r.boot_default_generation),
            short(&r.booted_system),
            or_dash(
                r.reboot_needed
                    .map(|b| if b { "yes" } else { "no" }.to_string()),
            ),
            or_dash(Some(r.failed_units.join(","))),
            guard_cell(r),
            or_dash(r.last_deploy.as_ref().map(last_deploy_cell)),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for r in rows {
        if let Some(f) = &r.error {
            out.push_str(&format!("{}: {}: {}\n", r.host, f.kind, f.message));
        }
        if let Some(d) = &r.identity_detail {
            out.push_str(&format!("{}: identity: {d}\n", r.host));
        }
        if let Some(d) = &r.data_kept {
            out.push_str(&format!("{}: state: {d}\n", r.host));
        }
        if let Some(x) = &r.last_rehearsal {
            out.push_str(&format!(
                "{}: last rehearsal {} {} on {} at {}, of {}{}\n",
                r.host,
                x.id,
                x.result,
                x.staging_host,
                x.started_at,
                short_store_path(&x.production_new),
                if r.current_system.as_deref() == Some(x.production_new.as_str()) {
                    " (the system it runs)"
                } else {
                    ""
                }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_core::inventory::{EvalDocument, Inventory};

    fn host(machine_id: Option<&str>) -> Host {
        let mut h = serde_json::json!({
            "address": "10.0.0.1",
            "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvV+04toANsfjKlcX2kIDmYGSffa8Qyh2gatW2Dt8kF",
            "configuration": {"kind": "name", "name": "web1", "implicit": true},
        });
        if let Some(m) = machine_id {
            h["machineId"] = m.into();
        }
        let inv = Inventory::from_eval(EvalDocument {
            has_tether: true,
            tether: serde_json::json!({"hosts": {"web1": h}}),
            nixos_configurations: vec!["web1".into()],
        })
        .unwrap();
        inv.hosts()[0].clone()
    }

    fn answer(machine_id: &str) -> HostStatus {
        use tether_core::remote::{Operation, ScriptOutput};
        Status
            .parse(&ScriptOutput {
                stdout: format!(
                    "machine_id={machine_id}\ncurrent=/nix/store/x\nfailed_unit=a.service\nstatus=done\n"
                ),
                ..ScriptOutput::default()
            })
            .unwrap()
    }

    #[test]
    fn a_machine_id_other_than_the_pinned_one_fails_identity() {
        let pinned = "0123456789abcdef0123456789abcdef";
        let h = host(Some(pinned));
        let mut row = Row::empty(&h);
        fill(&mut row, &h, &answer("ffffffffffffffffffffffffffffffff"));
        assert!(row.reachable);
        assert_eq!(row.identity, "mismatch");
        assert!(row.is_failure());
        let mut row = Row::empty(&h);
        fill(&mut row, &h, &answer(pinned));
        assert_eq!(row.identity, "ok");
        // Failed units are data, not a failure of `status`.
        assert_eq!(row.failed_units, ["a.service"]);
        assert!(!row.is_failure());
        let unpinned = host(None);
        let mut row = Row::empty(&unpinned);
        fill(&mut row, &unpinned, &answer("anything"));
        assert_eq!(row.identity, "ok");
    }

    #[test]
    fn ssh_failures_are_classified() {
        let kind = |e: RemoteError| classify(&e).kind;
        assert_eq!(kind(RemoteError::HostKey("x".into())), "host-key");
        assert_eq!(kind(RemoteError::Refused("x".into())), "refused");
        assert_eq!(kind(RemoteError::ConnectTimedOut("x".into())), "timeout");
        assert_eq!(
            kind(RemoteError::Timeout(Duration::from_secs(10))),
            "timeout"
        );
        assert_eq!(
            kind(RemoteError::Unreachable("No route to host".into())),
            "unreachable"
        );
    }

    #[test]
    fn an_unreachable_host_is_a_row_with_its_reason() {
        let h = host(None);
        let mut row = Row::empty(&h);
        row.error = Some(classify(&RemoteError::Refused("Connection refused".into())));
        let text = table(&[row]);
        assert!(text.contains("no (refused)"), "{text}");
        assert!(text.contains("web1: refused: Connection refused"), "{text}");
    }
}
