//! The narrow interfaces the logic talks to: the remote host (scripts from
//! [`crate::remote`] run over SSH, and closure copies), the deployer-side
//! probes of health checks, the clock, and the reporter. The `tether` crate implements them with OpenSSH,
//! the Nix CLI and tokio; tests implement them with fakes.

use crate::model::{Address, StorePath};
use crate::report::Event;
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

/// What a remote script printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScriptOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
}

/// Why a remote operation did not run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The host answered with a key other than the pinned one.
    #[error("host key verification failed: {0}")]
    HostKey(String),
    /// No SSH session could be made or it broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Anything else (a local process could not start, a copy failed).
    #[error("{0}")]
    Other(String),
}

/// One target host.
pub trait Target {
    /// Runs a POSIX sh script on the host over `conn`, killing it locally
    /// after `timeout`. Output lines are passed to `on_line` as they arrive
    /// when it is given.
    fn run(
        &self,
        script: &str,
        conn: Conn,
        timeout: Duration,
        on_line: Option<&dyn Fn(&str)>,
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
        script: &str,
        conn: Conn,
        timeout: Duration,
        on_line: Option<&dyn Fn(&str)>,
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
