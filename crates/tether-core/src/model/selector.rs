//! Host selectors (`--on`, canaries): comma-separated host names, globs and
//! `@tag`s, parsed once. Which hosts of an inventory a selector picks is
//! the inventory's business ([`crate::inventory::select`]).

use std::fmt;
use std::str::FromStr;

use super::{HostName, Tag};

/// One comma-separated part of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    Name(HostName),
    Glob(glob::Pattern),
    Tag(Tag),
}

impl Term {
    /// Whether a host with this name and these tags matches.
    pub fn matches(&self, name: &HostName, tags: &[Tag]) -> bool {
        match self {
            Term::Name(n) => name == n,
            Term::Glob(pattern) => pattern.matches(name.as_str()),
            Term::Tag(tag) => tags.contains(tag),
        }
    }
}

/// A parsed `--on` selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    terms: Vec<Term>,
}

impl Selector {
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// Whether a host with this name and these tags is selected.
    pub fn matches(&self, name: &HostName, tags: &[Tag]) -> bool {
        self.terms.iter().any(|t| t.matches(name, tags))
    }
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
