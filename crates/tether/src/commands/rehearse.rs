//! `tether rehearse HOST --on STAGING` (docs/rehearsal.md): production's
//! transition, first on a staging host with a copy of production's data.
//!
//! The steps: read both hosts (read-only); find the revision that produced
//! production's current system; evaluate both revisions' rehearsal variants
//! (`extendModules`); refuse what is unsafe before anything changes; load
//! production's state (btrfs, ZFS) into the staging host, streamed through
//! the deployer; bring the staging host to the old variant, then to the new
//! one, each with the safe switch and production's checks aimed at the
//! staging host; report and record; return the staging host to its own
//! system and state unless `--keep`. Production is only read, and its
//! state only snapshotted (read-only, deleted once sent).
//!
//! The decisions are `tether_core::rehearsal`'s; this file runs the steps.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tether_core::inventory::Host;
use tether_core::model::{DeployId, Goal, HostName, StorePath};
use tether_core::ports::{call, CallError, Conn};
use tether_core::rehearsal::{
    self, check_hosts, check_variants, old_source, retarget_checks, Evaluated, OldSource,
    RehearsalReport, Stage, StateSize, Variants, Verdict,
};
use tether_core::remote::{Facts, Preflight, RehearsalState, StateStep, StateStepReport, Volume};
use tether_core::spec::{RolloutSettings, StateSpec};

use crate::adapters::journal::{git_revision, Journal};
use crate::adapters::nix::NixSource;
use crate::adapters::ssh::{relay, SshTarget};
use crate::args::{host_job, TimeoutArgs, TrialArgs};
use crate::cli::Context;
use crate::exit::CommandError;
use crate::runner::{self, Prepared, RunOptions};

/// Rehearse HOST's upgrade on a staging host before production
///
/// `--on STAGING` names the staging host (an inventory host with
/// `rehearsal.staging = true`). The staging host gets HOST's old system,
/// then a copy of HOST's state, then HOST's new system, each a variant with
/// the staging host's identity; HOST's checks run against it. HOST itself
/// is only read. Exit: 0 passed, 1 failed (the report says where), 2
/// refused before anything changed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The production host whose upgrade is rehearsed
    pub host: String,
    /// The revision HOST's current system was deployed from, when the
    /// journal does not know it: a git revision of the flake's repository,
    /// or a flake reference
    #[arg(long, value_name = "REF")]
    pub from: Option<String>,
    /// Leave the staging host on the new variant with the loaded state
    #[arg(long)]
    pub keep: bool,
    /// Rehearse although the staging host's architecture differs from
    /// HOST's; a rehearsal module must build the variant for it
    #[arg(long)]
    pub allow_arch_change: bool,
    /// Print events and the report as NDJSON on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub trial: TrialArgs,
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
}

/// How long streaming one volume's state may take.
const STREAM_TIMEOUT: Duration = Duration::from_secs(3600);

fn refused(r: rehearsal::RehearsalRefusal) -> CommandError {
    CommandError::Usage(format!("rehearsal refused, nothing was changed: {r}"))
}

