//! What a host's `state` declaration names: btrfs subvolumes by path, ZFS
//! datasets by name, and systemd units. Each is validated once, here, so
//! that scripts can carry lists of them as space-separated words (none
//! holds whitespace) and still quote every value.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::error::ValueError;

/// The directory beside a subvolume where tether keeps its snapshots of it:
/// `<parent>/.tether-snapshots/<name>/` (same filesystem, so snapshots and
/// the swap of a restore are cheap renames).
pub const BTRFS_SNAPSHOT_DIR: &str = ".tether-snapshots";
/// The dataset under each pool where ZFS failed states are kept.
pub const ZFS_FAILED_DATASET: &str = "tether-failed";

/// An absolute path of a btrfs subvolume, normalised (no trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StatePath(String);

impl StatePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for StatePath {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = |reason| ValueError::InvalidStatePath {
            value: s.to_owned(),
            reason,
        };
        let trimmed = s.strip_suffix('/').unwrap_or(s);
        if !trimmed.starts_with('/') {
            return Err(bad("it must be an absolute path"));
        }
        if trimmed.is_empty() {
            return Err(bad("the root directory cannot be a state subvolume"));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it must not contain whitespace or control characters"));
        }
        // A shell would expand them as patterns, a unit file would need
        // them escaped: not in a path tether names on the host.
        if trimmed
            .chars()
            .any(|c| matches!(c, '*' | '?' | '[' | ']' | '$' | '`' | '"' | '\'' | '\\'))
        {
            return Err(bad("it must not contain * ? [ ] $ ` \" ' or \\"));
        }
        for part in trimmed[1..].split('/') {
            match part {
                "" => return Err(bad("it has an empty component ('//')")),
                "." | ".." => return Err(bad("it must not contain '.' or '..' components")),
                BTRFS_SNAPSHOT_DIR => {
                    return Err(bad("it lies in tether's own snapshot directory"))
                }
                _ => {}
            }
        }
        if trimmed == "/nix" || trimmed.starts_with("/nix/") {
            return Err(bad("the Nix store is not state"));
        }
        Ok(StatePath(trimmed.to_owned()))
    }
}

impl fmt::Display for StatePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A ZFS dataset below a pool's root: `pool/a/b`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Dataset(String);

impl Dataset {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn pool(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl FromStr for Dataset {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = |reason| ValueError::InvalidDataset {
            value: s.to_owned(),
            reason,
        };
        if s.contains('@') || s.contains('#') {
            return Err(bad("name a dataset, not a snapshot or bookmark"));
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("it has an empty component"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.');
        if !parts.iter().all(|p| p.chars().all(allowed)) {
            return Err(bad(
                "use letters, digits, '_', '-', ':' and '.' between the '/'s",
            ));
        }
        if !parts[0].starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(bad("a pool name starts with a letter"));
        }
        if parts.len() < 2 {
            return Err(bad(
                "a pool's root dataset cannot be declared (tether keeps failed states in POOL/tether-failed); declare the datasets below it",
            ));
        }
        if parts[1] == ZFS_FAILED_DATASET {
            return Err(bad("POOL/tether-failed is tether's own"));
        }
        Ok(Dataset(s.to_owned()))
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A systemd unit name with its type suffix (`postgresql.service`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UnitName(String);

impl UnitName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The unit types that run something writing state. Stopping a slice,
/// target or mount before a restore could stop the guard doing it.
const UNIT_SUFFIXES: &[&str] = &[".service", ".socket", ".timer", ".path"];

impl FromStr for UnitName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '\\' | '@' | '-');
        let stem = UNIT_SUFFIXES
            .iter()
            .find_map(|suffix| s.strip_suffix(suffix));
        match stem {
            Some(stem) if !stem.is_empty() && s.len() <= 255 && s.chars().all(allowed) => {
                Ok(UnitName(s.to_owned()))
            }
            _ => Err(ValueError::InvalidUnitName(s.to_owned())),
        }
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn state_paths_are_absolute_normalised_and_outside_the_store() {
        assert_eq!(
            "/var/lib/db/".parse::<StatePath>().unwrap().as_str(),
            "/var/lib/db"
        );
        for bad in [
            "var/lib",
            "/",
            "/a//b",
            "/a/../b",
            "/a b",
            "/nix/store/x",
            "/a/.tether-snapshots/b",
        ] {
            assert!(bad.parse::<StatePath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn datasets_are_below_a_pool_and_never_snapshots() {
        assert_eq!(
            "rpool/safe/persist".parse::<Dataset>().unwrap().pool(),
            "rpool"
        );
        for bad in [
            "rpool",
            "rpool/x@snap",
            "1pool/x",
            "rpool//x",
            "rpool/a b",
            "rpool/tether-failed/x",
        ] {
            assert!(bad.parse::<Dataset>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unit_names_need_a_type_suffix() {
        assert!("postgresql.service".parse::<UnitName>().is_ok());
        assert!("getty@tty1.service".parse::<UnitName>().is_ok());
        for bad in ["postgresql", ".service", "a b.service", "x;rm.service"] {
            assert!(bad.parse::<UnitName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_a_shell_would_expand_and_units_that_are_not_services_are_refused() {
        for bad in [
            "/srv/db*",
            "/srv/$HOME",
            "/srv/`x`",
            "/srv/a'b",
            "/srv/db[1]",
        ] {
            assert!(bad.parse::<StatePath>().is_err(), "{bad}");
        }
        for bad in ["system.slice", "multi-user.target", "srv.mount"] {
            assert!(bad.parse::<UnitName>().is_err(), "{bad}");
        }
        assert!("postgresql.socket".parse::<UnitName>().is_ok());
    }
}
