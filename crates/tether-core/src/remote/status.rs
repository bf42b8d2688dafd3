//! What `tether status` asks a host, in one round trip, and the parsing of
//! its answer: systems, generations, whether a reboot is needed, failed
//! units, guards, and the tail of the target's own deploy journal.

use super::boot_trial::{BootTrialState, BOOT_TRIAL_DIR};
use super::guard::GuardState;
use super::journal::JournalEvent;
use super::wire::{all, finished, first, parse_fields, ParseError};
use super::{
    generation_number, Op, Operation, ScriptOutput, JOURNAL, LOCK_DIR, RUN_DIR, SYSTEM_PROFILE,
};
use crate::shell::quote;
use serde::Serialize;

/// Lines of the target's journal `status` reads.
pub const JOURNAL_TAIL: usize = 200;

/// Read-only: everything `status` shows about a host, in one round trip.
#[derive(Debug, Clone, Copy, Default)]
pub struct Status;

impl Operation for Status {
    type Output = HostStatus;
    const OP: Op = Op::Status;

    fn script(&self) -> String {
        status_script()
    }

    fn parse(&self, out: &ScriptOutput) -> Result<HostStatus, ParseError> {
        parse_status(&out.stdout)
    }
}

fn status_script() -> String {
    format!(
        r#"set -u
echo "machine_id=$(cat /etc/machine-id 2>/dev/null)"
echo "hostname=$(cat /proc/sys/kernel/hostname)"
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
# `readlink -e`: a missing link prints nothing (`-f` would print the path of
# a missing last component as if it existed).
echo "current=$(readlink -e /run/current-system 2>/dev/null)"
echo "booted=$(readlink -e /run/booted-system 2>/dev/null)"
echo "profile=$(readlink -e {profile} 2>/dev/null)"
echo "profile_link=$(readlink {profile} 2>/dev/null)"
# As NixOS decides whether a reboot is needed: the booted system's kernel,
# initrd and kernel modules against the current system's.
echo "booted_kernel=$(readlink -e /run/booted-system/kernel 2>/dev/null)"
echo "current_kernel=$(readlink -e /run/current-system/kernel 2>/dev/null)"
echo "booted_initrd=$(readlink -e /run/booted-system/initrd 2>/dev/null)"
echo "current_initrd=$(readlink -e /run/current-system/initrd 2>/dev/null)"
echo "booted_modules=$(readlink -e /run/booted-system/kernel-modules 2>/dev/null)"
echo "current_modules=$(readlink -e /run/current-system/kernel-modules 2>/dev/null)"
for l in {profile}-*-link; do
    [ -e "$l" ] || continue
    printf 'generation=%s %s\n' "$(basename "$l")" "$(readlink -e "$l")"
done
echo "system_state=$(systemctl is-system-running 2>/dev/null)"
systemctl list-units --state=failed --all --no-legend --plain 2>/dev/null | while read -r unit rest; do
    echo "failed_unit=$unit"
done
for d in {run}/deploys/*/; do
    [ -d "$d" ] || continue
    id=$(basename "$d")
    printf 'guard=%s %s %s\n' "$id" "$(cat "$d/state" 2>/dev/null || echo missing)" "$(systemctl is-active "tether-guard-$id" 2>/dev/null)"
done
if [ -d {lock} ]; then
    unit=$(cat {lock}/unit 2>/dev/null)
    printf 'lock=%s %s\n' "$(cat {lock}/deploy 2>/dev/null)" "$(systemctl is-active "$unit" 2>/dev/null)"
fi
if [ -r {boot_trial}/state ]; then
    printf 'boot_trial=%s %s\n' "$(cat {boot_trial}/deploy 2>/dev/null)" "$(cat {boot_trial}/state 2>/dev/null)"
fi
tail -n {tail} {journal} 2>/dev/null | while IFS= read -r line; do
    printf 'journal=%s\n' "$line"
done
echo "status=done"
"#,
        profile = quote(SYSTEM_PROFILE),
        run = quote(RUN_DIR),
        lock = quote(LOCK_DIR),
        journal = quote(JOURNAL),
        tail = JOURNAL_TAIL,
        boot_trial = quote(BOOT_TRIAL_DIR),
    )
}

/// One line of the target's journal: `time deploy event old new source detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalLine {
    pub time: String,
    pub deploy_id: String,
    pub event: String,
    pub old_system: String,
    pub new_system: String,
    /// `guard` or `deployer`.
    pub source: String,
    pub detail: String,
}

impl JournalLine {
    pub fn parse(line: &str) -> Option<JournalLine> {
        let mut parts = line.splitn(7, '\t');
        let mut next = || parts.next().map(str::to_string);
        Some(JournalLine {
            time: next()?,
            deploy_id: next()?,
            event: next()?,
            old_system: next()?,
            new_system: next()?,
            source: next()?,
            detail: next().unwrap_or_default(),
        })
    }

    /// The event, when this tether knows it (a newer tether's guard may
    /// write others).
    pub fn kind(&self) -> Option<JournalEvent> {
        JournalEvent::parse(&self.event)
    }

    /// Whether this line ends a deploy (no later line of it is expected).
    pub fn is_final(&self) -> bool {
        self.kind().is_some_and(JournalEvent::is_final)
    }
}

/// The newest deploy in a host's journal, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastDeploy {
    pub deploy_id: String,
    /// Time of its first journal line (the guard writes one when armed).
    pub started: String,
    /// Time of its final event, if it has one.
    pub ended: Option<String>,
    /// `user@machine` of the deployer, when a line names it.
    pub by: Option<String>,
    /// The last final event (`confirmed`, `rolled-back`, `rollback-failed`,
    /// `confirmed-unfinished`), else `in-progress` while its guard runs,
    /// else `unfinished`: no end was ever recorded.
    pub outcome: String,
    /// The detail of the line the outcome comes from.
    pub detail: String,
    pub old_system: String,
    pub new_system: String,
}

/// The deployer named in a journal detail: the guard writes
/// `…; deployer user@machine`, the deployer's own lines end the same way.
/// `deployer asked: …` (a rollback request) is not a name.
pub fn deployer_of(detail: &str) -> Option<String> {
    detail
        .split("; ")
        .filter_map(|part| part.trim().strip_prefix("deployer "))
        .map(str::trim)
        .filter(|who| !who.is_empty() && who != &"unknown" && !who.contains(char::is_whitespace))
        .last()
        .map(str::to_string)
}

/// A deploy state directory on the target and its guard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardInfo {
    pub deploy_id: String,
    #[serde(serialize_with = "serialize_state")]
    pub state: GuardState,
    /// Whether its guard unit is running.
    pub active: bool,
}

impl GuardInfo {
    /// A trial in progress: its guard runs and has not finished.
    pub fn is_armed(&self) -> bool {
        self.active
    }
    /// A trial whose guard is gone without reaching an end state: its
    /// deployer and guard were both stopped (e.g. killed) mid-trial.
    pub fn is_leftover(&self) -> bool {
        !self.active
            && !matches!(
                self.state,
                GuardState::Finished
                    | GuardState::RolledBack
                    | GuardState::RollbackFailed
                    | GuardState::PersistFailed
                    | GuardState::NotActivated
            )
    }
}

fn serialize_state<S: serde::Serializer>(state: &GuardState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(state.wire())
}

/// A profile generation on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Generation {
    pub number: u32,
    pub system: String,
}

/// Everything `status_script` reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    pub machine_id: String,
    pub hostname: String,
    pub boot_id: String,
    pub current_system: Option<String>,
    pub booted_system: Option<String>,
    /// The system profile's target: what the host boots by default.
    pub profile_system: Option<String>,
    pub profile_generation: Option<u32>,
    /// The generation whose system is the current one, if any.
    pub current_generation: Option<u32>,
    pub generations: Vec<Generation>,
    /// Booted kernel, initrd or kernel modules differ from the current system's.
    pub reboot_needed: bool,
    pub system_state: String,
    pub failed_units: Vec<String>,
    pub guards: Vec<GuardInfo>,
    /// The deploy lock: holder and whether its guard is alive.
    pub lock: Option<(String, bool)>,
    /// The last reboot trial on the host: its deploy and state.
    pub boot_trial: Option<BootTrialInfo>,
    pub journal: Vec<JournalLine>,
}

/// A reboot trial's state on the host (docs/deploy.md, "The reboot trial").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootTrialInfo {
    pub deploy_id: String,
    pub state: String,
    /// Not over: the host boots (or booted) the new system on trial, or its
    /// guard still has to restore the old one.
    pub pending: bool,
}

impl HostStatus {
    /// The newest deploy in the journal tail: the greatest deploy id (ids
    /// start with a UTC timestamp, so they sort by start time; file order
    /// would mix up deployers whose lines interleave).
    pub fn last_deploy(&self) -> Option<LastDeploy> {
        let id = self.journal.iter().map(|l| &l.deploy_id).max()?;
        let lines: Vec<&JournalLine> = self.journal.iter().filter(|l| &l.deploy_id == id).collect();
        let first = lines.first()?;
        let last = lines.last()?;
        let by = lines.iter().rev().find_map(|l| deployer_of(&l.detail));
        let fin = lines.iter().rev().find(|l| l.is_final());
        let (outcome, ended, detail) = match fin {
            Some(l) => (l.event.clone(), Some(l.time.clone()), l.detail.clone()),
            None if self
                .guards
                .iter()
                .any(|g| &g.deploy_id == id && g.is_armed()) =>
            {
                ("in-progress".to_string(), None, last.detail.clone())
            }
            None => ("unfinished".to_string(), None, last.detail.clone()),
        };
        let system = |pick: fn(&JournalLine) -> &String| {
            lines
                .iter()
                .rev()
                .map(|l| pick(l))
                .find(|s| s.as_str() != "-")
                .cloned()
                .unwrap_or_default()
        };
        Some(LastDeploy {
            deploy_id: id.clone(),
            started: first.time.clone(),
            ended,
            by,
            outcome,
            detail,
            old_system: system(|l| &l.old_system),
            new_system: system(|l| &l.new_system),
        })
    }

    /// Guards on trial now (their unit runs).
    pub fn armed_guards(&self) -> impl Iterator<Item = &GuardInfo> {
        self.guards.iter().filter(|g| g.is_armed())
    }

    /// Trials whose guard is gone without an end state.
    pub fn leftover_guards(&self) -> impl Iterator<Item = &GuardInfo> {
        self.guards.iter().filter(|g| g.is_leftover())
    }

    /// The deploy holding a lock whose guard unit is gone (the next deploy
    /// takes it over, but it says a deploy ended without cleaning up).
    pub fn stale_lock(&self) -> Option<&str> {
        match &self.lock {
            Some((id, false)) => Some(id),
            _ => None,
        }
    }
}

fn parse_status(stdout: &str) -> Result<HostStatus, ParseError> {
    let f = parse_fields(stdout);
    finished(&f, "status", "the status script")?;
    let s = |k: &str| first(&f, k).map(str::to_string);
    let all = |k: &str| all(&f, k);
    let mut generations: Vec<Generation> = all("generation")
        .iter()
        .filter_map(|l| {
            let (link, system) = l.split_once(' ')?;
            Some(Generation {
                number: generation_number(link)?,
                system: system.to_string(),
            })
        })
        .collect();
    generations.sort_by_key(|g| g.number);
    let current_system = s("current");
    let profile_generation = s("profile_link").as_deref().and_then(generation_number);
    // Prefer the profile's own generation when it is the current system.
    let current_generation = current_system
        .as_ref()
        .and_then(|c| match profile_generation {
            Some(p) if generations.iter().any(|g| g.number == p && &g.system == c) => Some(p),
            _ => generations
                .iter()
                .rev()
                .find(|g| &g.system == c)
                .map(|g| g.number),
        });
    let differs = |a: &str, b: &str| match (s(a), s(b)) {
        (Some(x), Some(y)) => x != y,
        _ => false,
    };
    let reboot_needed = differs("booted_kernel", "current_kernel")
        || differs("booted_initrd", "current_initrd")
        || differs("booted_modules", "current_modules");
    let guards = all("guard")
        .iter()
        .filter_map(|l| {
            let mut p = l.split(' ');
            Some(GuardInfo {
                deploy_id: p.next()?.to_string(),
                state: GuardState::parse(p.next().unwrap_or("missing")),
                active: p.next() == Some("active"),
            })
        })
        .collect();
    let lock = s("lock").and_then(|l| {
        let (id, state) = l.split_once(' ')?;
        Some((id.to_string(), state == "active"))
    });
    Ok(HostStatus {
        machine_id: s("machine_id").unwrap_or_default(),
        hostname: s("hostname").unwrap_or_default(),
        boot_id: s("boot_id").unwrap_or_default(),
        current_system,
        booted_system: s("booted"),
        profile_system: s("profile"),
        profile_generation,
        current_generation,
        generations,
        reboot_needed,
        system_state: s("system_state").unwrap_or_default(),
        failed_units: all("failed_unit"),
        guards,
        lock,
        boot_trial: s("boot_trial").and_then(|l| {
            let (id, state) = l.split_once(' ')?;
            let parsed = BootTrialState::parse(state);
            Some(BootTrialInfo {
                deploy_id: id.to_string(),
                state: parsed.to_string(),
                pending: !parsed.is_over(),
            })
        }),
        journal: all("journal")
            .iter()
            .filter_map(|l| JournalLine::parse(l))
            .collect(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = "machine_id=m\nhostname=h1\nboot_id=b\n\
current=/nix/store/b-sys\nbooted=/nix/store/a-sys\nprofile=/nix/store/b-sys\nprofile_link=system-3-link\n\
booted_kernel=/nix/store/k1\ncurrent_kernel=/nix/store/k2\nbooted_initrd=/nix/store/i\ncurrent_initrd=/nix/store/i\n\
generation=system-1-link /nix/store/base\ngeneration=system-3-link /nix/store/b-sys\ngeneration=system-2-link /nix/store/a-sys\n\
system_state=degraded\nfailed_unit=broken.service\n\
guard=20260101T000000-aa armed inactive\nguard=20260101T000001-bb finished inactive\n\
lock=20260101T000000-aa inactive\n\
journal=2026-01-01T00:00:00Z\t20260101T000000-aa\tarmed\t/nix/store/a-sys\t/nix/store/b-sys\tguard\tlease 15s\n\
status=done\n";

    #[test]
    fn status_reports_generations_reboot_need_failed_units_and_guards() {
        let s = parse_status(SAMPLE).unwrap();
        assert_eq!(s.current_generation, Some(3));
        assert_eq!(s.profile_generation, Some(3));
        assert_eq!(
            s.generations.iter().map(|g| g.number).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(s.reboot_needed, "kernels differ");
        assert_eq!(s.failed_units, ["broken.service"]);
        assert!(s.guards[0].is_leftover() && !s.guards[0].is_armed());
        assert!(!s.guards[1].is_leftover());
        assert_eq!(s.lock, Some(("20260101T000000-aa".into(), false)));
        assert_eq!(s.journal[0].kind(), Some(JournalEvent::Armed));
        assert_eq!(s.journal[0].detail, "lease 15s");
        assert_eq!(s.boot_trial, None);
    }

    #[test]
    fn a_reboot_trial_still_on_is_pending_and_an_ended_one_is_not() {
        let with = |state: &str| {
            let text = SAMPLE.replace(
                "status=done\n",
                &format!("boot_trial=20260101T000002-cc {state}\nstatus=done\n"),
            );
            parse_status(&text).unwrap().boot_trial.unwrap()
        };
        for state in ["prepared", "booted", "confirmed", "rolling-back"] {
            assert!(with(state).pending, "{state}");
        }
        for state in ["finished", "rolled-back", "restore-failed"] {
            assert!(!with(state).pending, "{state}");
        }
        assert_eq!(with("booted").deploy_id, "20260101T000002-cc");
    }

    #[test]
    fn the_newest_deploy_has_its_last_final_event_and_deployer() {
        let journal = "journal=2026-01-01T00:00:00Z\t20260101T000000-aa\tarmed\t/nix/store/a\t/nix/store/b\tguard\tlease 15s; deployer alice@laptop\n\
journal=2026-01-01T00:00:09Z\t20260101T000000-aa\tconfirmed\t/nix/store/a\t/nix/store/b\tdeployer\tconfirmed over a fresh connection; deployer alice@laptop\n\
journal=2026-01-02T00:00:00Z\t20260102T000000-bb\tarmed\t/nix/store/b\t/nix/store/c\tguard\tlease 5s; deployer bob@ci\n\
journal=2026-01-02T00:00:01Z\t20260102T000000-bb\trolling-back\t/nix/store/b\t/nix/store/c\tguard\tdeployer asked: activation timed out\n\
journal=2026-01-02T00:00:02Z\t20260102T000000-bb\trolled-back\t/nix/store/b\t/nix/store/c\tguard\tlease expired\n";
        let s = parse_status(&format!("{journal}status=done\n")).unwrap();
        let last = s.last_deploy().unwrap();
        assert_eq!(last.deploy_id, "20260102T000000-bb");
        assert_eq!(last.outcome, "rolled-back");
        assert_eq!(last.by.as_deref(), Some("bob@ci"));
        assert_eq!(last.started, "2026-01-02T00:00:00Z");
        assert_eq!(last.ended.as_deref(), Some("2026-01-02T00:00:02Z"));
        assert_eq!(last.new_system, "/nix/store/c");
    }

    #[test]
    fn a_deploy_without_an_end_is_in_progress_while_its_guard_runs_else_unfinished() {
        let armed = "journal=2026-01-01T00:00:00Z\t20260101T000000-aa\tarmed\t/nix/store/a\t/nix/store/b\tguard\tlease 15s; deployer alice@laptop\n";
        let live = parse_status(&format!(
            "{armed}guard=20260101T000000-aa armed active\nstatus=done\n"
        ))
        .unwrap();
        assert_eq!(live.last_deploy().unwrap().outcome, "in-progress");
        assert_eq!(live.armed_guards().count(), 1);
        assert_eq!(live.leftover_guards().count(), 0);
        let dead = parse_status(&format!(
            "{armed}guard=20260101T000000-aa armed failed\nlock=20260101T000000-aa failed\nstatus=done\n"
        ))
        .unwrap();
        assert_eq!(dead.last_deploy().unwrap().outcome, "unfinished");
        assert_eq!(dead.leftover_guards().count(), 1);
        assert_eq!(dead.stale_lock(), Some("20260101T000000-aa"));
        assert!(parse_status("status=done\n")
            .unwrap()
            .last_deploy()
            .is_none());
    }

    #[test]
    fn deployer_names_are_read_from_journal_details() {
        assert_eq!(
            deployer_of("lease 15s; deployer root@box").as_deref(),
            Some("root@box")
        );
        assert_eq!(deployer_of("deployer asked: check failed"), None);
        assert_eq!(deployer_of("lease 15s; deployer unknown"), None);
    }

    #[test]
    fn same_kernel_and_initrd_need_no_reboot() {
        let s = parse_status(&SAMPLE.replace("/nix/store/k2", "/nix/store/k1")).unwrap();
        assert!(!s.reboot_needed);
    }

    #[test]
    fn a_truncated_answer_is_an_error() {
        assert!(parse_status("current=/x\n").is_err());
    }
}
