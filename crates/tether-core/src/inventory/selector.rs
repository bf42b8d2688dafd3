//! Host selection (`--on`): comma-separated host names, globs and `@tag`s.
//!
//! The selection is the union of what the terms match, in inventory (name)
//! order. A term that matches nothing is an error, never silently ignored:
//! a typo in `--on` must not turn into "deployed to fewer hosts than meant".

use std::fmt;
use std::str::FromStr;

use super::error::suggest;
use super::{Host, HostName, Inventory, Tag};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Name(HostName),
    Glob(glob::Pattern),
    Tag(Tag),
}

impl Term {
    fn matches(&self, host: &Host) -> bool {
        match self {
            Term::Name(name) => host.name == *name,
            Term::Glob(pattern) => pattern.matches(host.name.as_str()),
            Term::Tag(tag) => host.has_tag(tag),
        }
    }
}

/// A parsed `--on` selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    terms: Vec<Term>,
}

/// A term that selected nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmatched {
    UnknownHost {
        name: String,
        suggestion: Option<String>,
    },
    UnknownTag {
        tag: String,
    },
    NoMatch {
        pattern: String,
    },
}

impl fmt::Display for Unmatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmatched::UnknownHost { name, suggestion } => {
                write!(f, "unknown host {name:?}")?;
                if let Some(s) = suggestion {
                    write!(f, " (did you mean {s:?}?)")?;
                }
                Ok(())
            }
            Unmatched::UnknownTag { tag } => write!(f, "unknown tag \"@{tag}\""),
            Unmatched::NoMatch { pattern } => write!(f, "no host matches {pattern:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("selector {0:?} has an empty term")]
    EmptyTerm(String),
    #[error("selector term {term:?}: {reason}")]
    InvalidTerm { term: String, reason: String },
    #[error("{}", join_unmatched(.0))]
    Unmatched(Vec<Unmatched>),
    #[error("no hosts selected: the inventory has no hosts")]
    Empty,
}

fn join_unmatched(list: &[Unmatched]) -> String {
    let parts: Vec<String> = list.iter().map(ToString::to_string).collect();
    format!("selector: {}", parts.join("; "))
}

impl Selector {
    /// Whether one host is selected.
    pub fn matches_host(&self, host: &Host) -> bool {
        self.terms.iter().any(|t| t.matches(host))
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for raw in s.split(',') {
            let term = raw.trim();
            if term.is_empty() {
                return Err(SelectorError::EmptyTerm(s.to_owned()));
            }
            let invalid = |reason: String| SelectorError::InvalidTerm {
                term: term.to_owned(),
                reason,
            };
            if let Some(tag) = term.strip_prefix('@') {
                let tag = tag.parse::<Tag>().map_err(|p| invalid(p.to_string()))?;
                terms.push(Term::Tag(tag));
            } else if term.contains(['*', '?', '[']) {
                let pattern = glob::Pattern::new(term).map_err(|e| invalid(e.to_string()))?;
                terms.push(Term::Glob(pattern));
            } else {
                let name = term
                    .parse::<HostName>()
                    .map_err(|p| invalid(p.to_string()))?;
                terms.push(Term::Name(name));
            }
        }
        Ok(Selector { terms })
    }
}

impl Selector {
    /// The hosts this selector picks, in inventory order; an error when a
    /// term matches nothing or the result is empty.
    pub fn select<'i>(&self, inventory: &'i Inventory) -> Result<Vec<&'i Host>, SelectorError> {
        let hosts = inventory.hosts();
        let unmatched: Vec<Unmatched> = self
            .terms
            .iter()
            .filter(|term| !hosts.iter().any(|h| term.matches(h)))
            .map(|term| match term {
                Term::Name(name) => Unmatched::UnknownHost {
                    name: name.to_string(),
                    suggestion: suggest(name.as_str(), hosts.iter().map(|h| h.name.as_str())),
                },
                Term::Tag(tag) => Unmatched::UnknownTag {
                    tag: tag.to_string(),
                },
                Term::Glob(pattern) => Unmatched::NoMatch {
                    pattern: pattern.as_str().to_owned(),
                },
            })
            .collect();
        if !unmatched.is_empty() {
            return Err(SelectorError::Unmatched(unmatched));
        }
        let selected: Vec<&Host> = hosts
            .iter()
            .filter(|h| self.terms.iter().any(|t| t.matches(h)))
            .collect();
        if selected.is_empty() {
            return Err(SelectorError::Empty);
        }
        Ok(selected)
    }
}

