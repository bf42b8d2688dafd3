//! The remote host over the system's OpenSSH and Nix CLIs (so users' own SSH
//! config and Nix settings apply), implementing `tether_core`'s [`Target`].
//!
//! Host keys: every connection checks strictly against a known_hosts file
//! that tether writes for the run from the inventory's pinned key only
//! (`HostKeyAlias` makes the lookup independent of address and port), so a
//! host that is not who the inventory says is refused, never trusted on first
//! use. tether's own `-o` options come before the inventory's `sshOptions`:
//! ssh keeps the first value of an option, so they cannot be weakened.
//!
//! Connections: `Conn::Shared` goes through a ControlMaster per host for
//! speed (the closure copy uses it too, via `NIX_SSHOPTS`); `Conn::Fresh`
//! disables multiplexing, so it proves that a brand-new connection works.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tether_core::inventory::Host;
use tether_core::model::StorePath;
use tether_core::model::SudoPassword;
use tether_core::ports::{Conn, OnLine, RemoteError, ScriptOutput, Stream, Target};
use tether_core::remote::{Elevation, Script, SudoFailure};
use tether_core::text::tail;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// One host reached over OpenSSH, with the run's pinned known_hosts file.
#[derive(Debug, Clone)]
pub struct SshTarget {
    host: Host,
    known_hosts: PathBuf,
    control_path: PathBuf,
    nix_program: OsString,
    substitute_on_destination: bool,
    /// How scripts become root (inventory `sudo`, docs/sudo.md).
    elevation: Elevation,
}

impl SshTarget {
    /// Writes the host's pinned key into `run_dir` and returns the target.
    /// `index` keeps the ControlMaster socket path short (sun_path limit).
    pub fn new(
        host: Host,
        index: usize,
        run_dir: &Path,
        nix_program: OsString,
        sudo_password: Option<&SudoPassword>,
        substitute_on_destination: bool,
    ) -> std::io::Result<SshTarget> {
        let known_hosts = run_dir.join(format!("known_hosts-{index}"));
        std::fs::write(
            &known_hosts,
            format!("{} {}\n", Self::alias(&host), host.host_key.openssh()),
        )?;
        let elevation = Elevation {
            mode: host.sudo,
            password: sudo_password.cloned(),
        };
        Ok(SshTarget {
            control_path: run_dir.join(format!("cm-{index}")),
            elevation,
            host,
            known_hosts,
            nix_program,
            substitute_on_destination,
        })
    }

    /// A run directory (pinned known_hosts files, ControlMaster sockets)
    /// and one target per host, in order. The directory lives as long as
    /// the returned guard.
    pub fn for_hosts(
        hosts: &[Host],
        nix_program: &OsString,
        sudo_password: Option<&SudoPassword>,
        substitute_on_destination: bool,
    ) -> std::io::Result<(tempfile::TempDir, Vec<SshTarget>)> {
        let run_dir = tempfile::Builder::new().prefix("tether-").tempdir()?;
        let targets = hosts
            .iter()
            .enumerate()
            .map(|(index, host)| {
                SshTarget::new(
                    host.clone(),
                    index,
                    run_dir.path(),
                    nix_program.clone(),
                    sudo_password,
                    substitute_on_destination,
                )
            })
            .collect::<std::io::Result<_>>()?;
        Ok((run_dir, targets))
    }

