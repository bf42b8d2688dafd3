//! Which hosts of the inventory a selector picks: the union of what its
//! terms match, in inventory (name) order. A term that matches nothing is an
//! error, never silently ignored: a typo in `--on` must not turn into
//! "deployed to fewer hosts than meant".

use super::{Host, Inventory};
use crate::model::{Selector, SelectorError, Term, Unmatched};
use crate::text::suggest;

impl Selector {
    /// Whether one host is selected.
    pub fn matches_host(&self, host: &Host) -> bool {
        self.matches(&host.name, &host.tags)
    }

    /// The hosts this selector picks, in inventory order; an error when a
    /// term matches nothing or the result is empty.
    pub fn select<'i>(&self, inventory: &'i Inventory) -> Result<Vec<&'i Host>, SelectorError> {
        let hosts = inventory.hosts();
        let unmatched: Vec<Unmatched> = self
            .terms()
            .iter()
            .filter(|term| !hosts.iter().any(|h| term.matches(&h.name, &h.tags)))
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
        let selected: Vec<&Host> = hosts.iter().filter(|h| self.matches_host(h)).collect();
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
    use crate::inventory::Configuration;
    use crate::model::host_key::tests::ed25519;
    use crate::model::SshUser;

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
            trial: Default::default(),
            checks: Default::default(),
            state: Default::default(),
            rehearsal: Default::default(),
            sudo: crate::model::SudoMode::None,
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
