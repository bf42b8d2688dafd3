//! The wire format every script's stdout uses: `key=value` lines (a key
//! may repeat), other lines ignored (login banners, MOTD, activation
//! output that strayed onto stdout).

use std::collections::BTreeMap;

/// What a script printed that tether cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected output from the target ({0})")]
pub struct ParseError(pub String);

/// The `key=value` lines of one script's stdout, by key, in order.
pub(crate) type Fields = BTreeMap<String, Vec<String>>;

/// Parses `key=value` lines whose key is `[a-z_]+`; other lines are ignored.
pub(crate) fn parse_fields(stdout: &str) -> Fields {
    let mut map: Fields = BTreeMap::new();
    for line in stdout.lines() {
        if let Some((k, v)) = protocol_line(line) {
            map.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    map
}

/// A line's key and value, when it is a protocol line.
pub(crate) fn protocol_line(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once('=')?;
    (!k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then_some((k, v))
}

/// The first non-empty value of `key`.
pub(crate) fn first<'a>(f: &'a Fields, key: &str) -> Option<&'a str> {
    f.get(key)
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// Every value of `key`.
pub(crate) fn all(f: &Fields, key: &str) -> Vec<String> {
    f.get(key).cloned().unwrap_or_default()
}

/// Fails unless the script printed `key=done`: a script cut short (lost
/// session, killed) must never read as an answer.
pub(crate) fn finished(f: &Fields, key: &str, what: &str) -> Result<(), ParseError> {
    if first(f, key) == Some("done") {
        Ok(())
    } else {
        Err(ParseError(format!("{what} did not finish")))
    }
}

/// `system-42-link` → 42.
pub fn generation_number(link: &str) -> Option<u32> {
    link.strip_prefix("system-")?
        .strip_suffix("-link")?
        .parse()
        .ok()
}
