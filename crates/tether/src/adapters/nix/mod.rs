//! The Nix CLI as tether uses it: one `nix eval` for the whole inventory and
//! one for the toplevels of all selected hosts, never one process per host.
//!
//! Both evaluations run `nix/eval-inventory.nix` (embedded in the binary)
//! through `nix eval --json --impure --expr`; `--impure` is needed because
//! `builtins.getFlake` refuses unlocked references in pure mode. Parsing and
//! validation of the results live in `tether_core::inventory`.

mod flake_ref;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tether_core::inventory::{
    parse_toplevels, EvalDocument, Inventory, InventoryErrors, Problem, Toplevel, ToplevelError,
};
use tether_core::model::{HostName, StorePath};
use tether_core::onboard::{ImportDocument, ImportSource};

pub use flake_ref::resolve_flake_ref;
pub use tether_core::nix_text::nix_string;

/// The expression both evaluations run; see the file for its contract.
const EVAL_INVENTORY: &str = include_str!("../../../../../nix/eval-inventory.nix");
/// The expression `tether init` runs to read another tool's hosts.
const EVAL_IMPORT: &str = include_str!("../../../../../nix/eval-import.nix");

/// Where the inventory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NixSource {
    /// A flake reference as the user typed it (`.`, `./x`, `github:o/r`).
    Flake(String),
    /// A Nix file evaluating to `{ tether = …; nixosConfigurations = …; }`
    /// (or a function taking `{ }` that returns it).
    File(PathBuf),
}

impl NixSource {
    /// The expression's source arguments, with local paths made absolute
    /// against `cwd` (Nix evaluates in its own notion of the current
    /// directory, and `builtins.getFlake` rejects relative paths).
    fn arguments(&self, cwd: &Path) -> String {
        match self {
            NixSource::Flake(reference) => format!(
                "flakeRef = {};",
                nix_string(&resolve_flake_ref(reference, cwd))
            ),
            NixSource::File(path) => {
                let path = cwd.join(path);
                format!("file = {};", nix_string(&path.to_string_lossy()))
            }
        }
    }
}

impl std::fmt::Display for NixSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NixSource::Flake(r) => write!(f, "flake {r:?}"),
            NixSource::File(p) => write!(f, "file {:?}", p.display().to_string()),
        }
    }
}

/// A failed `nix` invocation, with what is needed to understand it.
#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error("could not run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not determine the current directory: {0}")]
    Cwd(#[source] std::io::Error),
    #[error("`{command}` failed ({status}){}", stderr_suffix(.stderr_tail))]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr_tail: String,
    },
    #[error("`{command}` did not report {what}")]
    Missing { command: String, what: String },
    #[error("`{command}` printed output tether cannot read: {source}")]
    BadOutput {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

fn stderr_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(":\n{tail}")
    }
}

/// Why the inventory could not be loaded. Either way nothing was touched.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot evaluate the inventory from {source_desc}: {error}")]
    Nix {
        source_desc: String,
        #[source]
        error: NixError,
    },
    #[error("inventory file {0:?} does not exist")]
    MissingFile(String),
    #[error(transparent)]
    Invalid(#[from] InventoryErrors),
}

/// Why toplevels could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum ToplevelsError {
    #[error("cannot evaluate system toplevels from {source_desc}: {error}")]
    Nix {
        source_desc: String,
        #[source]
        error: NixError,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Hosts(Vec<ToplevelError>),
}

/// How tether runs Nix: which program, and the last lines of stderr kept
/// for error messages.
#[derive(Debug, Clone)]
pub struct Nix {
    program: OsString,
}

/// Lines of a failed command's stderr shown to the user: enough for Nix's
/// error and its location, short enough to read.
const STDERR_TAIL_LINES: usize = 20;

impl Default for Nix {
    fn default() -> Self {
        Nix {
            program: OsString::from("nix"),
        }
    }
}

impl Nix {
    /// `nix` from `PATH`, or the program named by `TETHER_NIX`.
    pub fn from_env() -> Self {
        match std::env::var_os("TETHER_NIX") {
            Some(program) if !program.is_empty() => Nix { program },
            _ => Nix::default(),
        }
    }

    pub fn with_program(program: impl Into<OsString>) -> Self {
        Nix {
            program: program.into(),
        }
    }

