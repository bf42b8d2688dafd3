//! Reading `checks = { <name> = { type = …; … }; }` into the health-check
//! model of [`crate::checks`], every problem named `checks.<name>.<field>`.
//!
//! Everything that could fail at check time because of a typo (a URL that
//! does not parse, a regex that does not compile, a port out of range) is
//! rejected here, so a deploy never starts with a check that cannot pass.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::error::Problem;
use super::fields::{describe, Fields};
use crate::model::Address;
use crate::spec::{
    Check, CheckKind, CommandCheck, CommandOn, HttpCheck, TcpCheck, DEFAULT_ATTEMPT_TIMEOUT,
};
use crate::text::suggest;

const HTTP_FIELDS: &[&str] = &[
    "type",
    "url",
    "port",
    "path",
    "status",
    "body",
    "bodyRegex",
    "headers",
    "caFile",
    "insecure",
    "timeout",
];
const TCP_FIELDS: &[&str] = &["type", "port", "address", "timeout"];
const COMMAND_FIELDS: &[&str] = &["type", "on", "command", "timeout"];
const UNITS_FIELDS: &[&str] = &["type", "units", "timeout"];
const ANY_FIELDS: &[&str] = &["type"];

/// `null` for a name removes the check of that name from `defaults`.
pub(crate) type CheckMap = BTreeMap<String, Option<Check>>;

pub(crate) fn read_checks(fields: &mut Fields<'_>, name: &str) -> Option<CheckMap> {
    let value = fields.take(name)?;
    let Value::Object(map) = value else {
        fields.wrong_type(name, "an attribute set of checks", &value);
        return None;
    };
    let mut checks = CheckMap::new();
    for (check_name, value) in map {
        let field = format!("{name}.{check_name}");
        if !is_check_name(&check_name) {
            fields.error(
                &field,
                Problem::InvalidValue(
                    check_name.clone(),
                    "check names use letters, digits, '.', '_' and '-'",
                ),
            );
            continue;
        }
        if value.is_null() {
            checks.insert(check_name, None);
            continue;
        }
        if let Some(check) = read_check(fields, &field, &check_name, value) {
            checks.insert(check_name, Some(check));
        }
    }
    Some(checks)
}

fn is_check_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn read_check(fields: &mut Fields<'_>, field: &str, name: &str, value: Value) -> Option<Check> {
    // The type decides which fields are known, so look at it first.
    let kind = match value.get("type") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Null) | None => None,
        Some(other) => {
            let found = describe(other);
            fields.error(
                &format!("{field}.type"),
                Problem::WrongType {
                    expected: "a string",
                    found,
                },
            );
            return None;
        }
    };
    let known = match kind.as_deref() {
        Some("http") => HTTP_FIELDS,
        Some("tcp") => TCP_FIELDS,
        Some("command") => COMMAND_FIELDS,
        Some("units") => UNITS_FIELDS,
        _ => ANY_FIELDS,
    };
    let mut f = fields.nested(field, value, known)?;
    let result = match kind.as_deref() {
        None => {
            f.error("type", Problem::Missing);
            return None;
        }
        Some("http") => read_http(&mut f).map(CheckKind::Http),
        Some("tcp") => read_tcp(&mut f).map(CheckKind::Tcp),
        Some("command") => read_command(&mut f).map(CheckKind::Command),
        Some("units") => read_units(&mut f).map(CheckKind::Units),
        Some(other) => {
            let suggestion = suggest(other, CheckKind::TYPES.iter().copied());
            f.error(
                "type",
                Problem::UnknownCheckType {
                    found: other.to_string(),
                    suggestion,
                },
            );
            // The other fields cannot be judged without a type.
            return None;
        }
    };
    let timeout = f
        .seconds("timeout", 1, 3_600)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT);
    f.take("type");
    f.finish();
    Some(Check {
        name: name.to_string(),
        kind: result?,
        timeout,
    })
}

fn read_http(f: &mut Fields<'_>) -> Option<HttpCheck> {
    let mut ok = true;
    let url = f.string("url");
    if let Some(u) = &url {
        if let Err(reason) = validate_url(u) {
            f.error(
                "url",
                Problem::InvalidUrl {
                    value: u.clone(),
                    reason,
                },
            );
            ok = false;
        }
    }
    let port = f.has("port").then(|| f.port("port"));
    if port == Some(None) {
        ok = false;
    }
    let path = f.string("path");
    if let Some(p) = &path {
        if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            f.error(
                "path",
                Problem::InvalidValue(p.clone(), "a path starts with '/' and has no whitespace"),
            );
            ok = false;
        }
    }
    if url.is_some() && (port.is_some() || path.is_some()) {
        let which = if port.is_some() { "port" } else { "path" };
        f.error(
            which,
            Problem::InvalidValue(
                which.to_string(),
                "give either `url` or the `port`/`path` shorthand, not both",
            ),
        );
        ok = false;
    }
    let status = read_status(f, &mut ok);
    let body = f.string("body");
    let body_regex = f.string("bodyRegex");
    if let Some(r) = &body_regex {
        if let Err(e) = regex::Regex::new(r) {
            f.error(
                "bodyRegex",
                Problem::InvalidRegex {
                    value: r.clone(),
                    reason: e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string(),
                },
            );
            ok = false;
        }
    }
    let headers = read_headers(f, &mut ok);
    let ca_file = f.string("caFile");
    let insecure = f.bool("insecure").unwrap_or(false);
    ok.then(|| HttpCheck {
        url,
        port: port.flatten(),
        path,
        status,
        body,
        body_regex,
        headers,
        ca_file,
        insecure,
    })
}

