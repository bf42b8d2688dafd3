//! Fixture fleets: a flake directory (and `default.nix` for `-f`) describing
//! NixOS-like systems for a lab's hosts, built from the repo's `nix/fixture`.

use crate::nix_settings::nix_command;
use crate::{cmd, paths, Lab};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

impl Lab {
    /// Writes a fixture fleet for this lab into `dir`: the fixture library
    /// (`nix/fixture/*.nix` and the `*.py` scripts they install),
    /// `lab.json`, `hosts.nix` (per-host overrides of `mkSystem` arguments, a
    /// Nix attribute set; `{ }` for the base systems) and `flake.nix` /
    /// `default.nix`. Returns `dir`.
    pub fn write_fixture_fleet(&self, dir: &Path, hosts_nix: &str) -> Result<PathBuf> {
        let src = paths::repo_root().join("nix/fixture");
        let lib = dir.join("lib");
        fs::create_dir_all(&lib)?;
        for entry in fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            let n = name.to_string_lossy();
            if n.ends_with(".nix") || n.ends_with(".py") {
                fs::copy(entry.path(), lib.join(&name))?;
            }
        }
        for name in ["flake.nix", "default.nix"] {
            fs::copy(src.join("flake-template").join(name), dir.join(name))
                .with_context(|| format!("copying the fixture template's {name}"))?;
        }
        fs::copy(self.json_path(), dir.join("lab.json"))?;
        fs::write(dir.join("hosts.nix"), hosts_nix)?;
        Ok(dir.to_path_buf())
    }

    /// Builds every host's system of the fixture fleet in `dir` (one `nix
    /// eval` for the derivations, one `nix build`) and returns host name →
    /// toplevel store path. Results are matched by derivation: `nix build
    /// --json` does not promise to answer in the order it was asked.
    pub fn build_fleet(&self, dir: &Path) -> Result<BTreeMap<String, String>> {
        let flake = format!("path:{}", dir.display());
        let out = cmd::run(
            nix_command()
                .args(["eval", "--json"])
                .arg(format!("{flake}#nixosConfigurations"))
                .args([
                    "--apply",
                    "cs: builtins.mapAttrs (n: c: c.config.system.build.toplevel.drvPath) cs",
                ]),
        )
        .context("evaluating the fixture fleet")?;
        let drvs: BTreeMap<String, String> = serde_json::from_slice(&out.stdout)?;
        let mut c = nix_command();
        c.args(["build", "--no-link", "--json"]);
        for h in &self.info.hosts {
            let drv = drvs
                .get(&h.name)
                .with_context(|| format!("the fleet has no system for {}", h.name))?;
            c.arg(drv);
        }
        let out = cmd::run(&mut c).context("building the fixture fleet")?;
        let built: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
        let mut map = BTreeMap::new();
        for h in &self.info.hosts {
            let drv = &drvs[&h.name];
            let path = built
                .iter()
                .find(|b| b["drvPath"].as_str() == Some(drv.as_str()))
                .and_then(|b| b["outputs"]["out"].as_str())
                .with_context(|| format!("nix build did not report {drv} ({})", h.name))?;
            map.insert(h.name.clone(), path.to_string());
        }
        Ok(map)
    }

    /// Gives every host the fixture fleet's base system (what a fresh NixOS
    /// install would have): writes the fleet into `dir`, builds it, copies
    /// and switches each host in parallel.
    pub fn provision(&self, dir: &Path) -> Result<BTreeMap<String, String>> {
        self.write_fixture_fleet(dir, "{ }\n")?;
        let systems = self.build_fleet(dir)?;
        std::thread::scope(|s| {
            let handles: Vec<_> = systems
                .iter()
                .map(|(host, path)| s.spawn(move || self.install_system(host, path)))
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("provisioning thread panicked"))??;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(systems)
    }
}
