//! Health checks: the model the inventory validates into, and the logic that
//! decides whether a host is healthy (docs/checks.md).
//!
//! Every check of a host runs concurrently; each is retried every interval
//! until it passes once or the host's deadline passes. Deployer-side probes
//! (HTTP, TCP, local commands) go through the narrow [`Probe`] trait, which
//! only does I/O: what counts as a pass (status, body, regex) is decided
//! here. Target-side checks are scripts from [`crate::remote`] run through
//! [`Target`].

use std::time::Duration;

use crate::ports::{call, Clock, Conn, HttpRequest, HttpResponse, Probe, Target};
use crate::remote::{CheckCommand, SystemState, SystemStateLook, Units};
use crate::report::{CheckAttempt, CheckFailure};
use crate::spec::{
    Check, CheckKind, CheckTarget, CheckType, CommandOn, FailedUnits, HostChecks, HttpCheck,
    DEFAULT_ATTEMPT_TIMEOUT, FAILED_UNITS, SYSTEM_RUNNING,
};
use crate::text::{excerpt, redact_url};

/// A unit that fails again and again (a crash loop, a timer that keeps
/// starting a failing unit) is, for a moment after each failure, not
/// failed; and `switch-to-configuration`, like NixOS's, resets failed units.
/// A look right after the activation can miss such a unit, so the system
/// checks (`failedUnits`, `systemRunning`) pass only on a look taken at
/// least this long after the checks began (at most the check timeout). A
/// failure counts at once.
pub const SYSTEM_SETTLE: Duration = Duration::from_secs(1);

/// What `failedUnits = new` compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Baseline {
    /// The units failed before the switch (from the preflight).
    Before(Vec<String>),
    /// No deploy, so no "before": `new` is treated as `any`.
    None,
}

/// One check to run: a declared one or a built-in system check.
#[derive(Debug, Clone)]
enum Job<'a> {
    Declared(&'a Check),
    FailedUnits,
    SystemRunning,
}

impl Job<'_> {
    fn name(&self) -> &str {
        match self {
            Job::Declared(c) => &c.name,
            Job::FailedUnits => FAILED_UNITS,
            Job::SystemRunning => SYSTEM_RUNNING,
        }
    }
    fn kind(&self) -> CheckType {
        match self {
            Job::Declared(c) => c.kind.check_type(),
            Job::FailedUnits | Job::SystemRunning => CheckType::System,
        }
    }
    fn timeout(&self) -> Duration {
        match self {
            Job::Declared(c) => c.timeout,
            _ => DEFAULT_ATTEMPT_TIMEOUT,
        }
    }

    /// Reports one attempt's result to `on_attempt`; passes it on, its note
    /// or error as the detail.
    fn report(
        &self,
        attempt: u32,
        result: Result<String, String>,
        on_attempt: &dyn Fn(CheckAttempt),
    ) -> Result<(), String> {
        let passed = result.is_ok();
        let detail = match result {
            Ok(note) | Err(note) => note,
        };
        on_attempt(CheckAttempt {
            check: self.name().to_string(),
            kind: self.kind(),
            attempt,
            passed,
            detail: detail.clone(),
        });
        if passed {
            Ok(())
        } else {
            Err(detail)
        }
    }

    fn failure(&self, attempts: u32, detail: String) -> CheckFailure {
        CheckFailure {
            check: self.name().to_string(),
            kind: self.kind(),
            attempts,
            detail,
        }
    }
}

