//! Test kit for tether's lab scenarios: a lab of real hosts with the fixture
//! fleet's base systems installed, and the real `tether` binary run against
//! it. Host state is read through the lab's console (nsenter), never through
//! the network under test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tether_lab::{Lab, UpOptions};

pub struct Fleet {
    pub lab: Lab,
    pub dir: PathBuf,
    /// This fleet's deployer state (`TETHER_STATE_DIR`: the SQLite journal).
    state: PathBuf,
    _tmp: tempfile::TempDir,
}

/// The result of one `tether deploy --json` run.
pub struct Run {
    pub code: i32,
    pub events: Vec<Value>,
    pub summary: Value,
    pub stderr: String,
    pub elapsed: Duration,
}

/// What a failed assertion about a run prints: the exit code, every host's
/// outcome and reason, and the end of tether's stderr.
impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "tether exited {}", self.code)?;
        match self.summary["hosts"].as_array() {
            Some(hosts) => {
                for h in hosts {
                    writeln!(
                        f,
                        "  {}: {} {}",
                        h["host"].as_str().unwrap_or("?"),
                        h["outcome"].as_str().unwrap_or("?"),
                        h["reason"].as_str().unwrap_or("")
                    )?;
                }
            }
            None => writeln!(f, "  (no summary)")?,
        }
        let lines: Vec<&str> = self.stderr.lines().collect();
        let tail = &lines[lines.len().saturating_sub(30)..];
        write!(
            f,
            "stderr (last {} lines):\n{}",
            tail.len(),
            tail.join("\n")
        )
    }
}

impl Run {
    /// Asserts the host's outcome, printing the whole run when it differs.
    pub fn expect_outcome(&self, host: &str, outcome: &str) -> &Run {
        assert_eq!(self.outcome(host), outcome, "{host}: {self}");
        self
    }