pub async fn run(ctx: &Context, args: Args) -> Result<(), CommandError> {
    let say = |msg: String| {
        if !args.json {
            eprintln!("{msg}");
        }
    };
    let inventory = ctx.nix.load_inventory(&ctx.source).await?;
    let production = inventory.get(&args.host).cloned().ok_or_else(|| {
        CommandError::Usage(format!("host {:?}: not in the inventory", args.host))
    })?;
    let staging = {
        let selector = ctx.selector.as_ref().ok_or_else(|| {
            CommandError::Usage("rehearse: name the staging host with `--on STAGING`".into())
        })?;
        let picked = tether_core::inventory::select(&inventory, Some(selector))?;
        match picked.as_slice() {
            [one] => (*one).clone(),
            _ => {
                return Err(CommandError::Usage(format!(
                    "rehearse: `--on` must name one staging host, it selects {}",
                    picked.len()
                )))
            }
        }
    };
    check_hosts(&production, &staging).map_err(refused)?;

    let (_run_dir, targets) = SshTarget::for_hosts(
        &[production.clone(), staging.clone()],
        ctx.nix.program(),
        ctx.sudo_password.as_ref(),
        false,
    )
    .map_err(CommandError::Output)?;
    let [prod_target, staging_target] = <[SshTarget; 2]>::try_from(targets)
        .map_err(|_| CommandError::Local("expected two SSH targets".into()))?;
    let quick = args.timeouts.for_host(&production).command;
    say(format!(
        "rehearse {}: reading {} and {}",
        production.name.as_str(),
        production.name.as_str(),
        staging.name.as_str()
    ));
    let (prod_facts, staging_facts) = tokio::join!(
        read_facts(&prod_target, &production, quick),
        read_facts(&staging_target, &staging, quick)
    );
    let (prod_facts, staging_facts) = (prod_facts?, staging_facts?);
    let runs = prod_facts
        .current_system
        .as_deref()
        .and_then(StorePath::new)
        .ok_or_else(|| {
            CommandError::Usage(format!(
                "host {:?}: it runs no NixOS system tether can read",
                production.name.as_str()
            ))
        })?;
    let staging_original = staging_facts
        .current_system
        .as_deref()
        .and_then(StorePath::new)
        .ok_or_else(|| {
            CommandError::Usage(format!(
                "staging host {:?}: it runs no NixOS system to return to",
                staging.name.as_str()
            ))
        })?;

    // Which revision produced production's system.
    let journal = Journal::open_default().ok();
    let recorded = journal.as_ref().and_then(|j| {
        j.deployed_revision(production.name.as_str(), runs.as_str())
            .ok()
            .flatten()
    });
    let old = old_source(
        &production.name,
        Some(&runs),
        args.from.as_deref(),
        recorded,
    )
    .map_err(refused)?;
    let old_ref = old_flake_ref(&ctx.source, &old)?;
    say(format!(
        "rehearse {}: old system from {}, new from {}",
        production.name.as_str(),
        old.describe(),
        ctx.source
    ));

    // Both revisions' variants, in two evaluations at once.
    let identity = [
        ("production", production.name.to_string()),
        ("staging", staging.name.to_string()),
        ("address", staging.address.to_string()),
        ("productionAddress", production.address.to_string()),
    ];
    let (old_json, new_json) = tokio::join!(
        ctx.nix
            .eval_variants(&old_ref, &ctx.source, &production.name, &identity),
        ctx.nix
            .eval_variants(&ctx.source, &ctx.source, &production.name, &identity)
    );
    let evaluation = |what: &str, e| {
        CommandError::Usage(format!(
            "host {:?}: evaluating the {what} rehearsal variant failed: {e}",
            production.name.as_str()
        ))
    };
    let old_variants = Variants::parse(
        &old_json.map_err(|e| evaluation("old", e.to_string()))?,
        &production.name,
    )
    .map_err(|e| evaluation("old", e))?;
    let new_variants = Variants::parse(
        &new_json.map_err(|e| evaluation("new", e.to_string()))?,
        &production.name,
    )
    .map_err(|e| evaluation("new", e))?;
    let staging_system = tether_core::identity::nix_system(&staging_facts.arch);
    let accepted = check_variants(Evaluated {
        production: &production,
        runs: &runs,
        old_source: &old,
        old: &old_variants,
        new: &new_variants,
        staging: &staging.name,
        staging_system: (!staging_facts.arch.is_empty()).then_some(staging_system.as_str()),
        allow_arch_change: args.allow_arch_change,
    })
    .map_err(refused)?;
    // Warnings reach stderr with --json too (and are in the report).
    for w in &accepted.warnings {
        eprintln!("warning: {w}");
    }

    // The state must have somewhere to go on the staging host.
    let id = runner::new_deploy_id()?;
    let state = StateRun {
        id: id.clone(),
        production: &production,
        quick,
    };
    if production.state.is_declared() {
        let check = state
            .step(&staging_target, StateStep::CheckStaging)
            .await
            .map_err(|e| {
                CommandError::Usage(format!("staging host {:?}: {e}", staging.name.as_str()))
            })?;
        if let Some((path, _)) = check.failed.first() {
            return Err(refused(
                rehearsal::RehearsalRefusal::StagingStateUnsupported {
                    staging: staging.name.clone(),
                    path: format!("{path} ({})", check.failures()),
                },
            ));
        }
    }

    say(format!(
        "rehearse {}: building both variants",
        production.name.as_str()
    ));
    let drvs = [
        old_variants.variant.drv_path.clone(),
        new_variants.variant.drv_path.clone(),
    ];
    let built = ctx.nix.build(&drvs).await.map_err(CommandError::Build)?;
    let (old_built, new_built) = match built.as_slice() {
        [a, b] => (a.clone(), b.clone()),
        [a] => (a.clone(), a.clone()),
        _ => return Err(CommandError::Local("nix build returned no paths".into())),
    };

    let stages = Stages {
        ctx,
        args: &args,
        production: &production,
        staging: &staging,
        target: &staging_target,
        inventory_hosts: &inventory,
    };
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut report = RehearsalReport {
        id: id.to_string(),
        production: production.name.clone(),
        staging: staging.name.clone(),
        production_old: runs.to_string(),
        production_new: new_variants.plain.out_path.to_string(),
        old_source: old.clone(),
        verdict: Verdict::Passed,
        old_stage: None,
        new_stage: None,
        state: Vec::new(),
        warnings: accepted.warnings.clone(),
        cleaned_up: false,
    };

    // Production's data first, so that the old variant's checks show it
    // works with that data before the new one migrates it.
    let mut loaded = false;
    if production.state.is_declared() {
        say(format!(
            "rehearse {}: 1/3 loading {}'s state into {}",
            production.name.as_str(),
            production.name.as_str(),
            staging.name.as_str()
        ));
        match state.load(&prod_target, &staging_target, &say).await {
            Ok(sizes) => {
                report.state = sizes;
                loaded = true;
            }
            Err(e) => {
                report.verdict = Verdict::Error {
                    step: "loading production's state".into(),
                    reason: e,
                }
            }
        }
    }
    if report.verdict.passed() {
        say(format!(
            "rehearse {}: 2/3 the old variant on {}",
            production.name.as_str(),
            staging.name.as_str()
        ));
        let old_stage = stages.switch(&old_built, true).await?;
        let old_passed = old_stage.passed();
        report.old_stage = Some(old_stage);
        if loaded {
            if let Ok(before) = state.step(&staging_target, StateStep::Usage).await {
                for size in &mut report.state {
                    size.before = before.detail(&size.path).and_then(|n| n.parse().ok());
                }
            }
        }
        if old_passed {
            say(format!(
                "rehearse {}: 3/3 the new variant on {}",
                production.name.as_str(),
                staging.name.as_str()
            ));
            let new_stage = stages.switch(&new_built, true).await?;
            if loaded {
                if let Ok(after) = state.step(&staging_target, StateStep::Usage).await {
                    for size in &mut report.state {
                        size.after = after.detail(&size.path).and_then(|n| n.parse().ok());
                    }
                }
            }
            report.new_stage = Some(new_stage);
        }
    }
    if report.verdict.passed() {
        if let Some(old_stage) = &report.old_stage {
            report.verdict = Verdict::of(old_stage, report.new_stage.as_ref());
        }
    }

    if !args.keep {
        say(format!(
            "rehearse {}: returning {} to its own system and state",
            production.name.as_str(),
            staging.name.as_str()
        ));
        let back = stages.switch(&staging_original, false).await;
        let system_back = matches!(&back, Ok(s) if s.passed());
        let state_back = if !production.state.is_declared() {
            true
        } else {
            match state.step(&staging_target, StateStep::Unload).await {
                Ok(r) if r.succeeded() => true,
                Ok(r) => {
                    say(format!(
                        "warning: cleaning up the staging host's state: {}",
                        r.failures()
                    ));
                    false
                }
                Err(e) => {
                    say(format!(
                        "warning: cleaning up the staging host's state: {e}"
                    ));
                    false
                }
            }
        };
        report.cleaned_up = system_back && state_back;
        if !system_back {
            say(format!(
                "warning: staging host {:?} could not be returned to {}",
                staging.name.as_str(),
                staging_original
            ));
        }
    }

    if let Some(j) = &journal {
        let revision = source_dir(&ctx.source).and_then(|d| git_revision(&d));
        if let Err(e) = j.record_rehearsal(
            &report,
            &ctx.source.to_string(),
            revision.as_deref(),
            &started_at,
        ) {
            say(format!(
                "warning: could not record the rehearsal in the journal: {e}"
            ));
        }
    }
    prod_target.close().await;
    staging_target.close().await;
    show(&report, args.json);
    match &report.verdict {
        Verdict::Passed => Ok(()),
        Verdict::Failed { side, reason } => Err(CommandError::Local(format!(
            "rehearsal of {:?} failed on the {side} variant: {reason}",
            production.name.as_str()
        ))),
        Verdict::Error { step, reason } => Err(CommandError::Local(format!(
            "rehearsal of {:?} failed while {step}: {reason}",
            production.name.as_str()
        ))),
    }
}

