//! The narrow interfaces the logic talks to: the remote host (scripts from
//! [`crate::remote`] run over SSH, and closure copies), the deployer-side
//! probes of health checks, the clock, and the reporter. The `tether` crate implements them with OpenSSH,
//! the Nix CLI and tokio; tests implement them with fakes.

use crate::model::{Address, StorePath};
pub use crate::remote::ScriptOutput;
use crate::remote::{Operation, ParseError, Script};
use crate::report::Event;
use crate::text::tail;
use std::future::Future;
use std::time::Duration;

/// Which SSH connection a script travels over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// The deploy's long-lived, multiplexed connection (fast; may be stale).
    Shared,
    /// A brand-new connection that shares nothing with earlier ones: only a
    /// host that accepts new SSH connections can answer over it.
    Fresh,
}

/// Why a remote operation did not run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The host answered with a key other than the pinned one.
    #[error("host key verification failed: {0}")]
    HostKey(String),
    /// The host refused the connection (nothing listens on its SSH port).
    #[error("unreachable: {0}")]
    Refused(String),
    /// Connecting timed out (no answer at the address).
    #[error("unreachable: {0}")]
    ConnectTimedOut(String),
    /// No SSH session could be made, or it broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// sudo would not run the script (nothing ran).
    #[error("sudo: {0}")]
    Sudo(crate::remote::SudoFailure),
    /// Anything else (a local process could not start, a copy failed).
    #[error("{0}")]
    Other(String),
}

/// Which stream of a script a line came from: stdout carries the
/// operation's protocol, stderr everything the target itself printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Receives a script's output lines as they arrive.
pub type OnLine<'a> = &'a dyn Fn(Stream, &str);

/// One target host.
pub trait Target {
    /// Runs one operation's POSIX sh script on the host over `conn`,
    /// killing it locally after `timeout`. Output lines are passed to
    /// `on_line` as they arrive when it is given.
    fn run(
        &self,
        script: &Script,
        conn: Conn,
        timeout: Duration,
        on_line: Option<OnLine<'_>>,
    ) -> impl Future<Output = Result<ScriptOutput, RemoteError>>;

    /// Copies a closure into the host's store.
    fn copy(
        &self,
        path: &StorePath,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RemoteError>>;
}

/// A shared reference to a target is a target (the fleet runner owns its
/// targets; callers may lend them).
impl<T: Target + ?Sized> Target for &T {
    fn run(
        &self,
        script: &Script,
        conn: Conn,
        timeout: Duration,
        on_line: Option<OnLine<'_>>,
    ) -> impl Future<Output = Result<ScriptOutput, RemoteError>> {
        (**self).run(script, conn, timeout, on_line)
    }

    fn copy(
        &self,
        path: &StorePath,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), RemoteError>> {
        (**self).copy(path, timeout)
    }
}

/// Why an operation gave no answer tether can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The session could not be made, broke or timed out.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The script ran but printed something tether cannot read.
    #[error("{error}{}", if .stderr_tail.is_empty() { String::new() } else { format!(": {}", .stderr_tail) })]
    Parse {
        error: ParseError,
        stderr_tail: String,
    },
}

/// Runs `op` on `target` over `conn` and parses its answer.
pub async fn call<T: Target + ?Sized, O: Operation>(
    target: &T,
    op: &O,
    conn: Conn,
    timeout: Duration,
) -> Result<O::Output, CallError> {
    call_streaming(target, op, conn, timeout, None)
        .await
        .map(|(output, _)| output)
}

/// [`call`], passing the output's lines to `on_line` as they arrive, and
/// returning the raw output too.
pub async fn call_streaming<T: Target + ?Sized, O: Operation>(
    target: &T,
    op: &O,
    conn: Conn,
    timeout: Duration,
    on_line: Option<OnLine<'_>>,
) -> Result<(O::Output, ScriptOutput), CallError> {
    let out = target.run(&op.request(), conn, timeout, on_line).await?;
    match op.parse(&out) {
        Ok(parsed) => Ok((parsed, out)),
        Err(error) => Err(CallError::Parse {
            error,
            stderr_tail: tail(&out.stderr, 3),
        }),
    }
}

/// Monotonic time, replaceable in tests.
pub trait Clock {
    /// Time since an arbitrary fixed origin.
    fn now(&self) -> Duration;
    fn sleep(&self, d: Duration) -> impl Future<Output = ()>;
}

/// Receives events as they happen.
pub trait Reporter {
    fn event(&self, event: Event);
}

/// One HTTP request a [`Probe`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<String>,
    pub insecure: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// The body (a probe may cut it short; checks only need the start).
    pub body: String,
}

/// How a local command ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    /// `None` when killed by a signal.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Deployer-side I/O for checks. Errors are one-line descriptions (connection
/// refused, timed out) that end up in the check's detail.
pub trait Probe {
    fn http(&self, request: &HttpRequest) -> impl Future<Output = Result<HttpResponse, String>>;
    fn tcp(
        &self,
        address: &Address,
        port: u16,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), String>>;
    /// Runs `sh -c command` locally with `env` added to the environment.
    fn command(
        &self,
        command: &str,
        env: &[(String, String)],
        timeout: Duration,
    ) -> impl Future<Output = Result<CommandOutput, String>>;
}