    fn alias(host: &Host) -> String {
        format!("tether-{}", host.name)
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Options for every connection: strict checking against the pinned key.
    fn options(&self, conn: Conn) -> Vec<String> {
        let mut o: Vec<String> = Vec::new();
        let mut opt = |s: String| {
            o.push("-o".into());
            o.push(s);
        };
        // The pinned key is the only one ssh may accept: tether's own
        // known_hosts file, none of the system's, none from DNS or a
        // command (a user's ssh_config may set those; the first value ssh
        // sees wins, and these come first).
        opt("BatchMode=yes".into());
        opt("StrictHostKeyChecking=yes".into());
        opt(format!("UserKnownHostsFile={}", self.known_hosts.display()));
        opt("GlobalKnownHostsFile=/dev/null".into());
        opt(format!("HostKeyAlias={}", Self::alias(&self.host)));
        opt("CheckHostIP=no".into());
        opt("UpdateHostKeys=no".into());
        opt("VerifyHostKeyDNS=no".into());
        // The script travels on stdin, with no terminal in between.
        opt("RequestTTY=no".into());
        for forced in ssh_client().forced {
            opt((*forced).into());
        }
        opt("ConnectTimeout=5".into());
        // A vanished host must fail the connection in seconds, not minutes.
        opt("ServerAliveInterval=2".into());
        opt("ServerAliveCountMax=3".into());
        match conn {
            Conn::Shared => {
                opt("ControlMaster=auto".into());
                opt(format!("ControlPath={}", self.control_path.display()));
                opt("ControlPersist=60".into());
            }
            Conn::Fresh => {
                opt("ControlMaster=no".into());
                opt("ControlPath=none".into());
            }
        }
        o.push("-p".into());
        o.push(self.host.ssh_port.to_string());
        o.push("-l".into());
        o.push(self.host.ssh_user.as_str().to_string());
        o.extend(self.host.ssh_options.iter().cloned());
        o
    }

    /// Opens the shared connection ahead of use (its key exchange and
    /// pinned-key check then overlap other work), running `first` as its
    /// first session: the connection stays open (ControlPersist) for the
    /// sessions that follow. Returns `first`'s output when it ran; failures
    /// are left to the deploy, which asks again and reports them properly.
    pub async fn open_with(&self, first: &Script, timeout: Duration) -> Option<ScriptOutput> {
        let run = self.run_script(
            &["-o", "ControlMaster=yes"],
            first,
            Conn::Shared,
            timeout,
            None,
        );
        run.await.ok()
    }

    /// Closes the shared connection (end of a run).
    pub async fn close(&self) {
        let _ = child_command("ssh")
            .args(self.options(Conn::Shared))
            .args(["-O", "exit"])
            .arg(self.host.address.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await;
    }

    fn classify(stderr: &str, what: &str) -> RemoteError {
        let tail = tail(stderr, 4);
        if stderr.contains("Host key verification failed")
            || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("host key is known for")
        {
            RemoteError::HostKey(tail)
        } else if tail.is_empty() {
            RemoteError::Unreachable(format!("{what} failed without a message"))
        } else if stderr.contains("Connection refused") {
            RemoteError::Refused(tail)
        } else if stderr.contains("timed out") {
            RemoteError::ConnectTimedOut(tail)
        } else {
            RemoteError::Unreachable(tail)
        }
    }
}

/// Settings that only newer OpenSSH clients know: forced when this
/// machine's client has them (an older client has no such setting for a
/// user's configuration to weaken either).
struct SshClient {
    forced: &'static [&'static str],
}

/// `KnownHostsCommand` (OpenSSH 8.5) could accept any key; `StdinNull`,
/// `SessionType`, `ForkAfterAuthentication` and `RemoteCommand` (8.7)
/// could take away the session tether runs its scripts in.
const FORCED_8_5: &[&str] = &["KnownHostsCommand=none"];
const FORCED_8_7: &[&str] = &[
    "KnownHostsCommand=none",
    "StdinNull=no",
    "SessionType=default",
    "ForkAfterAuthentication=no",
    "RemoteCommand=none",
];

/// The machine's ssh client, asked once (`ssh -V`).
fn ssh_client() -> &'static SshClient {
    static CLIENT: std::sync::OnceLock<SshClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let version = std::process::Command::new("ssh")
            .arg("-V")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .ok()
            .and_then(|o| openssh_version(&String::from_utf8_lossy(&o.stderr)));
        let forced = match version {
            Some(v) if v < (8, 5) => &[][..],
            Some(v) if v < (8, 7) => FORCED_8_5,
            // Unknown: assume a current client.
            _ => FORCED_8_7,
        };
        SshClient { forced }
    })
}