/// A host's preflight, read-only; its identity is the pinned key's.
async fn read_facts(
    target: &SshTarget,
    host: &Host,
    timeout: Duration,
) -> Result<Facts, CommandError> {
    call(
        target,
        &Preflight { new_system: None },
        Conn::Shared,
        timeout,
    )
    .await
    .map_err(|e: CallError| {
        CommandError::Usage(format!(
            "host {:?}: cannot be read, nothing was changed: {e}",
            host.name.as_str()
        ))
    })
}

/// The local directory of a flake or file source.
fn source_dir(source: &NixSource) -> Option<PathBuf> {
    match source {
        NixSource::File(p) => std::path::absolute(p).ok()?.parent().map(PathBuf::from),
        NixSource::Flake(r) => {
            let r = r
                .strip_prefix("path:")
                .or_else(|| r.strip_prefix("git+file://"))
                .unwrap_or(r);
            let r = r.split(['?', '#']).next().unwrap_or(r);
            let p = std::path::absolute(r).ok()?;
            p.is_dir().then_some(p)
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The flake reference of the old revision: a flake reference given with
/// `--from` as it is; a git revision, in the source's own repository.
fn old_flake_ref(source: &NixSource, old: &OldSource) -> Result<NixSource, CommandError> {
    let revision = match old {
        OldSource::Given { reference } if reference.contains(':') => {
            return Ok(NixSource::Flake(reference.clone()))
        }
        OldSource::Given { reference } => reference.clone(),
        OldSource::Journal { revision, .. } => revision.clone(),
    };
    let dir = source_dir(source).ok_or_else(|| {
        CommandError::Usage(format!(
            "--from {revision}: the source {source} is not a local git repository; pass a flake reference instead"
        ))
    })?;
    let top = git(&dir, &["rev-parse", "--show-toplevel"]).ok_or_else(|| {
        CommandError::Usage(format!(
            "{}: not in a git repository, so revision {revision} cannot be found; pass `--from` with a flake reference",
            dir.display()
        ))
    })?;
    let commit = git(
        &dir,
        &["rev-parse", "--verify", &format!("{revision}^{{commit}}")],
    )
    .ok_or_else(|| {
        CommandError::Usage(format!(
            "revision {revision}: not found in the git repository at {top}"
        ))
    })?;
    let sub = dir
        .strip_prefix(&top)
        .ok()
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut reference = format!("git+file://{top}?rev={commit}");
    if !sub.is_empty() {
        reference.push_str(&format!("&dir={sub}"));
    }
    Ok(NixSource::Flake(reference))
}

/// The safe switches of a rehearsal on the staging host.
struct Stages<'a> {
    ctx: &'a Context,
    args: &'a Args,
    production: &'a Host,
    staging: &'a Host,
    target: &'a SshTarget,
    inventory_hosts: &'a tether_core::inventory::Inventory,
}

impl Stages<'_> {
    /// One safe switch of the staging host to `system`: with production's
    /// checks aimed at the staging host and production's trial kind when
    /// `as_production`, with the staging host's own otherwise (returning
    /// it to its own system).
    async fn switch(&self, system: &StorePath, as_production: bool) -> Result<Stage, CommandError> {
        self.wait_for_lock().await;
        let deploy_id: DeployId = runner::new_deploy_id()?;
        let mut job = host_job(
            self.staging,
            system.clone(),
            Goal::Switch,
            &self.args.timeouts,
            &self.args.trial,
            &deploy_id,
        )?;
        if as_production {
            job.checks = retarget_checks(
                &self.production.checks,
                &self.production.address,
                &self.staging.address,
            );
            job.trial = self.args.trial.trial.unwrap_or(self.production.trial);
        }
        // The rehearsal handles the staging host's state itself.
        job.state = StateSpec::default();
        let plan = tether_core::rollout::plan_for(
            RolloutSettings::default(),
            self.inventory_hosts,
            std::slice::from_ref(self.staging),
        )
        .map_err(|e| CommandError::Usage(e.to_string()))?;
        let finished = runner::run(
            self.ctx,
            &deploy_id,
            Prepared {
                jobs: vec![(job, self.target.clone())],
                decided: Vec::new(),
            },
            RunOptions {
                command: "rehearse",
                goal: Goal::Switch,
                json: self.args.json,
                plan,
            },
        )
        .await?;
        let name: &HostName = &self.staging.name;
        let report = finished
            .reports
            .into_iter()
            .find(|r| &r.host == name)
            .ok_or_else(|| CommandError::Local("the staging host has no report".into()))?;
        let events: Vec<_> = finished
            .events
            .into_iter()
            .filter(|e| &e.host == name)
            .collect();
        Ok(Stage::of(&events, report))
    }
}

impl Stages<'_> {
    /// The previous stage's guard releases the staging host's deploy lock
    /// shortly after its confirmation; the next stage waits for that (at
    /// most [`LOCK_WAIT`]) instead of being refused as a concurrent deploy.
    async fn wait_for_lock(&self) {
        let timeout = self.args.timeouts.for_host(self.staging).command;
        let start = std::time::Instant::now();
        while start.elapsed() < LOCK_WAIT {
            match call(
                self.target,
                &Preflight { new_system: None },
                Conn::Shared,
                timeout,
            )
            .await
            {
                Ok(facts) if facts.busy_with.is_some() => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                // Free, or unreadable: the stage's own preflight reports it.
                _ => return,
            }
        }
    }
}

