//! The evaluated system toplevels of selected hosts: what
//! `nix/eval-inventory.nix` returns in `toplevels` mode, parsed and checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{HostName, StorePath};

/// A host's evaluated system: the `config.system.build.toplevel` derivation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Toplevel {
    pub drv_path: StorePath,
    pub out_path: StorePath,
    /// The derivation's `system` (e.g. `x86_64-linux`), when it has one.
    pub system: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToplevelError {
    #[error("host {host:?}: {message}")]
    Host { host: String, message: String },
    #[error("host {0:?}: missing from the evaluation result")]
    Missing(String),
    #[error("unexpected evaluation result: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Ok {
        #[serde(rename = "drvPath")]
        drv_path: String,
        // eval-inventory.nix cannot use `outPath`: toJSON would collapse the
        // whole attribute set to that string.
        #[serde(rename = "outputPath")]
        out_path: String,
        system: Option<String>,
    },
    Err {
        error: String,
    },
}

/// Parses the `toplevels` result for `requested` hosts. Every host must be
/// present and well-formed; all problems are returned, one per host.
pub fn parse_toplevels(
    value: Value,
    requested: &[HostName],
) -> Result<BTreeMap<HostName, Toplevel>, Vec<ToplevelError>> {
    let mut entries: BTreeMap<String, Entry> =
        serde_json::from_value(value).map_err(|e| vec![ToplevelError::Malformed(e.to_string())])?;
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for name in requested {
        let host = name.to_string();
        match entries.remove(name.as_str()) {
            None => errors.push(ToplevelError::Missing(host)),
            Some(Entry::Err { error }) => errors.push(ToplevelError::Host {
                host,
                message: error,
            }),
            Some(Entry::Ok {
                drv_path,
                out_path,
                system,
            }) => match (StorePath::new(&drv_path), StorePath::new(&out_path)) {
                (Some(drv_path), Some(out_path)) => {
                    out.insert(
                        name.clone(),
                        Toplevel {
                            drv_path,
                            out_path,
                            system,
                        },
                    );
                }
                _ => errors.push(ToplevelError::Host {
                    host,
                    message: format!("not a store path: {drv_path:?} / {out_path:?}"),
                }),
            },
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use serde_json::json;

    fn names(list: &[&str]) -> Vec<HostName> {
        list.iter().map(|n| n.parse().expect("name")).collect()
    }

    #[test]
    fn parses_each_requested_host() {
        let value = json!({
            "web1": {"drvPath": "/nix/store/a-x.drv", "outputPath": "/nix/store/b-x", "system": "x86_64-linux"},
            "web2": {"drvPath": "/nix/store/c-x.drv", "outputPath": "/nix/store/d-x", "system": null},
        });
        let got = parse_toplevels(value, &names(&["web1", "web2"])).expect("ok");
        let web1 = &got[&names(&["web1"])[0]];
        assert_eq!(web1.drv_path.as_str(), "/nix/store/a-x.drv");
        assert_eq!(web1.system.as_deref(), Some("x86_64-linux"));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn reports_every_broken_or_missing_host() {
        let value = json!({
            "web1": {"error": "no config.system.build.toplevel"},
            "web3": {"drvPath": "relative", "outputPath": "/nix/store/b-x", "system": null},
        });
        let errs = parse_toplevels(value, &names(&["web1", "web2", "web3"])).expect_err("bad");
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[1], ToplevelError::Missing("web2".into()));
    }
}
