//! Where the lab keeps its images, running labs and keys.

use std::path::PathBuf;

/// The lab's state directory: `$TETHER_LAB_DIR`, default `/var/lib/tether-lab`.
pub fn lab_dir() -> PathBuf {
    std::env::var_os("TETHER_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/tether-lab"))
}

/// The tether repository (for the fixture library): `$TETHER_REPO`, default
/// the checkout this crate was built from.
pub fn repo_root() -> PathBuf {
    std::env::var_os("TETHER_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}