    /// Evaluates and validates the inventory in one `nix eval`.
    pub async fn load_inventory(&self, source: &NixSource) -> Result<Inventory, LoadError> {
        let cwd = std::env::current_dir().map_err(|e| LoadError::Nix {
            source_desc: source.to_string(),
            error: NixError::Cwd(e),
        })?;
        if let NixSource::File(path) = source {
            if !cwd.join(path).exists() {
                return Err(LoadError::MissingFile(path.display().to_string()));
            }
        }
        let expr = expression(source, &cwd, "inventory", &[]);
        let doc: EvalDocument =
            self.eval_json(&expr, "tether inventory")
                .await
                .map_err(|error| LoadError::Nix {
                    source_desc: source.to_string(),
                    error,
                })?;
        let inventory = Inventory::from_eval(doc)?;
        // Files the checks read on this machine must be there before any
        // host is touched, not found missing mid-deploy.
        let mut errors = InventoryErrors::default();
        for (location, field, path) in inventory.local_files() {
            if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                errors.push(location, Some(&field), Problem::FileNotFound(path));
            }
        }
        if errors.is_empty() {
            Ok(inventory)
        } else {
            Err(LoadError::Invalid(errors))
        }
    }

    /// Evaluates the system toplevel (drvPath, outPath, system) of every
    /// host in `hosts` in one `nix eval`. This instantiates the derivations
    /// (writes the `.drv` files) but builds nothing.
    pub async fn eval_toplevels(
        &self,
        source: &NixSource,
        hosts: &[HostName],
    ) -> Result<BTreeMap<HostName, Toplevel>, ToplevelsError> {
        let nix_error = |error| ToplevelsError::Nix {
            source_desc: source.to_string(),
            error,
        };
        let cwd = std::env::current_dir().map_err(|e| nix_error(NixError::Cwd(e)))?;
        let expr = expression(source, &cwd, "toplevels", hosts);
        let value: serde_json::Value = self
            .eval_json(&expr, "tether toplevels")
            .await
            .map_err(nix_error)?;
        parse_toplevels(value, hosts).map_err(ToplevelsError::Hosts)
    }

    /// Evaluates `host`'s system and its rehearsal variant at `source`
    /// (one `nix eval`, mode `variants` of nix/eval-inventory.nix);
    /// `rehearsal` is what tether's module records in
    /// `config.tether.rehearsal` (names and addresses, as strings).
    /// `modules_from` is where `rehearsal.modules` are read.
    pub async fn eval_variants(
        &self,
        source: &NixSource,
        modules_from: &NixSource,
        host: &HostName,
        rehearsal: &[(&str, String)],
    ) -> Result<serde_json::Value, NixError> {
        let cwd = std::env::current_dir().map_err(NixError::Cwd)?;
        let fields: String = rehearsal
            .iter()
            .map(|(k, v)| format!("{k} = {}; ", nix_string(v)))
            .collect();
        let expr = format!(
            "({EVAL_INVENTORY}\n) {{ {} mode = \"variants\"; hosts = [ {} ]; rehearsal = {{ {fields}}}; modulesFrom = {{ {} }}; }}",
            source.arguments(&cwd),
            nix_string(host.as_str()),
            modules_from.arguments(&cwd),
        );
        self.eval_json(&expr, "tether rehearsal variants").await
    }

    /// What another tool's description of the fleet says, for `tether
    /// init` (`nix/eval-import.nix`), in one `nix eval`.
    pub async fn eval_import(
        &self,
        source: &NixSource,
        from: ImportSource,
    ) -> Result<ImportDocument, LoadError> {
        let nix_error = |error| LoadError::Nix {
            source_desc: source.to_string(),
            error,
        };
        let cwd = std::env::current_dir().map_err(|e| nix_error(NixError::Cwd(e)))?;
        if let NixSource::File(path) = source {
            if !cwd.join(path).exists() {
                return Err(LoadError::MissingFile(path.display().to_string()));
            }
        }
        let expr = format!(
            "({EVAL_IMPORT}\n) {{ {} from = {}; }}",
            source.arguments(&cwd),
            nix_string(from.as_str())
        );
        self.eval_json(&expr, "tether init")
            .await
            .map_err(nix_error)
    }

    /// The `nix` program this instance runs (for `nix copy`).
    pub fn program(&self) -> &OsString {
        &self.program
    }

    /// Builds the given derivations with ONE `nix build` and returns each
    /// one's `out` path, in the same order.
    pub async fn build(&self, drvs: &[StorePath]) -> Result<Vec<StorePath>, NixError> {
        let program = self.program.to_string_lossy().into_owned();
        let command = format!(
            "{program} build --no-link --json <{} derivations>",
            drvs.len()
        );
        let mut args = vec!["build", "--no-link", "--json"];
        args.extend(drvs.iter().map(StorePath::as_str));
        let output = self.run(&args, &command).await?;
        #[derive(serde::Deserialize)]
        struct Built {
            #[serde(rename = "drvPath")]
            drv_path: String,
            outputs: std::collections::BTreeMap<String, String>,
        }
        let built: Vec<Built> =
            serde_json::from_slice(&output.stdout).map_err(|source| NixError::BadOutput {
                command: command.clone(),
                source,
            })?;
        drvs.iter()
            .map(|drv| {
                built
                    .iter()
                    .find(|b| b.drv_path == drv.as_str())
                    .and_then(|b| b.outputs.get("out"))
                    .and_then(|p| StorePath::new(p))
                    .ok_or_else(|| NixError::Missing {
                        command: command.clone(),
                        what: format!("the out path of {drv}"),
                    })
            })
            .collect()
    }

    /// `nix path-info -r --json PATH` about the closure of a path in the
    /// local store, read by `read` (one of tether-core's parsers); output
    /// it cannot read is an error naming the command.
    pub async fn closure_info<T>(
        &self,
        path: &StorePath,
        read: fn(&str) -> Result<T, tether_core::plan::PathInfoError>,
    ) -> Result<T, NixError> {
        let command = format!(
            "{} path-info -r --json {path}",
            self.program.to_string_lossy()
        );
        let output = self
            .run(&["path-info", "-r", "--json", path.as_str()], &command)
            .await?;
        read(&String::from_utf8_lossy(&output.stdout)).map_err(|e| NixError::Missing {
            command,
            what: e.to_string(),
        })
    }

    /// Runs `nix ARGS` (with the features tether needs) to completion;
    /// `command` names it in errors. Fails with the stderr tail unless it
    /// exits 0.
    async fn run(&self, args: &[&str], command: &str) -> Result<std::process::Output, NixError> {
        tracing::debug!(%command, "running nix");
        let output = tokio::process::Command::new(&self.program)
            .args(["--extra-experimental-features", "nix-command flakes"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| NixError::Spawn {
                program: self.program.to_string_lossy().into_owned(),
                source,
            })?;
        if !output.status.success() {
            return Err(NixError::Failed {
                command: command.to_string(),
                status: output.status,
                stderr_tail: tail(&String::from_utf8_lossy(&output.stderr), STDERR_TAIL_LINES),
            });
        }
        Ok(output)
    }

    /// Runs `nix eval --json --impure --expr EXPR` and parses stdout.
    /// `what` stands in for the (long) expression in messages.
    async fn eval_json<T: serde::de::DeserializeOwned>(
        &self,
        expr: &str,
        what: &str,
    ) -> Result<T, NixError> {
        let program = self.program.to_string_lossy().into_owned();
        let command = format!("{program} eval --json --impure --expr <{what} expression>");
        let output = self
            .run(&["eval", "--json", "--impure", "--expr", expr], &command)
            .await?;
        serde_json::from_slice(&output.stdout)
            .map_err(|source| NixError::BadOutput { command, source })
    }
}

/// The full expression: the embedded function applied to its arguments.
fn expression(source: &NixSource, cwd: &Path, mode: &str, hosts: &[HostName]) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| nix_string(h.as_str())).collect();
    // The newline before `)` ends a trailing comment in the file, if any.
    format!(
        "({EVAL_INVENTORY}\n) {{ {} mode = {}; hosts = [ {} ]; }}",
        source.arguments(cwd),
        nix_string(mode),
        hosts.join(" ")
    )
}

/// The last `lines` non-empty lines of `text`, trimmed.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = all[start..].join("\n");
    if start > 0 {
        out.insert_str(0, "…\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "…\nb\nc");
        assert_eq!(tail("a\n", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn expression_passes_escaped_arguments() {
        let hosts: Vec<HostName> = vec!["web1".parse().expect("name")];
        let expr = expression(
            &NixSource::File(PathBuf::from("inv $x.nix")),
            Path::new("/w"),
            "toplevels",
            &hosts,
        );
        assert!(expr
            .ends_with(r#"{ file = "/w/inv \$x.nix"; mode = "toplevels"; hosts = [ "web1" ]; }"#));
    }
}
