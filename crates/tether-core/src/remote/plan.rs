//! What `tether plan` reads from a host, read-only and in one round trip:
//! its current system's closure with NAR sizes, the unit files of that
//! system and the units active now; and the same unit-file listing for a
//! system in the deployer's own store. Only commands every Nix has
//! (`nix-store -qR`, `nix-store -q --size`) and coreutils are used, so old
//! and new Nix on the target both work.

use std::collections::{BTreeMap, BTreeSet};

use super::wire::{finished, first, parse_fields, Fields, ParseError};
use super::{Op, Operation, ScriptOutput};
use crate::model::{Closure, StorePath};
use crate::shell::quote;

/// Prints `unit_file=<sha256> <entry>` for every file in `$sys/etc/systemd/system`
/// and its drop-in directories, and `unit_reload=`/`unit_norestart=` for
/// units whose file asks NixOS to reload instead of restart, or to leave it.
/// Content hashes, not link targets: NixOS links unit files, the lab
/// fixture copies them; a hash compares both the same way.
const UNIT_FILES_SNIPPET: &str = r#"d="$sys/etc/systemd/system"
# One sha256sum for all files (directories and unmatched globs only make it
# complain on stderr). It escapes names with a backslash by prefixing the line.
sha256sum -- "$d"/* "$d"/*.d/* 2>/dev/null | while read -r h p; do
    echo "unit_file=$h ${p#"$d"/}"
done
grep -ls '^X-ReloadIfChanged=true' -- "$d"/* 2>/dev/null | while read -r p; do
    echo "unit_reload=${p#"$d"/}"
done
grep -ls '^X-RestartIfChanged=false' -- "$d"/* 2>/dev/null | while read -r p; do
    echo "unit_norestart=${p#"$d"/}"
done
"#;

/// Read-only: the current system's path, closure and sizes, unit files and
/// the units active now. Ends with `plan=done`, or `plan=<what failed>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CurrentSystem;

impl Operation for CurrentSystem {
    type Output = HostSystem;
    const OP: Op = Op::PlanCurrentSystem;

    fn script(&self) -> String {
        current_system_script()
    }

    fn parse(&self, out: &ScriptOutput) -> Result<HostSystem, ParseError> {
        parse_current_system(&out.stdout)
    }
}

fn current_system_script() -> String {
    format!(
        r#"set -u
sys=$(readlink -f /run/current-system 2>/dev/null)
echo "current=$sys"
if [ -z "$sys" ]; then echo "plan=done"; exit 0; fi
paths=$(nix-store -qR "$sys") || {{ echo "plan=closure-failed"; exit 0; }}
# Sizes come in the order of the paths given; the parser pairs them up.
sizes=$(printf '%s\n' "$paths" | xargs nix-store -q --size) || {{ echo "plan=sizes-failed"; exit 0; }}
printf '%s\n' "$paths" | sed 's/^/closure_path=/'
printf '%s\n' "$sizes" | sed 's/^/closure_size=/'
{units}systemctl list-units --all --state=active --no-legend --plain 2>/dev/null | while read -r unit rest; do
    echo "active_unit=$unit"
done
echo "plan=done"
"#,
        units = UNIT_FILES_SNIPPET,
    )
}

/// The unit files of `system`, a path in the store where this runs: the
/// deployer's, for a system it built. Ends with `units=done`.
#[derive(Debug, Clone)]
pub struct ListUnitFiles {
    pub system: StorePath,
}

impl Operation for ListUnitFiles {
    type Output = UnitFiles;
    const OP: Op = Op::UnitFiles;

    fn script(&self) -> String {
        format!(
            "set -u\nsys={}\n{UNIT_FILES_SNIPPET}echo \"units=done\"\n",
            quote(self.system.as_str())
        )
    }

    fn parse(&self, out: &ScriptOutput) -> Result<UnitFiles, ParseError> {
        parse_unit_files(&out.stdout)
    }
}

/// A system's unit files: entry (`foo.service`, `foo.service.d/x.conf`) →
/// content hash, and the units whose file sets `X-ReloadIfChanged=true` or
/// `X-RestartIfChanged=false`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitFiles {
    pub hashes: BTreeMap<String, String>,
    pub reload: BTreeSet<String>,
    pub no_restart: BTreeSet<String>,
}

/// The host's current system as `current_system_script` printed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostSystem {
    pub current_system: Option<String>,
    pub closure: Closure,
    pub units: UnitFiles,
    pub active_units: BTreeSet<String>,
}

fn unit_files(f: &Fields) -> UnitFiles {
    let mut units = UnitFiles::default();
    for line in f.get("unit_file").into_iter().flatten() {
        let Some((hash, entry)) = line.split_once(' ') else {
            continue;
        };
        // sha256sum marks an escaped name with a leading backslash on the
        // line and doubles backslashes in it (`dev-disk-by\x2dlabel.swap`).
        match hash.strip_prefix('\\') {
            Some(h) => units
                .hashes
                .insert(entry.replace("\\\\", "\\"), h.to_string()),
            None => units.hashes.insert(entry.to_string(), hash.to_string()),
        };
    }
    let set = |key: &str| -> BTreeSet<String> {
        f.get(key)
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect()
    };
    units.reload = set("unit_reload");
    units.no_restart = set("unit_norestart");
    units
}

fn parse_unit_files(stdout: &str) -> Result<UnitFiles, ParseError> {
    let f = parse_fields(stdout);
    finished(&f, "units", "listing the unit files")?;
    Ok(unit_files(&f))
}

fn parse_current_system(stdout: &str) -> Result<HostSystem, ParseError> {
    let f = parse_fields(stdout);
    match first(&f, "plan") {
        Some("done") => {}
        Some("closure-failed") => {
            return Err(ParseError(
                "nix-store -qR of the current system failed".into(),
            ))
        }
        Some("sizes-failed") => {
            return Err(ParseError("nix-store -q --size failed".into()));
        }
        _ => {
            return Err(ParseError(
                "reading the current system did not finish".into(),
            ))
        }
    }
    let paths = f.get("closure_path").cloned().unwrap_or_default();
    let sizes = f.get("closure_size").cloned().unwrap_or_default();
    if paths.len() != sizes.len() {
        return Err(ParseError(format!(
            "{} closure paths but {} sizes",
            paths.len(),
            sizes.len()
        )));
    }
    let mut closure = Closure::new();
    for (path, size) in paths.into_iter().zip(sizes) {
        let size = size
            .trim()
            .parse()
            .map_err(|_| ParseError(format!("not a size: {size:?}")))?;
        closure.insert(path, size);
    }
    Ok(HostSystem {
        current_system: first(&f, "current").map(str::to_string),
        closure,
        units: unit_files(&f),
        active_units: f
            .get("active_unit")
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_system_pairs_paths_with_sizes() {
        let out = "\
Welcome to the host
current=/nix/store/aaa-nixos-system
closure_path=/nix/store/aaa-nixos-system
closure_path=/nix/store/bbb-hello-2.10
closure_size=1000
closure_size=250
unit_file=0123abcd fixture-web.service
unit_file=\\99ff dev-disk-by\\\\x2dlabel.swap
unit_file=4567 fixture-web.service.d/override.conf
unit_reload=fixture-web.service
active_unit=fixture-web.service
active_unit=ssh.service
plan=done
";
        let s = parse_current_system(out).unwrap();
        assert_eq!(
            s.current_system.as_deref(),
            Some("/nix/store/aaa-nixos-system")
        );
        assert_eq!(s.closure["/nix/store/bbb-hello-2.10"], 250);
        assert_eq!(s.closure.len(), 2);
        assert_eq!(s.units.hashes["fixture-web.service"], "0123abcd");
        assert_eq!(s.units.hashes["dev-disk-by\\x2dlabel.swap"], "99ff");
        assert_eq!(s.units.hashes.len(), 3);
        assert!(s.units.reload.contains("fixture-web.service"));
        assert!(s.active_units.contains("ssh.service"));
    }

    #[test]
    fn unfinished_or_mismatched_output_is_an_error() {
        assert!(parse_current_system("current=/x\n").is_err());
        assert!(parse_current_system("plan=closure-failed\n").is_err());
        assert!(parse_current_system("closure_path=/a\nplan=done\n").is_err());
        assert!(parse_current_system("closure_path=/a\nclosure_size=x\nplan=done\n").is_err());
        // A host without /run/current-system has an empty closure.
        let s = parse_current_system("current=\nplan=done\n").unwrap();
        assert!(s.current_system.is_none() && s.closure.is_empty());
    }

    #[test]
    fn unit_files_of_a_local_system() {
        assert!(parse_unit_files("").is_err());
        let u = parse_unit_files("unit_file=ab fixture-a.service\nunits=done\n").unwrap();
        assert_eq!(u.hashes.len(), 1);
        let script = ListUnitFiles {
            system: StorePath::new("/nix/store/x-it's").unwrap_or_else(|| {
                panic!("valid store path");
            }),
        }
        .script();
        assert!(script.contains(r#"sys='/nix/store/x-it'\''s'"#), "{script}");
    }
}
