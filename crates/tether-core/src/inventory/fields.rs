//! Reading one attribute set of the inventory field by field, collecting
//! every problem instead of stopping at the first.
//!
//! serde's `deny_unknown_fields` stops at the first unknown field and cannot
//! name the host it belongs to, so fields are taken out of the JSON object by
//! name; whatever is left at the end is reported as unknown, with the
//! closest known field as a hint.

use std::str::FromStr;

use serde_json::{Map, Value};

use super::error::{InventoryErrors, Location, Problem};
use crate::model::Tag;
use crate::spec::TimeoutSettings;
use crate::text::suggest;

/// A short description of a JSON value's type for "expected X, found Y".
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        // eval-inventory.nix marks values JSON cannot carry as {"$nix": kind}.
        Value::Object(map) => match map.get("$nix").and_then(Value::as_str) {
            Some("lambda") => "a function".into(),
            Some(kind) => format!("a {kind}"),
            None => "an attribute set".into(),
        },
    }
}

pub(crate) struct Fields<'e> {
    location: Location,
    /// Prepended to field names in errors (`checks.web.`) for nested sets.
    prefix: String,
    map: Map<String, Value>,
    known: &'static [&'static str],
    errors: &'e mut InventoryErrors,
}

impl<'e> Fields<'e> {
    /// Starts reading `value`, which must be an attribute set; otherwise the
    /// problem is recorded against `field` and `None` returned.
    pub(crate) fn new(
        location: Location,
        field: Option<&str>,
        value: Value,
        known: &'static [&'static str],
        errors: &'e mut InventoryErrors,
    ) -> Option<Self> {
        match value {
            Value::Object(map) if !map.contains_key("$nix") => Some(Fields {
                location,
                prefix: String::new(),
                map,
                known,
                errors,
            }),
            other => {
                errors.push(
                    location,
                    field,
                    Problem::WrongType {
                        expected: "an attribute set",
                        found: describe(&other),
                    },
                );
                None
            }
        }
    }

    /// Starts reading the attribute set `value` found in field `field` of
    /// this one; its problems are reported as `field.inner`.
    pub(crate) fn nested(
        &mut self,
        field: &str,
        value: Value,
        known: &'static [&'static str],
    ) -> Option<Fields<'_>> {
        let full = format!("{}{field}", self.prefix);
        let mut inner = Fields::new(
            self.location.clone(),
            Some(&full),
            value,
            known,
            &mut *self.errors,
        )?;
        inner.prefix = format!("{full}.");
        Some(inner)
    }

    /// Whether the field is present and not `null`.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.map.get(name).is_some_and(|v| !v.is_null())
    }

    pub(crate) fn error(&mut self, field: &str, problem: Problem) {
        let field = format!("{}{field}", self.prefix);
        self.errors
            .push(self.location.clone(), Some(&field), problem);
    }

    /// Takes a field out; `null` counts as absent, so `machineId = null;`
    /// is the same as leaving it out.
    pub(crate) fn take(&mut self, name: &str) -> Option<Value> {
        match self.map.remove(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub(crate) fn string(&mut self, name: &str) -> Option<String> {
        match self.take(name)? {
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(name, "a string", &other);
                None
            }
        }
    }

    /// A string field parsed into a validated newtype.
    pub(crate) fn parse<T: FromStr<Err = E>, E: Into<Problem>>(&mut self, name: &str) -> Option<T> {
        let s = self.string(name)?;
        match s.parse() {
            Ok(v) => Some(v),
            Err(problem) => {
                self.error(name, problem.into());
                None
            }
        }
    }

    /// Like [`Fields::parse`], but a missing field is an error. Returns
    /// `None` when any problem was recorded.
    pub(crate) fn required<T: FromStr<Err = E>, E: Into<Problem>>(
        &mut self,
        name: &str,
    ) -> Option<T> {
        if !self.has(name) {
            self.error(name, Problem::Missing);
            return None;
        }
        self.parse(name)
    }

    pub(crate) fn port(&mut self, name: &str) -> Option<u16> {
        let value = self.take(name)?;
        let Value::Number(n) = &value else {
            self.wrong_type(name, "an integer", &value);
            return None;
        };
        match n.as_i64() {
            Some(i) => match u16::try_from(i) {
                Ok(port) if port != 0 => Some(port),
                _ => {
                    self.error(name, Problem::PortOutOfRange(i.to_string()));
                    None
                }
            },
            None => {
                self.wrong_type(name, "an integer", &value);
                None
            }
        }
    }

    /// A list of tags; every bad entry is reported as `name[i]`.
    pub(crate) fn tags(&mut self, name: &str) -> Option<Vec<Tag>> {
        let value = self.take(name)?;
        let Value::Array(items) = value else {
            self.wrong_type(name, "a list of strings", &value);
            return None;
        };
        let mut tags = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let field = format!("{name}[{i}]");
            match item {
                Value::String(s) => match s.parse::<Tag>() {
                    Ok(tag) => tags.push(tag),
                    Err(problem) => self.error(&field, problem.into()),
                },
                other => self.wrong_type(&field, "a string", &other),
            }
        }
        Some(tags)
    }

    /// A list of strings, each parsed into a validated value; every bad
    /// entry is reported as `name[i]`.
    pub(crate) fn parsed_list<T: FromStr<Err = E>, E: Into<Problem>>(
        &mut self,
        name: &str,
    ) -> Option<Vec<T>> {
        let value = self.take(name)?;
        let Value::Array(items) = value else {
            self.wrong_type(name, "a list of strings", &value);
            return None;
        };
        let mut values = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let field = format!("{name}[{i}]");
            match item {
                Value::String(s) => match s.parse::<T>() {
                    Ok(v) => values.push(v),
                    Err(problem) => self.error(&field, problem.into()),
                },
                other => self.wrong_type(&field, "a string", &other),
            }
        }
        Some(values)
    }

    /// A whole number within `min..=max`.
    pub(crate) fn count(&mut self, name: &str, min: u64, max: u64) -> Option<u64> {
        let value = self.take(name)?;
        match value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.error(name, Problem::CountOutOfRange { n, min, max });
                None
            }
            None => {
                self.wrong_type(name, "a whole number", &value);
                None
            }
        }
    }

    /// A list of extra `ssh` arguments. They reach Nix through
    /// `NIX_SSHOPTS`, which Nix splits at whitespace, so an entry with
    /// whitespace could not be passed faithfully and is refused.
    pub(crate) fn ssh_options(&mut self, name: &str) -> Option<Vec<String>> {
        let value = self.take(name)?;
        let Value::Array(items) = value else {
            self.wrong_type(name, "a list of strings", &value);
            return None;
        };
        let mut options = Vec::with_capacity(items.len());
        let mut well_formed = true;
        for (i, item) in items.into_iter().enumerate() {
            let field = format!("{name}[{i}]");
            match item {
                Value::String(s) if s.is_empty() || s.chars().any(char::is_whitespace) => {
                    well_formed = false;
                    self.error(&field, Problem::InvalidSshOption(s))
                }
                Value::String(s) => options.push(s),
                other => {
                    well_formed = false;
                    self.wrong_type(&field, "a string", &other)
                }
            }
        }
        if well_formed {
            if let Err((i, problem)) = super::ssh_options::validate(&options) {
                self.error(&format!("{name}[{i}]"), Problem::SshOption(problem));
            }
        }
        Some(options)
    }

    /// `timeouts = { lease = 15; … }`: whole seconds within each key's range.
    pub(crate) fn timeouts(&mut self, name: &str) -> Option<TimeoutSettings> {
        let value = self.take(name)?;
        let Value::Object(map) = value else {
            self.wrong_type(name, "an attribute set", &value);
            return None;
        };
        let mut timeouts = TimeoutSettings::default();
        for (key, v) in map {
            let field = format!("{name}.{key}");
            let Some(&(_, min, max)) = TimeoutSettings::KEYS.iter().find(|(k, _, _)| *k == key)
            else {
                let suggestion = suggest(&key, TimeoutSettings::KEYS.iter().map(|(k, _, _)| *k));
                self.error(&field, Problem::UnknownField { suggestion });
                continue;
            };
            match v.as_u64() {
                Some(secs) if (min..=max).contains(&secs) => timeouts.set(&key, secs),
                Some(secs) => self.error(&field, Problem::DurationOutOfRange { secs, min, max }),
                None => self.wrong_type(&field, "a whole number of seconds", &v),
            }
        }
        Some(timeouts)
    }

    pub(crate) fn bool(&mut self, name: &str) -> Option<bool> {
        match self.take(name)? {
            Value::Bool(b) => Some(b),
            other => {
                self.wrong_type(name, "a boolean", &other);
                None
            }
        }
    }

    /// Whole seconds within `min..=max`.
    pub(crate) fn seconds(&mut self, name: &str, min: u64, max: u64) -> Option<u64> {
        let value = self.take(name)?;
        match value.as_u64() {
            Some(secs) if (min..=max).contains(&secs) => Some(secs),
            Some(secs) => {
                self.error(name, Problem::DurationOutOfRange { secs, min, max });
                None
            }
            None => {
                self.wrong_type(name, "a whole number of seconds", &value);
                None
            }
        }
    }

    pub(crate) fn wrong_type(&mut self, field: &str, expected: &'static str, found: &Value) {
        self.error(
            field,
            Problem::WrongType {
                expected,
                found: describe(found),
            },
        );
    }

    /// Reports every field nobody took as unknown.
    pub(crate) fn finish(self) {
        for name in self.map.keys() {
            let suggestion = suggest(name, self.known.iter().copied());
            self.errors.push(
                self.location.clone(),
                Some(&format!("{}{name}", self.prefix)),
                Problem::UnknownField { suggestion },
            );
        }
    }
}