    /// Asserts the exit code, printing the whole run when it differs.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "{self}");
        self
    }

    pub fn outcome(&self, host: &str) -> String {
        self.host(host)["outcome"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }
    /// The typed reason of a non-success (`cause` in the summary).
    pub fn cause(&self, host: &str) -> &Value {
        &self.host(host)["cause"]
    }

    /// Why a rolled-back host's trial ended (`cause.why`).
    pub fn why(&self, host: &str) -> &Value {
        let why = &self.cause(host)["why"];
        assert!(!why.is_null(), "{host} has no cause.why: {self}");
        why
    }

    /// The health checks that failed, when that is why the trial ended:
    /// each with `check`, `kind`, `attempts` and `detail`.
    pub fn failed_checks(&self, host: &str) -> Vec<Value> {
        let why = self.why(host);
        assert_eq!(why["kind"], "checks-failed", "{host}: {self}");
        why["failures"].as_array().cloned().unwrap_or_default()
    }

    pub fn reason(&self, host: &str) -> String {
        self.host(host)["reason"].as_str().unwrap_or("").to_string()
    }
    pub fn host(&self, host: &str) -> &Value {
        self.summary["hosts"]
            .as_array()
            .and_then(|hs| hs.iter().find(|h| h["host"] == host))
            .unwrap_or_else(|| {
                panic!(
                    "no {host} in summary: {}\nstderr: {}",
                    self.summary, self.stderr
                )
            })
    }
    /// The run's deploy id (`deployId` in the summary).
    pub fn deploy_id(&self) -> String {
        self.summary["deployId"]
            .as_str()
            .unwrap_or_else(|| panic!("no deploy id: {self}"))
            .to_string()
    }

    pub fn phases(&self, host: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["host"] == host && e["event"] == "phase")
            .map(|e| e["phase"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

pub fn tether_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tether")
}

impl Fleet {
    /// Boots `hosts` lab hosts named `name` and installs their base systems.
    pub fn up(name: &str, hosts: usize) -> Fleet {
        Fleet::boot(name, hosts, false)
    }

    /// Like [`Fleet::up`], every host with state to snapshot (a btrfs
    /// subvolume `/srv/state/db`, ZFS datasets `tank/db`, `tank/db/log`).
    pub fn up_with_state(name: &str, hosts: usize) -> Fleet {
        Fleet::boot(name, hosts, true)
    }

    fn boot(name: &str, hosts: usize, state: bool) -> Fleet {
        let lab = Lab::up(&UpOptions {
            name: name.into(),
            hosts,
            state,
        })
        .unwrap_or_else(|e| panic!("lab {name} did not come up: {e:#}"))
        .tear_down_on_drop();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fleet");
        lab.provision(&dir)
            .unwrap_or_else(|e| panic!("provisioning lab {name}: {e:#}"));
        Fleet {
            lab,
            dir,
            state: tmp.path().join("state"),
            _tmp: tmp,
        }
    }

    /// Replaces the fleet's per-host overrides (`hosts.nix`).
    pub fn set_hosts(&self, nix: &str) {
        std::fs::write(self.dir.join("hosts.nix"), nix).unwrap();
    }

    /// The deployer's state directory every tether run of this fleet uses.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    pub fn flake(&self) -> String {
        format!("path:{}", self.dir.display())
    }

    pub fn address(&self, host: &str) -> String {
        self.lab.host(host).unwrap().address.clone()
    }

    pub fn host_key(&self, host: &str) -> String {
        self.lab.host(host).unwrap().host_key.clone()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tether_bin());
        c.arg("--flake")
            .arg(self.flake())
            .args(args)
            // The lab's fixture builds need these settings (no nixbld
            // group, no sandbox, no binary cache), passed explicitly.
            .env("NIX_CONFIG", tether_lab::nix_settings::NIX_CONFIG)
            // Never the user's own journal.
            .env("TETHER_STATE_DIR", &self.state)
            .stdin(Stdio::null());
        c
    }

    /// Runs tether with `args` and waits.
    pub fn tether(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts tether with `args`, `input` on its stdin (then closed),
    /// stdout and stderr piped.
    pub fn spawn_with_input(&self, args: &[&str], input: &str) -> Child {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap();
        drop(stdin);
        child
    }

    /// Starts `tether deploy --json ARGS` without waiting.
    pub fn spawn_deploy(&self, args: &[&str]) -> Child {
        let mut all = vec!["deploy", "--json"];
        all.extend_from_slice(args);
        self.command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `tether deploy --json ARGS`, parsed.
    pub fn deploy(&self, args: &[&str]) -> Run {
        LiveRun::start(self.spawn_deploy(args)).finish()
    }

    /// What the host runs, read through its console.
    pub fn current(&self, host: &str) -> String {
        self.console(host, "readlink -f /run/current-system")
    }

    /// The toplevel the host's emulated boot loader boots by default (the
    /// systemd-boot default entry, one-shot ignored; GRUB's first entry).
    pub fn boot_default(&self, host: &str) -> String {
        self.lab
            .boot_default(host)
            .unwrap_or_else(|e| panic!("{host}: boot default: {e:#}"))
    }

    /// The system profile's current generation number.
    pub fn generation(&self, host: &str) -> u32 {
        let link = self.console(host, "readlink /nix/var/nix/profiles/system");
        link.trim_start_matches("system-")
            .trim_end_matches("-link")
            .parse()
            .unwrap_or_else(|_| panic!("{host}: odd profile link {link:?}"))
    }

    pub fn console(&self, host: &str, script: &str) -> String {
        self.lab
            .exec_sh(host, script)
            .unwrap_or_else(|e| panic!("{host}: console `{script}`: {e:#}"))
    }

    /// The host's own deploy journal (`/var/lib/tether/journal`), read
    /// through its console: one entry per line, with the host's clock.
    pub fn target_journal(&self, host: &str) -> Vec<JournalEntry> {
        let text = self.console(
            host,
            r#"[ -e /var/lib/tether/journal ] || exit 0
tab=$(printf '\t')
while IFS=$tab read -r time id event old new source detail; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u -d "$time" +%s)" "$id" "$event" "$source" "$detail"
done </var/lib/tether/journal"#,
        );
        text.lines()
            .filter_map(|l| {
                let mut p = l.splitn(5, '\t');
                Some(JournalEntry {
                    epoch: p.next()?.parse().ok()?,
                    deploy_id: p.next()?.to_string(),
                    event: p.next()?.to_string(),
                    source: p.next()?.to_string(),
                    detail: p.next().unwrap_or("").to_string(),
                })
            })
            .collect()
    }

    /// The events of deploy `id` in the host's journal, in order.
    pub fn deploy_events(&self, host: &str, id: &str) -> Vec<String> {
        self.target_journal(host)
            .into_iter()
            .filter(|e| e.deploy_id == id)
            .map(|e| e.event)
            .collect()
    }

    /// Waits until the previous deploy's guard has exited and released the
    /// host's deploy lock: it polls every half second, so a deploy started
    /// right after a confirmed one can otherwise be refused as busy.
    pub fn settle(&self, host: &str) {
        wait_until(Duration::from_secs(10), "the deploy lock", || {
            self.console(host, "test -d /run/tether/lock && echo held || echo free") == "free"
        });
    }

    /// Whether a new SSH connection to the host's address succeeds.
    pub fn reachable(&self, host: &str) -> bool {
        self.lab
            .ssh(host, "true")
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Builds the fleet as it is now and returns host → toplevel.
    pub fn systems(&self) -> std::collections::BTreeMap<String, String> {
        self.lab.build_fleet(&self.dir).unwrap()
    }

    /// Whether the host's own store has `path`.
    pub fn has_path(&self, host: &str, path: &str) -> bool {
        self.lab
            .exec(host, &["test", "-e", path])
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

/// A line of a host's deploy journal, its time in seconds since the epoch
/// on the host's clock.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub epoch: u64,
    pub deploy_id: String,
    pub event: String,
    pub source: String,
    pub detail: String,
}

/// The first entry with this event.
pub fn entry<'a>(journal: &'a [JournalEntry], event: &str) -> &'a JournalEntry {
    journal
        .iter()
        .find(|e| e.event == event)
        .unwrap_or_else(|| panic!("no {event:?} in the host's journal: {journal:#?}"))
}

pub fn parse_run(out: Output, elapsed: Duration) -> Run {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut events = Vec::new();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nstderr: {stderr}"));
        events.push(v);
    }
    let summary = events
        .iter()
        .rev()
        .find(|e| e["event"] == "summary")
        .cloned()
        .unwrap_or(Value::Null);
    Run {
        code: out.status.code().unwrap_or(-1),
        events,
        summary,
        stderr,
        elapsed,
    }
}