/// `OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15` → (9, 2).
fn openssh_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.trim().strip_prefix("OpenSSH_")?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A command for a child process of tether's: in its own process group, so
/// a Ctrl-C at the terminal reaches tether (which decides what stops) and
/// does not cut the SSH sessions of hosts in flight.
fn child_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.process_group(0);
    c
}

// The command the remote login shell runs is a POSIX sh that reads the
// script from standard input and evaluates it (`Elevation`, in
// tether_core::remote, puts sudo in front when the inventory says so). The
// script travels on stdin, never in a command line: it holds the deploy's
// token, and every process's arguments are readable by every local user,
// on the deployer (ssh's) and on the target (the remote shell's). `$(cat)`
// reads to the end first, so commands in the script see an exhausted stdin
// and cannot swallow the rest of the script.

async fn read_lines<R: AsyncRead + Unpin>(
    reader: R,
    stream: Stream,
    on_line: Option<OnLine<'_>>,
) -> std::io::Result<String> {
    let mut lines = BufReader::new(reader).lines();
    let mut all = String::new();
    while let Some(line) = lines.next_line().await? {
        if let Some(f) = on_line {
            f(stream, &line);
        }
        all.push_str(&line);
        all.push('\n');
    }
    Ok(all)
}

impl SshTarget {
    /// Runs `script` on the host; `first_options` go before the usual ones
    /// (ssh keeps the first value it sees of an option).
    async fn run_script(
        &self,
        first_options: &[&str],
        script: &Script,
        conn: Conn,
        timeout: Duration,
        on_line: Option<OnLine<'_>>,
    ) -> Result<ScriptOutput, RemoteError> {
        let started = std::time::Instant::now();
        let mut child = child_command("ssh")
            .args(first_options)
            .args(self.options(conn))
            .arg(self.host.address.to_string())
            // The remote login shell runs this; `sh` makes the script's
            // dialect POSIX sh whatever that shell is (through sudo when
            // the inventory says so).
            .arg(self.elevation.command_for_stdin_script())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RemoteError::Other(format!("could not run ssh: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let work = async {
            let feed = async {
                if let Some(mut stdin) = stdin {
                    // A session that ends early closes its end; what it
                    // does not read cannot matter then. The sudo password,
                    // if any, goes first, on this stdin only.
                    if let Some(prefix) = self.elevation.stdin_prefix() {
                        let _ = stdin.write_all(prefix.as_bytes()).await;
                    }
                    let _ = stdin.write_all(script.text.as_bytes()).await;
                    let _ = stdin.shutdown().await;
                }
            };
            let out = async {
                match stdout {
                    Some(s) => read_lines(s, Stream::Stdout, on_line).await,
                    None => Ok(String::new()),
                }
            };
            let err = async {
                match stderr {
                    Some(s) => read_lines(s, Stream::Stderr, on_line).await,
                    None => Ok(String::new()),
                }
            };
            let ((), out, err) = tokio::join!(feed, out, err);
            let status = child.wait().await;
            (out, err, status)
        };
        let (out, err, status) = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!(
                    host = %self.host.name,
                    op = ?script.op,
                    ?conn,
                    took_ms = started.elapsed().as_millis() as u64,
                    "remote session timed out"
                );
                return Err(RemoteError::Timeout(timeout));
            }
        };
        let stdout = out.unwrap_or_default();
        let stderr = err.unwrap_or_default();
        let status = status.map_err(|e| RemoteError::Other(format!("waiting for ssh: {e}")))?;
        tracing::debug!(
            host = %self.host.name,
            op = ?script.op,
            ?conn,
            took_ms = started.elapsed().as_millis() as u64,
            exit = ?status.code(),
            "remote session"
        );
        // ssh itself exits 255 when it cannot connect or loses the session.
        if status.code() == Some(255) {
            return Err(Self::classify(&stderr, "ssh"));
        }
        // sudo refused: nothing of the script ran (it prints nothing).
        if self.elevation.uses_sudo() && status.code() != Some(0) && stdout.trim().is_empty() {
            if let Some(failure) = SudoFailure::from_stderr(&stderr) {
                return Err(RemoteError::Sudo(failure));
            }
        }
        Ok(ScriptOutput {
            stdout,
            stderr,
            exit_code: status.code(),
        })
    }
}

