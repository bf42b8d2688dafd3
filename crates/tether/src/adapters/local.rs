//! The deployer's own machine as a [`Target`]: operations that read the
//! deployer's store (a system it built) run here through `sh`, with the
//! same scripts and parsers as on a host, so both sides compare alike.

use std::process::Stdio;
use std::time::Duration;

use tether_core::model::StorePath;
use tether_core::ports::{Conn, OnLine, RemoteError, ScriptOutput, Target};
use tether_core::remote::Script;
use tokio::io::AsyncWriteExt;

/// This machine, through its `sh`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalShell;

impl Target for LocalShell {
    async fn run(
        &self,
        script: &Script,
        _conn: Conn,
        timeout: Duration,
        _on_line: Option<OnLine<'_>>,
    ) -> Result<ScriptOutput, RemoteError> {
        let mut child = tokio::process::Command::new("sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RemoteError::Other(format!("could not run sh: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.text.as_bytes())
                .await
                .map_err(|e| RemoteError::Other(format!("writing the script to sh: {e}")))?;
        }
        let output = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| RemoteError::Timeout(timeout))?
            .map_err(|e| RemoteError::Other(format!("waiting for sh: {e}")))?;
        Ok(ScriptOutput {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            exit_code: output.status.code(),
        })
    }

    async fn copy(&self, path: &StorePath, _timeout: Duration) -> Result<(), RemoteError> {
        Err(RemoteError::Other(format!(
            "{path} is already in this machine's store; nothing to copy"
        )))
    }
}