/// Selects with `selector`, or every host when there is none; empty is an error.
pub fn select<'i>(
    inventory: &'i Inventory,
    selector: Option<&Selector>,
) -> Result<Vec<&'i Host>, SelectorError> {
    match selector {
        Some(selector) => selector.select(inventory),
        None if inventory.hosts().is_empty() => Err(SelectorError::Empty),
        None => Ok(inventory.hosts().iter().collect()),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use crate::inventory::host_key::tests::ed25519;
    use crate::inventory::{Configuration, SshUser};

    fn host(name: &str, tags: &[&str]) -> Host {
        Host {
            name: name.parse().expect("name"),
            address: "10.0.0.1".parse().expect("address"),
            ssh_user: SshUser::default(),
            ssh_port: 22,
            host_key: ed25519(1).parse().expect("key"),
            machine_id: None,
            tags: tags.iter().map(|t| t.parse().expect("tag")).collect(),
            configuration: Configuration::Named(name.to_owned()),
            ssh_options: Vec::new(),
            timeouts: Default::default(),
            checks: Default::default(),
        }
    }

    fn fleet() -> Inventory {
        Inventory::new(vec![
            host("web2", &["web", "eu"]),
            host("web1", &["web", "us"]),
            host("db1", &["db", "eu"]),
            host("host1", &[]),
            host("host2", &[]),
            host("host3", &[]),
        ])
    }

    fn names(selector: &str) -> Result<Vec<String>, SelectorError> {
        let inv = fleet();
        let sel: Selector = selector.parse()?;
        Ok(sel
            .select(&inv)?
            .iter()
            .map(|h| h.name.to_string())
            .collect())
    }

    #[test]
    fn names_globs_and_tags_union_in_inventory_order() {
        assert_eq!(names("web2,db1").expect("ok"), ["db1", "web2"]);
        assert_eq!(names("web*").expect("ok"), ["web1", "web2"]);
        assert_eq!(names("host[12]").expect("ok"), ["host1", "host2"]);
        assert_eq!(names("host?").expect("ok"), ["host1", "host2", "host3"]);
        assert_eq!(names("@eu").expect("ok"), ["db1", "web2"]);
        assert_eq!(
            names("@eu, web*,web1").expect("ok"),
            ["db1", "web1", "web2"]
        );
    }

    #[test]
    fn every_unmatched_term_is_named() {
        assert_eq!(
            names("web1,@nope,wbe2,x*"),
            Err(SelectorError::Unmatched(vec![
                Unmatched::UnknownTag { tag: "nope".into() },
                Unmatched::UnknownHost {
                    name: "wbe2".into(),
                    suggestion: Some("web2".into())
                },
                Unmatched::NoMatch {
                    pattern: "x*".into()
                },
            ]))
        );
        let msg = names("@nope").expect_err("unknown tag").to_string();
        assert_eq!(msg, "selector: unknown tag \"@nope\"");
    }

    #[test]
    fn malformed_selectors_are_rejected() {
        assert!(matches!(names(""), Err(SelectorError::EmptyTerm(_))));
        assert!(matches!(
            names("web1,,web2"),
            Err(SelectorError::EmptyTerm(_))
        ));
        assert!(matches!(names("@"), Err(SelectorError::InvalidTerm { .. })));
        assert!(matches!(
            names("web[1"),
            Err(SelectorError::InvalidTerm { .. })
        ));
        assert!(matches!(
            names("a b"),
            Err(SelectorError::InvalidTerm { .. })
        ));
    }

    #[test]
    fn no_selector_means_every_host_and_empty_inventory_is_an_error() {
        let inv = fleet();
        assert_eq!(select(&inv, None).expect("all").len(), 6);
        assert_eq!(
            select(&Inventory::default(), None),
            Err(SelectorError::Empty)
        );
    }
}
