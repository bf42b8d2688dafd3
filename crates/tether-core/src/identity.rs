//! Whether a host is the machine the inventory and the build mean: the one
//! identity decision that `deploy`, `plan`, `rollback` and `status` share.
//! (The pinned host key is checked by SSH itself; a mismatch arrives here
//! as [`IdentityProblem::HostKey`] from the transport.)

use crate::report::IdentityProblem;

/// What the inventory and the build expect of a host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected<'a> {
    /// The pinned `/etc/machine-id`, when the inventory pins one.
    pub machine_id: Option<&'a str>,
    /// The Nix system the new system was built for (`x86_64-linux`).
    pub platform: Option<&'a str>,
}

/// What the host said about itself.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub machine_id: &'a str,
    /// `uname -m`.
    pub arch: &'a str,
}

/// The Nix system string of a `uname -m` architecture (`x86_64-linux`).
pub fn nix_system(arch: &str) -> String {
    let arch = match arch {
        "arm64" => "aarch64",
        "i386" | "i586" | "i686" => "i686",
        other => other,
    };
    format!("{arch}-linux")
}

/// `Ok` when the host is who and what is expected. Machine-ids compare
/// without regard to case: machine-id(5) prescribes lowercase and the
/// inventory only accepts that, but a host that writes uppercase is still
/// the same machine.
pub fn check(expected: &Expected<'_>, seen: &Seen<'_>) -> Result<(), IdentityProblem> {
    if let Some(pinned) = expected.machine_id {
        if !seen.machine_id.eq_ignore_ascii_case(pinned) {
            return Err(IdentityProblem::MachineId {
                seen: seen.machine_id.to_string(),
                pinned: pinned.to_string(),
            });
        }
    }
    if let Some(platform) = expected.platform {
        let host_system = nix_system(seen.arch);
        if host_system != platform {
            return Err(IdentityProblem::Architecture {
                host_system,
                arch: seen.arch.to_string(),
                built_for: platform.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MID: &str = "0123456789abcdef0123456789abcdef";

    fn seen<'a>(machine_id: &'a str, arch: &'a str) -> Seen<'a> {
        Seen { machine_id, arch }
    }

    #[test]
    fn a_host_matching_what_is_pinned_and_built_passes() {
        let e = Expected {
            machine_id: Some(MID),
            platform: Some("x86_64-linux"),
        };
        assert_eq!(check(&e, &seen(MID, "x86_64")), Ok(()));
        assert_eq!(
            check(&e, &seen(&MID.to_uppercase(), "x86_64")),
            Ok(()),
            "case does not make another machine"
        );
        assert_eq!(check(&Expected::default(), &seen("", "")), Ok(()));
    }

    #[test]
    fn another_machine_id_is_named_with_both_values() {
        let e = Expected {
            machine_id: Some(MID),
            platform: None,
        };
        assert_eq!(
            check(&e, &seen("ffff", "x86_64")),
            Err(IdentityProblem::MachineId {
                seen: "ffff".into(),
                pinned: MID.into()
            })
        );
    }

    #[test]
    fn a_system_built_for_another_architecture_is_refused() {
        let e = Expected {
            machine_id: None,
            platform: Some("x86_64-linux"),
        };
        assert_eq!(
            check(&e, &seen(MID, "aarch64")),
            Err(IdentityProblem::Architecture {
                host_system: "aarch64-linux".into(),
                arch: "aarch64".into(),
                built_for: "x86_64-linux".into()
            })
        );
        assert_eq!(nix_system("arm64"), "aarch64-linux");
        assert_eq!(nix_system("i686"), "i686-linux");
    }
}