/// How long a stage waits for the previous stage's guard to let go.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The state steps of one rehearsal.
struct StateRun<'a> {
    id: DeployId,
    production: &'a Host,
    quick: Duration,
}

impl StateRun<'_> {
    fn op(&self, step: StateStep) -> RehearsalState {
        RehearsalState {
            step,
            rehearsal_id: self.id.clone(),
            paths: self.production.state.btrfs.clone(),
            datasets: self.production.state.zfs.clone(),
            units: self.production.state.units.clone(),
        }
    }

    async fn step(&self, target: &SshTarget, step: StateStep) -> Result<StateStepReport, String> {
        // Stopping and starting units, and deleting subvolumes, take
        // longer than a quick read.
        let timeout =
            self.quick + Duration::from_secs(2 * tether_core::remote::UNIT_STOP.as_secs());
        call(target, &self.op(step), Conn::Shared, timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// Snapshots production's volumes (read-only, no downtime), streams
    /// each to the staging host, deletes the snapshots, and swaps the copies
    /// in on the staging host. Returns each volume's sizes.
    async fn load(
        &self,
        production: &SshTarget,
        staging: &SshTarget,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<Vec<StateSize>, String> {
        let taken = self.step(production, StateStep::Snapshot).await?;
        let result = self.stream(production, staging, &taken, say).await;
        // Production's snapshots were only the stream's source.
        match self.step(production, StateStep::DropSource).await {
            Ok(r) if !r.succeeded() => say(format!(
                "warning: on {:?}, tether's rehearsal snapshots remain: {}",
                self.production.name.as_str(),
                r.failures()
            )),
            Err(e) => say(format!(
                "warning: on {:?}, tether's rehearsal snapshots may remain: {e}",
                self.production.name.as_str()
            )),
            Ok(_) => {}
        }
        let sizes = result?;
        let loaded = self.step(staging, StateStep::Load).await?;
        if !loaded.succeeded() {
            return Err(format!(
                "loading on the staging host: {}",
                loaded.failures()
            ));
        }
        Ok(sizes)
    }

    async fn stream(
        &self,
        production: &SshTarget,
        staging: &SshTarget,
        taken: &StateStepReport,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<Vec<StateSize>, String> {
        if !taken.succeeded() {
            return Err(format!("snapshotting production: {}", taken.failures()));
        }
        let op = self.op(StateStep::Snapshot);
        let mut sizes = Vec::new();
        let volumes = self
            .production
            .state
            .btrfs
            .iter()
            .cloned()
            .map(Volume::Btrfs)
            .chain(self.production.state.zfs.iter().cloned().map(Volume::Zfs));
        for volume in volumes {
            let name = volume.as_str().to_string();
            let source = taken.detail(&name).unwrap_or_default().to_string();
            let progress = |bytes: u64| say(format!("  {name}: {} MiB streamed", bytes >> 20));
            let streamed = relay(
                production,
                &op.send_script(&volume),
                staging,
                &op.receive_script(&volume),
                STREAM_TIMEOUT,
                &progress,
            )
            .await
            .map_err(|e| format!("streaming {name}: {e}"))?;
            say(format!("  {name}: {streamed} bytes streamed"));
            sizes.push(StateSize {
                path: name,
                source,
                streamed,
                before: None,
                after: None,
            });
        }
        Ok(sizes)
    }
}

fn ms(v: Option<u64>) -> String {
    v.map(|m| format!("{:.1} s", m as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// The report, side by side: what the staging host showed for each variant.
fn show(report: &RehearsalReport, json: bool) {
    if json {
        let mut value = serde_json::to_value(report).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("event".into(), "rehearsal".into());
        }
        println!("{value}");
        return;
    }
    let mut out = String::new();
    out.push_str(&format!(
        "rehearsal {} of {} on {}: {}\n",
        report.id,
        report.production.as_str(),
        report.staging.as_str(),
        match &report.verdict {
            Verdict::Passed => "PASSED".to_string(),
            Verdict::Failed { side, reason } => format!("FAILED on the {side} variant: {reason}"),
            Verdict::Error { step, reason } => format!("ERROR while {step}: {reason}"),
        }
    ));
    out.push_str(&format!(
        "  production runs {}\n  a deploy would give it {}\n  old system from {}\n",
        report.production_old,
        report.production_new,
        report.old_source.describe()
    ));
    let row = |label: &str, f: &dyn Fn(&Stage) -> String| {
        let cell = |s: &Option<Stage>| s.as_ref().map(f).unwrap_or_else(|| "-".into());
        format!(
            "  {label:<14} {:<34} {}\n",
            cell(&report.old_stage),
            cell(&report.new_stage)
        )
    };
    out.push_str(&format!(
        "  {:<14} {:<34} {}\n",
        "", "old variant", "new variant"
    ));
    out.push_str(&row("outcome", &|s| s.report.outcome.name().to_string()));
    out.push_str(&row("activation", &|s| ms(s.activation_ms)));
    out.push_str(&row("checks", &|s| ms(s.checks_ms)));
    out.push_str(&row("reboot trial", &|s| {
        if s.reboot_trial { "yes" } else { "no" }.to_string()
    }));
    let units = |v: &Vec<String>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    out.push_str(&row("started", &|s| units(&s.started)));
    out.push_str(&row("stopped", &|s| units(&s.stopped)));
    out.push_str(&row("restarted", &|s| units(&s.restarted)));
    for stage in [&report.old_stage, &report.new_stage].into_iter().flatten() {
        for c in &stage.checks {
            out.push_str(&format!(
                "  check {:<8} {} {}: {} after {} attempt(s): {}\n",
                if Some(stage) == report.old_stage.as_ref() {
                    "(old)"
                } else {
                    "(new)"
                },
                c.check,
                c.kind,
                if c.passed { "passed" } else { "FAILED" },
                c.attempts,
                c.detail
            ));
        }
    }
    for s in &report.state {
        let size = |v: Option<u64>| v.map(|n| format!("{n} B")).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "  state {}: {} B streamed; {} before the new variant, {} after\n",
            s.path,
            s.streamed,
            size(s.before),
            size(s.after)
        ));
    }
    for w in &report.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    out.push_str(if report.cleaned_up {
        "  the staging host is back on its own system and state\n"
    } else {
        "  the staging host was NOT returned to its own system and state (--keep, or see the warnings)\n"
    });
    print!("{out}");
}
