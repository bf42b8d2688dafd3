//! Reading back which system a host boots by default, from its boot loader
//! itself: persisting counts only when both the system profile and the boot
//! default point at the new system.
//!
//! - systemd-boot (`bootctl is-installed`): `bootctl list --json=short`,
//!   whose default entry's `options` carry `init=<toplevel>/init`; this
//!   covers both NixOS's entry naming schemes (`nixos-generation-N.conf`
//!   and content-addressed ones) and `loader.conf` globs, as systemd-boot
//!   resolves them the same way.
//! - GRUB (`/boot/grub/grub.cfg`): NixOS writes the default system as the
//!   first menu entry; its `init=`.
//! - None of these (a NixOS container, whose init comes from the system
//!   profile): the profile is the boot default.

use super::wire::{first, Fields};

/// The shell function `boot_default [WANT]`: prints `boot_loader=<kind>`
/// and `boot_default=<toplevel>` (or, for systemd-boot,
/// `boot_entries=<json>` for the parser), and sets `$boot_ok` to `yes`
/// when the default is the toplevel WANT. Needs `resolve` and the system
/// profile's path in `$profile`.
pub(crate) const BOOT_DEFAULT_FUNCTION: &str = r#"# sd_boot: whether systemd-boot is installed, asked of bootctl once per
# script (bootctl looks for the ESP each time).
sd_boot() {
    if [ -z "${sd_boot_installed:-}" ]; then
        sd_boot_installed=no
        if command -v bootctl >/dev/null 2>&1 && bootctl is-installed --quiet >/dev/null 2>&1; then
            sd_boot_installed=yes
        fi
    fi
    [ "$sd_boot_installed" = yes ]
}
boot_default() {
    boot_ok=no
    bd=
    if sd_boot; then
        echo "boot_loader=systemd-boot"
        entries=$(bootctl list --json=short --no-pager 2>/dev/null | tr -d '\n')
        printf 'boot_entries=%s\n' "$entries"
        # The default entry's object names init=WANT/init.
        if [ -n "${1:-}" ] && printf '%s\n' "$entries" | sed 's/},[[:space:]]*{/}\
{/g' | grep '"isDefault":[[:space:]]*true' | grep -qF "init=$1/init"; then
            boot_ok=yes
        fi
        return 0
    elif [ -r /boot/grub/grub.cfg ]; then
        echo "boot_loader=grub"
        init=$(sed -n 's/.*[[:space:]]init=\([^[:space:]]*\).*/\1/p' /boot/grub/grub.cfg | head -n 1)
        bd=${init%/init}
    else
        echo "boot_loader=none"
        resolve "$profile"; bd=$r
    fi
    echo "boot_default=$bd"
    if [ -n "${1:-}" ] && [ "$bd" = "$1" ]; then boot_ok=yes; fi
    return 0
}
"#;

/// The shell function `one_shot_entry WANT`: sets `$entry` to the id of
/// the systemd-boot entry (`bootctl list --json=short`) whose kernel
/// parameters carry `init=WANT/init`, or to nothing.
pub(crate) const ONE_SHOT_ENTRY_FUNCTION: &str = r#"one_shot_entry() {
    entry=
    line=$(bootctl list --json=short --no-pager 2>/dev/null | tr -d '\n' | sed 's/},[[:space:]]*{/}\
{/g' | grep -F "init=$1/init" | head -n 1)
    entry=$(printf '%s\n' "$line" | sed -n 's/.*"id":[[:space:]]*"\([^"]*\)".*/\1/p')
}
"#;

/// Which boot loader tether found on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootLoader {
    SystemdBoot,
    Grub,
    /// No boot loader (a container): the profile is what boots.
    None,
}

/// What the host boots by default, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDefault {
    pub loader: BootLoader,
    /// The default entry's system toplevel, when it could be read.
    pub system: Option<String>,
}

/// Reads what [`BOOT_DEFAULT_FUNCTION`] printed; `None` when it did not run.
pub(crate) fn parse_boot_default(f: &Fields) -> Option<BootDefault> {
    let loader = match first(f, "boot_loader")? {
        "systemd-boot" => BootLoader::SystemdBoot,
        "grub" => BootLoader::Grub,
        _ => BootLoader::None,
    };
    let system = match loader {
        BootLoader::SystemdBoot => first(f, "boot_entries").and_then(default_entry_system),
        _ => first(f, "boot_default").map(str::to_string),
    };
    Some(BootDefault { loader, system })
}

/// The toplevel of the default entry in `bootctl list --json=short`.
fn default_entry_system(json: &str) -> Option<String> {
    let entries: Vec<serde_json::Value> = serde_json::from_str(json).ok()?;
    let entry = entries
        .iter()
        .find(|e| e["isDefault"].as_bool() == Some(true))?;
    init_toplevel(entry["options"].as_str()?)
}

/// `init=/nix/store/…-nixos-system-…/init` → the toplevel.
fn init_toplevel(options: &str) -> Option<String> {
    options
        .split_whitespace()
        .find_map(|o| o.strip_prefix("init="))
        .map(|init| init.strip_suffix("/init").unwrap_or(init).to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::wire::parse_fields;
    use super::*;

    #[test]
    fn the_systemd_boot_default_is_the_entry_bootctl_marks() {
        let json = r#"[{"type":"type1","source":"esp","id":"nixos-generation-2.conf","showTitle":"NixOS","options":"init=/nix/store/aaa-nixos-system-web1/init loglevel=4","isDefault":false},{"id":"nixos-generation-3.conf","options":"init=/nix/store/bbb-nixos-system-web1/init loglevel=4","isDefault":true,"isSelected":true}]"#;
        let f = parse_fields(&format!("boot_loader=systemd-boot\nboot_entries={json}\n"));
        assert_eq!(
            parse_boot_default(&f),
            Some(BootDefault {
                loader: BootLoader::SystemdBoot,
                system: Some("/nix/store/bbb-nixos-system-web1".into())
            })
        );
    }

    #[test]
    fn grub_and_containers_print_the_toplevel() {
        for (loader, kind) in [("grub", BootLoader::Grub), ("none", BootLoader::None)] {
            let f = parse_fields(&format!(
                "boot_loader={loader}\nboot_default=/nix/store/x-sys\n"
            ));
            let d = parse_boot_default(&f).unwrap();
            assert_eq!(d.loader, kind);
            assert_eq!(d.system.as_deref(), Some("/nix/store/x-sys"));
        }
        assert_eq!(parse_boot_default(&parse_fields("x=1\n")), None);
    }

    #[test]
    fn an_unreadable_default_is_no_system() {
        let f = parse_fields("boot_loader=systemd-boot\nboot_entries=not json\n");
        assert_eq!(parse_boot_default(&f).unwrap().system, None);
        assert_eq!(
            init_toplevel("root=x init=/nix/store/c-sys/init"),
            Some("/nix/store/c-sys".into())
        );
    }
}
