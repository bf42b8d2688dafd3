//! Names and addresses: a value of one of these types has been checked
//! once, when it was parsed, and is trusted everywhere after.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::Serialize;

use super::error::ValueError;

/// `[A-Za-z0-9][A-Za-z0-9._-]*`: safe on a command line, in a file name and
/// in a selector (no glob characters, no `@`, no `,`).
fn is_simple_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The name of a host: the attribute name under `tether.hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HostName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if is_simple_name(s) {
            Ok(HostName(s.to_owned()))
        } else {
            Err(ValueError::InvalidHostName(s.to_owned()))
        }
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for HostName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A host tag, selected with `@tag`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        if is_simple_name(s) {
            Ok(Tag(s.to_owned()))
        } else {
            Err(ValueError::InvalidTag(s.to_owned()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pinned `/etc/machine-id`: 32 lowercase hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct MachineId(String);

impl MachineId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MachineId {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        // machine-id(5): uppercase is not allowed, and all zeros means "unset".
        let hex = s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if hex && s.bytes().any(|b| b != b'0') {
            Ok(MachineId(s.to_owned()))
        } else {
            Err(ValueError::InvalidMachineId(s.to_owned()))
        }
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a host is reached: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// Lowercased, without a trailing dot, so duplicates compare equal.
    Dns(String),
}

impl Address {
    /// The host part for `ssh` and `ssh-ng://` URLs (IPv6 in brackets).
    pub fn for_url(&self) -> String {
        match self {
            Address::Ipv6(ip) => format!("[{ip}]"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ipv4(ip) => write!(f, "{ip}"),
            Address::Ipv6(ip) => write!(f, "{ip}"),
            Address::Dns(name) => f.write_str(name),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Address {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid = |reason| ValueError::InvalidAddress {
            value: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(Address::Ipv4(ip));
        }
        if let Ok(ip) = s.parse::<Ipv6Addr>() {
            return Ok(Address::Ipv6(ip));
        }
        if s.starts_with('[') {
            return Err(invalid("write IPv6 addresses without brackets"));
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        if name.len() > 253 {
            return Err(invalid("a DNS name is at most 253 characters"));
        }
        let labels: Vec<&str> = name.split('.').collect();
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(invalid(
                    "not an IPv4 address, an IPv6 address or a DNS name (labels of letters, digits and inner '-')",
                ));
            }
        }
        // RFC 3696: a top-level label is never all-numeric, so `10.0.0` or
        // `10.0.0.256` is a mistyped IPv4 address, not a name.
        if labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid("not a valid IPv4 address"));
        }
        Ok(Address::Dns(name.to_ascii_lowercase()))
    }
}

/// The user tether logs in as over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SshUser(String);

impl SshUser {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SshUser {
    fn default() -> Self {
        SshUser("root".to_owned())
    }
}

impl FromStr for SshUser {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let invalid = |reason| ValueError::InvalidUser {
            value: s.to_owned(),
            reason,
        };
        // A leading '-' would be read by ssh as an option; '@' and ':' would
        // change the meaning of `user@host` and `ssh-ng://user@host`.
        let mut chars = s.chars();
        match chars.next() {
            None => Err(invalid("empty")),
            Some(c) if !(c.is_ascii_alphanumeric() || c == '_') => {
                Err(invalid("must start with a letter, digit or '_'"))
            }
            _ if !s
                .trim_end_matches('$')
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
            {
                Err(invalid("use letters, digits, '.', '_' and '-'"))
            }
            _ => Ok(SshUser(s.to_owned())),
        }
    }
}

impl fmt::Display for SshUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SSH port, 1..=65535 (default 22).
pub const DEFAULT_SSH_PORT: u16 = 22;

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn host_names_follow_the_simple_name_rule() {
        for ok in ["web1", "a", "db-2.eu", "X_y", "1host"] {
            assert!(ok.parse::<HostName>().is_ok(), "{ok}");
        }
        for bad in ["", "-web", ".x", "web*", "a b", "@t", "a,b", "ü"] {
            assert_eq!(
                bad.parse::<HostName>(),
                Err(ValueError::InvalidHostName(bad.into()))
            );
        }
    }

    #[test]
    fn tags_reject_selector_characters() {
        assert!("eu-west.1".parse::<Tag>().is_ok());
        for bad in ["", "@web", "a,b", "we b", "w*"] {
            assert_eq!(bad.parse::<Tag>(), Err(ValueError::InvalidTag(bad.into())));
        }
    }

    #[test]
    fn machine_ids_are_32_lowercase_hex() {
        assert!("0123456789abcdef0123456789abcdef"
            .parse::<MachineId>()
            .is_ok());
        for bad in [
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "00000000000000000000000000000000",
            "",
        ] {
            assert!(bad.parse::<MachineId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_accept_ipv4_ipv6_and_dns() {
        assert_eq!(
            "10.231.1.11".parse::<Address>(),
            Ok(Address::Ipv4(Ipv4Addr::new(10, 231, 1, 11)))
        );
        assert!(matches!("fd00::1".parse::<Address>(), Ok(Address::Ipv6(_))));
        assert_eq!(
            "Web1.Example.com.".parse::<Address>(),
            Ok(Address::Dns("web1.example.com".into()))
        );
        assert_eq!(
            "fd00::1".parse::<Address>().map(|a| a.for_url()),
            Ok("[fd00::1]".into())
        );
    }

    #[test]
    fn addresses_reject_garbage() {
        for bad in [
            "",
            "10.0.0.256",
            "10.0.0",
            "-x.com",
            "a..b",
            "[fd00::1]",
            "a b",
            "x_y.com",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_users_cannot_look_like_options() {
        assert!("root".parse::<SshUser>().is_ok());
        assert!("deploy_user-1".parse::<SshUser>().is_ok());
        for bad in ["", "-oProxyCommand=x", "a@b", "a b", "a:b"] {
            assert!(bad.parse::<SshUser>().is_err(), "{bad}");
        }
    }
}