/// Runs all of a host's checks concurrently until each has passed or the
/// deadline (`checks.timeout` from now) has passed. Returns the checks that
/// never passed, in name order; empty means healthy. `on_attempt` sees every
/// attempt as it ends.
// Three ports (target, probe, clock), what to check, and what was already
// seen: grouping them in a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn run_checks<T: Target, P: Probe, C: Clock>(
    host: &CheckTarget,
    checks: &HostChecks,
    baseline: &Baseline,
    target: &T,
    probe: &P,
    clock: &C,
    on_attempt: &dyn Fn(CheckAttempt),
    seen_system: Option<&SystemStateLook>,
) -> Vec<CheckFailure> {
    let deadline = clock.now() + checks.timeout;
    let jobs: Vec<Job<'_>> = checks.checks.iter().map(Job::Declared).collect();
    let mut system_jobs: Vec<Job<'_>> = Vec::new();
    if checks.failed_units != FailedUnits::Ignore {
        system_jobs.push(Job::FailedUnits);
    }
    if checks.system_running {
        system_jobs.push(Job::SystemRunning);
    }
    // A pass of the system checks counts only from a look this late.
    let settled_at = clock.now() + SYSTEM_SETTLE.min(checks.timeout);
    // The two built-in checks read the same thing: one remote call per
    // attempt serves both (each is still reported on its own).
    let system_run = async {
        // Each job with whether its previous look passed and whether any
        // look failed: a pass counts only when two looks in a row agree (a
        // unit that fails over and over is, at some look, just starting
        // again). At the deadline a lone clean look counts only if no look
        // failed before it (a slow host got one look in, nothing more).
        let mut pending: Vec<(&Job<'_>, bool, Option<String>)> =
            system_jobs.iter().map(|j| (j, false, None)).collect();
        let mut attempt = 0u32;
        let mut failures = Vec::new();
        let mut seen = seen_system.cloned();
        while !pending.is_empty() {
            attempt += 1;
            let left = deadline.saturating_sub(clock.now());
            let timeout = if checks.timeout.is_zero() {
                DEFAULT_ATTEMPT_TIMEOUT
            } else {
                DEFAULT_ATTEMPT_TIMEOUT.min(left.max(Duration::from_secs(1)))
            };
            // The first look may already have been taken (`seen_system`:
            // what the activation's session printed right after it).
            let seen = seen.take();
            let state = match seen {
                Some(state) => Ok(state),
                None => call(target, &SystemState, Conn::Shared, timeout)
                    .await
                    .map_err(|e| e.to_string()),
            };
            let now = clock.now();
            let early = now < settled_at;
            let mut still = Vec::new();
            let mut reported = false;
            for (job, passed_before, failed_before) in pending {
                let result = state.as_ref().map_err(Clone::clone).and_then(|state| {
                    if matches!(job, Job::FailedUnits) {
                        judge_failed_units(checks.failed_units, baseline, state)
                    } else {
                        judge_system_running(checks.failed_units, &state.state)
                    }
                });
                let lone_pass = result.is_ok() && (early || !passed_before);
                if lone_pass && now < deadline {
                    // No verdict yet: look again (once settled).
                    still.push((job, true, failed_before));
                    continue;
                }
                let result = match (&failed_before, lone_pass) {
                    (Some(before), true) => Err(format!(
                        "clean only on the last look before the deadline; the look before: {before}"
                    )),
                    _ => result,
                };
                reported = true;
                let Err(detail) = job.report(attempt, result, on_attempt) else {
                    continue;
                };
                if now >= deadline {
                    failures.push(job.failure(attempt, detail));
                } else {
                    still.push((job, false, Some(detail)));
                }
            }
            pending = still;
            if !reported {
                // Only early passes: this look was no attempt.
                attempt -= 1;
            }
            if !pending.is_empty() {
                let pause = if early {
                    checks.interval.min(settled_at.saturating_sub(now))
                } else {
                    checks.interval
                };
                clock.sleep(pause.min(deadline.saturating_sub(now))).await;
            }
        }
        failures
    };
    let runs = jobs.iter().map(|job| async move {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // An attempt never runs far past the deadline, but always gets a
            // second to answer; with no deadline at all (`tether check
            // --timeout 0`), the single attempt gets its own timeout.
            let left = deadline.saturating_sub(clock.now());
            let timeout = if checks.timeout.is_zero() {
                job.timeout()
            } else {
                job.timeout().min(left.max(Duration::from_secs(1)))
            };
            let Job::Declared(check) = job else {
                // Built-in checks run in `system_run` above.
                return None;
            };
            let result = attempt_once(check, host, target, probe, timeout).await;
            let Err(detail) = job.report(attempt, result, on_attempt) else {
                return None;
            };
            let now = clock.now();
            if now >= deadline {
                return Some(job.failure(attempt, detail));
            }
            clock.sleep(checks.interval.min(deadline - now)).await;
        }
    });
    let (declared, system) =
        futures::future::join(futures::future::join_all(runs), system_run).await;
    let mut failures: Vec<CheckFailure> = declared.into_iter().flatten().chain(system).collect();
    failures.sort_by(|a, b| a.check.cmp(&b.check));
    failures
}

/// One attempt: `Ok(note)` when it passed, `Err(what went wrong)` otherwise.
async fn attempt_once<T: Target, P: Probe>(
    check: &Check,
    host: &CheckTarget,
    target: &T,
    probe: &P,
    timeout: Duration,
) -> Result<String, String> {
    match &check.kind {
        CheckKind::Http(http) => {
            let request = HttpRequest {
                url: http.url_for(&host.address),
                headers: http.headers.clone(),
                ca_file: http.ca_file.clone(),
                insecure: http.insecure,
                timeout,
            };
            // What is printed of the URL never holds its secrets.
            let shown = redact_url(&request.url);
            let response = probe
                .http(&request)
                .await
                .map_err(|e| format!("GET {shown}: {e}"))?;
            judge_http(http, &shown, &response)
        }
        CheckKind::Tcp(tcp) => {
            let address = tcp.address.as_ref().unwrap_or(&host.address);
            probe
                .tcp(address, tcp.port, timeout)
                .await
                .map(|()| format!("{}:{} accepts connections", address.for_url(), tcp.port))
                .map_err(|e| format!("connecting to {}:{}: {e}", address.for_url(), tcp.port))
        }
        CheckKind::Command(cmd) => match cmd.on {
            CommandOn::Deployer => {
                let env = vec![
                    ("TETHER_HOST".to_string(), host.name.to_string()),
                    ("TETHER_ADDRESS".to_string(), host.address.to_string()),
                    ("TETHER_SSH_USER".to_string(), host.ssh_user.to_string()),
                ];
                let out = probe.command(&cmd.command, &env, timeout).await?;
                judge_exit(out.exit_code, &out.stderr, "on the deployer")
            }
            CommandOn::Target => {
                let out = call(
                    target,
                    &CheckCommand {
                        command: cmd.command.clone(),
                    },
                    Conn::Shared,
                    timeout,
                )
                .await
                .map_err(|e| format!("on the target: {e}"))?;
                judge_exit(out.exit_code, &out.stderr, "on the target")
            }
        },
        CheckKind::Units(units) => {
            let states = call(
                target,
                &Units {
                    units: units.clone(),
                },
                Conn::Shared,
                timeout,
            )
            .await
            .map_err(|e| e.to_string())?;
            let bad: Vec<String> = units
                .iter()
                .map(|u| {
                    let state = states
                        .iter()
                        .find(|(n, _)| n == u)
                        .map(|(_, s)| s.as_str())
                        .unwrap_or("unknown");
                    (u, state)
                })
                .filter(|(_, s)| *s != "active")
                .map(|(u, s)| format!("{u} ({s})"))
                .collect();
            if bad.is_empty() {
                Ok(format!("active: {}", units.join(", ")))
            } else {
                Err(format!("not active: {}", bad.join(", ")))
            }
        }
    }
}

