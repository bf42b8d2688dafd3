//! Deployer-side health-check probes: HTTP(S) with reqwest and rustls, TCP
//! connects and local commands with tokio, implementing `tether_core`'s
//! [`Probe`]. Only I/O here; what passes is decided in `tether_core::checks`.

use std::process::Stdio;
use std::time::Duration;

use tether_core::model::Address;
use tether_core::ports::{CommandOutput, HttpRequest, HttpResponse, Probe};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// The most of a body a check looks at: enough for any health endpoint,
/// and a huge page cannot exhaust memory.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, Default)]
pub struct LocalProbe;

/// An error and its causes on one line ("error sending request: … : connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let msg = cause.to_string();
        if !text.contains(&msg) {
            text.push_str(": ");
            text.push_str(&msg);
        }
        source = cause.source();
    }
    text
}

impl LocalProbe {
    fn client(request: &HttpRequest) -> Result<reqwest::Client, String> {
        // One client per attempt: the CA file and `insecure` differ per
        // check, and a fresh connection is what a health check should test.
        let mut builder = reqwest::Client::builder()
            .timeout(request.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .danger_accept_invalid_certs(request.insecure);
        if let Some(path) = &request.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("reading caFile {path}: {e}"))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("caFile {path}: {}", chain(&e)))?;
            builder = builder.add_root_certificate(cert);
        }
        builder.build().map_err(|e| chain(&e))
    }
}

impl Probe for LocalProbe {
    async fn http(&self, request: &HttpRequest) -> Result<HttpResponse, String> {
        let client = Self::client(request)?;
        let mut req = client.get(&request.url);
        for (name, value) in &request.headers {
            // A `Host` header given here replaces the one from the URL
            // (hyper only adds its own when none is set): name-based
            // virtual hosts can be checked by IP.
            req = req.header(name.as_str(), value.as_str());
        }
        // `without_url`: reqwest's errors quote the URL, which may carry
        // credentials; the check's own message names it, redacted.
        let mut response = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {}s", request.timeout.as_secs())
            } else {
                chain(&e.without_url())
            }
        })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(format!("reading the body: {}", chain(&e.without_url()))),
            }
        }
        body.truncate(MAX_BODY);
        Ok(HttpResponse {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    async fn tcp(&self, address: &Address, port: u16, timeout: Duration) -> Result<(), String> {
        let connect = tokio::net::TcpStream::connect((address.to_string(), port));
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {}s", timeout.as_secs())),
        }
    }

    async fn command(
        &self,
        command: &str,
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<CommandOutput, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not run sh: {e}"))?;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let work = async {
            let mut out = String::new();
            let mut err = String::new();
            let read_out = async {
                if let Some(s) = stdout.as_mut() {
                    let _ = s.read_to_string(&mut out).await;
                }
            };
            let read_err = async {
                if let Some(s) = stderr.as_mut() {
                    let _ = s.read_to_string(&mut err).await;
                }
            };
            tokio::join!(read_out, read_err);
            let status = child.wait().await;
            (out, err, status)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok((stdout, stderr, Ok(status))) => Ok(CommandOutput {
                exit_code: status.code(),
                stdout,
                stderr,
            }),
            Ok((_, _, Err(e))) => Err(format!("waiting for the command: {e}")),
            Err(_) => Err(format!(
                "the command did not finish within {}s",
                timeout.as_secs()
            )),
        }
    }
}
