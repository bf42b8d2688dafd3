//! Reporters: turn the deployment logic's typed events into plain,
//! timestamped progress lines on stderr, or NDJSON on stdout (`--json`), and
//! print the final summary.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;
use tether_core::ports::Reporter;
use tether_core::report::{Event, EventKind, HostReport, Outcome};
use tether_core::text::short_store_path;

use super::records::Record;

/// Progress for people: one line per phase change, warning, output line and
/// outcome, prefixed with the elapsed time and the host. No control
/// characters, so logs and CI stay readable.
pub struct HumanReporter {
    out: Mutex<std::io::Stderr>,
}

impl HumanReporter {
    pub fn new() -> HumanReporter {
        HumanReporter {
            out: Mutex::new(std::io::stderr()),
        }
    }
}

impl Default for HumanReporter {
    fn default() -> Self {
        HumanReporter::new()
    }
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

impl Reporter for HumanReporter {
    fn event(&self, event: Event) {
        let text = match &event.kind {
            EventKind::Phase { phase } => phase.as_str().to_string(),
            EventKind::Output { line } => format!("| {}", clean(line)),
            EventKind::ActivationEnded { exit_code } => {
                format!("activation ended ({})", super::live::exit_words(*exit_code))
            }
            EventKind::Warning { message } => format!("warning: {}", clean(message)),
            EventKind::State { summary, .. } => format!("state: {}", clean(summary)),
            EventKind::Check {
                check,
                attempt,
                passed,
                detail,
                ..
            } => format!(
                "check {check} #{attempt} {}: {}",
                if *passed { "passed" } else { "failed" },
                clean(detail)
            ),
            EventKind::Outcome { outcome } => match outcome.reason() {
                Some(reason) => format!("{}: {}", outcome.name().to_uppercase(), clean(&reason)),
                None => outcome.name().to_uppercase(),
            },
        };
        let secs = event.elapsed_ms as f64 / 1000.0;
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "[{secs:7.2}s] {:<12} {text}", event.host.as_str());
        }
    }
}

/// One JSON object per line on stdout (docs/events.md).
pub struct JsonReporter {
    out: Mutex<std::io::Stdout>,
}

impl JsonReporter {
    pub fn new() -> JsonReporter {
        JsonReporter {
            out: Mutex::new(std::io::stdout()),
        }
    }

    /// Prints one record as a line of JSON.
    pub fn line<C: Serialize>(&self, record: &Record<'_, C>) {
        if let (Ok(mut out), Ok(text)) = (self.out.lock(), serde_json::to_string(record)) {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }
}

impl Default for JsonReporter {
    fn default() -> Self {
        JsonReporter::new()
    }
}

impl Reporter for JsonReporter {
    fn event(&self, event: Event) {
        self.line(&Record::<()>::Event(&event));
    }
}

fn short(path: Option<&str>) -> String {
    path.map(short_store_path).unwrap_or_else(|| "-".into())
}

fn generations(r: &HostReport) -> String {
    let show = |g: Option<u32>| g.map(|g| g.to_string()).unwrap_or_else(|| "?".into());
    match (r.old_generation, r.new_generation()) {
        (old, Some(new)) => format!("{} -> {new}", show(old)),
        (Some(old), None) => old.to_string(),
        (None, None) => "-".into(),
    }
}

/// The end-of-run table for people: host, outcome, profile generation (old
/// -> new), duration, and the systems or the reason for any non-success.
pub fn summary_table(reports: &[HostReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.host.as_str().len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!(
        "{:<width$}  {:<24} {:<10} {:>8}  detail\n",
        "host", "outcome", "generation", "time"
    );
    for r in reports {
        let detail = match &r.outcome {
            Outcome::Confirmed { .. } => format!(
                "{} -> {}",
                short(r.old_system.as_deref()),
                short(Some(&r.new_system))
            ),
            Outcome::Unchanged => short(Some(&r.new_system)),
            other => other.reason().unwrap_or_default(),
        };
        s.push_str(&format!(
            "{:<width$}  {:<24} {:<10} {:>7.1}s  {}\n",
            r.host.as_str(),
            r.outcome.name(),
            generations(r),
            r.duration_ms as f64 / 1000.0,
            clean(&detail)
        ));
        if let Some(state) = r.state.as_ref().and_then(|s| s.summary()) {
            s.push_str(&format!("{:<width$}  state: {}\n", "", clean(&state)));
        }
    }
    s
}