fn tail_lines(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    excerpt(&all[all.len().saturating_sub(lines)..].join(" | "), 300)
}

fn judge_http(check: &HttpCheck, url: &str, response: &HttpResponse) -> Result<String, String> {
    let status_ok = if check.status.is_empty() {
        (200..300).contains(&response.status)
    } else {
        check.status.contains(&response.status)
    };
    let body = || format!("body {:?}", excerpt(&response.body, 120));
    if !status_ok {
        let expected = if check.status.is_empty() {
            "2xx".to_string()
        } else {
            check
                .status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        return Err(format!(
            "GET {url} answered status {} (expected {expected}); {}",
            response.status,
            body()
        ));
    }
    if let Some(needle) = &check.body {
        if !response.body.contains(needle.as_str()) {
            return Err(format!(
                "GET {url} answered {} but the body does not contain {needle:?}; {}",
                response.status,
                body()
            ));
        }
    }
    if let Some(pattern) = &check.body_regex {
        let matched = regex::Regex::new(pattern)
            .map_err(|e| format!("bodyRegex does not compile: {e}"))?
            .is_match(&response.body);
        if !matched {
            return Err(format!(
                "GET {url} answered {} but the body does not match /{pattern}/; {}",
                response.status,
                body()
            ));
        }
    }
    Ok(format!("GET {url} answered {}", response.status))
}

fn judge_exit(code: Option<i32>, stderr: &str, where_: &str) -> Result<String, String> {
    match code {
        Some(0) => Ok(format!("exited 0 {where_}")),
        Some(c) => Err(format!(
            "exited {c} {where_}; stderr: {:?}",
            tail_lines(stderr, 3)
        )),
        None => Err(format!(
            "was killed by a signal {where_}; stderr: {:?}",
            tail_lines(stderr, 3)
        )),
    }
}

fn judge_failed_units(
    mode: FailedUnits,
    baseline: &Baseline,
    state: &SystemStateLook,
) -> Result<String, String> {
    let failed = &state.failed_units;
    if let Some(count) = state.failed_count.filter(|&n| n > 0 && failed.is_empty()) {
        if mode != FailedUnits::Ignore {
            // A unit flapping between failed and restarting: no verdict
            // from this look, never a pass.
            return Err(format!(
                "systemd counted {count} failed unit(s) but listed none a moment later (a unit changed state while tether looked)"
            ));
        }
    }
    let (bad, note): (Vec<&String>, &str) = match (mode, baseline) {
        (FailedUnits::Ignore, _) => (Vec::new(), ""),
        (FailedUnits::New, Baseline::Before(before)) => (
            failed.iter().filter(|u| !before.contains(u)).collect(),
            " that were not failed before the switch",
        ),
        (FailedUnits::New, Baseline::None) | (FailedUnits::Any, _) => (failed.iter().collect(), ""),
    };
    if bad.is_empty() {
        let already = failed.len();
        Ok(if already == 0 {
            "no failed units".to_string()
        } else {
            format!("no new failed units ({already} failed before the switch)")
        })
    } else {
        let names: Vec<&str> = bad.iter().map(|s| s.as_str()).collect();
        Err(format!("failed units{note}: {}", names.join(", ")))
    }
}

fn judge_system_running(mode: FailedUnits, state: &str) -> Result<String, String> {
    match state {
        "running" => Ok("running".to_string()),
        // A failed unit makes systemd say "degraded"; whether that matters
        // is failedUnits' call.
        "degraded" if mode != FailedUnits::Any => Ok("degraded (failed units allowed)".into()),
        "degraded" => Err("degraded: some unit has failed (failedUnits = \"any\")".into()),
        "initializing" | "starting" => Err(format!("still {state}")),
        "" => Err("systemd reported no system state".into()),
        other => Err(format!("{other} (expected running)")),
    }
}

#[cfg(test)]
mod tests;