impl SshTarget {
    /// Starts `script` on the host with its standard streams piped. The
    /// script travels as the command line here, not on stdin as for
    /// [`Target::run`]: stdin carries a data stream. Only scripts without
    /// secrets (paths, ids) may be sent this way.
    fn spawn_streaming(&self, script: &str) -> Result<tokio::process::Child, RemoteError> {
        child_command("ssh")
            .args(self.options(Conn::Shared))
            .arg(self.host.address.to_string())
            .arg(self.elevation.command_for_argv_script(script))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RemoteError::Other(format!("could not run ssh: {e}")))
    }
}

/// Streams what `send` prints on `from` into `receive` on `to`, through
/// the deployer (the two hosts need not reach each other, and no key of
/// one is given to the other); `progress` hears the bytes relayed so far
/// about every 16 MiB. Returns the bytes relayed. The whole stream is
/// bounded by `timeout`; an error of either side names its stderr's end.
///
/// Written here rather than as `ssh a … | ssh b …` in a shell: tether
/// must count, bound and attribute failures to one side or the other.
pub async fn relay(
    from: &SshTarget,
    send: &str,
    to: &SshTarget,
    receive: &str,
    timeout: Duration,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, RemoteError> {
    use tokio::io::AsyncReadExt;
    let mut sender = from.spawn_streaming(send)?;
    let mut receiver = to.spawn_streaming(receive)?;
    let (Some(mut source), Some(mut sink)) = (sender.stdout.take(), receiver.stdin.take()) else {
        return Err(RemoteError::Other("ssh gave no pipes".into()));
    };
    // Each side's sudo password (if any) first: the sender's stdin then
    // closes, the receiver's carries the stream after it.
    if let Some(mut stdin) = sender.stdin.take() {
        if let Some(prefix) = from.elevation.stdin_prefix() {
            let _ = stdin.write_all(prefix.as_bytes()).await;
        }
        let _ = stdin.shutdown().await;
    }
    if let Some(prefix) = to.elevation.stdin_prefix() {
        sink.write_all(prefix.as_bytes())
            .await
            .map_err(|e| RemoteError::Other(format!("starting the state stream: {e}")))?;
    }
    let err_of = |child: &mut tokio::process::Child| {
        let stderr = child.stderr.take();
        async move {
            match stderr {
                Some(s) => read_lines(s, Stream::Stderr, None)
                    .await
                    .unwrap_or_default(),
                None => String::new(),
            }
        }
    };
    let send_err = err_of(&mut sender);
    let receive_err = err_of(&mut receiver);
    let receive_out = {
        let stdout = receiver.stdout.take();
        async move {
            if let Some(s) = stdout {
                let _ = read_lines(s, Stream::Stdout, None).await;
            }
        }
    };
    // `move`: when the pump ends, early or not, both pipes close, so a
    // side whose partner died is not left writing into a full pipe.
    let pump = async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total: u64 = 0;
        let mut reported: u64 = 0;
        loop {
            let n = source.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            sink.write_all(&buf[..n]).await?;
            total += n as u64;
            if total - reported >= 16 << 20 {
                reported = total;
                progress(total);
            }
        }
        sink.shutdown().await?;
        drop(sink);
        Ok::<u64, std::io::Error>(total)
    };
    let work = async {
        let (pumped, send_err, receive_err, ()) =
            tokio::join!(pump, send_err, receive_err, receive_out);
        let sent = sender.wait().await;
        let received = receiver.wait().await;
        (pumped, send_err, receive_err, sent, received)
    };
    let (pumped, send_err, receive_err, sent, received) =
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => return Err(RemoteError::Timeout(timeout)),
        };
    let side = |host: &SshTarget,
                what: &str,
                status: std::io::Result<std::process::ExitStatus>,
                err: &str| {
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) if s.code() == Some(255) => Err(SshTarget::classify(err, "ssh")),
            Ok(s) => Err(RemoteError::Other(format!(
                "host {:?}: {what} failed ({s}): {}",
                host.host.name.as_str(),
                tail(err, 3)
            ))),
            Err(e) => Err(RemoteError::Other(format!("waiting for ssh: {e}"))),
        }
    };
    side(from, "sending the state", sent, &send_err)?;
    side(to, "receiving the state", received, &receive_err)?;
    pumped.map_err(|e| RemoteError::Other(format!("relaying the state stream: {e}")))
}

