//! The deployer's journal: a SQLite database under the user's state
//! directory (`$TETHER_STATE_DIR`, else `$XDG_STATE_HOME/tether`, else
//! `~/.local/state/tether`) with one row per run, one per host of a run, and
//! every event with its time. The schema is versioned with forward-only
//! migrations (`PRAGMA user_version`).
//!
//! Writes happen as events arrive, each in its own transaction, with WAL
//! journaling, so a deployer killed mid-run leaves a consistent database
//! whose run simply has no end: it reads back as `interrupted`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use tether_core::remote::status::JournalLine;
use tether_core::remote::JournalEvent;
use tether_core::report::{Event, EventKind, HostReport, Outcome};

/// Forward-only migrations; entry `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    user TEXT NOT NULL,
    machine TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    selection TEXT,
    source TEXT NOT NULL,
    git_revision TEXT,
    goal TEXT,
    exit_code INTEGER
);
CREATE TABLE run_hosts (
    run_id TEXT NOT NULL REFERENCES runs(id),
    host TEXT NOT NULL,
    old_system TEXT,
    new_system TEXT,
    new_generation INTEGER,
    outcome TEXT,
    reason TEXT,
    duration_ms INTEGER,
    reconciled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, host)
);
CREATE TABLE events (
    run_id TEXT NOT NULL REFERENCES runs(id),
    host TEXT NOT NULL,
    elapsed_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_by_run ON events(run_id, host);
"#,
    r#"
CREATE TABLE rehearsals (
    id TEXT PRIMARY KEY,
    production_host TEXT NOT NULL,
    production_old TEXT NOT NULL,
    production_new TEXT NOT NULL,
    staging_host TEXT NOT NULL,
    old_source TEXT NOT NULL,
    source TEXT NOT NULL,
    git_revision TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT NOT NULL,
    result TEXT NOT NULL,
    reason TEXT,
    report TEXT NOT NULL
);
CREATE INDEX rehearsals_by_host ON rehearsals(production_host, production_new);
"#,
];

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal database {path}: {source}")]
    Sql {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("journal directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("journal database {path} has schema version {found}, newer than this tether knows ({known})")]
    TooNew {
        path: String,
        found: i64,
        known: usize,
    },
}

/// How long a journal write waits for another process's lock.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn insert_events(c: &mut Connection, run_id: &str, events: &[Event]) -> rusqlite::Result<()> {
    let tx = c.transaction()?;
    for event in events {
        let kind = match &event.kind {
            EventKind::Phase { .. } => "phase",
            EventKind::Output { .. } => "output",
            EventKind::ActivationEnded { .. } => "activation-ended",
            EventKind::Check { .. } => "check",
            EventKind::Warning { .. } => "warning",
            EventKind::State { action, .. } => action.as_str(),
            EventKind::Outcome { .. } => "outcome",
        };
        let data = serde_json::to_string(event).unwrap_or_default();
        tx.execute(
            "INSERT INTO events (run_id, host, elapsed_ms, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                run_id,
                event.host.as_str(),
                event.elapsed_ms as i64,
                kind,
                data
            ],
        )?;
        if let EventKind::Outcome { outcome } = &event.kind {
            tx.execute(
                "UPDATE run_hosts SET outcome = ?3, reason = ?4 WHERE run_id = ?1 AND host = ?2",
                params![
                    run_id,
                    event.host.as_str(),
                    outcome.name(),
                    outcome.reason()
                ],
            )?;
        }
    }
    tx.commit()
}

/// Where the journal lives by default.
pub fn default_path() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = env("TETHER_STATE_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("tether")))
        .or_else(|| env("HOME").map(|h| h.join(".local/state/tether")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/tether-deployer"));
    dir.join("journal.sqlite")
}

/// A new run, as recorded when it starts.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub command: String,
    pub selection: Option<String>,
    pub source: String,
    pub git_revision: Option<String>,
    pub goal: Option<String>,
    pub hosts: Vec<(String, Option<String>)>,
}

/// A run as `history` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub id: String,
    pub command: String,
    pub user: String,
    pub machine: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// `finished`, `running` or `interrupted` (never ended, process gone).
    pub status: String,
    pub selection: Option<String>,
    pub source: String,
    pub git_revision: Option<String>,
    pub goal: Option<String>,
    pub exit_code: Option<i64>,
    pub hosts: Vec<HostRecord>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRecord {
    pub host: String,
    pub old_system: Option<String>,
    pub new_system: Option<String>,
    pub new_generation: Option<i64>,
    /// None while running or when the run was interrupted before the end.
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub duration_ms: Option<i64>,
    /// The outcome was learnt later from the host's own journal.
    pub reconciled: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub host: String,
    pub elapsed_ms: i64,
    pub kind: String,
    pub data: serde_json::Value,
}

pub struct Journal {
    path: String,
    conn: Mutex<Connection>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The user running tether: `$USER`, `$LOGNAME`, else the name of this
/// process's real uid in /etc/passwd (services and CI often set neither).
fn user() -> String {
    if let Ok(u) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        if !u.is_empty() {
            return u;
        }
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        });
    let name = uid.as_deref().and_then(|uid| {
        std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|passwd| user_from_passwd(&passwd, uid))
    });
    name.or(uid.map(|u| format!("uid{u}")))
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The name /etc/passwd gives `uid`.
fn user_from_passwd(passwd: &str, uid: &str) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    })
}

