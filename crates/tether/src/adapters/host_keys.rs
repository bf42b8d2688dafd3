//! Host keys from the system's OpenSSH tools, for `tether init` and `tether
//! hosts --check-keys`: `ssh-keygen -F` finds a host in the user's
//! known_hosts (hashed entries included, which is why tether does not read
//! the files itself), `ssh-keyscan` asks the host. Both are bounded in
//! time; the parsing is `tether_core::onboard::parse_key_lines`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tether_core::onboard::{parse_key_lines, KeyLine};
use tether_core::text::tail;

/// How long one `ssh-keyscan` may take in all (its own `-T` bounds each
/// connection step).
const SCAN_LIMIT: Duration = Duration::from_secs(20);
/// `ssh-keyscan -T`: seconds per connection step.
const SCAN_STEP_SECONDS: &str = "5";
/// Hosts looked up or scanned at once: a fleet of hundreds must not start
/// hundreds of `ssh-keyscan`s together.
pub const PARALLEL_LOOKUPS: usize = 16;
/// How long one `ssh-keygen -F` may take.
const FIND_LIMIT: Duration = Duration::from_secs(10);

/// The known_hosts files to consult: the ones given, else the user's and
/// the system's (those that exist), as ssh reads them by default.
pub fn known_hosts_files(given: &[PathBuf]) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut files = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        files.push(PathBuf::from(home).join(".ssh/known_hosts"));
    }
    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    files.into_iter().filter(|f| f.is_file()).collect()
}

/// The name known_hosts stores a host under: `ADDRESS`, or `[ADDRESS]:PORT`
/// off port 22.
pub fn known_hosts_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

async fn run_bounded(
    program: &str,
    args: &[&str],
    limit: Duration,
) -> Result<std::process::Output, String> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, child).await {
        Err(_) => Err(format!(
            "`{program} {}` took longer than {}s",
            args.join(" "),
            limit.as_secs()
        )),
        Ok(Err(e)) => Err(format!("could not run `{program}`: {e}")),
        Ok(Ok(out)) => Ok(out),
    }
}

/// The keys `file` holds for the host (`ssh-keygen -F NAME -f FILE`; exit 1
/// with no output means none).
pub async fn find_in_known_hosts(
    file: &std::path::Path,
    address: &str,
    port: u16,
) -> Result<Vec<KeyLine>, String> {
    let name = known_hosts_name(address, port);
    let file_text = file.to_string_lossy();
    let out = run_bounded("ssh-keygen", &["-F", &name, "-f", &file_text], FIND_LIMIT).await?;
    match out.status.code() {
        Some(0) => Ok(parse_key_lines(&String::from_utf8_lossy(&out.stdout))),
        Some(1) if out.stdout.is_empty() => Ok(Vec::new()),
        _ => Err(format!(
            "`ssh-keygen -F {name} -f {file_text}` failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 3)
        )),
    }
}

/// The keys whatever answers at `address:port` offers (`ssh-keyscan`).
/// Unverified by nature: anything in the path can answer.
pub async fn scan(address: &str, port: u16) -> Result<Vec<KeyLine>, String> {
    let port_text = port.to_string();
    let out = run_bounded(
        "ssh-keyscan",
        &[
            "-T",
            SCAN_STEP_SECONDS,
            "-p",
            &port_text,
            "-t",
            "ed25519,ecdsa,rsa",
            address,
        ],
        SCAN_LIMIT,
    )
    .await?;
    let lines = parse_key_lines(&String::from_utf8_lossy(&out.stdout));
    if lines.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = tail(
            &stderr
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
            2,
        );
        return Err(if why.is_empty() {
            format!("no host key answered at {address}:{port}")
        } else {
            format!("no host key answered at {address}:{port}: {why}")
        });
    }
    Ok(lines)
}

/// Every known_hosts file's entries for the host, labelled by file; files
/// that cannot be searched are skipped with a warning.
pub async fn known_hosts_entries(
    files: &[PathBuf],
    address: &str,
    port: u16,
) -> Vec<(String, Vec<KeyLine>)> {
    let mut found = Vec::new();
    for file in files {
        match find_in_known_hosts(file, address, port).await {
            Ok(lines) if !lines.is_empty() => found.push((file.display().to_string(), lines)),
            Ok(_) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
    found
}