impl Target for SshTarget {
    async fn run(
        &self,
        script: &Script,
        conn: Conn,
        timeout: Duration,
        on_line: Option<OnLine<'_>>,
    ) -> Result<ScriptOutput, RemoteError> {
        self.run_script(&[], script, conn, timeout, on_line).await
    }

    async fn copy(&self, path: &StorePath, timeout: Duration) -> Result<(), RemoteError> {
        let mut cmd = child_command(&self.nix_program);
        cmd.args(["--extra-experimental-features", "nix-command flakes"])
            .args(["copy", "--no-check-sigs"]);
        if self.substitute_on_destination {
            cmd.arg("--substitute-on-destination");
        }
        let output = cmd
            .arg("--to")
            // IPv6 in brackets (`ssh-ng://root@[fd00::1]`), which Nix
            // hands to ssh without them.
            .arg(format!(
                "ssh-ng://{}@{}",
                self.host.ssh_user.as_str(),
                self.host.address.for_url()
            ))
            .arg(path.as_str())
            .env("NIX_SSHOPTS", self.options(Conn::Shared).join(" "))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let started = std::time::Instant::now();
        let output = tokio::time::timeout(timeout, output).await;
        tracing::debug!(
            host = %self.host.name,
            took_ms = started.elapsed().as_millis() as u64,
            "nix copy"
        );
        match output {
            Err(_) => Err(RemoteError::Timeout(timeout)),
            Ok(Err(e)) => Err(RemoteError::Other(format!("could not run nix copy: {e}"))),
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                match Self::classify(&stderr, "nix copy") {
                    RemoteError::Unreachable(m)
                    | RemoteError::Refused(m)
                    | RemoteError::ConnectTimedOut(m) => Err(RemoteError::Other(format!(
                        "nix copy failed ({}): {m}",
                        out.status
                    ))),
                    other => Err(other),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssh_versions_are_read_from_ssh_v() {
        assert_eq!(
            openssh_version("OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.15 3 Sep 2024\n"),
            Some((9, 2))
        );
        assert_eq!(openssh_version("OpenSSH_8.4p1, LibreSSL"), Some((8, 4)));
        assert_eq!(openssh_version("something else"), None);
    }

    #[test]
    fn ssh_failures_are_classified_from_its_stderr() {
        let kind = |stderr: &str| SshTarget::classify(stderr, "ssh");
        assert!(matches!(
            kind("ssh: connect to host 10.0.0.1 port 22: Connection refused"),
            RemoteError::Refused(_)
        ));
        assert!(matches!(
            kind("ssh: connect to host 10.0.0.1 port 22: Connection timed out"),
            RemoteError::ConnectTimedOut(_)
        ));
        assert!(matches!(
            kind("Host key verification failed."),
            RemoteError::HostKey(_)
        ));
        assert!(matches!(
            kind("ssh: connect to host 10.0.0.1 port 22: No route to host"),
            RemoteError::Unreachable(_)
        ));
        assert!(matches!(kind(""), RemoteError::Unreachable(_)));
    }
}