/// http(s) only, with a host, parsed the way the HTTP client will parse it.
fn validate_url(u: &str) -> Result<(), String> {
    let parsed = url::Url::parse(u).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, not {:?}",
            parsed.scheme()
        ));
    }
    if !matches!(parsed.host_str(), Some(h) if !h.is_empty()) {
        return Err("it has no host".into());
    }
    Ok(())
}

fn read_status(f: &mut Fields<'_>, ok: &mut bool) -> Vec<u16> {
    let Some(value) = f.take("status") else {
        return Vec::new();
    };
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    let mut codes = Vec::new();
    for item in items {
        match item.as_u64() {
            Some(c @ 100..=599) => codes.push(c as u16),
            _ => {
                f.error("status", Problem::InvalidStatus(describe(&item)));
                *ok = false;
            }
        }
    }
    codes
}

fn read_headers(f: &mut Fields<'_>, ok: &mut bool) -> Vec<(String, String)> {
    let Some(value) = f.take("headers") else {
        return Vec::new();
    };
    let Value::Object(map) = value else {
        f.wrong_type("headers", "an attribute set of strings", &value);
        *ok = false;
        return Vec::new();
    };
    let mut headers = Vec::new();
    for (name, v) in map {
        let field = format!("headers.{name}");
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            f.error(
                &field,
                Problem::InvalidValue(name.clone(), "not a valid HTTP header name"),
            );
            *ok = false;
            continue;
        }
        match v {
            // What an HTTP client sends as is: visible ASCII and tabs. A
            // control character would fail every attempt mid-deploy.
            Value::String(s) if s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) => {
                headers.push((name, s))
            }
            Value::String(s) => {
                f.error(
                    &field,
                    Problem::InvalidValue(
                        s,
                        "header values must be visible ASCII: no line breaks or other control characters",
                    ),
                );
                *ok = false;
            }
            other => {
                f.wrong_type(&field, "a string", &other);
                *ok = false;
            }
        }
    }
    headers
}

fn read_tcp(f: &mut Fields<'_>) -> Option<TcpCheck> {
    let has_port = f.has("port");
    let port = f.port("port");
    if !has_port {
        f.error("port", Problem::Missing);
    }
    let address = f.parse::<Address, _>("address");
    Some(TcpCheck {
        port: port?,
        address,
    })
}

fn read_command(f: &mut Fields<'_>) -> Option<CommandCheck> {
    let on = match f.string("on").as_deref() {
        Some("deployer") => Some(CommandOn::Deployer),
        Some("target") => Some(CommandOn::Target),
        Some(other) => {
            f.error(
                "on",
                Problem::InvalidChoice {
                    value: other.to_string(),
                    expected: "\"deployer\", \"target\"",
                },
            );
            None
        }
        None => {
            f.error("on", Problem::Missing);
            None
        }
    };
    let command = match f.string("command") {
        Some(c) if c.trim().is_empty() => {
            f.error("command", Problem::Empty);
            None
        }
        Some(c) => Some(c),
        None => {
            f.error("command", Problem::Missing);
            None
        }
    };
    Some(CommandCheck {
        on: on?,
        command: command?,
    })
}

fn read_units(f: &mut Fields<'_>) -> Option<Vec<String>> {
    let Some(value) = f.take("units") else {
        f.error("units", Problem::Missing);
        return None;
    };
    let Value::Array(items) = value else {
        f.wrong_type("units", "a list of unit names", &value);
        return None;
    };
    if items.is_empty() {
        f.error("units", Problem::Empty);
        return None;
    }
    let mut units = Vec::new();
    let mut ok = true;
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("units[{i}]");
        match item {
            Value::String(s) if is_unit_name(&s) => units.push(s),
            Value::String(s) if s.contains(['*', '?', '[']) => {
                f.error(
                    &field,
                    Problem::InvalidValue(
                        s,
                        "globs are not allowed: name each unit (a glob's first match would be all that counts)",
                    ),
                );
                ok = false;
            }
            Value::String(s) => {
                f.error(
                    &field,
                    Problem::InvalidValue(
                        s,
                        "not a systemd unit name (name.service, name.socket, name@instance.service, …)",
                    ),
                );
                ok = false;
            }
            other => {
                f.wrong_type(&field, "a string", &other);
                ok = false;
            }
        }
    }
    ok.then_some(units)
}

/// The unit types systemd knows.
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];

/// `name.type` with systemd's unit name characters (letters, digits,
/// `:_.\@-`), not starting with `-`, and a known type.
fn is_unit_name(s: &str) -> bool {
    let Some((name, kind)) = s.rsplit_once('.') else {
        return false;
    };
    !name.is_empty()
        && !name.starts_with('-')
        && s.len() <= 255
        && UNIT_TYPES.contains(&kind)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.\\@-".contains(c))
}