/// How long a lab test waits for a deploy it started before it kills it
/// and fails: a hung tether must fail its test, not the suite's time limit.
pub const DEPLOY_WATCHDOG: Duration = Duration::from_secs(300);

/// Reads a child's stderr to the end in a thread, so a chatty child never
/// blocks on a full pipe.
pub fn drain(mut stderr: std::process::ChildStderr) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    })
}

/// Waits for `child`, killing it (and failing) past [`DEPLOY_WATCHDOG`].
pub fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + DEPLOY_WATCHDOG;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tether did not end within {DEPLOY_WATCHDOG:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A deploy running in the background whose events are read as they come.
pub struct LiveRun {
    pub child: Child,
    rx: std::sync::mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    pub seen: Vec<Value>,
    started: Instant,
}

impl LiveRun {
    pub fn start(mut child: Child) -> LiveRun {
        use std::io::{BufRead, BufReader};
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().map(drain);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LiveRun {
            child,
            rx,
            stderr,
            seen: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Reads events until one satisfies `pred`.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no matching event within {timeout:?}; saw {:#?}", self.seen)
    }

    /// Waits for the deploy to end and parses everything it printed.
    pub fn finish(mut self) -> Run {
        let mut lines: Vec<String> = self.seen.iter().map(|v| v.to_string()).collect();
        let status = wait_bounded(&mut self.child);
        lines.extend(self.rx.iter());
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        let out = Output {
            status,
            stdout: lines.join("\n").into_bytes(),
            stderr: stderr.into_bytes(),
        };
        parse_run(out, self.started.elapsed())
    }

    /// SIGKILLs the deployer, as a crash or `kill -9` would.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

pub fn is_phase(v: &Value, host: &str, phase: &str) -> bool {
    v["host"] == host && v["event"] == "phase" && v["phase"] == phase
}

pub fn is_output(v: &Value, host: &str, needle: &str) -> bool {
    v["host"] == host && v["event"] == "output" && v["line"].as_str().unwrap_or("").contains(needle)
}

pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}
