//! Settings that may be given in `defaults` and in each host, and the one
//! rule that merges them.
//!
//! Merge rule (documented in docs/inventory.md):
//! - a single value (`sshUser`, `sshPort`): the host's value wins;
//! - a list (`tags`): the defaults' entries, then the host's, without repeats;
//! - an attribute set (e.g. a future `timeouts`): merged key by key with
//!   these same rules, the host winning per key.
//!
//! A new setting is added here: a field on [`Settings`], a line in
//! [`Settings::read`] and [`Settings::merge`], and its name in
//! [`Settings::FIELDS`]; both `defaults` and hosts then accept it.

use super::fields::Fields;
use super::types::{SshUser, Tag};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub ssh_user: Option<SshUser>,
    pub ssh_port: Option<u16>,
    pub tags: Vec<Tag>,
}

impl Settings {
    /// The field names shared by `defaults` and hosts.
    pub const FIELDS: &'static [&'static str] = &["sshUser", "sshPort", "tags"];

    pub(crate) fn read(fields: &mut Fields<'_>) -> Settings {
        Settings {
            ssh_user: fields.parse("sshUser"),
            ssh_port: fields.port("sshPort"),
            tags: fields.tags("tags").unwrap_or_default(),
        }
    }

    /// Applies the merge rule: `host` on top of `defaults`.
    pub fn merge(defaults: &Settings, host: Settings) -> Settings {
        let mut tags = defaults.tags.clone();
        for tag in host.tags {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        Settings {
            ssh_user: host.ssh_user.or_else(|| defaults.ssh_user.clone()),
            ssh_port: host.ssh_port.or(defaults.ssh_port),
            tags,
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<Tag> {
        names.iter().map(|n| n.parse().expect("tag")).collect()
    }

    #[test]
    fn host_values_override_defaults_and_tags_add_up() {
        let defaults = Settings {
            ssh_user: Some("deploy".parse().expect("user")),
            ssh_port: Some(2222),
            tags: tags(&["all", "eu"]),
        };
        let host = Settings {
            ssh_user: None,
            ssh_port: Some(22),
            tags: tags(&["eu", "web"]),
        };
        let merged = Settings::merge(&defaults, host);
        assert_eq!(merged.ssh_user, Some("deploy".parse().expect("user")));
        assert_eq!(merged.ssh_port, Some(22));
        assert_eq!(merged.tags, tags(&["all", "eu", "web"]));
    }
}