/// `user@machine`, as recorded with every run (and on targets).
pub fn deployer_identity() -> String {
    format!("{}@{}", user(), machine())
}

fn pid_alive(pid: i64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Journal {
    pub fn open_default() -> Result<Journal, JournalError> {
        Journal::open(&default_path())
    }

    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let sql = |source| JournalError::Sql {
            path: shown.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql)?;
        let journal = Journal {
            path: shown,
            conn: Mutex::new(conn),
        };
        journal.migrate()?;
        Ok(journal)
    }

    fn sql(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, JournalError> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back), so a poisoned lock is still usable.
        let mut conn = match self.conn.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut conn).map_err(|e| self.sql(e))
    }

    fn migrate(&self) -> Result<(), JournalError> {
        let version: i64 =
            self.with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))?;
        let known = MIGRATIONS.len();
        if version > known as i64 {
            return Err(JournalError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            self.with(|c| {
                let tx = c.transaction()?;
                tx.execute_batch(migration)?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)?;
                tx.commit()
            })?;
        }
        Ok(())
    }

    /// The schema version (for tests and `--version` diagnostics).
    pub fn schema_version(&self) -> Result<i64, JournalError> {
        self.with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
    }

    pub fn start_run(&self, run: &NewRun) -> Result<(), JournalError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO runs (id, command, user, machine, pid, started_at, selection, source, git_revision, goal)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    run.id,
                    run.command,
                    user(),
                    machine(),
                    std::process::id(),
                    now(),
                    run.selection,
                    run.source,
                    run.git_revision,
                    run.goal
                ],
            )?;
            for (host, new_system) in &run.hosts {
                tx.execute(
                    "INSERT INTO run_hosts (run_id, host, new_system) VALUES (?1, ?2, ?3)",
                    params![run.id, host, new_system],
                )?;
            }
            tx.commit()
        })
    }

    pub fn record_event(&self, run_id: &str, event: &Event) -> Result<(), JournalError> {
        self.record_events(run_id, std::slice::from_ref(event), None)
    }

    /// Records `events` in one transaction: all or none. `wait`, when
    /// given, is how long SQLite waits for another process's lock this
    /// time (instead of the usual 10 s).
    pub fn record_events(
        &self,
        run_id: &str,
        events: &[Event],
        wait: Option<std::time::Duration>,
    ) -> Result<(), JournalError> {
        self.with(|c| {
            if let Some(wait) = wait {
                c.busy_timeout(wait)?;
            }
            let written = insert_events(c, run_id, events);
            if wait.is_some() {
                c.busy_timeout(BUSY_TIMEOUT)?;
            }
            written
        })
    }

    pub fn finish_run(
        &self,
        run_id: &str,
        exit_code: i32,
        reports: &[HostReport],
    ) -> Result<(), JournalError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for r in reports {
                let generation = match &r.outcome {
                    Outcome::Confirmed { generation, .. }
                    | Outcome::BootDefaultSet { generation } => generation.map(i64::from),
                    _ => None,
                };
                tx.execute(
                    "UPDATE run_hosts SET old_system = ?3, new_system = ?4, new_generation = ?5,
                         outcome = ?6, reason = ?7, duration_ms = ?8
                     WHERE run_id = ?1 AND host = ?2",
                    params![
                        run_id,
                        r.host.as_str(),
                        r.old_system,
                        r.new_system,
                        generation,
                        r.outcome.name(),
                        r.outcome.reason(),
                        r.duration_ms as i64
                    ],
                )?;
            }
            tx.execute(
                "UPDATE runs SET ended_at = ?2, exit_code = ?3 WHERE id = ?1",
                params![run_id, now(), exit_code],
            )?;
            tx.commit()
        })
    }

    /// Learns outcomes from a host's own journal: a host whose run never
    /// recorded an end here (the deployer died, or lost the host) but whose
    /// guard finished the trial. Returns how many rows it updated.
    pub fn reconcile(&self, host: &str, lines: &[JournalLine]) -> Result<usize, JournalError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut updated = 0;
            for line in lines.iter().filter(|l| l.is_final()) {
                let outcome = match line.kind() {
                    Some(JournalEvent::Confirmed) => "confirmed",
                    // Confirmed, but never persisted: the host boots the old system.
                    Some(JournalEvent::ConfirmedUnfinished) => "confirmed-not-persisted",
                    Some(JournalEvent::RolledBack) => "rolled-back",
                    _ => "unknown",
                };
                updated += tx.execute(
                    "UPDATE run_hosts SET outcome = ?3, reason = ?4, reconciled = 1,
                         old_system = COALESCE(old_system, ?5)
                     WHERE run_id = ?1 AND host = ?2
                       AND (outcome IS NULL OR outcome = 'unknown')",
                    params![
                        line.deploy_id,
                        host,
                        outcome,
                        format!(
                            "from the host's journal ({} at {}): {}",
                            line.source, line.time, line.detail
                        ),
                        line.old_system
                    ],
                )?;
            }
            tx.commit()?;
            Ok(updated)
        })
    }

    fn hosts_of(c: &Connection, run_id: &str) -> rusqlite::Result<Vec<HostRecord>> {
        let mut stmt = c.prepare(
            "SELECT host, old_system, new_system, new_generation, outcome, reason, duration_ms, reconciled
             FROM run_hosts WHERE run_id = ?1 ORDER BY host",
        )?;
        let rows = stmt.query_map(params![run_id], |r| {
            Ok(HostRecord {
                host: r.get(0)?,
                old_system: r.get(1)?,
                new_system: r.get(2)?,
                new_generation: r.get(3)?,
                outcome: r.get(4)?,
                reason: r.get(5)?,
                duration_ms: r.get(6)?,
                reconciled: r.get::<_, i64>(7)? != 0,
            })
        })?;
        rows.collect()
    }

    fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
        let ended_at: Option<String> = r.get(5)?;
        let pid: i64 = r.get(4)?;
        let machine: String = r.get(3)?;
        let status = if ended_at.is_some() {
            "finished"
        } else if machine == self::machine() && pid_alive(pid) {
            "running"
        } else {
            "interrupted"
        };
        Ok(RunRecord {
            id: r.get(0)?,
            command: r.get(1)?,
            user: r.get(2)?,
            machine,
            started_at: r.get(6)?,
            ended_at,
            status: status.into(),
            selection: r.get(7)?,
            source: r.get(8)?,
            git_revision: r.get(9)?,
            goal: r.get(10)?,
            exit_code: r.get(11)?,
            hosts: Vec::new(),
        })
    }

    const RUN_COLUMNS: &'static str = "id, command, user, machine, pid, ended_at, started_at, selection, source, git_revision, goal, exit_code";

    /// The newest runs first; with `hosts`, only runs that touched one of them.
    pub fn runs(
        &self,
        limit: usize,
        hosts: Option<&[String]>,
    ) -> Result<Vec<RunRecord>, JournalError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {} FROM runs ORDER BY started_at DESC, id DESC",
                Self::RUN_COLUMNS
            ))?;
            let runs: Vec<RunRecord> = stmt
                .query_map([], Self::run_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let mut out = Vec::new();
            for mut run in runs {
                run.hosts = Self::hosts_of(c, &run.id)?;
                if let Some(filter) = hosts {
                    run.hosts.retain(|h| filter.contains(&h.host));
                    if run.hosts.is_empty() {
                        continue;
                    }
                }
                out.push(run);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// One run with its hosts and events.
    pub fn run(&self, id: &str) -> Result<Option<(RunRecord, Vec<EventRecord>)>, JournalError> {
        self.with(|c| {
            let run = c
                .query_row(
                    &format!("SELECT {} FROM runs WHERE id = ?1", Self::RUN_COLUMNS),
                    params![id],
                    Self::run_from_row,
                )
                .optional()?;
            let Some(mut run) = run else {
                return Ok(None);
            };
            run.hosts = Self::hosts_of(c, id)?;
            let mut stmt = c.prepare(
                "SELECT host, elapsed_ms, kind, data FROM events WHERE run_id = ?1 ORDER BY rowid",
            )?;
            let events = stmt
                .query_map(params![id], |r| {
                    let data: String = r.get(3)?;
                    Ok(EventRecord {
                        host: r.get(0)?,
                        elapsed_ms: r.get(1)?,
                        kind: r.get(2)?,
                        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some((run, events)))
        })
    }
}

/// A rehearsal as the journal keeps it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RehearsalRecord {
    pub id: String,
    pub production_host: String,
    pub production_old: String,
    pub production_new: String,
    pub staging_host: String,
    pub started_at: String,
    pub ended_at: String,
    pub result: String,
    pub reason: Option<String>,
}

impl Journal {
    /// Records a finished rehearsal (`started_at` as RFC 3339).
    pub fn record_rehearsal(
        &self,
        report: &tether_core::rehearsal::RehearsalReport,
        source: &str,
        git_revision: Option<&str>,
        started_at: &str,
    ) -> Result<(), JournalError> {
        use tether_core::rehearsal::Verdict;
        let (result, reason) = match &report.verdict {
            Verdict::Passed => ("passed", None),
            Verdict::Failed { side, reason } => {
                ("failed", Some(format!("{side} variant: {reason}")))
            }
            Verdict::Error { step, reason } => ("error", Some(format!("{step}: {reason}"))),
        };
        let json = serde_json::to_string(report).unwrap_or_else(|_| "null".into());
        let old_source = serde_json::to_string(&report.old_source).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "INSERT INTO rehearsals (id, production_host, production_old, production_new, staging_host,
                     old_source, source, git_revision, started_at, ended_at, result, reason, report)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    report.id,
                    report.production.as_str(),
                    report.production_old,
                    report.production_new,
                    report.staging.as_str(),
                    old_source,
                    source,
                    git_revision,
                    started_at,
                    now(),
                    result,
                    reason,
                    json
                ],
            )
            .map(|_| ())
        })
    }

    fn rehearsal_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RehearsalRecord> {
        Ok(RehearsalRecord {
            id: r.get(0)?,
            production_host: r.get(1)?,
            production_old: r.get(2)?,
            production_new: r.get(3)?,
            staging_host: r.get(4)?,
            started_at: r.get(5)?,
            ended_at: r.get(6)?,
            result: r.get(7)?,
            reason: r.get(8)?,
        })
    }

    const REHEARSAL_COLUMNS: &'static str = "id, production_host, production_old, production_new, staging_host, started_at, ended_at, result, reason";

    /// The newest rehearsals first; with `hosts`, only those of these
    /// production hosts.
    pub fn rehearsals(
        &self,
        limit: usize,
        hosts: Option<&[String]>,
    ) -> Result<Vec<RehearsalRecord>, JournalError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {} FROM rehearsals ORDER BY started_at DESC, id DESC",
                Self::REHEARSAL_COLUMNS
            ))?;
            let all: Vec<RehearsalRecord> = stmt
                .query_map([], Self::rehearsal_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(all
                .into_iter()
                .filter(|r| hosts.is_none_or(|h| h.contains(&r.production_host)))
                .take(limit)
                .collect())
        })
    }

    /// The newest passed rehearsal of `host` going to `new_system`.
    pub fn passed_rehearsal(
        &self,
        host: &str,
        new_system: &str,
    ) -> Result<Option<RehearsalRecord>, JournalError> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {} FROM rehearsals WHERE production_host = ?1 AND production_new = ?2
                       AND result = 'passed' ORDER BY started_at DESC, id DESC LIMIT 1",
                    Self::REHEARSAL_COLUMNS
                ),
                params![host, new_system],
                Self::rehearsal_from_row,
            )
            .optional()
        })
    }

    /// The git revision (and deploy id) of the newest run that left `host`
    /// confirmed on `system`, from a local source: where its current
    /// system came from.
    pub fn deployed_revision(
        &self,
        host: &str,
        system: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        self.with(|c| {
            c.query_row(
                "SELECT r.git_revision, r.id FROM run_hosts h JOIN runs r ON r.id = h.run_id
                 WHERE h.host = ?1 AND h.new_system = ?2 AND h.outcome = 'confirmed'
                   AND r.git_revision IS NOT NULL AND r.command = 'deploy'
                 ORDER BY r.started_at DESC, r.id DESC LIMIT 1",
                params![host, system],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
    }
}

/// The git revision of a local flake directory (`-dirty` when it has
/// uncommitted changes), if it is in a git work tree.
pub fn git_revision(dir: &Path) -> Option<String> {
    let run = |args: &[&str]| {
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
    };
    let rev = run(&["rev-parse", "HEAD"])?;
    let dirty = run(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).unwrap();
        (dir, j)
    }

    fn run(id: &str) -> NewRun {
        NewRun {
            id: id.into(),
            command: "deploy".into(),
            selection: Some("@web".into()),
            source: "path:/x".into(),
            git_revision: None,
            goal: Some("switch".into()),
            hosts: vec![("web1".into(), Some("/nix/store/new".into()))],
        }
    }

    #[test]
    fn a_user_is_found_by_uid_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_from_passwd(passwd, "1000").as_deref(), Some("alice"));
        assert_eq!(user_from_passwd(passwd, "0").as_deref(), Some("root"));
        assert_eq!(user_from_passwd(passwd, "7"), None);
    }

    #[test]
    fn migrations_run_once_and_are_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let latest = MIGRATIONS.len() as i64;
        assert_eq!(
            Journal::open(&path).unwrap().schema_version().unwrap(),
            latest
        );
        assert_eq!(
            Journal::open(&path).unwrap().schema_version().unwrap(),
            latest
        );
    }

    fn confirmed(host: &str, new: &str) -> HostReport {
        HostReport {
            host: host.parse().unwrap(),
            outcome: Outcome::Confirmed {
                generation: Some(2),
                persisted: true,
            },
            old_system: Some("/nix/store/old".into()),
            old_generation: Some(1),
            new_system: new.into(),
            duration_ms: 10,
            state: None,
        }
    }

    #[test]
    fn the_revision_of_a_hosts_system_is_that_of_the_deploy_that_confirmed_it() {
        let (_d, j) = temp();
        let mut first = run("r1");
        first.git_revision = Some("aaa".into());
        j.start_run(&first).unwrap();
        j.finish_run("r1", 0, &[confirmed("web1", "/nix/store/new")])
            .unwrap();
        let mut rolled_back = run("r2");
        rolled_back.git_revision = Some("bbb".into());
        j.start_run(&rolled_back).unwrap();
        let mut r = confirmed("web1", "/nix/store/newer");
        r.outcome = Outcome::Skipped {
            reason: tether_core::report::SkipReason::Interrupted,
        };
        j.finish_run("r2", 1, &[r]).unwrap();
        assert_eq!(
            j.deployed_revision("web1", "/nix/store/new").unwrap(),
            Some(("aaa".to_string(), "r1".to_string()))
        );
        assert_eq!(
            j.deployed_revision("web1", "/nix/store/newer").unwrap(),
            None
        );
        assert_eq!(j.deployed_revision("web2", "/nix/store/new").unwrap(), None);
    }

    #[test]
    fn a_version_one_journal_gains_the_rehearsals_table_and_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let j = Journal::open(&path).unwrap();
        j.start_run(&run("r1")).unwrap();
        assert_eq!(j.schema_version().unwrap(), 2);
        assert!(j.rehearsals(10, None).unwrap().is_empty());
        assert_eq!(j.runs(10, None).unwrap().len(), 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        drop(Journal::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Journal::open(&path),
            Err(JournalError::TooNew { .. })
        ));
    }

    #[test]
    fn a_run_without_an_end_whose_process_is_gone_is_interrupted() {
        let (_d, j) = temp();
        j.start_run(&run("r1")).unwrap();
        j.with(|c| c.execute("UPDATE runs SET pid = 999999999 WHERE id = 'r1'", []))
            .unwrap();
        let runs = j.runs(10, None).unwrap();
        assert_eq!(runs[0].status, "interrupted");
        assert_eq!(runs[0].hosts[0].outcome, None);
    }

    #[test]
    fn the_targets_journal_reconciles_a_missing_outcome() {
        let (_d, j) = temp();
        j.start_run(&run("r1")).unwrap();
        let line = JournalLine::parse(
            "2026-01-01T00:00:00Z\tr1\trolled-back\t/nix/store/old\t/nix/store/new\tguard\tlease expired",
        )
        .unwrap();
        assert_eq!(j.reconcile("web1", std::slice::from_ref(&line)).unwrap(), 1);
        let h = &j.runs(10, None).unwrap()[0].hosts[0];
        assert_eq!(h.outcome.as_deref(), Some("rolled-back"));
        assert!(h.reconciled);
        // Known outcomes are never overwritten.
        assert_eq!(j.reconcile("web1", &[line]).unwrap(), 0);
    }

    #[test]
    fn history_filters_by_host_and_limits() {
        let (_d, j) = temp();
        j.start_run(&run("r1")).unwrap();
        let mut r2 = run("r2");
        r2.hosts = vec![("db1".into(), None)];
        j.start_run(&r2).unwrap();
        assert_eq!(j.runs(10, Some(&["db1".to_string()])).unwrap().len(), 1);
        assert_eq!(j.runs(1, None).unwrap().len(), 1);
        assert!(j.run("r2").unwrap().is_some());
        assert!(j.run("nope").unwrap().is_none());
    }
}
