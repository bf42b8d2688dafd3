//! The live terminal view (stderr is a terminal): one line per host in
//! flight with its phase and elapsed time, finished hosts printed above as
//! they end, and a line counting outcomes. When stderr is not a terminal
//! the plain, timestamped [`crate::ui::report::HumanReporter`] is used instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tether_core::ports::Reporter;
use tether_core::report::{Event, EventKind};

pub struct LiveReporter {
    multi: MultiProgress,
    total_bar: ProgressBar,
    state: Mutex<State>,
    total: usize,
}

#[derive(Default)]
struct State {
    bars: HashMap<String, ProgressBar>,
    counts: BTreeMap<&'static str, usize>,
    done: usize,
}

/// `exit 0`, or `killed` when there is no exit code.
pub(crate) fn exit_words(code: Option<i32>) -> String {
    code.map_or_else(|| "killed".into(), |c| format!("exit {c}"))
}

fn printable(s: &str, max: usize) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.chars().count() > max {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        s
    }
}

impl LiveReporter {
    pub fn new(total: usize) -> LiveReporter {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total_bar = multi.add(ProgressBar::new(total as u64));
        total_bar.set_style(
            ProgressStyle::with_template("{elapsed:>5} [{bar:20}] {pos}/{len} hosts done {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        total_bar.enable_steady_tick(Duration::from_millis(250));
        LiveReporter {
            multi,
            total_bar,
            state: Mutex::new(State::default()),
            total,
        }
    }

    fn bar(&self, state: &mut State, host: &str) -> ProgressBar {
        if let Some(bar) = state.bars.get(host) {
            return bar.clone();
        }
        let bar = self
            .multi
            .insert_before(&self.total_bar, ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:<14} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(printable(host, 14));
        bar.enable_steady_tick(Duration::from_millis(120));
        state.bars.insert(host.to_string(), bar.clone());
        bar
    }

    /// Clears the view (before the summary table is printed).
    pub fn finish(&self) {
        if let Ok(mut state) = self.state.lock() {
            for (_, bar) in state.bars.drain() {
                bar.finish_and_clear();
            }
        }
        self.total_bar.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Reporter for LiveReporter {
    fn event(&self, event: Event) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let host = event.host.as_str();
        match &event.kind {
            EventKind::Phase { phase } => {
                let bar = self.bar(&mut state, host);
                bar.set_message(phase.as_str().to_string());
            }
            EventKind::Output { line } => {
                let bar = self.bar(&mut state, host);
                bar.set_message(format!("activating | {}", printable(line, 60)));
            }
            EventKind::ActivationEnded { exit_code } => {
                let bar = self.bar(&mut state, host);
                bar.set_message(format!("activation ended ({})", exit_words(*exit_code)));
            }
            EventKind::Check {
                check,
                attempt,
                passed,
                ..
            } => {
                let bar = self.bar(&mut state, host);
                bar.set_message(format!(
                    "checking {check} (attempt {attempt}{})",
                    if *passed { ", passed" } else { "" }
                ));
            }
            EventKind::State { summary, .. } => {
                let _ = self
                    .multi
                    .println(format!("  {host}: {}", printable(summary, 300)));
            }
            EventKind::Warning { message } => {
                let _ = self
                    .multi
                    .println(format!("  {host}: warning: {}", printable(message, 200)));
            }
            EventKind::Outcome { outcome } => {
                if let Some(bar) = state.bars.remove(host) {
                    bar.finish_and_clear();
                }
                let line = match outcome.reason() {
                    Some(reason) => {
                        format!("{host}: {} ({})", outcome.name(), printable(&reason, 200))
                    }
                    None => format!("{host}: {}", outcome.name()),
                };
                let _ = self.multi.println(line);
                *state.counts.entry(outcome.name()).or_default() += 1;
                state.done += 1;
                let counts: Vec<String> = state
                    .counts
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect();
                self.total_bar.set_position(state.done as u64);
                self.total_bar
                    .set_message(format!("({})", counts.join(", ")));
                if state.done >= self.total {
                    self.total_bar.finish_and_clear();
                }
            }
        }
    }
}
